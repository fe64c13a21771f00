# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""PyTorch DiffCLIP: CLIP with differential attention (arXiv:2503.06626), read top to bottom by its section headers.

This file is copied into Hub folders as remote code. It imports only torch, the standard library, transformers'
public modules and the configuration beside it, and it runs unchanged on transformers 4.57 and 5.x (see
`configuration_diffclip._check_transformers_version`).
"""

import functools
import math
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple, logging

from .configuration_diffclip import DiffCLIPConfig, DiffCLIPTextConfig, DiffCLIPVisionConfig


if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # Python 3.10 (transformers 4.57 and 5.0 run there): the backport, a dependency of torch itself
    from typing_extensions import Unpack


logger = logging.get_logger(__name__)


# ----------------------------------------------------------------------------------------- Outputs


@dataclass
class DiffCLIPVisionModelOutput(ModelOutput):
    """Vision tower output with `image_embeds`, the projected pooled output, `(batch_size, projection_dim)`;
    `hidden_states`: the embeddings and every layer's output; `attentions`: see [`DiffCLIPDifferentialAttention`]."""

    image_embeds: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class DiffCLIPTextModelOutput(ModelOutput):
    """Text tower output with the projected text embedding (fields as in [`DiffCLIPVisionModelOutput`])."""

    text_embeds: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class DiffCLIPOutput(ModelOutput):
    """Output of [`DiffCLIPModel`]: `loss` (with `return_loss=True`), `logits_per_image` `(images, texts)` and its
    transpose `logits_per_text`, the projected, L2-normalised `text_embeds` / `image_embeds`, the towers' outputs."""

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling = None
    vision_model_output: BaseModelOutputWithPooling = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


