# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Relevance from attention maps: pure tensor functions (class-token maps, attention rollout, Chefer et al.'s
gradient-weighted relevance) and the patch-grid geometry that turns per-patch scores into image maps. The reasons for
each rule (the sign of differential maps, the renormalisation) are in the package docstring."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def layer_index(layer: int, num_layers: int, name: str = "layer") -> int:
    if not -num_layers <= layer < num_layers:
        raise ValueError(f"{name} must be in [{-num_layers}, {num_layers - 1}] for {num_layers} layers, got {layer}.")
    return layer % num_layers


def class_token_attention(attentions: Sequence[torch.Tensor], layer: int = -1) -> torch.Tensor:
    """The class token's attention to every patch in one layer: `mean_heads(max(A, 0))[:, 0, 1:]`, shape
    `(batch, num_patches)`; each head's map is clamped at 0 before heads are averaged (see the module docstring)."""
    attention = attentions[layer_index(layer, len(attentions))]
    return attention.float().clamp(min=0).mean(dim=1)[:, 0, 1:]


def positive_mixing(attention: torch.Tensor) -> torch.Tensor:
    """`Â = P / P.sum(-1)` with `P = mean_heads(max(A, 0))`, shape `(batch, N, N)`; rows without positive mass become
    identity rows. For softmax maps this is the plain head average."""
    positive = attention.float().clamp(min=0).mean(dim=1)
    row_sums = positive.sum(dim=-1, keepdim=True)
    identity = torch.eye(positive.shape[-1], device=positive.device).expand_as(positive)
    empty = row_sums <= 0
    return torch.where(empty, identity, positive / torch.where(empty, torch.ones_like(row_sums), row_sums))


def attention_rollout(attentions: Sequence[torch.Tensor], start_layer: int = 0) -> torch.Tensor:
    """Attention rollout `(0.5·Â_L + 0.5·I) ⋯ (0.5·Â_s + 0.5·I)` over layers `start_layer … L`, shape
    `(batch, N, N)`, with `Â` from [`positive_mixing`]. Rows sum to 1; the class-token map is `[:, 0, 1:]`."""
    start = layer_index(start_layer, len(attentions), "start_layer")
    rollout = None
    for attention in attentions[start:]:
        mixing = positive_mixing(attention)
        mixing = 0.5 * mixing + 0.5 * torch.eye(mixing.shape[-1], device=mixing.device)
        rollout = mixing if rollout is None else mixing @ rollout
    return rollout


def gradient_weighted_relevance(
    attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor], start_layer: int = 0
) -> torch.Tensor:
    """Chefer et al.'s relevance of every patch for the class token, shape `(batch, num_patches)`: from `R = I`, for
    each layer from `start_layer`, `R ← R + mean_heads((∂s/∂A ⊙ A)⁺)·R`; returns `R[:, 0, 1:]` (non-negative)."""
    if len(attentions) != len(gradients):
        raise ValueError(f"Got {len(attentions)} attention maps but {len(gradients)} gradients.")
    start = layer_index(start_layer, len(attentions), "start_layer")
    batch, _, tokens, _ = attentions[0].shape
    relevance = torch.eye(tokens, device=attentions[0].device).expand(batch, tokens, tokens)
    for attention, gradient in zip(attentions[start:], gradients[start:]):
        weighted = (gradient.float() * attention.float()).clamp(min=0).mean(dim=1)
        relevance = relevance + weighted @ relevance
    return relevance[:, 0, 1:]


def patch_grid(num_patches: int, height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of the patch grid of an `height`×`width` input holding `num_patches` patches."""
    for rows in range(1, num_patches + 1):
        if num_patches % rows == 0 and rows * width == (num_patches // rows) * height:
            return rows, num_patches // rows
    raise ValueError(f"{num_patches} patches do not tile a {height}x{width} image.")


def to_image_map(patch_scores: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(num_patches,)` scores → `(grid_h, grid_w)` patch map and its bilinear upsampling to `(height, width)`."""
    rows, columns = patch_grid(patch_scores.shape[-1], height, width)
    patch_map = patch_scores.float().reshape(rows, columns)
    image_map = F.interpolate(patch_map[None, None], size=(height, width), mode="bilinear", align_corners=False)
    return patch_map.cpu(), image_map[0, 0].cpu()


__all__ = [
    "attention_rollout",
    "class_token_attention",
    "gradient_weighted_relevance",
    "layer_index",
    "patch_grid",
    "positive_mixing",
    "to_image_map",
]
