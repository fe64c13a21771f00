"""The independent reference of the ORIGINAL DiffCLIP / CLIP checkpoints: the one copy of the original forward,
used by the tests (tests/conftest.py puts this folder on the path) and by `convert_diffclip_original_to_hf.py
--verify`. The package never imports it (nor anything else under conversion/ or tests/).

It is written directly from the facts in ``shared/reference/ORIGINAL_MODEL.md`` and deliberately does NOT import
``transformers`` or ``transformers_diffclip``: only torch, numpy, PIL, ftfy, regex and the stdlib.

Everything here favours clarity over speed: the model math works straight from a state dict with
the original tensor names, layer norms are written out, and attention is an explicit Python loop
over (effective) heads. It computes in the state dict's dtype (float64 for the converter's check).

Public API
----------
- ``original_shapes(...)`` / ``make_original_state_dict(...)``: original key names and shapes,
  random weights.
- ``layout_matches(state_dict, kind)``: differences against ``original_layout.json``.
- ``original_forward(state_dict, input_ids, pixel_values, ...)``: the original forward pass.
- ``lambda_init_schedule(num_layers, depth_scheduled)``.
- ``original_image_transform(image, size)``: the original evaluation image transform.
- ``OriginalTokenizer(bpe_path)``: the original CLIP byte-level BPE tokenizer.
"""

from __future__ import annotations

import gzip
import html
import json
import math
from pathlib import Path

import ftfy
import numpy as np
import regex
import torch
import torch.nn.functional as F
from PIL import Image


ORIGINAL_PREFIX = "module."
DEFAULT_LAMBDA_INIT = 0.8
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
SOT_ID = 49406
EOT_ID = 49407
NUM_MERGES = 48894
RMS_NORM_EPS = 1e-5

# conversion/reference_original.py -> parents[2] is the directory that holds both the checkout and shared/
SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
LAYOUT_PATH = SHARED_DIR / "reference" / "original_layout.json"
BPE_PATH = SHARED_DIR / "data" / "bpe_simple_vocab_16e6.txt.gz"


# --------------------------------------------------------------------------------------------
# State dict: names, shapes, random weights
# --------------------------------------------------------------------------------------------


def _diff_attention_shapes(prefix: str, width: int, heads: int) -> dict[str, tuple[int, ...]]:
    if heads % 2 != 0:
        raise ValueError(f"differential attention needs an even number of heads, got {heads}")
    head_dim = width // heads
    return {
        prefix + "lambda_q1": (head_dim,),
        prefix + "lambda_k1": (head_dim,),
        prefix + "lambda_q2": (head_dim,),
        prefix + "lambda_k2": (head_dim,),
        prefix + "q_proj.weight": (width, width),
        prefix + "q_proj.bias": (width,),
        prefix + "k_proj.weight": (width, width),
        prefix + "k_proj.bias": (width,),
        prefix + "v_proj.weight": (width, width),
        prefix + "v_proj.bias": (width,),
        prefix + "out_proj.weight": (width, width),
        prefix + "out_proj.bias": (width,),
        prefix + "diff_norm.weight": (2 * head_dim,),
    }