def contrastive_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of a square similarity matrix whose diagonal holds the matching pairs."""
    texts, images = logits_per_text.shape
    if texts != images:
        raise ValueError(f"return_loss=True needs matching image-text pairs: got {images} images and {texts} texts.")
    targets = torch.arange(texts, device=logits_per_text.device)
    return (F.cross_entropy(logits_per_text, targets) + F.cross_entropy(logits_per_text.t(), targets)) / 2


# ---- Initialisation of a fresh model, per layer (read by `DiffCLIPPreTrainedModel._init_weights`)


def _init_as(layer: nn.Module, weight: str, scale: float, zero_bias: bool = False, bias_factor: float = 1.0):
    """Tags `layer` (Linear, Conv2d, Embedding) with its initialiser: weight "normal" / "trunc_normal" of std
    `scale`, or "default" (PyTorch's U(±fan_in^-0.5), times `scale`); bias zero, or PyTorch's default times
    `bias_factor`. Returns the layer."""
    layer.diffclip_init = (weight, scale, zero_bias, bias_factor)
    return layer


def _projection(in_features: int, out_features: int, factor: float) -> nn.Linear:
    """A projection to the joint space, N(0, in_features^-0.5) as both originals."""
    return _init_as(nn.Linear(in_features, out_features, bias=False), "normal", in_features**-0.5 * factor)


def _block_init(config: DiffCLIPTextConfig | DiffCLIPVisionConfig, name: str) -> tuple:
    """`_init_as` arguments of the Linear `name` (q/k/v/out_proj, fc1, fc2) of a block of the tower `config`
    describes (the text tower's configuration is the one with a vocabulary, whichever copy of this code made it)."""
    factor, differential = config.initializer_factor, config.use_differential_attention
    if not hasattr(config, "vocab_size"):  # timm's ViT; the original rebuilds DiffCLIP's blocks after timm's init
        if differential:
            return ("default", factor, False, factor)
        return ("trunc_normal", config.initializer_range * factor, True)
    width, depth = config.hidden_size, config.num_hidden_layers  # OpenAI CLIP's text init
    residual = width**-0.5 * (2 * depth) ** -0.5
    std = {"out_proj": residual, "fc1": (2 * width) ** -0.5, "fc2": residual}.get(name, width**-0.5)
    # nn.MultiheadAttention zeroes its biases; DiffCLIP's attention Linears and every MLP keep PyTorch's default
    return ("normal", std * factor, name.endswith("proj") and not differential, factor)


# ---------------------------------------------------------------------------- Norms and embeddings


def _upcast(tensor: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 → float32 (where the original computes in float32); float32 and float64 as they are."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _norm_operands(hidden_states: torch.Tensor, *params: torch.Tensor | None) -> list[torch.Tensor | None]:
    """The operands of a norm in one dtype: as they are when they already share one (PyTorch's norm kernels
    accumulate half-precision inputs in float32 and round once, which is what the original's cast to float32 and
    back computes), else all in the wider of their dtypes, at least float32 (autocast, mixed models)."""
    tensors = [hidden_states, *params]
    dtypes = {t.dtype for t in tensors if t is not None}
    if len(dtypes) == 1:
        return tensors
    dtype = functools.reduce(torch.promote_types, dtypes, torch.float32)
    return [t.to(dtype) if t is not None else None for t in tensors]


class DiffCLIPLayerNorm(nn.LayerNorm):
    """LayerNorm accumulated in float32 for half-precision inputs, as the original computes it (`_norm_operands`),
    without casting the activations (on a GPU two casts cost more than the norm)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        inputs, weight, bias = _norm_operands(hidden_states, self.weight, self.bias)
        # `.to` is free unless the dtypes were mixed or CUDA autocast ran layer_norm in float32
        return F.layer_norm(inputs, self.normalized_shape, weight, bias, self.eps).to(hidden_states.dtype)


class DiffCLIPRMSNorm(nn.RMSNorm):
    """RMSNorm with a learned weight (the per-head norm of differential attention), as [`DiffCLIPLayerNorm`];
    `scale`, which multiplies the output, is folded into the weight."""

    def forward(self, hidden_states: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        inputs, weight = _norm_operands(hidden_states, self.weight)
        if scale != 1.0:
            weight = weight * scale
        return F.rms_norm(inputs, self.normalized_shape, weight, self.eps).to(hidden_states.dtype)


def _check_input(name: str, tensor: torch.Tensor | None, shape: tuple) -> None:
    """The error of a missing input, or of one whose shape is not `shape` (sizes given by name are free)."""
    if tensor is None:
        raise ValueError(f"You have to specify {name}.")
    fixed = [(got, want) for got, want in zip(tensor.shape, shape) if isinstance(want, int)]
    if tensor.dim() != len(shape) or any(got != want for got, want in fixed):
        raise ValueError(f"{name} must have shape ({', '.join(map(str, shape))}), got {tuple(tensor.shape)}.")


class DiffCLIPVisionEmbeddings(nn.Module):
    """Patch embedding, a learned class token in front, learned position embeddings added to all tokens."""

    def __init__(self, config: DiffCLIPVisionConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        self.class_embedding = nn.Parameter(torch.zeros(self.embed_dim))
        factor, size = config.initializer_factor, self.patch_size
        conv = nn.Conv2d(config.num_channels, self.embed_dim, size, stride=size, bias=config.patch_embedding_bias)
        self.patch_embedding = _init_as(conv, "default", factor, bias_factor=factor)  # PyTorch's, as both originals
        self.num_patches = (self.image_size // self.patch_size) ** 2
        self.num_positions = self.num_patches + 1
        self.position_embedding = _init_as(  # timm's pos_embed
            nn.Embedding(self.num_positions, self.embed_dim), "trunc_normal", config.initializer_range * factor
        )

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings for a `height`×`width` input: the patch grid's table resized bicubically (as CLIP)."""
        table = self.position_embedding.weight.unsqueeze(0)
        grid = int(math.sqrt(self.num_patches))
        new_height, new_width = height // self.patch_size, width // self.patch_size
        if new_height == grid and new_width == grid and not torch.jit.is_tracing():
            return table
        patch_pos = table[:, 1:].reshape(1, grid, grid, self.embed_dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(
            _upcast(patch_pos), size=(new_height, new_width), mode="bicubic", align_corners=False
        ).to(table.dtype)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, new_height * new_width, self.embed_dim)
        return torch.cat([table[:, :1], patch_pos], dim=1)  # the class token's entry first

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        _check_input("pixel_values", pixel_values, ("batch_size", self.config.num_channels, "height", "width"))
        batch_size, _, height, width = pixel_values.shape
        if not interpolate_pos_encoding and (height != self.image_size or width != self.image_size):
            raise ValueError(
                f"Input image size ({height}*{width}) doesn't match model ({self.image_size}*{self.image_size}); "
                "pass `interpolate_pos_encoding=True` to run at another resolution."
            )
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"Input image size ({height}*{width}) must be a multiple of the patch size ({self.patch_size})."
            )
        patch_embeds = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        patch_embeds = patch_embeds.flatten(2).transpose(1, 2)
        class_embeds = self.class_embedding.to(patch_embeds.dtype).expand(batch_size, 1, -1)
        embeddings = torch.cat([class_embeds, patch_embeds], dim=1)
        if interpolate_pos_encoding:
            return embeddings + self.interpolate_pos_encoding(height, width)
        return embeddings + self.position_embedding.weight.unsqueeze(0)


class DiffCLIPTextEmbeddings(nn.Module):
    """Token embedding plus learned absolute position embedding."""

    def __init__(self, config: DiffCLIPTextConfig):
        super().__init__()
        self.config = config
        factor = config.initializer_factor
        self.token_embedding = _init_as(
            nn.Embedding(config.vocab_size, config.hidden_size), "normal", config.initializer_range * factor
        )
        self.position_embedding = _init_as(
            nn.Embedding(config.max_position_embeddings, config.hidden_size), "normal", 0.01 * factor
        )

    def forward(self, input_ids=None, position_ids=None, inputs_embeds=None) -> torch.Tensor:
        seq_length = input_ids.shape[-1] if input_ids is not None else inputs_embeds.shape[-2]
        max_positions = self.position_embedding.num_embeddings
        if seq_length > max_positions:
            raise ValueError(
                f"Sequence length {seq_length} exceeds max_position_embeddings ({max_positions}); tokenize with "
                f"`truncation=True, max_length={max_positions}`."
            )
        if inputs_embeds is None:
            inputs_embeds = self.token_embedding(input_ids)
        if position_ids is None:
            position_embeds = self.position_embedding.weight[:seq_length].unsqueeze(0)
        else:
            position_embeds = self.position_embedding(position_ids)
        return inputs_embeds + position_embeds


# ------------------------------------------------------------------- Attention: a table of kernels
#
# Every kernel is a function `kernel(module, query, key, value, attention_mask, **kwargs) -> (output, maps | None)`.
# A layer looks its kernel up once per call (`attention_kernel`, from `config._attn_implementation`, so that
# `attn_implementation=` and `set_attn_implementation` switch it) and calls it. Eager kernels take the additive causal
# mask; the registry's fused kernels get no mask and `is_causal` instead, which keeps them on their fastest path.
# Standard kernels take (batch, heads, seq, d) operands and return (batch, seq, heads, d), as transformers' own;
# differential kernels take the projections, (batch, seq, width) each, and return (batch, seq, pairs, 2d).


def _softmax_maps(query, key, attention_mask, scaling: float) -> torch.Tensor:
    """softmax(Q·Kᵀ·scaling + mask), accumulated in float32 for half-precision inputs, in the query's dtype."""
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    return F.softmax(_upcast(scores), dim=-1).to(query.dtype)


def eager_attention_forward(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0, **kwargs):
    """Standard attention, returning the softmax maps (as CLIP's eager kernel)."""
    attn_weights = F.dropout(_softmax_maps(query, key, attention_mask, scaling), p=dropout, training=module.training)
    return torch.matmul(attn_weights, value).transpose(1, 2).contiguous(), attn_weights


class DiffCLIPAttention(nn.Module):
    """Standard multi-head attention (the CLIP baselines' layers), with separate q/k/v/out projections."""

    def __init__(self, config: DiffCLIPTextConfig | DiffCLIPVisionConfig, layer_idx: int = 0, is_causal: bool = False):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = is_causal
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            _init_as(nn.Linear(self.embed_dim, self.embed_dim), *_block_init(config, name))
            for name in ("q_proj", "k_proj", "v_proj", "out_proj")
        )

    eager_kernel = staticmethod(eager_attention_forward)

    def attention_kernel(self, device: torch.device, output_attentions: bool = False):
        """The kernel of `config._attn_implementation` on `device`; the eager kernel when the call asks for the maps
        (only it materialises them), for that call only."""
        implementation = self.config._attn_implementation or "eager"
        if implementation != "eager" and output_attentions:
            logger.warning_once(
                f"`output_attentions=True` is computed with the eager kernel; `{implementation}` never materialises "
                "attention maps. Load with `attn_implementation='eager'` to silence this message."
            )
        if implementation == "eager" or output_attentions:
            return self.eager_kernel
        return self.fused_kernel(implementation, device)

    def fused_kernel(self, implementation: str, device: torch.device):
        return self.registry_kernel()

    def registry_kernel(self):
        """transformers' kernel for the config (read so: 4.57 lets `set_attn_implementation` switch only then)."""
        if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):  # transformers >= 5.1 (hub kernels, deprecated names)
            return ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        return ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]  # transformers 4.57, 5.0

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, output_attentions=False, **kwargs):
        batch_size, seq_length, _ = hidden_states.shape
        shape = (batch_size, seq_length, self.num_heads, self.head_dim)
        query, key, value = (
            p(hidden_states).view(shape).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        kernel = self.attention_kernel(hidden_states.device, output_attentions)
        mask = attention_mask if kernel is self.eager_kernel else None  # fused kernels: `is_causal`
        dropout = self.dropout if self.training else 0.0
        attn_output, attn_weights = kernel(
            self, query, key, value, mask, scaling=self.scaling, dropout=dropout, is_causal=self.is_causal, **kwargs
        )
        attn_output = self.out_proj(attn_output.reshape(batch_size, seq_length, self.embed_dim))
        return attn_output, attn_weights if output_attentions else None


def eager_differential_attention(module, query, key, value, attention_mask, **kwargs):
    """Both softmax maps of every pair written out and combined, `A1 − λ·A2`, then one product with the pair's 2d-wide
    value head. Returns these maps, (batch, pairs, seq, seq), in the graph (gradient attribution uses them)."""
    batch_size, seq_length, _ = query.shape
    pairs, head_dim = module.num_pairs, module.head_dim
    query = query.view(batch_size, seq_length, pairs, 2, head_dim).transpose(1, 2)
    key = key.view(batch_size, seq_length, pairs, 2, head_dim).transpose(1, 2)
    maps = [_softmax_maps(query[..., j, :], key[..., j, :], attention_mask, module.scaling) for j in (0, 1)]
    attn_weights = torch.addcmul(maps[0], maps[1], module.lambda_full(), value=-1)
    value = value.view(batch_size, seq_length, pairs, 2 * head_dim).transpose(1, 2)
    return torch.matmul(attn_weights, value).transpose(1, 2), attn_weights


# Score maps per chunk of `combined_maps_attention` (4 MiB in float32): chunks this small keep the maps and their
# softmax in cache; measured faster than larger chunks and than fused kernels (benchmarks/README.md).
_MAP_CHUNK_ELEMENTS = 2**20


def combined_maps_attention(module, query, key, value, attention_mask, **kwargs):
    """The eager formulation without the maps, in chunks of batch rows and head pairs whose maps hold at most
    `_MAP_CHUNK_ELEMENTS` values: they stay in cache, and memory does not grow with the square of the sequence. Its
    products cost what standard attention's do: the CPU's kernel for sdpa (see [`DiffCLIPDifferentialAttention`])."""
    batch_size, seq_length, _ = query.shape
    pairs, head_dim = module.num_pairs, module.head_dim
    query = query.view(batch_size, seq_length, 2 * pairs, head_dim)
    key = key.view(batch_size, seq_length, 2 * pairs, head_dim)
    value = value.view(batch_size, seq_length, pairs, 2 * head_dim)
    lambda_full = module.lambda_full()
    pair_maps = 2 * seq_length * seq_length  # both maps of one pair for one row
    rows_per_chunk = max(1, min(batch_size, _MAP_CHUNK_ELEMENTS // pair_maps))
    pairs_per_chunk = max(1, min(pairs, _MAP_CHUNK_ELEMENTS // (rows_per_chunk * pair_maps)))
    single_chunk = rows_per_chunk == batch_size and pairs_per_chunk == pairs
    attn_output = None if single_chunk else value.new_empty(batch_size, seq_length, pairs, 2 * head_dim)
    for row in range(0, batch_size, rows_per_chunk):
        rows = slice(row, row + rows_per_chunk)
        mask = attention_mask
        if mask is not None and mask.shape[0] > 1:
            mask = mask[rows]
        for first in range(0, pairs, pairs_per_chunk):
            last = min(first + pairs_per_chunk, pairs)
            # contiguous (rows, heads, seq, d) operands keep the batched matmuls on their fast path
            q = query[rows, :, 2 * first : 2 * last].transpose(1, 2).contiguous()
            k = key[rows, :, 2 * first : 2 * last].transpose(1, 2).contiguous()
            scores = torch.matmul(q, k.transpose(-1, -2)).mul_(module.scaling)
            del q, k  # (`del`s here and below free each buffer as soon as it is spent)
            if mask is not None:
                scores.add_(mask)
            maps = F.softmax(_upcast(scores), dim=-1)
            del scores
            maps = maps.view(maps.shape[0], last - first, 2, seq_length, seq_length)
            combined = torch.addcmul(maps[:, :, 0], maps[:, :, 1], lambda_full, value=-1).to(value.dtype)
            del maps
            output = torch.matmul(combined, value[rows, :, first:last].transpose(1, 2).contiguous())
            if single_chunk:
                return output.transpose(1, 2), None
            attn_output[rows, :, first:last] = output.transpose(1, 2)
    return attn_output, None


def per_map_attention(module, query, key, value, attention_mask, value_parts=(slice(None),), **kwargs):
    """`A1·V − λ·A2·V`: one call of the registry's kernel per softmax map, over all pairs at once. Call `j` attends
    with head `2i + j` of every pair `i` (a strided view, no copy) over the pair's 2d-wide value head (or over each of
    `value_parts`, concatenated): no map is materialised, nothing but the outputs is copied."""
    batch_size, seq_length, _ = query.shape
    pairs, head_dim = module.num_pairs, module.head_dim
    query = query.view(batch_size, seq_length, pairs, 2, head_dim)
    key = key.view(batch_size, seq_length, pairs, 2, head_dim)
    value = value.view(batch_size, seq_length, pairs, 2 * head_dim).transpose(1, 2)
    kernel = module.registry_kernel()
    call = functools.partial(kernel, module, scaling=module.scaling, is_causal=module.is_causal, **kwargs)
    outputs = []
    for j in (0, 1):
        query_j, key_j = query[:, :, :, j].transpose(1, 2), key[:, :, :, j].transpose(1, 2)
        parts = [call(query_j, key_j, value[..., part], None)[0] for part in value_parts]
        outputs.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1))  # (batch, seq, pairs, 2d)
    # A1·V − λ·A2·V in one pass over contiguous operands (in a half-precision model λ is rounded to its dtype)
    return torch.addcmul(outputs[0], outputs[1], module.lambda_full(), value=-1), None


def value_halves_attention(module, query, key, value, attention_mask, **kwargs):
    """[`per_map_attention`] on the d-wide value halves, for kernels that need values as wide as the queries."""
    halves = (slice(0, module.head_dim), slice(module.head_dim, None))
    return per_map_attention(module, query, key, value, attention_mask, value_parts=halves, **kwargs)


class DiffCLIPDifferentialAttention(DiffCLIPAttention):
    r"""Differential attention (arXiv:2410.05258) as DiffCLIP uses it.

    The `num_attention_heads` query/key heads of width `d` work in interleaved pairs: effective head `i` takes heads
    `2i` (Q1, K1) and `2i + 1` (Q2, K2), and a value head `V_i` of width `2d` (columns `2di … 2d(i+1)`). With
    `A = softmax(Q Kᵀ / √d + mask)`:

        out_i = RMSNorm((A1 − λ·A2)·V_i) · (1 − λ_init),   λ = exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init

    Kernels (`attention_kernel` picks one per call, from `config._attn_implementation`):

    | kernel                           | when                                                   | maps returned |
    |----------------------------------|--------------------------------------------------------|---------------|
    | `eager_differential_attention`   | "eager", or any call with `output_attentions=True`     | `A1 − λ·A2`   |
    | `combined_maps_attention`        | a name in `cpu_combined_maps` ("sdpa") on the CPU      | no            |
    | `per_map_attention`              | a name in `wide_value_kernels` ("sdpa") elsewhere      | no            |
    | `value_halves_attention`         | every other registered kernel (flash attention, ...)   | no            |

    On the CPU, PyTorch's SDPA falls back to its unfused math path for values wider than the queries, while the
    combined maps cost one standard attention's products (measured faster, `benchmarks/benchmark_cpu.py`);
    `layer.cpu_combined_maps = frozenset()` (or on the class, for every layer) calls the registry's sdpa there too.
    The configuration refuses attention dropout (the paper defines none for the difference of two maps).
    """

    eager_kernel = staticmethod(eager_differential_attention)
    cpu_combined_maps = frozenset({"sdpa"})
    wide_value_kernels = frozenset({"sdpa"})

    def __init__(self, config: DiffCLIPTextConfig | DiffCLIPVisionConfig, layer_idx: int = 0, is_causal: bool = False):
        super().__init__(config, layer_idx, is_causal)
        self.num_pairs = self.num_heads // 2
        self.lambda_init = config.lambda_init_for_layer(layer_idx)
        self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
            nn.Parameter(torch.zeros(self.head_dim)) for _ in range(4)
        )
        self.diff_norm = DiffCLIPRMSNorm(2 * self.head_dim, eps=config.rms_norm_eps)

    def lambda_full(self) -> torch.Tensor:
        """λ of this layer, a scalar in float32 (float64 in a float64 model)."""
        lambda_1 = torch.exp(torch.dot(_upcast(self.lambda_q1), _upcast(self.lambda_k1)))
        lambda_2 = torch.exp(torch.dot(_upcast(self.lambda_q2), _upcast(self.lambda_k2)))
        return lambda_1 - lambda_2 + self.lambda_init

    def fused_kernel(self, implementation: str, device: torch.device):
        """The differential kernel for a registered `implementation` on `device` (the table in the class docstring)."""
        if device.type == "cpu" and implementation in self.cpu_combined_maps:
            return combined_maps_attention
        return per_map_attention if implementation in self.wide_value_kernels else value_halves_attention

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, output_attentions=False, **kwargs):
        batch_size, seq_length, _ = hidden_states.shape
        kernel = self.attention_kernel(hidden_states.device, output_attentions)
        query, key, value = (p(hidden_states) for p in (self.q_proj, self.k_proj, self.v_proj))
        attn_output, attn_weights = kernel(self, query, key, value, attention_mask, **kwargs)
        attn_output = self.diff_norm(attn_output, scale=1 - self.lambda_init)
        return self.out_proj(attn_output.reshape(batch_size, seq_length, self.embed_dim)), attn_weights


class DiffCLIPMLP(nn.Module):
    def __init__(self, config: DiffCLIPTextConfig | DiffCLIPVisionConfig):
        super().__init__()
        self.config = config
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = _init_as(nn.Linear(config.hidden_size, config.intermediate_size), *_block_init(config, "fc1"))
        self.fc2 = _init_as(nn.Linear(config.intermediate_size, config.hidden_size), *_block_init(config, "fc2"))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class DiffCLIPEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block, shared by both towers: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`."""

    def __init__(self, config: DiffCLIPTextConfig | DiffCLIPVisionConfig, layer_idx: int = 0, is_causal: bool = False):
        super().__init__()
        attention_class = DiffCLIPDifferentialAttention if config.use_differential_attention else DiffCLIPAttention
        self.self_attn = attention_class(config, layer_idx=layer_idx, is_causal=is_causal)
        self.layer_norm1 = DiffCLIPLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = DiffCLIPMLP(config)
        self.layer_norm2 = DiffCLIPLayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, output_attentions=False, **kwargs):
        residual = hidden_states
        # rebinding drops the attention output before the MLP runs, so it does not add to the layer's peak memory
        hidden_states, attn_weights = self.self_attn(
            self.layer_norm1(hidden_states), attention_mask, output_attentions, **kwargs
        )
        hidden_states = residual + hidden_states
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, attn_weights


class DiffCLIPEncoder(nn.Module):
    """A stack of [`DiffCLIPEncoderLayer`]; `is_causal` for the text tower."""

    def __init__(self, config: DiffCLIPTextConfig | DiffCLIPVisionConfig, is_causal: bool = False):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(
            [DiffCLIPEncoderLayer(config, layer_idx=i, is_causal=is_causal) for i in range(config.num_hidden_layers)]
        )
        self.gradient_checkpointing = False

    def forward(
        self, inputs_embeds, attention_mask=None, output_attentions=False, output_hidden_states=False, **kwargs
    ) -> BaseModelOutput:
        hidden_states = inputs_embeds
        # transformers' LLaVA asks with the index of the layer it selects (or a list of them) in place of True: any
        # value but None or False asks for the states, layer 0 (the embeddings) included.
        output_hidden_states = output_hidden_states is not None and output_hidden_states is not False
        all_states = (hidden_states,) if output_hidden_states else None
        all_maps = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights = layer(hidden_states, attention_mask, output_attentions, **kwargs)
            if output_hidden_states:
                all_states += (hidden_states,)
            if output_attentions:
                all_maps += (attn_weights,)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=all_states, attentions=all_maps)


# -------------------------------------------------------------------------------- Pre-trained base


class DiffCLIPPreTrainedModel(PreTrainedModel):
    config_class = DiffCLIPConfig
    base_model_prefix = "diffclip"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DiffCLIPTextEmbeddings", "DiffCLIPVisionEmbeddings", "DiffCLIPEncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True  # 4.57 reads it beside the older `_supports_flash_attn_2`; 5.x reads only it
    _supports_attention_backend = True

    # `from_pretrained`'s hook for names that are not transformers folders: `resolver(name, kwargs) -> (name, kwargs)`.
    # None here, so a Hub folder's copy loads transformers folders only; the installed package sets
    # `transformers_diffclip.original.resolve_from_pretrained`: the authors' training-format checkpoints (a Hub repo,
    # a local `checkpoint_best.pt`), converted once and cached, downloaded with every Hub argument of the call.
    checkpoint_resolver = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        if cls.checkpoint_resolver is not None and pretrained_model_name_or_path is not None:
            pretrained_model_name_or_path, kwargs = cls.checkpoint_resolver(pretrained_model_name_or_path, kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        """Initialise `module`'s own parameters as the authors' code initialises a fresh model of this variant (README,
        "Initialisation"), Linear, Conv2d and Embedding layers as tagged where built (`_init_as`). Only `nn.init`
        functions write, which transformers 5 guards so that a loaded tensor is never overwritten."""
        factor = getattr(self.config, "initializer_factor", 1.0)
        if isinstance(module, (nn.LayerNorm, DiffCLIPRMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, DiffCLIPDifferentialAttention):
            for vector in (module.lambda_q1, module.lambda_k1, module.lambda_q2, module.lambda_k2):
                nn.init.normal_(vector, std=0.1 * module.config.initializer_factor)
        elif isinstance(module, DiffCLIPVisionEmbeddings):  # the class token (timm)
            nn.init.normal_(module.class_embedding, std=1e-6 * module.config.initializer_factor)
        elif isinstance(module, DiffCLIPModel):
            nn.init.constant_(module.logit_scale, module.config.logit_scale_init_value)
        elif isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
            # untagged: an embedding set with `set_input_embeddings`, or a layer added by the user
            default = ("default", factor, False, factor)
            if isinstance(module, nn.Embedding):
                default = ("normal", getattr(self.config, "initializer_range", 0.02) * factor, False, factor)
            weight, scale, zero_bias, bias_factor = getattr(module, "diffclip_init", default)
            bound = module.weight[0].numel() ** -0.5  # PyTorch's reset_parameters (kaiming-uniform, a=√5): U(±bound)
            if weight == "normal":
                nn.init.normal_(module.weight, std=scale)
            elif weight == "trunc_normal":
                nn.init.trunc_normal_(module.weight, std=scale)
            else:
                nn.init.uniform_(module.weight, -bound * scale, bound * scale)
            bias = getattr(module, "bias", None)
            if bias is not None and zero_bias:
                nn.init.zeros_(bias)
            elif bias is not None:
                nn.init.uniform_(bias, -bound * bias_factor, bound * bias_factor)

    # The output class of a head with a projection (fields: the projected embedding, then the tower's other three).
    _projected_output = None

    def _tower_forward(self, tower: nn.Module, projection: nn.Linear | None = None, **inputs):
        """The one body of every head: `tower`'s forward (this model's config gives the default output flags), the
        pooled output projected by `projection` when given, returned as `_projected_output` where the head sets it."""
        for flag in ("output_attentions", "output_hidden_states"):
            if inputs.get(flag) is None:
                inputs[flag] = getattr(self.config, flag)
        outputs = tower(**inputs)
        if projection is not None:
            outputs.pooler_output = projection(outputs.pooler_output)
        if self._projected_output is None:
            return outputs
        return self._projected_output(
            outputs.pooler_output, outputs.last_hidden_state, outputs.hidden_states, outputs.attentions
        )


# ------------------------------------------------------------------------------------------ Towers


class DiffCLIPTextTransformer(nn.Module):
    def __init__(self, config: DiffCLIPTextConfig):
        super().__init__()
        self.config = config
        self.embeddings = DiffCLIPTextEmbeddings(config)
        self.encoder = DiffCLIPEncoder(config, is_causal=True)
        self.final_layer_norm = DiffCLIPLayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs) -> BaseModelOutputWithPooling:
        if input_ids is not None and input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        _check_input("input_ids", input_ids, ("batch_size", "seq_length"))
        # The causal mask makes right padding exact without a padding mask; left padding would not be.
        if attention_mask is not None and not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            _check_input("attention_mask", attention_mask, ("batch_size", "seq_length"))
            if bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
                raise ValueError(
                    "DiffCLIP's text tower expects right padding (the CLIP tokenizer's default); attention_mask "
                    "shows left padding. Tokenize with `padding_side='right'`."
                )
        hidden_states = self.embeddings(input_ids=input_ids, position_ids=position_ids)
        seq_length = input_ids.shape[1]
        # Additive causal mask for the eager kernel; the fused kernels use `is_causal` instead.
        dtype, device = hidden_states.dtype, hidden_states.device
        causal_mask = torch.full((seq_length, seq_length), torch.finfo(dtype).min, dtype=dtype, device=device).triu(1)
        encoded = self.encoder(hidden_states, causal_mask[None, None], **kwargs)
        last_hidden_state = self.final_layer_norm(encoded.last_hidden_state)
        # Pooled: each row's first end-of-text token, else (the original tokenizer truncates past it) its largest id.
        input_ids = input_ids.to(last_hidden_state.device)
        is_eos = input_ids == self.config.eos_token_id
        pool_index = torch.where(is_eos.any(dim=-1), is_eos.int().argmax(dim=-1), input_ids.argmax(dim=-1))
        pooled_output = last_hidden_state[torch.arange(pool_index.shape[0], device=pool_index.device), pool_index]
        return BaseModelOutputWithPooling(
            last_hidden_state, pooled_output, hidden_states=encoded.hidden_states, attentions=encoded.attentions
        )


class DiffCLIPVisionTransformer(nn.Module):
    def __init__(self, config: DiffCLIPVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = DiffCLIPVisionEmbeddings(config)
        self.pre_layernorm = (
            DiffCLIPLayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.use_pre_layernorm else None
        )
        self.encoder = DiffCLIPEncoder(config)
        self.post_layernorm = DiffCLIPLayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values, interpolate_pos_encoding=False, **kwargs) -> BaseModelOutputWithPooling:
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        if self.pre_layernorm is not None:
            hidden_states = self.pre_layernorm(hidden_states)
        encoded = self.encoder(hidden_states, None, **kwargs)
        # The final norm covers every token (timm's ViT); the class token is the pooled output.
        last_hidden_state = self.post_layernorm(encoded.last_hidden_state)
        pooled_output = last_hidden_state[:, 0]
        return BaseModelOutputWithPooling(
            last_hidden_state, pooled_output, hidden_states=encoded.hidden_states, attentions=encoded.attentions
        )


# ------------------------------------------------------------- Dual encoder and single-tower heads


# transformers 5 made CLIP's `get_text_features` / `get_image_features` return a `BaseModelOutputWithPooling` (the
# projected embedding in `pooler_output`; a tuple when `return_dict=False`); 4.x returns the tensor itself. DiffCLIP
# follows the installed CLIP: this is the one place where the two releases differ for the heads.
if int(transformers.__version__.split(".")[0]) >= 5:
    _features_output = can_return_tuple
else:

    def _features_output(method):
        @functools.wraps(method)
        def embeddings(self, *args, return_dict=None, **kwargs):
            return method(self, *args, **kwargs).pooler_output

        return embeddings


class DiffCLIPModel(DiffCLIPPreTrainedModel):
    """DiffCLIP: both towers, their projections and the learned temperature. Similarities are
    `exp(logit_scale) · cos(image, text)`; `return_loss=True` adds the symmetric contrastive loss."""

    config_class = DiffCLIPConfig

    def __init__(self, config: DiffCLIPConfig):
        super().__init__(config)
        # the towers (modules, not sub-models) get their kernel here: their own request, checked, else the model's
        for tower in (config.text_config, config.vision_config):
            requested = tower._attn_implementation
            tower._attn_implementation_internal = self._check_and_adjust_attn_implementation(
                requested if requested is not None else config._attn_implementation, is_init_check=True
            )
        self.projection_dim = config.projection_dim
        self.text_embed_dim = config.text_config.hidden_size
        self.vision_embed_dim = config.vision_config.hidden_size
        self.text_model = DiffCLIPTextTransformer(config.text_config)
        self.vision_model = DiffCLIPVisionTransformer(config.vision_config)
        self.visual_projection = _projection(self.vision_embed_dim, self.projection_dim, config.initializer_factor)
        self.text_projection = _projection(self.text_embed_dim, self.projection_dim, config.initializer_factor)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Module):
        self.text_model.embeddings.token_embedding = value

    @_features_output
    def get_text_features(
        self, input_ids=None, attention_mask=None, position_ids=None, **kwargs: Unpack[TransformersKwargs]
    ):
        """Projected (not normalised) text embeddings, in the installed CLIP's return type (`_features_output`)."""
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        return self._tower_forward(self.text_model, self.text_projection, **inputs, **kwargs)

    @_features_output
    def get_image_features(
        self, pixel_values=None, interpolate_pos_encoding=False, **kwargs: Unpack[TransformersKwargs]
    ):
        """Projected (not normalised) image embeddings; return type as in [`get_text_features`]."""
        inputs = dict(pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        return self._tower_forward(self.vision_model, self.visual_projection, **inputs, **kwargs)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> DiffCLIPOutput:
        vision_outputs = self._tower_forward(
            self.vision_model, pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )
        text_outputs = self._tower_forward(
            self.text_model, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        )
        image_embeds = self.visual_projection(vision_outputs.pooler_output)
        text_embeds = self.text_projection(text_outputs.pooler_output)
        image_embeds = image_embeds / image_embeds.norm(p=2, dim=-1, keepdim=True)
        text_embeds = text_embeds / text_embeds.norm(p=2, dim=-1, keepdim=True)

        logits_per_text = torch.matmul(text_embeds, image_embeds.t().to(text_embeds.device))
        logits_per_text = logits_per_text * self.logit_scale.exp().to(text_embeds.device)
        logits_per_image = logits_per_text.t()

        loss = contrastive_loss(logits_per_text) if return_loss else None

        return DiffCLIPOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )


class DiffCLIPTextModel(DiffCLIPPreTrainedModel):
    """The DiffCLIP text tower without projection."""

    config_class = DiffCLIPTextConfig
    _no_split_modules = ["DiffCLIPTextEmbeddings", "DiffCLIPEncoderLayer"]

    def __init__(self, config: DiffCLIPTextConfig):
        super().__init__(config)
        self.text_model = DiffCLIPTextTransformer(config)
        if self._projected_output is not None:
            self.text_projection = _projection(config.hidden_size, config.projection_dim, config.initializer_factor)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Module):
        self.text_model.embeddings.token_embedding = value

    @can_return_tuple
    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling | DiffCLIPTextModelOutput:
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        return self._tower_forward(self.text_model, getattr(self, "text_projection", None), **inputs, **kwargs)


class DiffCLIPTextModelWithProjection(DiffCLIPTextModel):
    """The text tower with its projection to the joint space; returns a [`DiffCLIPTextModelOutput`]."""

    _projected_output = DiffCLIPTextModelOutput


class DiffCLIPVisionModel(DiffCLIPPreTrainedModel):
    """The vision tower without projection (an image encoder: `output_hidden_states=True` gives all tokens)."""

    config_class = DiffCLIPVisionConfig
    main_input_name = "pixel_values"
    _no_split_modules = ["DiffCLIPVisionEmbeddings", "DiffCLIPEncoderLayer"]

    def __init__(self, config: DiffCLIPVisionConfig):
        super().__init__(config)
        self.vision_model = DiffCLIPVisionTransformer(config)
        if self._projected_output is not None:
            self.visual_projection = _projection(config.hidden_size, config.projection_dim, config.initializer_factor)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vision_model.embeddings.patch_embedding

    @can_return_tuple
    def forward(
        self, pixel_values=None, interpolate_pos_encoding=False, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling | DiffCLIPVisionModelOutput:
        inputs = dict(pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        return self._tower_forward(self.vision_model, getattr(self, "visual_projection", None), **inputs, **kwargs)


class DiffCLIPVisionModelWithProjection(DiffCLIPVisionModel):
    """The vision tower with its projection to the joint space; returns a [`DiffCLIPVisionModelOutput`]."""

    _projected_output = DiffCLIPVisionModelOutput


__all__ = [
    "DiffCLIPModel",
    "DiffCLIPPreTrainedModel",
    "DiffCLIPTextModel",
    "DiffCLIPTextModelWithProjection",
    "DiffCLIPVisionModel",
    "DiffCLIPVisionModelWithProjection",
]
