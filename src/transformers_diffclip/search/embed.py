# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Image and text embeddings for search: batches of indexed images (a bad image is skipped and reported, not fatal),
query embeddings, and the probe embeddings (of a fixed image and a fixed text) that identify a model in an index's
manifest."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ..core.loading import image_processor_of, tokenizer_of
from ..evaluation import encode_pixel_values, encode_texts
from .sources import open_item


PROBE_TEXT = "a photo of a red car next to a dog on a beach"


def fingerprint_image() -> Image.Image:
    """A fixed 64×64 RGB test pattern (smooth gradients and a square): its embedding tells models apart."""
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    red, green = x * 4, y * 4
    blue = np.where((16 <= x) & (x < 40) & (20 <= y) & (y < 44), 230.0, 40.0)
    return Image.fromarray(np.stack([red, green, blue], axis=-1).clip(0, 255).astype(np.uint8), mode="RGB")


def pixel_values_of(processor, image: Image.Image) -> torch.Tensor:
    return image_processor_of(processor)(images=image, return_tensors="pt")["pixel_values"]


def embed_images(model, processor, images: Sequence[Image.Image]) -> np.ndarray:
    """Unit-norm float32 embeddings of PIL images, one row each."""
    pixel_values = torch.cat([pixel_values_of(processor, image.convert("RGB")) for image in images])
    return encode_pixel_values(model, pixel_values).cpu().numpy()


def probe_embedding(model, processor) -> np.ndarray:
    return embed_images(model, processor, [fingerprint_image()])[0]


def probe_embeddings(model, processor) -> tuple[np.ndarray, np.ndarray]:
    """The embeddings of the probe image and of [`PROBE_TEXT`]: together they tell models apart by both towers."""
    return probe_embedding(model, processor), embed_text(model, processor, [PROBE_TEXT])[0]


def embed_text(model, processor, texts: Sequence[str]) -> np.ndarray:
    """Unit-norm float32 text embeddings (the texts as given, no prompt template)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("The text query is empty.")
    return encode_texts(model, tokenizer_of(processor), texts).numpy()


class _Items(torch.utils.data.Dataset):
    def __init__(self, items: Sequence[str], image_processor):
        self.items = list(items)
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int):
        try:
            image = open_item(self.items[position])
            pixel_values = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
            return position, pixel_values, ""
        except (OSError, ValueError) as error:  # missing files, undecodable images, unreachable URLs
            return position, None, str(error)


def _collate(batch):
    good = [(position, pixels) for position, pixels, _ in batch if pixels is not None]
    failed = [(position, problem) for position, pixels, problem in batch if pixels is None]
    positions = [position for position, _ in good]
    pixel_values = torch.stack([pixels for _, pixels in good]) if good else None
    return positions, pixel_values, failed


def embed_items(
    model, processor, items: Sequence[str], batch_size: int = 64, num_workers: int = 0
) -> Iterator[tuple[list[int], np.ndarray, list[tuple[int, str]]]]:
    """Yield `(positions, embeddings, failed)` per batch of `items`: the positions (into `items`) of the images
    embedded, their unit-norm float32 embeddings, and `(position, problem)` of those that could not be read."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    loader = torch.utils.data.DataLoader(
        _Items(items, image_processor_of(processor)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    for positions, pixel_values, failed in loader:
        embeddings = encode_pixel_values(model, pixel_values).cpu().numpy() if positions else np.empty((0, 0))
        yield positions, embeddings, failed


__all__ = [
    "PROBE_TEXT",
    "embed_images",
    "embed_items",
    "embed_text",
    "fingerprint_image",
    "probe_embedding",
    "probe_embeddings",
]
