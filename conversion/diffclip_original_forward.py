# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""An independent forward pass of the ORIGINAL DiffCLIP / CLIP model, computed straight from an original state dict
(original tensor names, fused q/k/v where the original has them), for `convert_diffclip_original_to_hf.py --verify`.

It shares no code with `transformers_diffclip`: it is written from the description of the original model
(`shared/reference/ORIGINAL_MODEL.md`) with plain tensor operations, an explicit loop over (effective) heads and
float64 arithmetic, so that a mistake in the key map or in the port's modules shows up as a difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch


def depth_lambda_init(layer: int) -> float:
    """λ_init of the Differential Transformer's depth schedule (DiffCLIP*), `layer` counted from 0."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer)


def _get(state_dict: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    return state_dict[name].to(torch.float64)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.einsum("...i,oi->...o", x, weight) + bias


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    centered = x - x.mean(dim=-1, keepdim=True)
    variance = (centered * centered).mean(dim=-1, keepdim=True)
    return centered / torch.sqrt(variance + eps) * weight + bias


def _softmax_attention(q: torch.Tensor, k: torch.Tensor, causal: bool) -> torch.Tensor:
    """softmax(q·kᵀ/√d) of one head, (batch, n, d) → (batch, n, n); -inf above the diagonal when causal."""
    scores = torch.einsum("bnd,bmd->bnm", q, k) / math.sqrt(q.shape[-1])
    if causal:
        n = scores.shape[-1]
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1)


def _standard_attention(x, sd, qkv_weight, qkv_bias, out_weight, out_bias, heads: int, causal: bool):
    width = x.shape[-1]
    d = width // heads
    qkv = _linear(x, _get(sd, qkv_weight), _get(sd, qkv_bias))
    q, k, v = qkv[..., :width], qkv[..., width : 2 * width], qkv[..., 2 * width :]
    outputs = []
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        outputs.append(_softmax_attention(q[..., cols], k[..., cols], causal) @ v[..., cols])
    return _linear(torch.cat(outputs, dim=-1), _get(sd, out_weight), _get(sd, out_bias))


def _differential_attention(x, sd, prefix: str, heads: int, lambda_init: float, causal: bool, rms_eps: float):
    """Heads 2i and 2i+1 form effective head i; its value head is 2d wide."""
    d = x.shape[-1] // heads
    q = _linear(x, _get(sd, prefix + "q_proj.weight"), _get(sd, prefix + "q_proj.bias"))
    k = _linear(x, _get(sd, prefix + "k_proj.weight"), _get(sd, prefix + "k_proj.bias"))
    v = _linear(x, _get(sd, prefix + "v_proj.weight"), _get(sd, prefix + "v_proj.bias"))
    lam = (
        torch.exp((_get(sd, prefix + "lambda_q1") * _get(sd, prefix + "lambda_k1")).sum())
        - torch.exp((_get(sd, prefix + "lambda_q2") * _get(sd, prefix + "lambda_k2")).sum())
        + lambda_init
    )
    norm_weight = _get(sd, prefix + "diff_norm.weight")
    outputs = []
    for i in range(heads // 2):
        first, second = slice(2 * i * d, (2 * i + 1) * d), slice((2 * i + 1) * d, (2 * i + 2) * d)
        maps = _softmax_attention(q[..., first], k[..., first], causal) - lam * _softmax_attention(
            q[..., second], k[..., second], causal
        )
        out = maps @ v[..., 2 * i * d : (2 * i + 2) * d]
        out = out / torch.sqrt((out * out).mean(dim=-1, keepdim=True) + rms_eps) * norm_weight
        outputs.append(out * (1 - lambda_init))
    return _linear(
        torch.cat(outputs, dim=-1), _get(sd, prefix + "out_proj.weight"), _get(sd, prefix + "out_proj.bias")
    )


def _num_layers(sd, prefix: str) -> int:
    count = 0
    while f"{prefix}{count}.attn.out_proj.weight" in sd or f"{prefix}{count}.attn.proj.weight" in sd:
        count += 1
    return count


def _lambda_inits(num_layers: int, schedule: str, constant: float) -> list[float]:
    return [depth_lambda_init(layer) if schedule == "depth" else constant for layer in range(num_layers)]


def encode_image(sd, pixel_values, *, heads, layer_norm_eps, lambda_init_schedule="constant", lambda_init=0.8):
    """Projected (not normalised) image embeddings of the original timm-style ViT."""
    x = torch.nn.functional.conv2d(
        pixel_values.to(torch.float64),
        _get(sd, "visual.patch_embed.proj.weight"),
        _get(sd, "visual.patch_embed.proj.bias") if "visual.patch_embed.proj.bias" in sd else None,
        stride=sd["visual.patch_embed.proj.weight"].shape[-1],
    )
    x = x.flatten(2).transpose(1, 2)
    cls = _get(sd, "visual.cls_token").reshape(1, 1, -1).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + _get(sd, "visual.pos_embed").reshape(1, x.shape[1] + 1, -1)
    num_layers = _num_layers(sd, "visual.blocks.")
    for layer, lambda_init_l in enumerate(_lambda_inits(num_layers, lambda_init_schedule, lambda_init)):
        p = f"visual.blocks.{layer}."
        h = _layer_norm(x, _get(sd, p + "norm1.weight"), _get(sd, p + "norm1.bias"), layer_norm_eps)
        if p + "attn.qkv.weight" in sd:
            names = (p + "attn.qkv.weight", p + "attn.qkv.bias", p + "attn.proj.weight", p + "attn.proj.bias")
            x = x + _standard_attention(h, sd, *names, heads=heads, causal=False)
        else:
            x = x + _differential_attention(h, sd, p + "attn.", heads, lambda_init_l, causal=False, rms_eps=1e-5)
        h = _layer_norm(x, _get(sd, p + "norm2.weight"), _get(sd, p + "norm2.bias"), layer_norm_eps)
        h = _linear(h, _get(sd, p + "mlp.fc1.weight"), _get(sd, p + "mlp.fc1.bias"))
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU
        x = x + _linear(h, _get(sd, p + "mlp.fc2.weight"), _get(sd, p + "mlp.fc2.bias"))
    x = _layer_norm(x, _get(sd, "visual.norm.weight"), _get(sd, "visual.norm.bias"), layer_norm_eps)
    return x[:, 0] @ _get(sd, "image_projection")


def encode_text(sd, input_ids, *, heads, layer_norm_eps=1e-5, lambda_init_schedule="constant", lambda_init=0.8):
    """Projected (not normalised) text embeddings; `input_ids` in the original form (zero padded, pooled at the
    largest id of each row)."""
    input_ids = torch.as_tensor(input_ids, dtype=torch.long)
    n = input_ids.shape[1]
    x = sd["token_embedding.weight"][input_ids].to(torch.float64) + _get(sd, "positional_embedding")[:n]
    num_layers = _num_layers(sd, "transformer.resblocks.")
    for layer, lambda_init_l in enumerate(_lambda_inits(num_layers, lambda_init_schedule, lambda_init)):
        p = f"transformer.resblocks.{layer}."
        h = _layer_norm(x, _get(sd, p + "ln_1.weight"), _get(sd, p + "ln_1.bias"), layer_norm_eps)
        if p + "attn.in_proj_weight" in sd:
            names = (p + "attn.in_proj_weight", p + "attn.in_proj_bias", p + "attn.out_proj.weight")
            x = x + _standard_attention(h, sd, *names, p + "attn.out_proj.bias", heads=heads, causal=True)
        else:
            x = x + _differential_attention(h, sd, p + "attn.", heads, lambda_init_l, causal=True, rms_eps=1e-5)
        h = _layer_norm(x, _get(sd, p + "ln_2.weight"), _get(sd, p + "ln_2.bias"), layer_norm_eps)
        h = _linear(h, _get(sd, p + "mlp.c_fc.weight"), _get(sd, p + "mlp.c_fc.bias"))
        h = h * torch.sigmoid(1.702 * h)  # QuickGELU
        x = x + _linear(h, _get(sd, p + "mlp.c_proj.weight"), _get(sd, p + "mlp.c_proj.bias"))
    x = _layer_norm(x, _get(sd, "ln_final.weight"), _get(sd, "ln_final.bias"), layer_norm_eps)
    pooled = x[torch.arange(x.shape[0]), input_ids.argmax(dim=-1)]
    return pooled @ _get(sd, "text_projection")


@torch.no_grad()
def original_forward(
    sd: Mapping[str, torch.Tensor],
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor,
    *,
    vision_heads: int,
    text_heads: int,
    vision_layer_norm_eps: float,
    lambda_init_schedule: str = "constant",
    lambda_init: float = 0.8,
) -> dict[str, torch.Tensor]:
    """`image_embeds`, `text_embeds` (projected, not normalised) and `logits_per_image` (images × texts,
    `exp(logit_scale) · cos`), in float64, from an original state dict without the `module.` prefix."""
    schedule = {"lambda_init_schedule": lambda_init_schedule, "lambda_init": lambda_init}
    image_embeds = encode_image(sd, pixel_values, heads=vision_heads, layer_norm_eps=vision_layer_norm_eps, **schedule)
    text_embeds = encode_text(sd, input_ids, heads=text_heads, **schedule)
    cosine = torch.nn.functional.normalize(image_embeds, dim=-1) @ torch.nn.functional.normalize(text_embeds, dim=-1).T
    return {
        "image_embeds": image_embeds,
        "text_embeds": text_embeds,
        "logits_per_image": _get(sd, "logit_scale").exp() * cosine,
    }
