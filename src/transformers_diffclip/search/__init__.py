# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Search images with DiffCLIP (or any CLIP-like dual encoder): the Python API under `diffclip index` and
`diffclip search` (needs the `search` extra: faiss-cpu and pyarrow).

```python
from transformers_diffclip.search import Searcher, build_index

build_index("hammh0a/DiffCLIP_ViTB16_CC12M", "photos/", "photos-index")
for hit in Searcher("photos-index").search_text("a dog on a beach", top_k=5):
    print(hit.score, hit.path)
```

- [`build_index`]: embed a folder, a list file of paths/URLs or webdataset shards into Parquet shards, resumably,
  and commit a FAISS index (exact below a million vectors, compressed above, with its measured recall@10);
- [`SearchIndex`]: an index folder opened for search by embedding; [`Searcher`]: by text or image;
- [`list_images`], [`open_item`]: the sources and the images they name.
"""

from .build import build_index
from .index import DEFAULT_EXACT_BELOW, SearchHit, SearchIndex, build_faiss_index, choose_factory, neighbour_recall
from .searcher import Searcher
from .sources import list_images, open_item
from .store import read_manifest


__all__ = [
    "DEFAULT_EXACT_BELOW",
    "SearchHit",
    "SearchIndex",
    "Searcher",
    "build_faiss_index",
    "build_index",
    "choose_factory",
    "list_images",
    "open_item",
    "read_manifest",
    "neighbour_recall",
]
