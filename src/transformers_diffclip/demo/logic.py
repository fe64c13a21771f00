# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""What the demo page computes, apart from Gradio: the models it shares between its tabs, the checks of what a
visitor typed (each failure a `ValueError` whose message the page shows), zero-shot probabilities of a model pair,
the attention figure, and search results. The same functions `diffclip zero-shot`, `diffclip attention-map` and
`diffclip search` use underneath, so the page shows what the commands print."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..core.files import json_text
from ..core.images import ImageError, is_url, open_image
from ..core.loading import image_processor_of, load_model_and_processor
from ..evaluation import ZeroShotClassifier, duplicate_labels, encode_pixel_values, parse_label_list
from ..interpret import (
    RelevanceMap,
    class_token_attention,
    image_attention_map,
    preprocess_image,
    render_attention_grid,
    text_relevance_maps,
    to_image_map,
    vision_attentions,
)


# The released pairs (DiffCLIP and the CLIP baseline trained on the same data), the first the default.
RELEASED_PAIRS = {
    "CC12M": ("hammh0a/DiffCLIP_ViTB16_CC12M", "hammh0a/ViTB16_CC12M"),
    "CC3M": ("hammh0a/DiffCLIP_ViTB16_CC3M", "hammh0a/ViTB16_CC3M"),
}
MAX_LABELS = 100
MAX_TOP_K = 100


def model_key(name: str | os.PathLike) -> str:
    """One name per model: a local folder by its absolute path, anything else as given."""
    name = os.fspath(name)
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def model_display_name(name: str) -> str:
    return Path(name).name if os.path.isdir(name) else name


class ModelCache:
    """Models loaded once, on first use, and shared by every tab (and the search index, when it was built with
    one of them). Loading goes through the package's one loader (no code from a model folder runs unless
    `trust_remote_code`); a released original checkpoint is converted on first use, as by the commands."""

    def __init__(self, device: str | None = None, trust_remote_code: bool = False, loader: Callable | None = None):
        self.device = device
        self.trust_remote_code = trust_remote_code
        self._loader = loader or load_model_and_processor
        self._models: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def __contains__(self, name: str) -> bool:
        return model_key(name) in self._models

    def get(self, name: str) -> tuple[Any, Any]:
        key = model_key(name)
        with self._lock:
            if key not in self._models:
                self._models[key] = self._loader(key, self.device, trust_remote_code=self.trust_remote_code)
            return self._models[key]

    def put(self, name: str, model, processor) -> None:
        self._models[model_key(name)] = (model, processor)


@dataclass
class ModelPair:
    """The two models of a comparison: DiffCLIP and its CLIP baseline, with the names the page shows."""

    diffclip: str
    clip: str
    diffclip_label: str = "DiffCLIP"
    clip_label: str = "CLIP"

    def members(self) -> list[tuple[str, str]]:
        return [(self.diffclip_label, self.diffclip), (self.clip_label, self.clip)]


def model_pairs(model: str | None = None, baseline: str | None = None) -> dict[str, ModelPair]:
    """The pairs the page offers, the first its default: `model`/`baseline` when given (a missing baseline is the
    released CC12M CLIP), then the released CC12M and CC3M pairs."""
    pairs = {}
    if model is not None or baseline is not None:
        given = ModelPair(model or RELEASED_PAIRS["CC12M"][0], baseline or RELEASED_PAIRS["CC12M"][1])
        given.diffclip_label = f"DiffCLIP ({model_display_name(given.diffclip)})"
        given.clip_label = f"CLIP ({model_display_name(given.clip)})"
        pairs["given"] = given
    for name, (diffclip, clip) in RELEASED_PAIRS.items():
        pairs[name] = ModelPair(diffclip, clip, f"DiffCLIP {name}", f"CLIP {name}")
    return pairs


# --------------------------------------------------------------------------------------------------
# Checks of what the visitor gave
# --------------------------------------------------------------------------------------------------


