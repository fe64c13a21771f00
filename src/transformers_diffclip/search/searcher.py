# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""[`Searcher`]: an index folder and the model it was built with, answering text and image queries."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..core.images import open_image
from ..core.loading import load_model_and_processor
from ..export import check_same_backend
from .embed import embed_images, embed_text, probe_embeddings
from .index import SearchHit, SearchIndex
from .store import check_compatible


class Searcher:
    """Search an index folder by text or by image.

    Args:
        index: the index folder (or an opened [`SearchIndex`]).
        model: the model to embed queries with; by default the one named in the index's manifest. Any model is
            checked against the manifest's probe embeddings (an image and a text: both towers) and refused if it
            embeds either differently.
        loaded: an already loaded `(model, processor)` pair (e.g. the demo's); `model` then only names it.
    """

    def __init__(
        self,
        index: str | os.PathLike | SearchIndex,
        model: str | os.PathLike | None = None,
        *,
        revision: str | None = None,
        trust_remote_code: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "float32",
        loaded: tuple[Any, Any] | None = None,
    ):
        self.index = index if isinstance(index, SearchIndex) else SearchIndex(index)
        manifest = self.index.manifest
        name = os.fspath(model) if model is not None else manifest["model"]
        if loaded is None:
            if model is None and Path(name).is_absolute() and not Path(name).exists():
                raise FileNotFoundError(
                    f"The index in {self.index.folder} was built with the model folder {name}, which no longer "
                    "exists; pass --model with that model."
                )
            if revision is None and model is None:
                revision = manifest.get("revision")
            loaded = load_model_and_processor(
                name, device, dtype, revision=revision, trust_remote_code=trust_remote_code
            )
        self.model, self.processor = loaded
        if not check_compatible(manifest, name, "image", *probe_embeddings(*loaded), self.index.folder):
            print(
                f"warning: the index in {self.index.folder} was built before text probes were stored, so the text "
                f"tower of {name!r} cannot be checked against the index's model; run `diffclip index` with the "
                "index's model on it once to record it.",
                file=sys.stderr,
            )
        check_same_backend(manifest.get("backend"), self.model, f"The index in {self.index.folder}")

    def search_text(self, text: str, top_k: int = 10) -> list[SearchHit]:
        """The `top_k` images closest to the text (embedded as given, without a prompt template)."""
        return self.index.search(embed_text(self.model, self.processor, [text]), top_k)[0]

    def search_image(self, image: str | os.PathLike | Image.Image, top_k: int = 10) -> list[SearchHit]:
        """The `top_k` images closest to an image (a path, a URL or a PIL image)."""
        return self.index.search(embed_images(self.model, self.processor, [open_image(image)]), top_k)[0]

    def search_embedding(self, embedding: np.ndarray, top_k: int = 10) -> list[SearchHit]:
        return self.index.search(embedding, top_k)[0]


__all__ = ["Searcher"]
