# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""PyTorch DiffCLIP: CLIP with differential attention (arXiv:2503.06626).

Reading order: outputs → norms and embeddings → attention (standard, then differential) → the
encoder layer both towers share → pre-trained base with `_init_weights` → the towers → the
dual encoder and the single-tower heads.

This file is copied into Hub folders as remote code. It imports only torch, the standard library,
transformers' public modules and the configuration beside it, and it runs unchanged on
transformers 4.57 and 5.x (see `configuration_diffclip._check_transformers_version`).
"""

import math
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
from transformers.utils import ModelOutput, logging

from .configuration_diffclip import DiffCLIPConfig, DiffCLIPTextConfig, DiffCLIPVisionConfig


logger = logging.get_logger(__name__)

# transformers 5 changed `get_text_features` / `get_image_features` of CLIP to return a
# `BaseModelOutputWithPooling` (projected embedding in `pooler_output`); 4.x returns the tensor.
# DiffCLIP follows whatever the installed CLIP does.
_FEATURES_AS_OUTPUT = int(transformers.__version__.split(".")[0]) >= 5


# --------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------


@dataclass
class DiffCLIPVisionModelOutput(ModelOutput):
    """Vision tower output with the projected image embedding.

    Args:
        image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): projected pooled output.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_patches + 1, hidden_size)`).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): embeddings and the output of every layer.
        attentions (`tuple(torch.FloatTensor)`, *optional*): per layer, see [`DiffCLIPDifferentialAttention`].
    """

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
    """Output of [`DiffCLIPModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): symmetric contrastive loss, when `return_loss=True`.
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            `exp(logit_scale) · cos(image, text)`.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`): the transpose.
        text_embeds, image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): the projected,
            L2-normalised embeddings.
        text_model_output, vision_model_output ([`~modeling_outputs.BaseModelOutputWithPooling`]): tower outputs.
    """

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
    targets = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    return (F.cross_entropy(logits_per_text, targets) + F.cross_entropy(logits_per_text.t(), targets)) / 2


# --------------------------------------------------------------------------------------------------
# Norms and embeddings
# --------------------------------------------------------------------------------------------------


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
    dtype = torch.float32
    for other in dtypes:
        dtype = torch.promote_types(dtype, other)
    return [t.to(dtype) if t is not None else None for t in tensors]


class DiffCLIPLayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 for half-precision inputs, as the original does (see `_norm_operands`);
    calling the kernel on the input dtype saves two casts of the activations per norm, which on a GPU cost more than
    the norm. float64 models stay float64."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        inputs, weight, bias = _norm_operands(hidden_states, self.weight, self.bias)
        # `.to` is free unless the dtypes were mixed or CUDA autocast ran layer_norm in float32
        return F.layer_norm(inputs, self.normalized_shape, weight, bias, self.eps).to(hidden_states.dtype)


class DiffCLIPRMSNorm(nn.Module):
    """RMSNorm over the last dimension with a learned weight (the per-head norm of differential attention),
    accumulated in float32 for half-precision inputs (see `_norm_operands`). `scale` multiplies the output; it is
    folded into the weight so that it costs no pass over the activations."""

    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        inputs, weight = _norm_operands(hidden_states, self.weight)
        if scale != 1.0:
            weight = weight * scale
        return F.rms_norm(inputs, (hidden_states.shape[-1],), weight, self.eps).to(hidden_states.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class DiffCLIPVisionEmbeddings(nn.Module):
    """Patch embedding, a learned class token in front, learned position embeddings added to all tokens."""

    def __init__(self, config: DiffCLIPVisionConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        self.class_embedding = nn.Parameter(torch.zeros(self.embed_dim))
        self.patch_embedding = nn.Conv2d(
            config.num_channels,
            self.embed_dim,
            kernel_size=self.patch_size,
            stride=self.patch_size,
            bias=config.patch_embedding_bias,
        )
        self.num_patches = (self.image_size // self.patch_size) ** 2
        self.num_positions = self.num_patches + 1
        self.position_embedding = nn.Embedding(self.num_positions, self.embed_dim)

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings for a `height`×`width` input: the patch grid's table resized bicubically (as
        transformers' CLIP and DINO do), the class token's entry unchanged."""
        table = self.position_embedding.weight.unsqueeze(0)
        grid = int(math.sqrt(self.num_patches))
        new_height, new_width = height // self.patch_size, width // self.patch_size
        if new_height == grid and new_width == grid and not torch.jit.is_tracing():
            return table
        class_pos, patch_pos = table[:, :1], table[:, 1:]
        patch_pos = patch_pos.reshape(1, grid, grid, self.embed_dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(
            _upcast(patch_pos), size=(new_height, new_width), mode="bicubic", align_corners=False
        ).to(table.dtype)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, new_height * new_width, self.embed_dim)
        return torch.cat([class_pos, patch_pos], dim=1)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch_size, {self.config.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}."
            )
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
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
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


# --------------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------------


# Score maps per chunk of the CPU differential-attention path (4 MiB in float32): chunks this small keep the maps
# and their softmax in cache; measured faster than larger chunks and than fused kernels (benchmarks/README.md).
_MAP_CHUNK_ELEMENTS = 2**20


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    """Plain softmax attention on (batch, heads, seq, dim) inputs; returns the output as (batch, seq, heads, dim_v)
    and the softmax maps. The value width may differ from the query width."""
    attn_weights = F.dropout(_softmax_maps(query, key, attention_mask, scaling), p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def _softmax_maps(
    query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    """softmax(Q·Kᵀ·scaling + mask), accumulated in float32 for half-precision inputs, in the query's dtype."""
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    return F.softmax(_upcast(scores), dim=-1).to(query.dtype)


def _attention_function(module: nn.Module, need_weights: bool):
    """The kernel for `config._attn_implementation`, from transformers' registry (so `set_attn_implementation` and
    `attn_implementation=` switch it). Only the eager kernel returns attention maps, so a call that asks for them runs
    eagerly (for that call only)."""
    implementation = module.config._attn_implementation or "eager"
    if implementation == "eager" or need_weights:
        if need_weights and implementation != "eager":
            logger.warning_once(
                f"`output_attentions=True` is computed with the eager kernel; `{implementation}` never materialises "
                "attention maps. Load with `attn_implementation='eager'` to silence this message."
            )
        return eager_attention_forward, True
    return module.registered_kernel(), False


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
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def registered_kernel(self):
        """The registry's kernel for `config._attn_implementation` (the way transformers' own models look it up)."""
        if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):  # transformers >= 5.x with kernel fallbacks
            return ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        return ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]  # transformers 4.57, 5.0

    def _call_kernel(self, query, key, value, attention_mask, output_attentions, **kwargs):
        attention_function, is_eager = _attention_function(self, output_attentions)
        # Eager needs the additive causal mask; fused kernels get none and use `is_causal` instead, which keeps
        # them on their fastest path.
        return attention_function(
            self,
            query,
            key,
            value,
            attention_mask if is_eager else None,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
            is_causal=self.is_causal,
            **kwargs,
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, seq_length, _ = hidden_states.shape
        shape = (batch_size, seq_length, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        attn_output, attn_weights = self._call_kernel(query, key, value, attention_mask, output_attentions, **kwargs)
        attn_output = self.out_proj(attn_output.reshape(batch_size, seq_length, self.embed_dim))
        return attn_output, attn_weights if output_attentions else None


class DiffCLIPDifferentialAttention(DiffCLIPAttention):
    r"""Differential attention (arXiv:2410.05258) as DiffCLIP uses it.

    The `num_attention_heads` query/key heads of width `d` work in interleaved pairs: effective head `i` takes heads
    `2i` (Q1, K1) and `2i + 1` (Q2, K2), and a value head `V_i` of width `2d` (columns `2di … 2d(i+1)`). With
    `A = softmax(Q Kᵀ / √d + mask)`:

        out_i = RMSNorm((A1 − λ·A2)·V_i) · (1 − λ_init),   λ = exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init

    Since `(A1 − λ·A2)·V = A1·V − λ·A2·V`, each map is one call of the registry's attention kernel over all pairs
    at once (queries/keys: head `2i + j` of pair `i` for map `j`; values: the pair's `2d`-wide head), and the two
    outputs are combined. Fused kernels (sdpa, flash) thus never materialise the maps, and nothing is copied but
    the outputs. Flash attention needs the value width to equal the query width, so for it each map's call is split
    into two calls on the `d`-wide value halves.

    On the CPU, sdpa instead writes both maps out and combines them before the value product (the original
    formulation, see `_combined_maps_attention`): PyTorch's CPU SDPA has no fused kernel for values wider than the
    queries and falls back to its unfused math path for them, while the combined maps cost one
    standard attention's products. Measured with `benchmarks/benchmark_cpu.py`.

    With `output_attentions=True` the returned maps are `A1 − λ·A2`, of shape
    `(batch_size, num_attention_heads // 2, seq_length, seq_length)`: one map per effective head.
    """

    def __init__(self, config: DiffCLIPTextConfig | DiffCLIPVisionConfig, layer_idx: int = 0, is_causal: bool = False):
        super().__init__(config, layer_idx, is_causal)
        self.num_pairs = self.num_heads // 2
        self.lambda_init = config.lambda_init_for_layer(layer_idx)
        self.lambda_q1 = nn.Parameter(torch.zeros(self.head_dim))
        self.lambda_k1 = nn.Parameter(torch.zeros(self.head_dim))
        self.lambda_q2 = nn.Parameter(torch.zeros(self.head_dim))
        self.lambda_k2 = nn.Parameter(torch.zeros(self.head_dim))
        self.diff_norm = DiffCLIPRMSNorm(2 * self.head_dim, eps=config.rms_norm_eps)

    def lambda_full(self) -> torch.Tensor:
        """λ of this layer, a scalar in float32 (float64 in a float64 model)."""
        lambda_1 = torch.exp(torch.dot(_upcast(self.lambda_q1), _upcast(self.lambda_k1)))
        lambda_2 = torch.exp(torch.dot(_upcast(self.lambda_q2), _upcast(self.lambda_k2)))
        return lambda_1 - lambda_2 + self.lambda_init

    def _combined_maps_attention(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """`(A1 − λ·A2)·V` with the maps written out and combined before the value product; the CPU fast path.

        Takes the projections, (batch, seq, width) each, and returns (batch, seq, pairs, 2d). The score and value
        products cost what standard attention's do, where a fused kernel pays for two `2d`-wide value products.
        The work is split into chunks of batch rows and head pairs whose maps hold at most `_MAP_CHUNK_ELEMENTS`
        values, so they stay in cache and the layer's memory does not grow with the square of the sequence.
        """
        batch_size, seq_length, _ = query.shape
        pairs, head_dim = self.num_pairs, self.head_dim
        query = query.view(batch_size, seq_length, 2 * pairs, head_dim)
        key = key.view(batch_size, seq_length, 2 * pairs, head_dim)
        value = value.view(batch_size, seq_length, pairs, 2 * head_dim)
        lambda_full = self.lambda_full()
        dropout = self.dropout if self.training else 0.0
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
                scores = torch.matmul(q, k.transpose(-1, -2)).mul_(self.scaling)
                del q, k  # (`del`s here and below free each buffer as soon as it is spent)
                if mask is not None:
                    scores.add_(mask)
                maps = F.softmax(_upcast(scores), dim=-1)
                del scores
                maps = F.dropout(maps, p=dropout, training=self.training)
                maps = maps.view(maps.shape[0], last - first, 2, seq_length, seq_length)
                combined = torch.addcmul(maps[:, :, 0], maps[:, :, 1], lambda_full, value=-1).to(value.dtype)
                del maps
                output = torch.matmul(combined, value[rows, :, first:last].transpose(1, 2).contiguous())
                if single_chunk:
                    return output.transpose(1, 2)
                attn_output[rows, :, first:last] = output.transpose(1, 2)
        return attn_output

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, seq_length, _ = hidden_states.shape
        pairs, head_dim = self.num_pairs, self.head_dim
        implementation = self.config._attn_implementation or "eager"
        if implementation == "sdpa" and not output_attentions and hidden_states.device.type == "cpu":
            attn_output = self._combined_maps_attention(
                self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states), attention_mask
            )
            attn_output = self.diff_norm(attn_output, scale=1 - self.lambda_init)
            return self.out_proj(attn_output.reshape(batch_size, seq_length, self.embed_dim)), None

        # One kernel call per softmax map: call j attends with head 2i + j of every pair i (a strided view of the
        # projections, no copy) over the pair's 2d-wide value head, so neither values nor outputs are duplicated.
        query = self.q_proj(hidden_states).view(batch_size, seq_length, pairs, 2, head_dim)
        key = self.k_proj(hidden_states).view(batch_size, seq_length, pairs, 2, head_dim)
        value = self.v_proj(hidden_states).view(batch_size, seq_length, pairs, 2 * head_dim).transpose(1, 2)
        lambda_full = self.lambda_full()
        if output_attentions:
            # The returned maps A1 − λ·A2 are the ones the output is computed from, so they are part of the graph
            # (gradient-based attribution can differentiate through them).
            attn_weights = self._differential_maps(query, key, attention_mask, lambda_full)
            attn_output = torch.matmul(attn_weights, value).transpose(1, 2)
        else:
            attn_weights = None
            attn_output = self._differential_outputs(query, key, value, attention_mask, lambda_full, **kwargs)
        attn_output = self.diff_norm(attn_output, scale=1 - self.lambda_init)
        attn_output = self.out_proj(attn_output.reshape(batch_size, seq_length, self.embed_dim))
        return attn_output, attn_weights

    def _differential_maps(self, query, key, attention_mask, lambda_full) -> torch.Tensor:
        """`A1 − λ·A2` of every pair, (batch, pairs, seq, seq), from the eager kernel's maps."""
        _attention_function(self, need_weights=True)  # (says once that a fused kernel was asked for)
        query, key = query.transpose(1, 2), key.transpose(1, 2)  # (batch, pairs, seq, 2, d)
        maps = [_softmax_maps(query[..., j, :], key[..., j, :], attention_mask, self.scaling) for j in (0, 1)]
        return torch.addcmul(maps[0], maps[1], lambda_full, value=-1)

    def _differential_outputs(self, query, key, value, attention_mask, lambda_full, **kwargs) -> torch.Tensor:
        """`A1·V − λ·A2·V`, (batch, seq, pairs, 2d), one registry kernel call per map (two per map for flash)."""
        implementation = self.config._attn_implementation or "eager"
        # flash kernels under any name ("flash_attention_2", "paged|flash_attention_2", hub "…/flash-attn3", …)
        split_values = "flash" in implementation
        head_dim = self.head_dim
        outputs = []
        for j in (0, 1):
            query_j, key_j = query[:, :, :, j].transpose(1, 2), key[:, :, :, j].transpose(1, 2)
            if split_values:  # flash attention needs values as wide as the queries: two d-wide halves
                halves = [value[..., :head_dim], value[..., head_dim:]]
                output = torch.cat(
                    [self._call_kernel(query_j, key_j, half, attention_mask, False, **kwargs)[0] for half in halves],
                    dim=-1,
                )
            else:
                output = self._call_kernel(query_j, key_j, value, attention_mask, False, **kwargs)[0]
            outputs.append(output)  # (batch, seq, pairs, 2d)
        # A1·V − λ·A2·V in one pass over contiguous operands (in a half-precision model λ is rounded to its dtype)
        return torch.addcmul(outputs[0], outputs[1], lambda_full, value=-1)


class DiffCLIPMLP(nn.Module):
    def __init__(self, config: DiffCLIPTextConfig | DiffCLIPVisionConfig):
        super().__init__()
        self.config = config
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

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

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        residual = hidden_states
        # rebinding drops the attention output before the MLP runs, so it does not add to the layer's peak memory
        hidden_states, attn_weights = self.self_attn(
            self.layer_norm1(hidden_states),
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            **kwargs,
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
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> BaseModelOutput:
        hidden_states = inputs_embeds
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights = layer(hidden_states, attention_mask, output_attentions, **kwargs)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        return BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )


# --------------------------------------------------------------------------------------------------
# Pre-trained base
# --------------------------------------------------------------------------------------------------


class DiffCLIPPreTrainedModel(PreTrainedModel):
    config_class = DiffCLIPConfig
    base_model_prefix = "diffclip"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DiffCLIPTextEmbeddings", "DiffCLIPVisionEmbeddings", "DiffCLIPEncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flash_attn_2 = True
    _supports_flex_attn = False
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        """Initialise `module`'s own parameters as the authors' code initialises a fresh model of this variant
        (README, "Initialisation"; per tower, by its attention kind).

        Every module that owns parameters initialises exactly those, and nothing else: transformers 5 calls this only
        for modules owning parameters that a load left missing (it skips modules that own none), 4.57 for every module
        not fully loaded. Leaf layers (`nn.Linear`, `nn.Embedding`, `nn.Conv2d`) learn their role from the module
        holding them. Only `nn.init` functions write, which transformers 5 guards so that a loaded tensor is never
        overwritten; `initializer_factor` (1 for the original) scales every random draw, for tests."""
        holder, name = self._holder_of(module)
        tower = next((owner.config for owner in (module, holder) if _tower_kind(owner) is not None), None)
        factor = getattr(tower if tower is not None else self.config, "initializer_factor", 1.0)
        if isinstance(module, (nn.LayerNorm, DiffCLIPRMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, DiffCLIPDifferentialAttention):  # its own parameters: the four λ vectors
            for vector in (module.lambda_q1, module.lambda_k1, module.lambda_q2, module.lambda_k2):
                nn.init.normal_(vector, std=0.1 * factor)
        elif isinstance(module, DiffCLIPVisionEmbeddings):  # its own parameter: the class token (timm)
            nn.init.normal_(module.class_embedding, std=1e-6 * factor)
        elif isinstance(module, DiffCLIPModel):  # its own parameter: the temperature
            nn.init.constant_(module.logit_scale, module.config.logit_scale_init_value)
        elif isinstance(module, nn.Embedding):
            if isinstance(holder, DiffCLIPVisionEmbeddings):  # timm's pos_embed
                nn.init.trunc_normal_(module.weight, std=tower.initializer_range * factor)
            elif name == "position_embedding":
                nn.init.normal_(module.weight, std=0.01 * factor)
            else:  # the token embedding (or one set with `set_input_embeddings`)
                range_ = tower.initializer_range if tower is not None else 0.02
                nn.init.normal_(module.weight, std=range_ * factor)
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            self._init_linear(module, holder, name, tower, factor)

    def _init_linear(self, module: nn.Linear | nn.Conv2d, holder: nn.Module, name: str, tower, factor: float):
        if name in ("text_projection", "visual_projection"):  # N(0, tower width^-0.5)
            nn.init.normal_(module.weight, std=module.in_features**-0.5 * factor)
        elif _tower_kind(holder) == "vision" and isinstance(holder, (DiffCLIPAttention, DiffCLIPMLP)):
            if tower.use_differential_attention:
                # The original rebuilds the blocks after timm's init: PyTorch's default Linear init stays.
                _torch_default(module, factor)
            else:  # timm's ViT init
                nn.init.trunc_normal_(module.weight, std=tower.initializer_range * factor)
                nn.init.zeros_(module.bias)
        elif _tower_kind(holder) == "text" and isinstance(holder, (DiffCLIPAttention, DiffCLIPMLP)):
            # OpenAI CLIP's text init: width w, L layers
            width, depth = tower.hidden_size, tower.num_hidden_layers
            attn_std, proj_std, fc_std = width**-0.5, width**-0.5 * (2 * depth) ** -0.5, (2 * width) ** -0.5
            std = {"out_proj": proj_std, "fc1": fc_std, "fc2": proj_std}.get(name, attn_std)  # q/k/v: attn_std
            nn.init.normal_(module.weight, std=std * factor)
            if isinstance(holder, DiffCLIPAttention) and not tower.use_differential_attention:
                nn.init.zeros_(module.bias)  # nn.MultiheadAttention zeroes its biases
            else:  # DiffCLIP's attention Linears and every MLP keep PyTorch's default bias
                _torch_default_bias(module, factor)
        else:  # the patch embedding (PyTorch's default in both originals), or a layer added by the user
            _torch_default(module, factor)

    def _holder_of(self, module: nn.Module) -> tuple[nn.Module | None, str]:
        """The module holding `module` as a child, and the child's name (`(None, "")` for the model itself)."""
        holders = self.__dict__.get("_diffclip_holders")
        entry = holders.get(id(module)) if holders is not None else None
        if entry is None or entry[0]._modules.get(entry[1]) is not module:  # first call, or the model changed
            holders = {
                id(child): (parent, child_name)
                for parent in self.modules()
                for child_name, child in parent._modules.items()
                if child is not None
            }
            self.__dict__["_diffclip_holders"] = holders
            entry = holders.get(id(module))
        return entry if entry is not None else (None, "")


def _tower_kind(owner: nn.Module | None) -> str | None:
    """"text" or "vision" for a module built from a tower configuration, else None. Read from `model_type`, not the
    class: a configuration may come from another copy of this code (remote code loaded twice)."""
    model_type = getattr(getattr(owner, "config", None), "model_type", None)
    return {DiffCLIPTextConfig.model_type: "text", DiffCLIPVisionConfig.model_type: "vision"}.get(model_type)


def _torch_default(module: nn.Linear | nn.Conv2d, factor: float = 1.0) -> None:
    """PyTorch's `reset_parameters` of Linear/Conv (kaiming-uniform with a=√5, i.e. U(±fan_in^-0.5), for weight and
    bias), written with `nn.init.uniform_`, which transformers guards during loading."""
    fan_in = module.weight[0].numel()
    nn.init.uniform_(module.weight, -(fan_in**-0.5) * factor, fan_in**-0.5 * factor)
    _torch_default_bias(module, factor)


def _torch_default_bias(module: nn.Linear | nn.Conv2d, factor: float = 1.0) -> None:
    if module.bias is not None:
        bound = module.weight[0].numel() ** -0.5 * factor
        nn.init.uniform_(module.bias, -bound, bound)


def _resolve(value, default):
    return default if value is None else value


def _text_pool_index(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Position of the pooled token of each row: the first end-of-text token. A row without one (the original
    tokenizer truncates long texts past it) falls back to the original rule, the position of the largest id."""
    is_eos = input_ids == eos_token_id
    first_eos = is_eos.int().argmax(dim=-1)
    return torch.where(is_eos.any(dim=-1), first_eos, input_ids.argmax(dim=-1))


def _check_right_padding(attention_mask: torch.Tensor | None) -> None:
    """The causal mask makes right padding exact without a padding mask; left padding would not be."""
    if attention_mask is None or torch.jit.is_tracing():
        return
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and compiler.is_compiling():
        return
    if attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask must have shape (batch_size, seq_length), got {tuple(attention_mask.shape)}."
        )
    if bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
        raise ValueError(
            "DiffCLIP's text tower expects right padding (the CLIP tokenizer's default); attention_mask shows left "
            "padding. Tokenize with `padding_side='right'`."
        )


# --------------------------------------------------------------------------------------------------
# Towers
# --------------------------------------------------------------------------------------------------


class DiffCLIPTextTransformer(nn.Module):
    def __init__(self, config: DiffCLIPTextConfig):
        super().__init__()
        self.config = config
        self.embeddings = DiffCLIPTextEmbeddings(config)
        self.encoder = DiffCLIPEncoder(config, is_causal=True)
        self.final_layer_norm = DiffCLIPLayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        if input_ids is None:
            raise ValueError("You have to specify input_ids.")
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch_size, seq_length), got {tuple(input_ids.shape)}.")
        _check_right_padding(attention_mask)
        hidden_states = self.embeddings(input_ids=input_ids, position_ids=position_ids)
        seq_length = input_ids.shape[1]
        # Additive causal mask for the eager kernel; the fused kernels use `is_causal` instead.
        causal_mask = torch.full(
            (seq_length, seq_length),
            torch.finfo(hidden_states.dtype).min,
            dtype=hidden_states.dtype,
            device=hidden_states.device,
        ).triu(1)[None, None]
        encoder_outputs = self.encoder(
            hidden_states,
            attention_mask=causal_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        last_hidden_state = self.final_layer_norm(encoder_outputs.last_hidden_state)
        pool_index = _text_pool_index(input_ids.to(last_hidden_state.device), self.config.eos_token_id)
        pooled_output = last_hidden_state[
            torch.arange(last_hidden_state.shape[0], device=pool_index.device), pool_index
        ]
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=pooled_output,
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
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

    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values.")
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        if self.pre_layernorm is not None:
            hidden_states = self.pre_layernorm(hidden_states)
        encoder_outputs = self.encoder(
            hidden_states,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        # The final norm covers every token (timm's ViT); the class token is the pooled output.
        last_hidden_state = self.post_layernorm(encoder_outputs.last_hidden_state)
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=last_hidden_state[:, 0],
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )


def _finish(output: ModelOutput, return_dict: bool):
    return output if return_dict else output.to_tuple()


class DiffCLIPTextModel(DiffCLIPPreTrainedModel):
    """The DiffCLIP text tower without projection."""

    config_class = DiffCLIPTextConfig
    _no_split_modules = ["DiffCLIPTextEmbeddings", "DiffCLIPEncoderLayer"]

    def __init__(self, config: DiffCLIPTextConfig):
        super().__init__(config)
        self.text_model = DiffCLIPTextTransformer(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Module):
        self.text_model.embeddings.token_embedding = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        outputs = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_attentions=_resolve(output_attentions, self.config.output_attentions),
            output_hidden_states=_resolve(output_hidden_states, self.config.output_hidden_states),
            **kwargs,
        )
        return _finish(outputs, _resolve(return_dict, self.config.return_dict))


class DiffCLIPVisionModel(DiffCLIPPreTrainedModel):
    """The DiffCLIP vision tower without projection; usable as an image encoder (`output_hidden_states=True` gives
    every layer's tokens)."""

    config_class = DiffCLIPVisionConfig
    main_input_name = "pixel_values"
    _no_split_modules = ["DiffCLIPVisionEmbeddings", "DiffCLIPEncoderLayer"]

    def __init__(self, config: DiffCLIPVisionConfig):
        super().__init__(config)
        self.vision_model = DiffCLIPVisionTransformer(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vision_model.embeddings.patch_embedding

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        outputs = self.vision_model(
            pixel_values=pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_attentions=_resolve(output_attentions, self.config.output_attentions),
            output_hidden_states=_resolve(output_hidden_states, self.config.output_hidden_states),
            **kwargs,
        )
        return _finish(outputs, _resolve(return_dict, self.config.return_dict))


# --------------------------------------------------------------------------------------------------
# Dual encoder and single-tower heads
# --------------------------------------------------------------------------------------------------


class DiffCLIPModel(DiffCLIPPreTrainedModel):
    """DiffCLIP: both towers, their projections and the learned temperature.

    Similarities are `exp(logit_scale) · cos(image, text)`; `return_loss=True` adds the symmetric contrastive loss.
    """

    config_class = DiffCLIPConfig

    def __init__(self, config: DiffCLIPConfig):
        super().__init__(config)
        # transformers resolves the kernel of the model's own config; the towers (modules, not sub-models) get theirs
        # here: what was requested for them, checked, else the same default
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
        self.visual_projection = nn.Linear(self.vision_embed_dim, self.projection_dim, bias=False)
        self.text_projection = nn.Linear(self.text_embed_dim, self.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Module):
        self.text_model.embeddings.token_embedding = value

    def get_text_features(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple | torch.FloatTensor:
        """Projected (not normalised) text embeddings. Like the installed transformers' CLIP: on transformers 5 a
        `BaseModelOutputWithPooling` whose `pooler_output` is the embedding (a tuple when `return_dict` or the config's
        `return_dict` is False; hidden states and maps as `forward` gives them), on 4.x the tensor itself."""
        outputs = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_attentions=_resolve(output_attentions, self.config.output_attentions),
            output_hidden_states=_resolve(output_hidden_states, self.config.output_hidden_states),
            **kwargs,
        )
        return self._features(outputs, self.text_projection, return_dict)

    def get_image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple | torch.FloatTensor:
        """Projected (not normalised) image embeddings; return type as in [`get_text_features`]."""
        outputs = self.vision_model(
            pixel_values=pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_attentions=_resolve(output_attentions, self.config.output_attentions),
            output_hidden_states=_resolve(output_hidden_states, self.config.output_hidden_states),
            **kwargs,
        )
        return self._features(outputs, self.visual_projection, return_dict)

    def _features(self, outputs: BaseModelOutputWithPooling, projection: nn.Linear, return_dict: bool | None):
        embeds = projection(outputs.pooler_output)
        if not _FEATURES_AS_OUTPUT:
            return embeds
        outputs.pooler_output = embeds
        return _finish(outputs, _resolve(return_dict, self.config.return_dict))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DiffCLIPOutput | tuple:
        output_attentions = _resolve(output_attentions, self.config.output_attentions)
        output_hidden_states = _resolve(output_hidden_states, self.config.output_hidden_states)
        vision_outputs = self.vision_model(
            pixel_values=pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        text_outputs = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        image_embeds = self.visual_projection(vision_outputs.pooler_output)
        text_embeds = self.text_projection(text_outputs.pooler_output)
        image_embeds = image_embeds / image_embeds.norm(p=2, dim=-1, keepdim=True)
        text_embeds = text_embeds / text_embeds.norm(p=2, dim=-1, keepdim=True)

        logits_per_text = torch.matmul(text_embeds, image_embeds.t().to(text_embeds.device))
        logits_per_text = logits_per_text * self.logit_scale.exp().to(text_embeds.device)
        logits_per_image = logits_per_text.t()

        loss = None
        if return_loss:
            if logits_per_text.shape[0] != logits_per_text.shape[1]:
                raise ValueError(
                    "return_loss=True needs matching image-text pairs: got "
                    f"{logits_per_text.shape[1]} images and {logits_per_text.shape[0]} texts."
                )
            loss = contrastive_loss(logits_per_text)

        output = DiffCLIPOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )
        return _finish(output, _resolve(return_dict, self.config.return_dict))


class DiffCLIPTextModelWithProjection(DiffCLIPPreTrainedModel):
    """The text tower with its projection to the joint space."""

    config_class = DiffCLIPTextConfig
    _no_split_modules = ["DiffCLIPTextEmbeddings", "DiffCLIPEncoderLayer"]

    def __init__(self, config: DiffCLIPTextConfig):
        super().__init__(config)
        self.text_model = DiffCLIPTextTransformer(config)
        self.text_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Module):
        self.text_model.embeddings.token_embedding = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DiffCLIPTextModelOutput | tuple:
        outputs = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_attentions=_resolve(output_attentions, self.config.output_attentions),
            output_hidden_states=_resolve(output_hidden_states, self.config.output_hidden_states),
            **kwargs,
        )
        output = DiffCLIPTextModelOutput(
            text_embeds=self.text_projection(outputs.pooler_output),
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return _finish(output, _resolve(return_dict, self.config.return_dict))


class DiffCLIPVisionModelWithProjection(DiffCLIPPreTrainedModel):
    """The vision tower with its projection to the joint space."""

    config_class = DiffCLIPVisionConfig
    main_input_name = "pixel_values"
    _no_split_modules = ["DiffCLIPVisionEmbeddings", "DiffCLIPEncoderLayer"]

    def __init__(self, config: DiffCLIPVisionConfig):
        super().__init__(config)
        self.vision_model = DiffCLIPVisionTransformer(config)
        self.visual_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vision_model.embeddings.patch_embedding

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DiffCLIPVisionModelOutput | tuple:
        outputs = self.vision_model(
            pixel_values=pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_attentions=_resolve(output_attentions, self.config.output_attentions),
            output_hidden_states=_resolve(output_hidden_states, self.config.output_hidden_states),
            **kwargs,
        )
        output = DiffCLIPVisionModelOutput(
            image_embeds=self.visual_projection(outputs.pooler_output),
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return _finish(output, _resolve(return_dict, self.config.return_dict))


__all__ = [
    "DiffCLIPModel",
    "DiffCLIPPreTrainedModel",
    "DiffCLIPTextModel",
    "DiffCLIPTextModelWithProjection",
    "DiffCLIPVisionModel",
    "DiffCLIPVisionModelWithProjection",
]