def read_upload(upload: Any) -> Image.Image:
    """An uploaded image (the file Gradio stored, raw bytes, or a PIL image) opened by the commands' one image opener,
    with the same limits (pixels and aspect ratio read from the header before decoding); a clear `ValueError` for a
    file that is no image, an empty file or a decompression bomb, naming the file by its own name only."""
    try:
        return open_image(upload)
    except (OSError, ValueError) as error:
        message = str(error)
        if isinstance(upload, (str, os.PathLike)):  # not the server's upload folder: the file's name
            message = message.replace(str(upload), Path(upload).name)
        if isinstance(error, ImageError):
            message = message.removeprefix("Cannot read image ")
        raise ValueError(f"The uploaded file cannot be used as an image: {message}") from None


def pick_image(upload: Any, url: str | None, allow_private_urls: bool = False) -> Image.Image:
    """The uploaded image (see [`read_upload`]), else the image at `url`; a clear `ValueError` when there is neither
    or it fails. URLs that lead to local, private or reserved addresses are refused unless `allow_private_urls`
    (or `DIFFCLIP_ALLOW_PRIVATE_URLS=1`): a public page must not reach the machine it runs on."""
    if upload is not None:
        return read_upload(upload)
    url = (url or "").strip()
    if not url:
        raise ValueError("Give an image first: upload one, pick an example, or paste an image URL.")
    if not is_url(url):
        raise ValueError(f"{url!r} is not an http(s) URL; upload the image instead.")
    try:
        return open_image(url, timeout=15, allow_private_urls=allow_private_urls)
    except (OSError, ValueError) as error:
        raise ValueError(f"Could not get an image from {url}: {error}") from error


def parse_labels(text: str | None) -> list[str]:
    """Comma-separated labels; empty and duplicate labels are refused (duplicates would tie on every image)."""
    labels = parse_label_list(text or "")
    duplicates = duplicate_labels(labels)
    if duplicates:
        raise ValueError(f"Each label once, please: {', '.join(repr(d) for d in duplicates)} appears more than once.")
    if len(labels) > MAX_LABELS:
        raise ValueError(f"At most {MAX_LABELS} labels, got {len(labels)}.")
    return labels


def whole_number(value: Any, name: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}.") from None
    if not number.is_integer():
        raise ValueError(f"{name} must be a whole number, got {value!r}.")
    return int(number)


# --------------------------------------------------------------------------------------------------
# Zero-shot
# --------------------------------------------------------------------------------------------------


def zero_shot_probabilities(model, processor, image: Image.Image, labels: Sequence[str]) -> list[float]:
    """The probability of each label (in the order given), as `diffclip zero-shot` computes it: the default
    prompt template, `softmax(exp(logit_scale) · cos(image, class))`."""
    classifier = ZeroShotClassifier.from_model(model, processor, list(labels))
    pixel_values = image_processor_of(processor)(images=image, return_tensors="pt")["pixel_values"]
    scores, order = classifier.predict(encode_pixel_values(model, pixel_values), top_k=len(labels))
    probabilities = [0.0] * len(labels)
    for score, index in zip(scores[0].tolist(), order[0].tolist()):
        probabilities[index] = score
    return probabilities


def zero_shot_table(cache: ModelCache, pair: ModelPair, image: Image.Image, labels: Sequence[str]) -> list[dict]:
    """One row per label and model: `{"label", "model", "probability"}`."""
    rows = []
    for label_name, name in pair.members():
        model, processor = cache.get(name)
        for label, probability in zip(labels, zero_shot_probabilities(model, processor, image, labels)):
            rows.append({"label": label, "model": label_name, "probability": probability})
    return rows


def probabilities_json(rows: Sequence[dict]) -> str:
    """`{model: {label: probability}}` as JSON (the page's copyable read-out)."""
    table: dict[str, dict[str, float]] = {}
    for row in rows:
        table.setdefault(row["model"], {})[row["label"]] = round(row["probability"], 8)
    return json_text(table, indent=1)


# --------------------------------------------------------------------------------------------------
# Where it looks
# --------------------------------------------------------------------------------------------------


