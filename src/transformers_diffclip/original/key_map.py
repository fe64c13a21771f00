# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The declarative key map: each original tensor name -> the [`DiffCLIPModel`] parameter name(s) and the transform
(copy, transpose, drop leading ones, split a fused QKV), and the conversion of a whole state dict by it."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .checkpoint import ORIGINAL_REPOS, ConversionError, _listing


def _copy(tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (tensor,)


def _transpose(tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The original projections are used as `x @ W`; a `nn.Linear` holds `Wᵀ`."""
    if tensor.dim() != 2:
        raise ConversionError(f"expected a matrix, got shape {tuple(tensor.shape)}")
    return (tensor.t().contiguous(),)


def _drop_leading_ones(tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """timm keeps `cls_token` as (1, 1, W) and `pos_embed` as (1, N, W); transformers as (W,) and (N, W)."""
    if tensor.dim() < 2 or tensor.shape[0] != 1:
        raise ConversionError(f"expected a leading batch dimension of 1, got shape {tuple(tensor.shape)}")
    tensor = tensor[0]
    while tensor.dim() > 1 and tensor.shape[0] == 1:
        tensor = tensor[0]
    return (tensor,)


def _split_qkv(tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """timm's fused `qkv` and `nn.MultiheadAttention`'s `in_proj_*` stack q, k and v (in that order) on dim 0."""
    if tensor.shape[0] % 3:
        raise ConversionError(f"a fused q/k/v tensor needs a first dimension divisible by 3, not {tensor.shape[0]}")
    return tuple(part.clone() for part in tensor.chunk(3, dim=0))  # own storage each: safetensors refuses shared


@dataclass(frozen=True)
class KeyRule:
    """One original tensor name (a template; `{layer}` is a layer index) and the model parameter(s) it fills."""

    original: str
    converted: tuple[str, ...]
    transform: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] = _copy
    # for rules of one attention type: the tower and "standard" or "differential" (the converted names overlap)
    tower: str | None = None
    attention: str | None = None

    def _regex(self, template: str) -> re.Pattern:
        return re.compile(re.escape(template).replace(re.escape("{layer}"), r"(?P<layer>\d+)") + r"\Z")

    def match_original(self, name: str) -> dict | None:
        match = self._regex(self.original).match(name)
        return match.groupdict() if match else None

    def match_converted(self, name: str) -> tuple[dict, int] | None:
        for index, template in enumerate(self.converted):
            match = self._regex(template).match(name)
            if match:
                return match.groupdict(), index
        return None

    def converted_names(self, groups: dict) -> tuple[str, ...]:
        return tuple(template.format(**groups) for template in self.converted)


def _rule(original: str, converted: str | tuple[str, ...], transform=_copy, tower=None, attention=None) -> KeyRule:
    return KeyRule(original, (converted,) if isinstance(converted, str) else converted, transform, tower, attention)


def _weight_and_bias(original: str, converted: str) -> list[KeyRule]:
    return [_rule(f"{original}.weight", f"{converted}.weight"), _rule(f"{original}.bias", f"{converted}.bias")]


def _split(original: str, converted_prefix: str, suffix: str, tower: str) -> KeyRule:
    names = tuple(f"{converted_prefix}{proj}_proj.{suffix}" for proj in ("q", "k", "v"))
    return _rule(original, names, _split_qkv, tower, "standard")


def _differential(original_prefix: str, converted_prefix: str, tower: str) -> list[KeyRule]:
    # nn.MultiheadAttention also names its output projection `out_proj`: that rule serves both attention types
    return [
        _rule(
            original_prefix + name,
            converted_prefix + name,
            tower=tower,
            attention=None if tower == "text" and name.startswith("out_proj") else "differential",
        )
        for name in _DIFFERENTIAL_ATTENTION
    ]


# Differential attention: same names in both towers and in the model (under `self_attn.`).
_DIFFERENTIAL_ATTENTION = ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2", "diff_norm.weight") + tuple(
    f"{proj}_proj.{kind}" for proj in ("q", "k", "v", "out") for kind in ("weight", "bias")
)

_VISION, _VISION_HF = "visual.blocks.{layer}.", "vision_model.encoder.layers.{layer}."
_TEXT, _TEXT_HF = "transformer.resblocks.{layer}.", "text_model.encoder.layers.{layer}."

KEY_MAP: tuple[KeyRule, ...] = (
    # text tower
    _rule("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
    _rule("positional_embedding", "text_model.embeddings.position_embedding.weight"),
    *_weight_and_bias(_TEXT + "ln_1", _TEXT_HF + "layer_norm1"),
    *_weight_and_bias(_TEXT + "ln_2", _TEXT_HF + "layer_norm2"),
    *_weight_and_bias(_TEXT + "mlp.c_fc", _TEXT_HF + "mlp.fc1"),
    *_weight_and_bias(_TEXT + "mlp.c_proj", _TEXT_HF + "mlp.fc2"),
    _split(_TEXT + "attn.in_proj_weight", _TEXT_HF + "self_attn.", "weight", "text"),  # nn.MultiheadAttention
    _split(_TEXT + "attn.in_proj_bias", _TEXT_HF + "self_attn.", "bias", "text"),
    *_differential(_TEXT + "attn.", _TEXT_HF + "self_attn.", "text"),
    *_weight_and_bias("ln_final", "text_model.final_layer_norm"),
    # vision tower (timm ViT layout)
    _rule("visual.cls_token", "vision_model.embeddings.class_embedding", _drop_leading_ones),
    _rule("visual.pos_embed", "vision_model.embeddings.position_embedding.weight", _drop_leading_ones),
    *_weight_and_bias("visual.patch_embed.proj", "vision_model.embeddings.patch_embedding"),
    *_weight_and_bias(_VISION + "norm1", _VISION_HF + "layer_norm1"),
    *_weight_and_bias(_VISION + "norm2", _VISION_HF + "layer_norm2"),
    *_weight_and_bias(_VISION + "mlp.fc1", _VISION_HF + "mlp.fc1"),
    *_weight_and_bias(_VISION + "mlp.fc2", _VISION_HF + "mlp.fc2"),
    _split(_VISION + "attn.qkv.weight", _VISION_HF + "self_attn.", "weight", "vision"),  # timm Attention (CLIP)
    _split(_VISION + "attn.qkv.bias", _VISION_HF + "self_attn.", "bias", "vision"),
    *(
        _rule(
            f"{_VISION}attn.proj.{kind}",
            f"{_VISION_HF}self_attn.out_proj.{kind}",
            tower="vision",
            attention="standard",
        )
        for kind in ("weight", "bias")
    ),
    *_differential(_VISION + "attn.", _VISION_HF + "self_attn.", "vision"),
    *_weight_and_bias("visual.norm", "vision_model.post_layernorm"),
    # joint space
    _rule("image_projection", "visual_projection.weight", _transpose),
    _rule("text_projection", "text_projection.weight", _transpose),
    _rule("logit_scale", "logit_scale"),
)


def find_rule(original_name: str) -> tuple[KeyRule, dict] | None:
    """The rule for an original tensor name and its `{layer}` value, or None."""
    matches = [(rule, groups) for rule in KEY_MAP if (groups := rule.match_original(original_name)) is not None]
    if len(matches) > 1:  # a bug in KEY_MAP, not in the checkpoint
        raise AssertionError(f"{original_name} matches several key rules: {[rule.original for rule, _ in matches]}")
    return matches[0] if matches else None


def original_name_of(converted_name: str, differential: Mapping[str, bool] | None = None) -> str:
    """The original tensor a model parameter comes from (with the part of a fused q/k/v it takes), for messages.
    `differential` (tower → bool) picks between the standard and the differential attention layouts."""
    for rule in KEY_MAP:
        if rule.attention and differential is not None and rule.tower in differential:
            if (rule.attention == "differential") != differential[rule.tower]:
                continue
        found = rule.match_converted(converted_name)
        if found is not None:
            groups, index = found
            name = rule.original.format(**groups)
            return f"{name} ({'qkv'[index]} part)" if len(rule.converted) == 3 else name
    return converted_name


def layout_error(
    missing=(), unexpected=(), mismatched=(), header: str = "The checkpoint does not match the DiffCLIP/CLIP layout"
) -> ConversionError:
    lines = [f"{header}:"]
    if missing:
        lines.append(f"  missing original tensors ({len(missing)}): {_listing(missing)}")
    if unexpected:
        lines.append(f"  unexpected original tensors ({len(unexpected)}): {_listing(unexpected)}")
    if mismatched:
        lines.append(f"  shape mismatches ({len(mismatched)}): {_listing(mismatched)}")
    lines.append(
        f"Is the file truncated, from another model, or edited? The released files are {', '.join(ORIGINAL_REPOS)}."
    )
    return ConversionError("\n".join(lines))


def convert_state_dict(
    original: Mapping[str, torch.Tensor],
    expected_shapes: Mapping[str, tuple[int, ...]],
    differential: Mapping[str, bool] | None = None,
) -> dict[str, torch.Tensor]:
    """Map an original state dict (without the `module.` prefix) onto model parameter names, strictly: every
    original tensor is used exactly once, every expected parameter is filled once with the expected shape.
    Otherwise a [`ConversionError`] lists every missing, unexpected and mis-shaped tensor by its original name
    (`differential`, tower → bool, names missing attention tensors in the right layout)."""
    converted: dict[str, torch.Tensor] = {}
    unexpected, mismatched, mismatched_names = [], [], set()
    for name, tensor in original.items():
        found = find_rule(name)
        targets = found[0].converted_names(found[1]) if found else ()
        if not targets or any(target not in expected_shapes for target in targets):
            unexpected.append(f"{name} {tuple(tensor.shape)}")
            continue
        try:
            values = found[0].transform(tensor)
            problem = next(
                (
                    f"gives {target} {tuple(value.shape)}, the model expects {tuple(expected_shapes[target])}"
                    for target, value in zip(targets, values)
                    if tuple(value.shape) != tuple(expected_shapes[target])
                ),
                None,
            )
        except ConversionError as error:
            problem = str(error)
        if problem is not None:
            mismatched.append(f"{name} {tuple(tensor.shape)}: {problem}")
            mismatched_names.add(name)
            continue
        for target, value in zip(targets, values):
            if target in converted:  # only possible with a broken KEY_MAP
                raise AssertionError(f"{target} is filled twice")
            converted[target] = value
    missing = [original_name_of(n, differential) for n in expected_shapes if n not in converted]
    # a mis-shaped tensor is reported once, as a mismatch
    missing = [n for n in dict.fromkeys(missing) if n.split(" ", 1)[0] not in mismatched_names]
    if missing or unexpected or mismatched:
        raise layout_error(missing, unexpected, mismatched)
    return converted
