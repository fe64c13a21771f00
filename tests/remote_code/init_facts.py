"""How the authors' code initialises a fresh model, per parameter, and a check of a model's statistics against it.

Written from /work/shared/reference/ORIGINAL_MODEL.md ("Initialisation of a fresh model"), not from the model code:
- text tower (OpenAI CLIP's `initialize_parameters`, width w, L layers): token embedding N(0, 0.02), positions
  N(0, 0.01); q/k/v N(0, w^-0.5), attention output N(0, w^-0.5·(2L)^-0.5), MLP in N(0, (2w)^-0.5), MLP out
  N(0, w^-0.5·(2L)^-0.5); MLP biases PyTorch's default U(±fan_in^-0.5); attention biases PyTorch's default with
  differential attention, zero with `nn.MultiheadAttention` (the baseline);
- vision tower (timm): position embedding trunc_normal(0.02), class token N(0, 1e-6), patch conv PyTorch's default;
  block Linears PyTorch's default with differential attention (the original rebuilds the blocks after timm's init),
  trunc_normal(0.02) with zero biases in the baseline's stock timm ViT;
- λ vectors N(0, 0.1); norms ones/zeros; text projection N(0, text width^-0.5), image projection
  N(0, vision width^-0.5); the logit scale ln(1/0.07).

Imports only torch, so both the normal suite and the remote-code suite use it.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

import torch


LOGIT_SCALE_INIT = math.log(1 / 0.07)


def stats_config_kwargs(diff_text: bool = True, diff_vision: bool = True) -> dict:
    """`DiffCLIPConfig` keyword arguments large enough for statistics (16k values per attention matrix) and small
    enough for a fast test."""
    text = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, vocab_size=1000,
                eos_token_id=999, bos_token_id=998, pad_token_id=999,
                use_differential_attention=diff_text)  # fmt: skip
    vision = dict(hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4, image_size=32,
                  patch_size=8, use_differential_attention=diff_vision)  # fmt: skip
    return dict(text_config=text, vision_config=vision, projection_dim=64)


def expected_init(name: str, text_config, vision_config) -> tuple:
    """(kind, scale) for parameter `name` of a DiffCLIP model: ("normal", std), ("uniform", bound),
    ("trunc_normal", std), ("zeros",), ("ones",) or ("constant", value). The
    tower models name their parameters as the dual encoder does (`text_model.…`, `vision_model.…`)."""
    if name == "logit_scale":
        return ("constant", LOGIT_SCALE_INIT)
    if name == "text_projection.weight":
        return ("normal", text_config.hidden_size**-0.5)
    if name == "visual_projection.weight":
        return ("normal", vision_config.hidden_size**-0.5)
    if re.search(r"(layer_norm\d|final_layer_norm|post_layernorm|pre_layernorm|diff_norm)\.weight$", name):
        return ("ones",)
    if re.search(r"(layer_norm\d|final_layer_norm|post_layernorm|pre_layernorm)\.bias$", name):
        return ("zeros",)
    if re.search(r"self_attn\.lambda_[qk][12]$", name):
        return ("normal", 0.1)
    if name.startswith("text_model."):
        return _text(name.removeprefix("text_model."), text_config)
    if name.startswith("vision_model."):
        return _vision(name.removeprefix("vision_model."), vision_config)
    raise KeyError(f"no initialisation fact for {name}")


def _text(name: str, config) -> tuple:
    w, depth, diff = config.hidden_size, config.num_hidden_layers, config.use_differential_attention
    proj_std = w**-0.5 * (2 * depth) ** -0.5
    if name == "embeddings.token_embedding.weight":
        return ("normal", 0.02)
    if name == "embeddings.position_embedding.weight":
        return ("normal", 0.01)
    layer = re.fullmatch(r"encoder\.layers\.\d+\.(self_attn|mlp)\.(\w+)\.(weight|bias)", name)
    if layer is None:
        raise KeyError(f"no initialisation fact for text_model.{name}")
    block, linear, kind = layer.groups()
    if kind == "weight":
        std = {"q_proj": w**-0.5, "k_proj": w**-0.5, "v_proj": w**-0.5, "out_proj": proj_std}.get(linear)
        std = std if block == "self_attn" else {"fc1": (2 * w) ** -0.5, "fc2": proj_std}[linear]
        return ("normal", std)
    if block == "self_attn":
        return ("uniform", w**-0.5) if diff else ("zeros",)
    fan_in = w if linear == "fc1" else config.intermediate_size
    return ("uniform", fan_in**-0.5)


def _vision(name: str, config) -> tuple:
    w, diff = config.hidden_size, config.use_differential_attention
    if name == "embeddings.class_embedding":
        return ("normal", 1e-6)
    if name == "embeddings.position_embedding.weight":
        return ("trunc_normal", 0.02)
    if name.startswith("embeddings.patch_embedding."):
        return ("uniform", (config.num_channels * config.patch_size**2) ** -0.5)
    layer = re.fullmatch(r"encoder\.layers\.\d+\.(self_attn|mlp)\.(\w+)\.(weight|bias)", name)
    if layer is None:
        raise KeyError(f"no initialisation fact for vision_model.{name}")
    _, linear, kind = layer.groups()
    if not diff:
        return ("trunc_normal", 0.02) if kind == "weight" else ("zeros",)
    fan_in = config.intermediate_size if linear == "fc2" else w
    return ("uniform", fan_in**-0.5)


def statistics_problems(model: torch.nn.Module, text_config, vision_config, names=None) -> list[str]:
    """Every parameter group (same fact) whose values do not follow the fact: exact values for zeros/ones/constants;
    for random draws the pooled standard deviation within max(5 %, 4 standard errors) of the fact's, the mean within 5
    standard errors of 0,
    uniform draws inside their bound and reaching 90 % of it, truncated normals inside ±2 (timm's absolute cut)."""
    groups: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    problems = []
    for name, parameter in model.named_parameters():
        if names is not None and name not in names:
            continue
        value = parameter.detach().double().reshape(-1)
        if not bool(torch.isfinite(value).all()):
            problems.append(f"{name}: non-finite values")
            continue
        groups[expected_init(name, text_config, vision_config)].append(value)
    for fact, tensors in groups.items():
        values = torch.cat(tensors)
        kind = fact[0]
        if kind in ("zeros", "ones", "constant"):
            target = {"zeros": 0.0, "ones": 1.0}.get(kind, fact[-1])
            if not torch.allclose(values, torch.full_like(values, target), rtol=0, atol=1e-6):
                problems.append(f"{fact}: values span [{values.min():.3g}, {values.max():.3g}]")
            continue
        scale = fact[1]
        std = scale / math.sqrt(3) if kind == "uniform" else scale
        got_std, got_mean = values.std().item(), values.mean().item()
        if abs(got_std / std - 1) > max(0.05, 4 / math.sqrt(2 * values.numel())):
            problems.append(f"{fact}: std {got_std:.4g}, expected {std:.4g} ({values.numel()} values)")
        if abs(got_mean) > 5 * std / math.sqrt(values.numel()):
            problems.append(f"{fact}: mean {got_mean:.3g} is not 0 ({values.numel()} values)")
        if kind == "uniform":
            top = values.abs().max().item()
            if top > scale * (1 + 1e-6) or top < 0.9 * scale:
                problems.append(f"{fact}: largest |value| {top:.4g}, expected just below {scale:.4g}")
        if kind == "trunc_normal" and values.abs().max().item() > 2:
            problems.append(f"{fact}: values beyond the truncation at ±2")
    return problems
