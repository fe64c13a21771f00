# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Architecture detection: the [`DiffCLIPConfig`] arguments a converted state dict implies (depths, widths, heads,
which towers are differential, the λ_init schedule), from tensor names and shapes plus the flags they cannot
answer."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .checkpoint import ConversionError, _listing
from .key_map import layout_error


# timm's ViT and CLIP's text transformer both use 64-wide heads; standard attention does not reveal its head count.
DEFAULT_HEAD_DIM = 64
# The timm ViT of the CLIP baseline uses LayerNorm eps 1e-6; DiffCLIP's differential ViT uses torch's default 1e-5.
STANDARD_VISION_LAYER_NORM_EPS = 1e-6
DIFFERENTIAL_VISION_LAYER_NORM_EPS = 1e-5

# Tensors whose shapes size the model; a file without them is not a DiffCLIP/CLIP checkpoint of this release.
_ANCHORS = (
    "visual.cls_token",
    "visual.pos_embed",
    "visual.patch_embed.proj.weight",
    "token_embedding.weight",
    "positional_embedding",
    "image_projection",
    "text_projection",
    "logit_scale",
)


@dataclass(frozen=True)
class Architecture:
    """What the weights (plus the flags the weights cannot answer) say about the model."""

    differential_vision: bool
    differential_text: bool
    lambda_init_schedule: str
    config_kwargs: dict

    @property
    def variant(self) -> str:
        """The paper's name of this model: DiffCLIP, DiffCLIP* (depth-scheduled λ_init), DiffCLIP† (vision tower
        only) or CLIP (the standard-attention baseline)."""
        if not self.differential_vision and not self.differential_text:
            return "CLIP"
        name = "DiffCLIP" if self.differential_text else "DiffCLIP†"
        if not self.differential_vision:
            name = "DiffCLIP (text tower only; not a variant of the paper)"
        return name + ("*" if self.lambda_init_schedule == "depth" else "")


def _count_layers(names, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for name in names if (m := pattern.match(name))}
    return max(indices) + 1 if indices else 0


def _attention_kind(names: set[str], block: str, fused: str, tower: str) -> bool:
    """True for differential attention in `block`, False for standard attention with the fused q/k/v `fused`."""
    differential = any(f"{block}attn.{name}" in names for name in ("q_proj.weight", "lambda_q1", "diff_norm.weight"))
    standard = f"{block}attn.{fused}" in names
    if differential == standard:
        found = sorted(n for n in names if n.startswith(block + "attn."))
        raise ConversionError(
            f"Cannot tell the {tower} tower's attention: expected `{block}attn.q_proj.weight` (differential) or "
            f"`{block}attn.{fused}` (standard), found {_listing(found) or 'no attention tensors'}."
        )
    return differential


def _heads(names, shapes, block: str, width: int, differential: bool, requested: int | None, tower: str) -> int:
    if differential:
        lambda_name = block + "attn.lambda_q1"
        if lambda_name not in shapes:
            raise layout_error([lambda_name])
        head_dim = shapes[lambda_name][0]
        if head_dim == 0 or width % head_dim:
            raise ConversionError(f"{lambda_name} has {head_dim} entries, which does not divide the width {width}.")
        heads = width // head_dim
        if requested is not None and requested != heads:
            raise ConversionError(
                f"--{tower}-heads {requested} contradicts the weights: {lambda_name} has {head_dim} entries, so the "
                f"{tower} tower has {heads} heads of width {head_dim}."
            )
        return heads
    if requested is not None:
        if requested <= 0 or width % requested:
            raise ConversionError(f"--{tower}-heads {requested} does not divide the {tower} width {width}.")
        return requested
    if width % DEFAULT_HEAD_DIM:
        raise ConversionError(
            f"The {tower} tower uses standard attention, whose head count the weights do not reveal, and its width "
            f"{width} is not a multiple of {DEFAULT_HEAD_DIM}; pass --{tower}-heads."
        )
    return width // DEFAULT_HEAD_DIM


