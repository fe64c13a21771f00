# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""FAISS indexes over unit-norm embeddings (inner product = cosine similarity), chosen for the size:

- below `exact_below` vectors (default 1,000,000): exact search (`IDMap2,Flat`), the same top-k as brute force;
- from `exact_below` on: an inverted file over scalar-quantised vectors (`IVF{nlist},SQ8`, `nlist` ≈ √n, a power of
  two, trained on up to 64 vectors per list; `nprobe` = nlist/16), a quarter of the memory of the vectors. Its
  recall@10 against exact search is measured when it is built: a held-out sample of the vectors (up to 1,000) is
  kept out while the index is trained and filled, each held-out vector queries the index and an exact search of the
  same vectors, and the overlap of the two top-10 lists is averaged; the held-out vectors are then added. The
  figure is stored in the manifest.

[`SearchIndex`] opens an index folder (refusing an incomplete or inconsistent one) and answers queries given as
embeddings; [`search.Searcher`](searcher) embeds text and image queries first.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.files import atomic_write_bytes
from .store import EMBEDDING_KINDS, read_manifest, read_shards


DEFAULT_EXACT_BELOW = 1_000_000
RECALL_SAMPLE = 1000
RECALL_K = 10


def _faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            'Search indexes need faiss-cpu and pyarrow: pip install "transformers-diffclip[search]"'
        ) from error
    return faiss


def choose_factory(count: int, exact_below: int = DEFAULT_EXACT_BELOW) -> tuple[str, int | None]:
    """The FAISS factory string and `nprobe` for `count` vectors (see the module docstring)."""
    if count < exact_below:
        return "IDMap2,Flat", None
    nlist = 2 ** max(4, round(math.log2(math.sqrt(count))))
    return f"IVF{nlist},SQ8", max(1, nlist // 16)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Positions in `vectors` of each query's `k` highest inner products (exact, FAISS flat search)."""
    faiss = _faiss()
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    _, positions = flat.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(vectors)))
    return positions


def neighbour_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (rows of ids; -1 entries in `found` never count)."""
    hits = [len(set(f[f >= 0].tolist()) & set(t.tolist())) / max(len(t), 1) for f, t in zip(found, truth)]
    return float(np.mean(hits)) if hits else 1.0


def faiss_message(error: Exception) -> str:
    """FAISS's own words without its C++ location (`Error in void faiss::... at file.cpp:64: Error: '...' failed:`)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r"^Error in .*? at \S+:\d+: ", "", text)
    return re.sub(r"^Error: '.*?' failed: ", "", text)


def new_faiss_index(factory: str, dim: int):
    """An empty FAISS index (inner product) made by `factory` for `dim`-d vectors that can store ids, or a
    `ValueError` naming the factory string: run on the model's dimension before any image is embedded, so a string
    FAISS cannot parse (`Garbage,42`), cannot build for `dim` (`PQ5` on 16-d) or that cannot store ids (`Flat`,
    `HNSW32`: add `IDMap2,` in front) is refused at once."""
    faiss = _faiss()
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise ValueError(
            f"--factory {factory!r} is not a FAISS index for {dim}-d embeddings: {faiss_message(error)}."
        ) from None
    if not isinstance(index, faiss.IndexIDMap) and faiss.try_extract_index_ivf(index) is None:
        raise ValueError(
            f"--factory {factory!r} builds a FAISS index that cannot store the images' ids; put 'IDMap2,' in front "
            f"(--factory 'IDMap2,{factory}')."
        )
    return index


