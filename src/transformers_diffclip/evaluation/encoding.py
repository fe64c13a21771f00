# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Embeddings of texts and images from any CLIP-like dual encoder (`get_text_features`, `get_image_features`):
DiffCLIP, transformers' CLIP and SigLIP."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.loading import model_device_dtype


# Models whose text tower pools the last position and was trained on texts padded to a fixed length: their texts
# are padded to `max_position_embeddings` (as transformers' zero-shot pipeline does for SigLIP).
FIXED_LENGTH_TEXT_MODELS = ("siglip", "siglip2")


def progress_bar(iterable: Iterable, enabled: bool, **kwargs) -> Iterable:
    return tqdm(iterable, disable=not enabled, file=sys.stderr, dynamic_ncols=True, **kwargs)


def embedding_tensor(output: Any) -> torch.Tensor:
    """The projected embedding from `get_text_features` / `get_image_features`: a tensor on transformers 4.x, the
    `pooler_output` of a `BaseModelOutputWithPooling` on transformers 5."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise TypeError(
            f"Expected an embedding tensor or an output with `pooler_output`, got {type(output).__name__}."
        )
    return pooled


def logit_scale_of(model: torch.nn.Module) -> float:
    """The model's stored (log) logit scale."""
    scale = getattr(model, "logit_scale", None)
    if scale is None:
        raise ValueError(f"{type(model).__name__} has no `logit_scale`; zero-shot needs a CLIP-like dual encoder.")
    return float(torch.as_tensor(scale).detach().float().cpu())


def _text_length(model: torch.nn.Module, tokenizer) -> tuple[int, bool]:
    """The longest text the model takes, and whether every text must be padded to it."""
    text_config = getattr(model.config, "text_config", model.config)
    limits = [getattr(text_config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [int(limit) for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000]
    length = min(limits) if limits else 77
    return length, getattr(model.config, "model_type", None) in FIXED_LENGTH_TEXT_MODELS


@torch.inference_mode()
def encode_texts(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 256,
    progress: bool = False,
    description: str = "texts",
) -> torch.Tensor:
    """L2-normalised float32 text embeddings (on the CPU), one row per text, in the order given.

    Texts are tokenized once, sorted by length and batched, so that a batch pads to the length of its own texts
    only (right padding, which the causal text tower ignores). SigLIP-style models, trained on texts padded to a
    fixed length and pooling the last position, get every text padded to that length and no attention mask.
    """
    if not texts:
        raise ValueError("There are no texts to encode.")
    if tokenizer is None:
        raise ValueError("Encoding texts needs a tokenizer; the processor has none (an image processor alone?).")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    device, _ = model_device_dtype(model)
    max_length, fixed_length = _text_length(model, tokenizer)
    token_ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    embeddings = None
    batches = range(0, len(order), batch_size)
    for start in progress_bar(batches, progress, desc=f"Encoding {description}", unit="batch"):
        rows = order[start : start + batch_size]
        width = max_length if fixed_length else max(len(token_ids[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, index in enumerate(rows):
            ids = token_ids[index]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        inputs = {"input_ids": input_ids.to(device)}
        if not fixed_length:
            inputs["attention_mask"] = attention_mask.to(device)
        features = embedding_tensor(model.get_text_features(**inputs))
        features = F.normalize(features.float(), dim=-1).cpu()
        if embeddings is None:
            embeddings = torch.empty(len(texts), features.shape[-1], dtype=torch.float32)
        embeddings[torch.tensor(rows)] = features
    return embeddings


@torch.inference_mode()
def encode_pixel_values(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """L2-normalised float32 image embeddings of one preprocessed batch (on the model's device)."""
    device, dtype = model_device_dtype(model)
    features = embedding_tensor(model.get_image_features(pixel_values=pixel_values.to(device=device, dtype=dtype)))
    return F.normalize(features.float(), dim=-1)


__all__ = [
    "encode_pixel_values",
    "encode_texts",
    "embedding_tensor",
    "logit_scale_of",
    "progress_bar",
]