def original_shapes(
    *,
    diff_vision: bool = True,
    diff_text: bool = True,
    vision_width: int = 768,
    vision_layers: int = 12,
    vision_heads: int = 12,
    patch_size: int = 16,
    image_size: int = 224,
    vision_mlp_ratio: int = 4,
    text_width: int = 512,
    text_layers: int = 12,
    text_heads: int = 8,
    context_length: int = 77,
    vocab_size: int = 49408,
    embed_dim: int = 512,
    text_mlp_ratio: int = 4,
) -> dict[str, tuple[int, ...]]:
    """Original (unprefixed) tensor names -> shapes, in the order of ``original_layout.json``."""
    if vision_width % vision_heads != 0 or text_width % text_heads != 0:
        raise ValueError("width must be divisible by the number of heads")
    if image_size % patch_size != 0:
        raise ValueError("image_size must be divisible by patch_size")
    num_patches = (image_size // patch_size) ** 2
    vision_hidden = vision_width * vision_mlp_ratio
    text_hidden = text_width * text_mlp_ratio

    shapes: dict[str, tuple[int, ...]] = {
        "positional_embedding": (context_length, text_width),
        "image_projection": (vision_width, embed_dim),
        "text_projection": (text_width, embed_dim),
        "logit_scale": (),
        "visual.cls_token": (1, 1, vision_width),
        "visual.pos_embed": (1, 1 + num_patches, vision_width),
        "visual.patch_embed.proj.weight": (vision_width, 3, patch_size, patch_size),
        "visual.patch_embed.proj.bias": (vision_width,),
    }
    for i in range(vision_layers):
        b = f"visual.blocks.{i}."
        shapes[b + "norm1.weight"] = (vision_width,)
        shapes[b + "norm1.bias"] = (vision_width,)
        if diff_vision:
            shapes.update(_diff_attention_shapes(b + "attn.", vision_width, vision_heads))
        else:  # timm Attention: fused qkv + proj
            shapes[b + "attn.qkv.weight"] = (3 * vision_width, vision_width)
            shapes[b + "attn.qkv.bias"] = (3 * vision_width,)
            shapes[b + "attn.proj.weight"] = (vision_width, vision_width)
            shapes[b + "attn.proj.bias"] = (vision_width,)
        shapes[b + "norm2.weight"] = (vision_width,)
        shapes[b + "norm2.bias"] = (vision_width,)
        shapes[b + "mlp.fc1.weight"] = (vision_hidden, vision_width)
        shapes[b + "mlp.fc1.bias"] = (vision_hidden,)
        shapes[b + "mlp.fc2.weight"] = (vision_width, vision_hidden)
        shapes[b + "mlp.fc2.bias"] = (vision_width,)
    shapes["visual.norm.weight"] = (vision_width,)
    shapes["visual.norm.bias"] = (vision_width,)

    for i in range(text_layers):
        b = f"transformer.resblocks.{i}."
        if diff_text:
            shapes.update(_diff_attention_shapes(b + "attn.", text_width, text_heads))
        else:  # torch.nn.MultiheadAttention: packed in_proj (q, k, v) + out_proj
            shapes[b + "attn.in_proj_weight"] = (3 * text_width, text_width)
            shapes[b + "attn.in_proj_bias"] = (3 * text_width,)
            shapes[b + "attn.out_proj.weight"] = (text_width, text_width)
            shapes[b + "attn.out_proj.bias"] = (text_width,)
        shapes[b + "ln_1.weight"] = (text_width,)
        shapes[b + "ln_1.bias"] = (text_width,)
        shapes[b + "mlp.c_fc.weight"] = (text_hidden, text_width)
        shapes[b + "mlp.c_fc.bias"] = (text_hidden,)
        shapes[b + "mlp.c_proj.weight"] = (text_width, text_hidden)
        shapes[b + "mlp.c_proj.bias"] = (text_width,)
        shapes[b + "ln_2.weight"] = (text_width,)
        shapes[b + "ln_2.bias"] = (text_width,)
    shapes["token_embedding.weight"] = (vocab_size, text_width)
    shapes["ln_final.weight"] = (text_width,)
    shapes["ln_final.bias"] = (text_width,)
    return shapes


def _random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Random values with sensible scales, chosen so that outputs are non-trivial."""

    def randn(std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    leaf = name.rsplit(".", 1)[-1]
    if name == "logit_scale":
        return torch.tensor(math.log(1 / 0.07))
    if leaf in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
        return randn(0.1)
    if name.endswith("diff_norm.weight") or (
        leaf == "weight"
        and any(part in name for part in ("norm1", "norm2", "ln_1", "ln_2", "ln_final", "visual.norm"))
    ):
        return 1.0 + randn(0.1)
    if leaf in ("bias", "in_proj_bias"):
        return randn(0.02)
    if name.endswith(("q_proj.weight", "k_proj.weight", "attn.qkv.weight", "attn.in_proj_weight")):
        # ~unit-variance queries/keys, so that attention maps are far from uniform
        return randn(shape[-1] ** -0.5)
    if name in ("image_projection", "text_projection"):
        return randn(shape[0] ** -0.5)
    if name == "positional_embedding":
        return randn(0.01)
    return randn(0.02)


def make_original_state_dict(
    *,
    seed: int = 0,
    prefix: str = "module.",
    dtype: torch.dtype = torch.float32,
    shapes_only: bool = False,
    **sizes,
) -> dict[str, torch.Tensor]:
    """Random weights under the exact original key names and shapes (``sizes``: ``original_shapes``' keywords).

    ``prefix`` is prepended to every key (the released files use ``"module."``). With
    ``shapes_only=True`` the tensors live on the meta device (no memory, no random numbers).
    """
    shapes = original_shapes(**sizes)
    state_dict: dict[str, torch.Tensor] = {}
    if shapes_only:
        for name, shape in shapes.items():
            state_dict[prefix + name] = torch.empty(shape, dtype=dtype, device="meta")
        return state_dict
    generator = torch.Generator().manual_seed(seed)
    for name, shape in shapes.items():
        state_dict[prefix + name] = _random_tensor(name, shape, generator).to(dtype)
    return state_dict


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str = ORIGINAL_PREFIX) -> dict[str, torch.Tensor]:
    """Remove a leading ``module.`` (data-parallel wrapper) from every key that has it."""
    return {k.removeprefix(prefix): v for k, v in state_dict.items()}


def count_parameters(state_dict: dict[str, torch.Tensor]) -> int:
    return sum(math.prod(t.shape) for t in state_dict.values())


def load_layout(kind: str, layout_path: str | Path = LAYOUT_PATH) -> dict:
    """``original_layout.json[kind]``: {'num_tensors', 'num_parameters', 'tensors': {name: shape}}."""
    with open(layout_path) as f:
        return json.load(f)[kind]


def layout_matches(state_dict: dict[str, torch.Tensor], kind: str, layout_path: str | Path = LAYOUT_PATH) -> list[str]:
    """Differences between a state dict (prefix stripped) and ``original_layout.json[kind]``.

    ``kind`` is ``"DiffCLIP_VITB16"`` or ``"CLIP_VITB16"``. Returns a list of human-readable
    differences; an empty list means names and shapes match exactly.
    """
    expected = {k: tuple(v) for k, v in load_layout(kind, layout_path)["tensors"].items()}
    actual = {k: tuple(v.shape) for k, v in strip_prefix(state_dict).items()}
    diffs = []
    for name, shape in expected.items():
        if name not in actual:
            diffs.append(f"missing: {name} {shape}")
        elif actual[name] != shape:
            diffs.append(f"shape: {name} expected {shape} got {actual[name]}")
    for name, shape in actual.items():
        if name not in expected:
            diffs.append(f"unexpected: {name} {shape}")
    return diffs


# --------------------------------------------------------------------------------------------
# Model math
# --------------------------------------------------------------------------------------------


def lambda_init_schedule(num_layers: int, depth_scheduled: bool) -> list[float]:
    """λ_init per layer: 0.8 everywhere (released models), or 0.8 − 0.6·exp(−0.3·l) (DiffCLIP*)."""
    if not depth_scheduled:
        return [DEFAULT_LAMBDA_INIT] * num_layers
    return [0.8 - 0.6 * math.exp(-0.3 * layer) for layer in range(num_layers)]


def _lambda_init_for_layer(lambda_init, layer: int) -> float:
    if isinstance(lambda_init, (int, float)):
        return float(lambda_init)
    return float(lambda_init[layer])


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """nn.Linear: x @ Wᵀ + b (W stored as (out, in))."""
    y = x @ weight.t()
    if bias is not None:
        y = y + bias
    return y


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32 ("computed in float32"); float32/float64 stay as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, in_float32: bool = False):
    """LayerNorm over the last dim, written out (biased variance). Optionally computed in float32."""
    orig_dtype = x.dtype
    if in_float32:
        x, weight, bias = _at_least_float32(x), _at_least_float32(weight), _at_least_float32(bias)
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps) * weight + bias
    return y.to(orig_dtype)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = RMS_NORM_EPS) -> torch.Tensor:
    """RMSNorm over the last dim, normalised in (at least) float32, cast back, then scaled by ``weight``."""
    xf = _at_least_float32(x)
    normed = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight


def _gelu_exact(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _differential_attention(
    x: torch.Tensor, p: dict[str, torch.Tensor], num_heads: int, lambda_init: float, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differential attention of one layer. ``p`` holds the layer's ``attn.*`` tensors (short names).

    Returns (output (B, N, W), maps (B, H/2, N, N) holding A1 − λ·A2).
    """
    width = x.shape[-1]
    head_dim = width // num_heads
    num_effective = num_heads // 2
    scale = head_dim**-0.5

    q = _linear(x, p["q_proj.weight"], p["q_proj.bias"])
    k = _linear(x, p["k_proj.weight"], p["k_proj.bias"])
    v = _linear(x, p["v_proj.weight"], p["v_proj.bias"])

    lambda_1 = torch.exp(torch.sum(_at_least_float32(p["lambda_q1"]) * _at_least_float32(p["lambda_k1"])))
    lambda_2 = torch.exp(torch.sum(_at_least_float32(p["lambda_q2"]) * _at_least_float32(p["lambda_k2"])))
    lam = (lambda_1 - lambda_2 + lambda_init).to(x.dtype)

    head_outputs = []
    maps = []
    for i in range(num_effective):
        # interleaved pairs: head 2i -> (Q1, K1), head 2i+1 -> (Q2, K2), each of width d
        h1, h2 = 2 * i, 2 * i + 1
        q1 = q[:, :, h1 * head_dim : (h1 + 1) * head_dim]
        k1 = k[:, :, h1 * head_dim : (h1 + 1) * head_dim]
        q2 = q[:, :, h2 * head_dim : (h2 + 1) * head_dim]
        k2 = k[:, :, h2 * head_dim : (h2 + 1) * head_dim]
        # V: H/2 heads of width 2d
        v_i = v[:, :, i * 2 * head_dim : (i + 1) * 2 * head_dim]

        scores_1 = q1 @ k1.transpose(-1, -2) * scale
        scores_2 = q2 @ k2.transpose(-1, -2) * scale
        if mask is not None:
            scores_1 = scores_1 + mask
            scores_2 = scores_2 + mask
        a1 = torch.softmax(scores_1, dim=-1)
        a2 = torch.softmax(scores_2, dim=-1)
        attn = a1 - lam * a2

        out_i = attn @ v_i  # (B, N, 2d)
        out_i = _rms_norm(out_i, p["diff_norm.weight"]) * (1.0 - lambda_init)
        head_outputs.append(out_i)
        maps.append(attn)

    out = torch.cat(head_outputs, dim=-1)  # heads back in order -> (B, N, W)
    out = _linear(out, p["out_proj.weight"], p["out_proj.bias"])
    return out, torch.stack(maps, dim=1)


def _standard_attention(
    x: torch.Tensor,
    qkv_weight: torch.Tensor,
    qkv_bias: torch.Tensor,
    out_weight: torch.Tensor,
    out_bias: torch.Tensor,
    num_heads: int,
    mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain multi-head attention with a packed (q, k, v) projection (timm qkv / MHA in_proj)."""
    width = x.shape[-1]
    head_dim = width // num_heads
    scale = head_dim**-0.5
    qkv = _linear(x, qkv_weight, qkv_bias)
    q = qkv[:, :, 0 * width : 1 * width]
    k = qkv[:, :, 1 * width : 2 * width]
    v = qkv[:, :, 2 * width : 3 * width]

    head_outputs = []
    maps = []
    for h in range(num_heads):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        scores = q[:, :, cols] @ k[:, :, cols].transpose(-1, -2) * scale
        if mask is not None:
            scores = scores + mask
        attn = torch.softmax(scores, dim=-1)
        head_outputs.append(attn @ v[:, :, cols])
        maps.append(attn)
    out = torch.cat(head_outputs, dim=-1)
    out = _linear(out, out_weight, out_bias)
    return out, torch.stack(maps, dim=1)


def _sub(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _count_layers(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in state_dict):
        n += 1
    return n


def _vision_forward(sd, pixel_values, *, heads, diff, lambda_init, eps, return_attentions):
    dtype = sd["visual.cls_token"].dtype
    x = pixel_values.to(dtype)
    patch_weight = sd["visual.patch_embed.proj.weight"]
    patch = patch_weight.shape[-1]
    # Conv2d(3 -> W, kernel = stride = patch) with bias, then patches in row-major order
    x = F.conv2d(x, patch_weight, sd["visual.patch_embed.proj.bias"], stride=patch)  # (B, W, gh, gw)
    x = x.flatten(2).transpose(1, 2)  # (B, gh*gw, W)
    batch = x.shape[0]
    cls = sd["visual.cls_token"].expand(batch, -1, -1)
    x = torch.cat([cls, x], dim=1)
    x = x + sd["visual.pos_embed"]
    # no LayerNorm before the blocks

    hidden_states = [x]
    attentions = []
    for i in range(_count_layers(sd, "visual.blocks.")):
        p = _sub(sd, f"visual.blocks.{i}.")
        h = _layer_norm(x, p["norm1.weight"], p["norm1.bias"], eps)
        if diff:
            a = _sub(p, "attn.")
            attn_out, maps = _differential_attention(h, a, heads, _lambda_init_for_layer(lambda_init, i), None)
        else:
            attn_out, maps = _standard_attention(
                h,
                p["attn.qkv.weight"],
                p["attn.qkv.bias"],
                p["attn.proj.weight"],
                p["attn.proj.bias"],
                heads,
                None,
            )
        x = x + attn_out
        h = _layer_norm(x, p["norm2.weight"], p["norm2.bias"], eps)
        h = _linear(h, p["mlp.fc1.weight"], p["mlp.fc1.bias"])
        h = _gelu_exact(h)
        h = _linear(h, p["mlp.fc2.weight"], p["mlp.fc2.bias"])
        x = x + h
        hidden_states.append(x)
        if return_attentions:
            attentions.append(maps)

    last_hidden = _layer_norm(x, sd["visual.norm.weight"], sd["visual.norm.bias"], eps)
    pooled = last_hidden[:, 0]
    embeds = pooled @ sd["image_projection"]
    return {
        "vision_last_hidden": last_hidden,
        "vision_pooled": pooled,
        "image_embeds": embeds,
        "vision_hidden_states": hidden_states,
        "vision_attentions": attentions,
    }


def _text_forward(sd, input_ids, *, heads, diff, lambda_init, eps, return_attentions):
    input_ids = torch.as_tensor(input_ids, dtype=torch.long)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    batch, seq = input_ids.shape
    context_length = sd["positional_embedding"].shape[0]
    if seq > context_length:
        raise ValueError(f"at most {context_length} tokens, got {seq}")

    x = sd["token_embedding.weight"][input_ids] + sd["positional_embedding"][:seq]
    # causal additive mask: -inf strictly above the diagonal
    mask = torch.full((seq, seq), float("-inf"), dtype=x.dtype).triu(1)

    hidden_states = [x]
    attentions = []
    for i in range(_count_layers(sd, "transformer.resblocks.")):
        p = _sub(sd, f"transformer.resblocks.{i}.")
        h = _layer_norm(x, p["ln_1.weight"], p["ln_1.bias"], eps, in_float32=True)
        if diff:
            a = _sub(p, "attn.")
            attn_out, maps = _differential_attention(h, a, heads, _lambda_init_for_layer(lambda_init, i), mask)
        else:
            attn_out, maps = _standard_attention(
                h,
                p["attn.in_proj_weight"],
                p["attn.in_proj_bias"],
                p["attn.out_proj.weight"],
                p["attn.out_proj.bias"],
                heads,
                mask,
            )
        x = x + attn_out
        h = _layer_norm(x, p["ln_2.weight"], p["ln_2.bias"], eps, in_float32=True)
        h = _linear(h, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"])
        h = _quick_gelu(h)
        h = _linear(h, p["mlp.c_proj.weight"], p["mlp.c_proj.bias"])
        x = x + h
        hidden_states.append(x)
        if return_attentions:
            attentions.append(maps)

    last_hidden = _layer_norm(x, sd["ln_final.weight"], sd["ln_final.bias"], eps, in_float32=True)
    # pooled at the end-of-text token = the largest id of each row (first occurrence)
    eot_positions = input_ids.argmax(dim=-1)
    pooled = last_hidden[torch.arange(batch), eot_positions]
    embeds = pooled @ sd["text_projection"]
    return {
        "text_last_hidden": last_hidden,
        "text_pooled": pooled,
        "text_embeds": embeds,
        "text_hidden_states": hidden_states,
        "text_attentions": attentions,
        "eot_positions": eot_positions,
    }


@torch.no_grad()
def original_forward(
    state_dict: dict[str, torch.Tensor],
    input_ids: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    *,
    vision_heads: int,
    text_heads: int,
    diff_vision: bool,
    diff_text: bool,
    lambda_init: float | list[float] = DEFAULT_LAMBDA_INIT,
    vision_eps: float | None = None,
    text_eps: float = 1e-5,
    return_attentions: bool = False,
) -> dict:
    """The original DiffCLIP / CLIP forward pass computed straight from a state dict.

    Computation happens in the dtype of the state dict's tensors (text LayerNorms and the
    differential RMSNorm in float32). Returned keys (each tower only when its input is given):
    ``image_embeds``/``text_embeds`` (projected, not normalized), ``vision_pooled``/``text_pooled``
    (before projection), ``vision_last_hidden``/``text_last_hidden`` (after the final norm),
    ``vision_hidden_states``/``text_hidden_states`` (embedding output and each block's output),
    ``logit_scale`` (= exp of the stored value), and with both towers ``logits_per_image``
    (images × texts) and ``logits_per_text``. With ``return_attentions`` also
    ``vision_attentions``/``text_attentions``: per layer (B, H/2, N, N) maps A1 − λ·A2 for
    differential layers, (B, H, N, N) softmax maps for standard ones.
    """
    sd = strip_prefix(state_dict)
    if vision_eps is None:
        vision_eps = 1e-5 if diff_vision else 1e-6

    out: dict = {"logit_scale": sd["logit_scale"].exp()}
    if pixel_values is not None:
        vision = _vision_forward(
            sd,
            pixel_values,
            heads=vision_heads,
            diff=diff_vision,
            lambda_init=lambda_init,
            eps=vision_eps,
            return_attentions=return_attentions,
        )
        if not return_attentions:
            del vision["vision_attentions"]
        out.update(vision)
    if input_ids is not None:
        text = _text_forward(
            sd,
            input_ids,
            heads=text_heads,
            diff=diff_text,
            lambda_init=lambda_init,
            eps=text_eps,
            return_attentions=return_attentions,
        )
        if not return_attentions:
            del text["text_attentions"]
        out.update(text)
    if pixel_values is not None and input_ids is not None:
        image_n = out["image_embeds"] / out["image_embeds"].norm(dim=-1, keepdim=True)
        text_n = out["text_embeds"] / out["text_embeds"].norm(dim=-1, keepdim=True)
        out["logits_per_image"] = out["logit_scale"] * image_n @ text_n.t()
        out["logits_per_text"] = out["logits_per_image"].t()
    return out


# --------------------------------------------------------------------------------------------
# Image preprocessing
# --------------------------------------------------------------------------------------------


def original_resize_size(width: int, height: int, size: int = 224) -> tuple[int, int]:
    """(new_width, new_height) of torchvision ``Resize(size)``: shorter side -> size, longer int()'d."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def original_crop_box(width: int, height: int, size: int = 224) -> tuple[int, int, int, int]:
    """PIL crop box of torchvision ``CenterCrop(size)``: offsets int(round(margin / 2)) (half to even)."""
    # Python's round() on a float returns an int and rounds halves to even: round(37.5) == 38, round(36.5) == 36
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return left, top, left + size, top + size


def original_image_transform(image: Image.Image, size: int = 224) -> torch.Tensor:
    """Resize(size, bilinear, PIL) -> CenterCrop(size) -> RGB -> [0, 1] -> ImageNet normalize."""
    new_w, new_h = original_resize_size(*image.size, size=size)
    if (new_w, new_h) != image.size:
        image = image.resize((new_w, new_h), Image.BILINEAR)
    if new_w < size or new_h < size:
        raise ValueError("image too small for the center crop (cannot happen after Resize)")
    image = image.crop(original_crop_box(new_w, new_h, size))
    image = image.convert("RGB")
    array = np.array(image, dtype=np.uint8, copy=True)  # (H, W, 3)
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return (tensor - mean) / std


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """Byte -> printable unicode char: printable latin-1 bytes map to themselves, the rest to 256+n.

    The dict's order (printable bytes first, in byte order, then the remaining bytes in byte
    order) is the order of the first 256 vocabulary entries: id 0 is '!', id 320 is 'a</w>'.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    # insertion order matters: the vocabulary lists the printable bytes first, then the others
    mapping = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def clean_text(text: str) -> str:
    """ftfy, HTML unescape twice, strip, collapse whitespace, strip, lower-case."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    text = text.strip()
    text = regex.sub(r"\s+", " ", text)
    text = text.strip()
    return text.lower()


class OriginalTokenizer:
    """The original CLIP byte-level BPE tokenizer (SLIP-style: zero padding, hard truncation)."""

    pattern = regex.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE,
    )

    def __init__(self, bpe_path: str | Path = BPE_PATH):
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]  # skip the header line
        if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"unexpected BPE file {bpe_path}")
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in merges]
        vocab += [SOT_TOKEN, EOT_TOKEN]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.sot_token_id = self.encoder[SOT_TOKEN]
        self.eot_token_id = self.encoder[EOT_TOKEN]
        # the special strings, when they appear in a text, are their own single token
        self.cache = {SOT_TOKEN: SOT_TOKEN, EOT_TOKEN: EOT_TOKEN}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def bpe(self, token: str) -> str:
        """Greedy BPE of one pre-token (already byte-mapped); returns space-separated symbols."""
        if token in self.cache:
            return self.cache[token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(word[j], word[j + 1]) for j in range(len(word) - 1)}
            best = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged = []
            j = 0
            while j < len(word):
                if j < len(word) - 1 and (word[j], word[j + 1]) == best:
                    merged.append(word[j] + word[j + 1])
                    j += 2
                else:
                    merged.append(word[j])
                    j += 1
            word = merged
        result = " ".join(word)
        self.cache[token] = result
        return result

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without the start/end tokens."""
        ids = []
        for piece in self.pattern.findall(clean_text(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[symbol] for symbol in self.bpe(mapped).split(" "))
        return ids

    def decode(self, ids) -> str:
        """Inverse of ``encode`` (special tokens are kept as text); word ends become spaces."""
        text = "".join(self.decoder[int(i)] for i in ids)
        # every char of a symbol (including those of '</w>') is a byte's stand-in
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()

    def __call__(self, texts: str | list[str], context_length: int = 77) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            tokens = tokens[:context_length]  # a longer row loses its end-of-text token
            result[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return result