def build_faiss_index(
    ids: np.ndarray,
    vectors: np.ndarray,
    exact_below: int = DEFAULT_EXACT_BELOW,
    factory: str | None = None,
    nprobe: int | None = None,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """A FAISS index of `vectors` under `ids`, and its description for the manifest (`factory`, `kind`, `nprobe`,
    and for a compressed index `recall_at_10` with the size of the held-out sample it was measured on)."""
    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    count, dim = vectors.shape
    if factory is None:
        factory, nprobe = choose_factory(count, exact_below)
    index = new_faiss_index(factory, dim)
    info: dict[str, Any] = {"factory": factory, "metric": "inner_product", "ntotal": count}
    if index.is_trained and "IVF" not in factory:
        index.add_with_ids(vectors, ids)
        info.update(kind="exact", nprobe=None, recall_at_10=1.0, recall_sample=0)
        return index, info
    rng = np.random.default_rng(seed)
    sample = min(RECALL_SAMPLE, count // 10)
    held_out = rng.choice(count, size=sample, replace=False) if sample else np.empty(0, np.int64)
    kept = np.setdiff1d(np.arange(count), held_out)
    ivf = faiss.try_extract_index_ivf(index)
    limit = 64 * ivf.nlist if ivf is not None else 1_000_000
    training = kept if len(kept) <= limit else rng.choice(kept, size=limit, replace=False)
    try:
        index.train(vectors[np.sort(training)])
    except RuntimeError as error:
        raise ValueError(
            f"The FAISS index {factory!r} cannot be trained on {len(training)} embeddings: {faiss_message(error)}."
        ) from None
    index.add_with_ids(vectors[kept], ids[kept])
    if nprobe is not None:
        faiss.extract_index_ivf(index).nprobe = nprobe
    recall = None
    if sample:
        queries = vectors[held_out]
        truth = ids[kept][exact_top_k(vectors[kept], queries, RECALL_K)]
        _, found = index.search(queries, RECALL_K)
        recall = neighbour_recall(found, truth)
        index.add_with_ids(queries, ids[held_out])
    info.update(kind="compressed", nprobe=nprobe, recall_at_10=recall, recall_sample=int(sample))
    return index, info


def write_faiss_index(index, path: str | os.PathLike) -> int:
    """Serialise `index` to `path` atomically; returns the file's size."""

    data = _faiss().serialize_index(index).tobytes()
    atomic_write_bytes(path, data)
    return len(data)


def read_faiss_index(folder: str | os.PathLike, info: dict[str, Any]):
    """The FAISS index file named by a (validated) manifest's `index` entry in `folder`: a missing, truncated,
    empty or foreign file is a `ValueError` that says to rebuild (FAISS's own message, which may quote the file's
    first bytes, is not passed on)."""
    faiss = _faiss()
    path = Path(folder) / info["file"]
    rebuild = "run the same `diffclip index` command again with --rebuild"
    if not path.is_file():
        raise ValueError(
            f"The index in {folder} is damaged: {info['file']} named by its manifest is missing; {rebuild}."
        )
    size = path.stat().st_size
    if size == 0 or ("bytes" in info and size != info["bytes"]):
        raise ValueError(
            f"The index in {folder} is damaged: {info['file']} holds {size} bytes, its manifest says "
            f"{info.get('bytes')} (truncated or replaced); {rebuild}."
        )
    try:
        index = faiss.read_index(str(path))
    except RuntimeError:
        raise ValueError(
            f"The index in {folder} is damaged: {info['file']} is not a readable FAISS index (truncated or "
            f"replaced); {rebuild}."
        ) from None
    if info.get("nprobe"):
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is None:
            raise ValueError(f"The index in {folder} is damaged: {info['file']} is not the index its manifest names.")
        ivf.nprobe = int(info["nprobe"])
    return index


def faiss_ids(index) -> np.ndarray | None:
    """The ids stored in a FAISS index (an `IDMap` or an inverted file), or `None` for another kind."""
    faiss = _faiss()
    if isinstance(index, faiss.IndexIDMap):
        return faiss.vector_to_array(index.id_map)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return None
    lists = ivf.invlists
    parts = [
        faiss.rev_swig_ptr(lists.get_ids(number), lists.list_size(number)).copy()
        for number in range(ivf.nlist)
        if lists.list_size(number)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)


@dataclass
class SearchHit:
    """One result: the image's `id`, its `path` (file, URL or `SHARD#KEY`) and the cosine similarity `score`."""

    id: int
    path: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "score": self.score}


class SearchIndex:
    """An index folder opened for search: `manifest`, the FAISS `index`, and each id's path.

    Opening refuses, with a message that says what to do: a folder without an index, an index whose build has not
    yet committed a search index (`diffclip index` was interrupted before its first commit: run it again), and an
    index file that does not hold the vectors the manifest says it holds.
    """

    def __init__(self, folder: str | os.PathLike, embedding: str = "image"):
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"No index at {folder}: build one first with `diffclip index --model M --data SOURCE --output "
                f"{folder}`."
            )
        manifest = read_manifest(folder)
        if manifest is None:
            raise FileNotFoundError(
                f"No index at {folder} (no manifest.json): build one first with `diffclip index --model M --data "
                f"SOURCE --output {folder}`."
            )
        if embedding not in EMBEDDING_KINDS or manifest.get("embedding") != embedding:
            raise ValueError(
                f"The index in {folder} holds {manifest.get('embedding')!r} embeddings, not {embedding!r} embeddings."
            )
        info = manifest.get("index")
        if not info:
            raise ValueError(
                f"The index in {folder} has no search index yet: its build was interrupted before the first commit. "
                f"Run the same `diffclip index` command again to finish it (embeddings already written are kept)."
            )
        self.folder = folder
        self.manifest = manifest
        self.index = read_faiss_index(folder, info)
        if self.index.ntotal != manifest["count"] or self.index.d != manifest["dim"]:
            raise ValueError(
                f"The index in {folder} is damaged: {info['file']} holds {self.index.ntotal} vectors of dimension "
                f"{self.index.d}, its manifest says {manifest['count']} of dimension {manifest['dim']}."
            )
        rows = read_shards(folder, manifest["shards"], columns=("id", "path"))
        if len(rows.ids) != manifest["count"]:
            raise ValueError(
                f"The index in {folder} is damaged: its committed shards hold {len(rows.ids)} embeddings, the "
                f"manifest says {manifest['count']}."
            )
        stored = faiss_ids(self.index)
        if stored is not None and not np.array_equal(np.sort(stored), np.sort(rows.ids)):
            raise ValueError(
                f"The index in {folder} is damaged: {info['file']} holds other ids than its committed shards; run "
                "the same `diffclip index` command again with --rebuild."
            )
        self.paths = dict(zip(rows.ids.tolist(), rows.paths))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def __repr__(self) -> str:
        info = self.manifest["index"]
        return f"SearchIndex({str(self.folder)!r}, count={len(self)}, dim={self.dim}, factory={info['factory']!r})"

    def search(self, queries: np.ndarray, top_k: int = 10) -> list[list[SearchHit]]:
        """The `top_k` best hits of each query embedding (rows of `queries`; normalised here), best first."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}.")
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None]
        if queries.shape[1] != self.dim:
            raise ValueError(f"Queries have dimension {queries.shape[1]}, the index {self.dim}.")
        if not np.isfinite(queries).all():
            raise ValueError("A query embedding is not finite (NaN or infinity); the model is broken.")
        norms = np.linalg.norm(queries, axis=1, keepdims=True)
        queries = np.ascontiguousarray(queries / np.maximum(norms, 1e-12))
        scores, ids = self.index.search(queries, min(top_k, len(self)))
        unknown = sorted({int(i) for i in ids.reshape(-1) if i >= 0 and int(i) not in self.paths})
        if unknown:
            raise ValueError(
                f"The index in {self.folder} is damaged: it found id {unknown[0]}, which no committed shard holds; "
                "run the same `diffclip index` command again with --rebuild."
            )
        return [
            [SearchHit(int(i), self.paths[int(i)], float(s)) for s, i in zip(row_scores, row_ids) if i >= 0]
            for row_scores, row_ids in zip(scores, ids)
        ]


__all__ = [
    "DEFAULT_EXACT_BELOW",
    "SearchHit",
    "SearchIndex",
    "build_faiss_index",
    "choose_factory",
    "exact_top_k",
    "faiss_ids",
    "faiss_message",
    "new_faiss_index",
    "neighbour_recall",
]