def head_map(model, processor, image: Image.Image, layer: int, head: int) -> RelevanceMap:
    """The class token's attention in one layer and one head (for a differential layer, one differential head:
    the map `A1 − λ·A2` of one head pair), clamped at 0 as [`class_token_attention`] does."""
    pixel_values, crop = preprocess_image(processor, image)
    attentions = vision_attentions(model, pixel_values)
    if not -len(attentions) <= layer < len(attentions):
        raise ValueError(
            f"Layer {layer} does not exist: the model has {len(attentions)} layers (0 to {len(attentions) - 1})."
        )
    attention = attentions[layer]
    heads = attention.shape[1]
    if not 0 <= head < heads:
        raise ValueError(f"Head {head} does not exist: this model's layers have {heads} heads (0 to {heads - 1}).")
    scores = class_token_attention([attention[:, head : head + 1]], 0)
    patch_map, image_map = to_image_map(scores[0], *pixel_values.shape[-2:])
    index = layer % len(attentions)
    return RelevanceMap(patch_map, image_map, crop, f"class token (layer {index}, head {head})")


def attention_figure(
    cache: ModelCache,
    pair: ModelPair,
    image: Image.Image,
    method: str = "layer",
    layer: int = -1,
    head: int | None = None,
    query: str = "",
    start_layer: int = 0,
    cell_size: int = 224,
) -> Image.Image:
    """Both models' maps in one figure (one row per model): the class-token map (one layer — all heads or one —
    or the rollout over layers) and, with a query, the text-conditioned map, as `diffclip attention-map` draws."""
    if method not in ("layer", "rollout"):
        raise ValueError(f"Unknown method {method!r}.")
    if head is not None and method == "rollout":
        raise ValueError("A single head can be shown for one layer only; choose 'one layer' or all heads.")
    query = (query or "").strip()
    rows = []
    for label_name, name in pair.members():
        model, processor = cache.get(name)
        try:
            if head is None:
                maps = [image_attention_map(model, processor, image, method=method, layer=layer)]
            else:
                maps = [head_map(model, processor, image, layer, head)]
            if query:
                maps.extend(text_relevance_maps(model, processor, image, [query], start_layer=start_layer))
        except ValueError as error:
            raise ValueError(f"{label_name}: {error}") from error
        rows.append((label_name, maps))
    return render_attention_grid(rows, cell_size=cell_size)


# --------------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------------


class SearchTab:
    """The search index of the page (optional) and the searcher over it, made on first use with the model from
    the cache when the index was built with one of the page's models."""

    def __init__(self, cache: ModelCache, index: str | os.PathLike | None):
        self.cache = cache
        self.folder = index
        self._searcher = None
        self._lock = threading.Lock()

    def searcher(self):
        if self.folder is None:
            raise ValueError(
                "No search index: start the demo with --index INDEX_DIR (build one with `diffclip index --model M "
                "--data SOURCE --output INDEX_DIR`)."
            )
        with self._lock:
            if self._searcher is None:
                from ..search import Searcher, SearchIndex

                index = SearchIndex(self.folder)
                name = index.manifest["model"]
                self._searcher = Searcher(index, name, loaded=self.cache.get(name))
            return self._searcher

    def search(self, text: str | None, image: Image.Image | None, top_k: int) -> list:
        text = (text or "").strip()
        if not text and image is None:
            raise ValueError("Type a text query or upload a query image.")
        if text and image is not None:
            raise ValueError("Give a text query or a query image, not both (clear one of them).")
        if not 1 <= top_k <= MAX_TOP_K:
            raise ValueError(f"Top-k must be between 1 and {MAX_TOP_K}, got {top_k}.")
        if image is not None:
            image = read_upload(image)  # before the index and its model load
        searcher = self.searcher()
        return searcher.search_text(text, top_k) if text else searcher.search_image(image, top_k)


def thumbnail(path: str, size: int = 256) -> Image.Image:
    """A result's image for the grid; a placeholder that says so when it can no longer be read."""
    from ..search import open_item

    try:
        image = open_item(path)
    except (OSError, ValueError):
        return Image.new("RGB", (size, size), (200, 200, 200))
    image.thumbnail((size, size))
    return image


__all__ = [
    "MAX_LABELS",
    "RELEASED_PAIRS",
    "ModelCache",
    "ModelPair",
    "SearchTab",
    "attention_figure",
    "head_map",
    "model_pairs",
    "parse_labels",
    "pick_image",
    "probabilities_json",
    "read_upload",
    "thumbnail",
    "whole_number",
    "zero_shot_probabilities",
    "zero_shot_table",
]