def detect_architecture(
    state_dict: Mapping[str, torch.Tensor],
    lambda_init_schedule: str = "constant",
    vision_heads: int | None = None,
    text_heads: int | None = None,
) -> Architecture:
    """Read the model's sizes and attention types from the tensor names and shapes.

    DiffCLIP† (standard text tower) and the CLIP baseline are told apart from DiffCLIP by their attention tensors.
    DiffCLIP* cannot be: its depth-scheduled λ_init is a constant of the code, not a weight, so it is selected by
    `lambda_init_schedule="depth"`. Standard attention hides its head count; it defaults to 64-wide heads (the
    released ViT-B/16 towers: 12 vision heads, 8 text heads) unless `vision_heads` / `text_heads` say otherwise.
    """
    names = set(state_dict)
    shapes = {name: tuple(tensor.shape) for name, tensor in state_dict.items()}
    missing_anchors = [name for name in _ANCHORS if name not in names]
    vision_layers = _count_layers(names, "visual.blocks.")
    text_layers = _count_layers(names, "transformer.resblocks.")
    if len(missing_anchors) > len(_ANCHORS) // 2 or not vision_layers or not text_layers:
        raise ConversionError(
            "This is not a DiffCLIP or CLIP checkpoint of the DiffCLIP release (a timm ViT `visual.*` plus a CLIP "
            f"text transformer `transformer.resblocks.*`): missing {_listing(missing_anchors) or 'layer stacks'}; "
            f"its tensors are named like {_listing(sorted(names), 8)}."
        )
    needed = [
        "visual.blocks.0.mlp.fc1.weight",
        "transformer.resblocks.0.mlp.c_fc.weight",
    ]
    missing = missing_anchors + [name for name in needed if name not in names]
    if missing:
        raise layout_error(missing, header="The checkpoint lacks tensors that size the model")
    if lambda_init_schedule not in ("constant", "depth"):
        raise ConversionError(f"lambda_init_schedule must be 'constant' or 'depth', got {lambda_init_schedule!r}.")

    vision_width = shapes["visual.cls_token"][-1]
    patch_shape = shapes["visual.patch_embed.proj.weight"]
    if len(patch_shape) != 4 or patch_shape[2] != patch_shape[3]:
        raise ConversionError(f"visual.patch_embed.proj.weight should be (W, C, P, P), got {patch_shape}.")
    patch_size = patch_shape[2]
    num_patches = shapes["visual.pos_embed"][-2] - 1
    grid = math.isqrt(max(num_patches, 0))
    if grid * grid != num_patches or grid == 0:
        raise ConversionError(
            f"visual.pos_embed has {num_patches + 1} positions, not a class token plus a square patch grid."
        )
    vocab_size, text_width = shapes["token_embedding.weight"]
    context_length = shapes["positional_embedding"][0]
    projection_dim = shapes["image_projection"][-1]
    for name, first in (("image_projection", vision_width), ("text_projection", text_width)):
        if len(shapes[name]) != 2 or shapes[name] != (first, projection_dim):
            raise ConversionError(
                f"{name} has shape {shapes[name]}; expected ({first}, {projection_dim}) (tower width × joint size)."
            )

    differential_vision = _attention_kind(names, "visual.blocks.0.", "qkv.weight", "vision")
    differential_text = _attention_kind(names, "transformer.resblocks.0.", "in_proj_weight", "text")
    if lambda_init_schedule == "depth" and not (differential_vision or differential_text):
        raise ConversionError(
            "--lambda-init-schedule depth selects DiffCLIP*, but this checkpoint has no differential attention "
            "(it is the CLIP baseline)."
        )
    schedule = {"lambda_init_schedule": lambda_init_schedule}
    vision_config = {
        "hidden_size": vision_width,
        "intermediate_size": shapes["visual.blocks.0.mlp.fc1.weight"][0],
        "num_hidden_layers": vision_layers,
        "num_attention_heads": _heads(
            names, shapes, "visual.blocks.0.", vision_width, differential_vision, vision_heads, "vision"
        ),
        "num_channels": patch_shape[1],
        "image_size": grid * patch_size,
        "patch_size": patch_size,
        "hidden_act": "gelu",
        "layer_norm_eps": DIFFERENTIAL_VISION_LAYER_NORM_EPS
        if differential_vision
        else STANDARD_VISION_LAYER_NORM_EPS,
        "patch_embedding_bias": "visual.patch_embed.proj.bias" in names,
        "use_pre_layernorm": False,
        "use_differential_attention": differential_vision,
        **schedule,
    }
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": text_width,
        "intermediate_size": shapes["transformer.resblocks.0.mlp.c_fc.weight"][0],
        "num_hidden_layers": text_layers,
        "num_attention_heads": _heads(
            names, shapes, "transformer.resblocks.0.", text_width, differential_text, text_heads, "text"
        ),
        "max_position_embeddings": context_length,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "use_differential_attention": differential_text,
        # the end-of-text token is the largest id of the CLIP vocabulary
        "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1,
        "bos_token_id": vocab_size - 2,
        **schedule,
    }
    return Architecture(
        differential_vision=differential_vision,
        differential_text=differential_text,
        lambda_init_schedule=lambda_init_schedule,
        config_kwargs={
            "text_config": text_config,
            "vision_config": vision_config,
            "projection_dim": projection_dim,
        },
    )
