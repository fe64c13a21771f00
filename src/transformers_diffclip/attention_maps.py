# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Attention maps: where a DiffCLIP (or CLIP) image encoder looks, with and without a text query.

Two kinds of per-patch relevance map, each returned at patch resolution and upsampled to the model's input crop:

1. **Class-token attention** (no query). How much the class token, whose final state is the image embedding,
   draws from every patch: either one layer's map ([`class_token_attention`]) or the attention rollout of all
   layers ([`attention_rollout`], Abnar & Zuidema 2020), which follows information through the residual stream.
2. **Text-conditioned relevance** ([`gradient_weighted_relevance`]): gradient-weighted attention rollout (Chefer,
   Gur & Wolf 2021, "Generic Attention-model Explainability"). The score is the cosine similarity of the image
   and the query embedding; every layer contributes `Ā = mean_heads((∂score/∂A ⊙ A)⁺)` and relevance is propagated
   as `R ← R + Ā·R` from `R = I`; the map is the class token's row over the patches. It is chosen over the
   similarity of projected patch tokens with the text because (a) it is built from the attention maps themselves,
   which is what this module exists to compare between differential and standard attention, while patch-token
   similarity never looks at attention; (b) CLIP's final patch tokens are not trained to align with text (only
   the class token is projected in training), and their similarity maps are known to be noisy or inverted; (c) it
   needs no extra parameters and works for any CLIP-like model.

**Negative entries.** A differential layer's map `A1 − λ·A2` can be negative: the head subtracts that token's
value. What this module does with the sign:

- Class-token maps and rollout use the *positive part*: every head's map is clamped at 0 before heads are
  averaged. The subtraction exists to cancel attention noise common to both maps; what survives positive is where
  the head draws its output from, while a negative entry is a token the head removes. Absolute values would paint
  the cancelled background, exactly what differential attention suppresses, as attended. For the softmax maps of
  standard layers (the CLIP baseline) the clamp changes nothing, so CLIP's maps are the textbook ones.
- Rollout then renormalises every row to sum to 1 (`Â = P / P.sum(-1)`, `P = mean_heads(max(A, 0))`; a row with
  no positive entry becomes the identity row) and uses `0.5·Â + 0.5·I` per layer, multiplied from the first layer
  to the last: `rollout = (0.5·Â_L + 0.5·I) ⋯ (0.5·Â_1 + 0.5·I)`. The renormalisation is what the layer itself
  does: the per-head RMSNorm after `(A1 − λ·A2)·V` removes each row's overall scale (rows sum to `1 − λ`, not 1).
- The text-conditioned map keeps the sign: Chefer's rule multiplies the signed map by its gradient and keeps the
  positive part of the product, i.e. the first-order contribution of each entry to the score. A negative entry
  whose removal raises the score (negative gradient) counts as relevant, as it should.

Gradients with respect to the maps come from the heads' outputs: a head's output row is `o_i = Σ_j A_ij·v_j`
(before DiffCLIP's RMSNorm, before `out_proj` in standard attention), so `∂s/∂A_ij = ⟨∂s/∂o_i, v_j⟩`. Forward hooks
capture `o` and `v` (`v_proj`'s output), which works for any attention kernel, for DiffCLIP's differential layers
(whose returned maps are not themselves on the forward path) and for transformers' CLIP alike.

**Attention kernels.** DiffCLIP computes the maps with the eager kernel for any call that asks for them, even when
loaded with `attn_implementation="sdpa"`; transformers' CLIP returns no maps under sdpa. [`eager_attention`]
therefore switches every config of the model to `"eager"` for the computation and restores the previous values
(and the train/eval mode) afterwards, also when the computation fails.

Rendering ([`render_attention_grid`]) uses PIL only: one row per model, the model's input crop first, then one
heat-map overlay per map, captioned with the model's and the query's names. Every map is min–max scaled to [0, 1]
on its own for display; compare shapes across rows, not absolute colours.
"""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from transformers import PretrainedConfig

from .core.files import atomic_write_bytes, check_output_file
from .core.images import open_image
from .core.loading import add_model_arguments, image_processor_of, model_device_dtype, tokenizer_of
from .core.loading import load_model_and_processor as _load_model_and_processor


# Display constants of `render_attention_grid` (pixels): grid size is
# width = PAD + cols·(cell + PAD), height = PAD + rows·(cell + CAPTION_HEIGHT + PAD).
PAD = 4
CAPTION_HEIGHT = 16

# Jet-like colour map: (position, (r, g, b)) anchors, linearly interpolated.
_COLORMAP_ANCHORS = (
    (0.0, (0, 0, 128)),
    (0.125, (0, 0, 255)),
    (0.375, (0, 255, 255)),
    (0.625, (255, 255, 0)),
    (0.875, (255, 0, 0)),
    (1.0, (128, 0, 0)),
)
METHODS = ("rollout", "layer")


@dataclass
class RelevanceMap:
    """One relevance map of one image.

    Args:
        patch_map (`torch.FloatTensor` of shape `(grid_height, grid_width)`): non-negative relevance per patch.
        image_map (`torch.FloatTensor` of shape `(height, width)`): `patch_map` upsampled bilinearly to the model's
            input crop.
        image (`PIL.Image.Image`): the model's input crop (resized, center-cropped, not normalised) that the map
            covers.
        label (`str`): the query, or a description of the query-free map.
        score (`float`, *optional*): for a text-conditioned map, the cosine similarity of image and query.
    """

    patch_map: torch.Tensor
    image_map: torch.Tensor
    image: Image.Image
    label: str
    score: float | None = None


# --------------------------------------------------------------------------------------------------
# Inputs: images, models, processors
# --------------------------------------------------------------------------------------------------


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("The list of text queries is empty; give at least one query.")
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Every text query must be a non-empty string, got {text!r}.")
    return texts


def vision_tower(model: nn.Module) -> nn.Module:
    """The module holding the image encoder's `embeddings` and `encoder.layers`: `model.vision_model` (followed as
    far as it goes) or the model itself. Raises `ValueError` for a model without one (e.g. a text tower)."""
    tower = model
    while getattr(tower, "vision_model", None) is not None:
        tower = tower.vision_model
    embeddings = getattr(tower, "embeddings", None)
    encoder = getattr(tower, "encoder", None)
    if getattr(embeddings, "patch_embedding", None) is None or getattr(encoder, "layers", None) is None:
        raise ValueError(
            f"{type(model).__name__} has no vision tower; attention maps need an image encoder (a DiffCLIPModel, "
            "a DiffCLIPVisionModel or a CLIP-like model with `vision_model`)."
        )
    return tower


def _has_text_tower(model: nn.Module) -> bool:
    return getattr(model, "text_model", None) is not None and getattr(model, "visual_projection", None) is not None


def preprocess_image(processor, image: str | os.PathLike | Image.Image) -> tuple[torch.Tensor, Image.Image]:
    """`pixel_values` of shape `(1, 3, H, W)` for `image`, and the input crop as a PIL image (the normalisation of
    the image processor undone), which is what the maps cover."""
    image = open_image(image)
    image_processor = image_processor_of(processor)
    pixel_values = image_processor(images=image, return_tensors="pt")["pixel_values"]
    array = pixel_values[0].float()
    if getattr(image_processor, "do_normalize", False):
        mean = torch.tensor(image_processor.image_mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(image_processor.image_std, dtype=torch.float32)[:, None, None]
        array = array * std + mean
    if getattr(image_processor, "do_rescale", False):
        array = array / float(image_processor.rescale_factor)
    array = array.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return pixel_values, Image.fromarray(array, mode="RGB")


def load_model_and_processor(
    name_or_path: str,
    device: str | torch.device | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
):
    """A model (dual encoder or vision tower) and its processor through the package's one loader
    (`core.loading`: no code from the folder or repo runs unless `trust_remote_code`), in eval mode on
    `device` (`None`: CUDA when available). A folder without a tokenizer gets its image processor."""
    return _load_model_and_processor(
        name_or_path, device, revision=revision, trust_remote_code=trust_remote_code, dual_encoder=False
    )


# --------------------------------------------------------------------------------------------------
# Attention maps from the model
# --------------------------------------------------------------------------------------------------


def _model_configs(model: nn.Module) -> list[PretrainedConfig]:
    """Every distinct config of the model, parents before their sub-configs."""
    configs, seen = [], set()
    queue = [model.config] if isinstance(getattr(model, "config", None), PretrainedConfig) else []
    queue += [m.config for m in model.modules() if isinstance(getattr(m, "config", None), PretrainedConfig)]
    while queue:
        config = queue.pop(0)
        if id(config) in seen:
            continue
        seen.add(id(config))
        configs.append(config)
        for key in getattr(config, "sub_configs", {}) or {}:
            sub_config = getattr(config, key, None)
            if isinstance(sub_config, PretrainedConfig):
                queue.append(sub_config)
    return configs


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` with the eager attention kernel and in eval mode inside the block, then restore every config's
    `_attn_implementation` and the train/eval mode, also when the block raises.

    DiffCLIP returns maps under any kernel (it switches to eager for calls with `output_attentions=True`);
    transformers' CLIP and models like it return none under sdpa, hence the switch.
    """
    saved = [(config, config._attn_implementation) for config in _model_configs(model)]
    was_training = model.training
    try:
        for config, implementation in saved:
            if implementation != "eager":
                config._attn_implementation = "eager"
        model.eval()
        yield model
    finally:
        for config, implementation in saved:  # parents first: a parent's setter also writes its sub-configs
            config._attn_implementation = implementation
        model.train(was_training)


def _checked_attentions(attentions) -> tuple[torch.Tensor, ...]:
    if not attentions or any(a is None for a in attentions):
        raise ValueError("The model returned no attention maps; it may not support `output_attentions=True`.")
    return tuple(attentions)


@torch.no_grad()
def vision_attentions(model: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The image encoder's attention maps, one float32 tensor per layer: `(batch, heads, N, N)` softmax maps for
    standard layers, `(batch, heads / 2, N, N)` maps `A1 − λ·A2` for differential ones (`N = 1 + patches`)."""
    tower = vision_tower(model)
    device, dtype = model_device_dtype(model)
    with eager_attention(model):
        outputs = tower(pixel_values=pixel_values.to(device=device, dtype=dtype), output_attentions=True)
    return tuple(a.float() for a in _checked_attentions(outputs.attentions))


def text_attention_gradients(
    model: nn.Module, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], torch.Tensor]:
    """Image-encoder attention maps and the gradients of the image–text cosine similarity with respect to them.

    `pixel_values` (batch B) and `input_ids` (batch B) are paired row by row. Returns `(attentions, gradients,
    scores)`: per layer `(B, heads, N, N)` maps and gradients `∂score_b/∂A_b` (float32), and the `(B,)` cosine
    similarities. The gradient of a map is read from its heads' outputs, `∂s/∂A_ij = ⟨∂s/∂o_i, v_j⟩` (see the
    module docstring), so it is exact for differential layers, whose returned maps are not on the forward path.
    """
    if not _has_text_tower(model):
        raise ValueError(
            f"{type(model).__name__} has no text tower; text-conditioned maps need a dual encoder (e.g. "
            "DiffCLIPModel). Use the class-token map for a vision tower."
        )
    if pixel_values.shape[0] != input_ids.shape[0]:
        raise ValueError(
            f"pixel_values and input_ids must pair up row by row, got {pixel_values.shape[0]} images and "
            f"{input_ids.shape[0]} texts."
        )
    tower = vision_tower(model)
    head_outputs, values, handles = {}, {}, []

    def keep(store, index, from_input):
        def hook(module, args, output=None):
            store[index] = args[0] if from_input else output

        return hook

    try:
        for index, layer in enumerate(tower.encoder.layers):
            attention = getattr(layer, "self_attn", None)
            if attention is None or not hasattr(attention, "v_proj") or not hasattr(attention, "out_proj"):
                raise ValueError(
                    f"Layer {index} of {type(model).__name__} has no `self_attn` with `v_proj`/`out_proj`; "
                    "text-conditioned maps support DiffCLIP and CLIP-style attention."
                )
            # Where the heads' outputs o = A·V sit before being mixed: DiffCLIP's differential layers normalise them
            # (diff_norm) first, standard layers feed them straight to out_proj.
            mixer = getattr(attention, "diff_norm", None)
            mixer = attention.out_proj if mixer is None else mixer
            handles.append(mixer.register_forward_pre_hook(keep(head_outputs, index, True)))
            handles.append(attention.v_proj.register_forward_hook(keep(values, index, False)))

        device, dtype = model_device_dtype(model)
        pixel_values = pixel_values.to(device=device, dtype=dtype).detach().requires_grad_(True)
        input_ids = input_ids.to(device)
        if attention_mask is not None:
            attention_mask = attention_mask.to(device)
        with eager_attention(model), torch.inference_mode(False), torch.enable_grad():
            outputs = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                pixel_values=pixel_values,
                output_attentions=True,
                return_dict=True,
            )
            attentions = _checked_attentions(outputs.vision_model_output.attentions)
            image_embeds = F.normalize(outputs.image_embeds.float(), dim=-1)
            text_embeds = F.normalize(outputs.text_embeds.float(), dim=-1)
            scores = (image_embeds * text_embeds).sum(-1)
            layers = range(len(attentions))
            output_grads = torch.autograd.grad(scores.sum(), [head_outputs[i] for i in layers])
    finally:
        for handle in handles:
            handle.remove()

    gradients = []
    for index, grad in zip(layers, output_grads):
        batch, heads, tokens, _ = attentions[index].shape
        grad = grad.float().reshape(batch, tokens, heads, -1)
        value = values[index].detach().float().reshape(batch, tokens, heads, -1)
        gradients.append(torch.einsum("bihc,bjhc->bhij", grad, value))
    return tuple(a.detach().float() for a in attentions), tuple(gradients), scores.detach()


# --------------------------------------------------------------------------------------------------
# Relevance from attention maps (pure tensor functions)
# --------------------------------------------------------------------------------------------------


def _layer_index(layer: int, num_layers: int, name: str = "layer") -> int:
    if not -num_layers <= layer < num_layers:
        raise ValueError(f"{name} must be in [{-num_layers}, {num_layers - 1}] for {num_layers} layers, got {layer}.")
    return layer % num_layers


def class_token_attention(attentions: Sequence[torch.Tensor], layer: int = -1) -> torch.Tensor:
    """The class token's attention to every patch in one layer: `mean_heads(max(A, 0))[:, 0, 1:]`, shape
    `(batch, num_patches)`; each head's map is clamped at 0 before heads are averaged (see the module docstring)."""
    attention = attentions[_layer_index(layer, len(attentions))]
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
    start = _layer_index(start_layer, len(attentions), "start_layer")
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
    start = _layer_index(start_layer, len(attentions), "start_layer")
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


# --------------------------------------------------------------------------------------------------
# High-level API
# --------------------------------------------------------------------------------------------------


def image_attention_map(
    model: nn.Module, processor, image: str | os.PathLike | Image.Image, method: str = "rollout", layer: int = -1
) -> RelevanceMap:
    """Where the class token looks, without a query.

    Args:
        model: a DiffCLIP (or CLIP-like) dual encoder or vision tower.
        processor: its processor or image processor.
        image: a path or a PIL image.
        method: `"rollout"` (all layers, [`attention_rollout`]) or `"layer"` (one layer, [`class_token_attention`]).
        layer: the layer for `method="layer"` (negative counts from the end).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    pixel_values, crop = preprocess_image(processor, image)
    attentions = vision_attentions(model, pixel_values)
    if method == "rollout":
        scores, label = attention_rollout(attentions)[:, 0, 1:], "class token (rollout)"
    else:
        index = _layer_index(layer, len(attentions))
        scores, label = class_token_attention(attentions, index), f"class token (layer {index})"
    patch_map, image_map = to_image_map(scores[0], *pixel_values.shape[-2:])
    return RelevanceMap(patch_map=patch_map, image_map=image_map, image=crop, label=label)


def text_relevance_maps(
    model: nn.Module,
    processor,
    image: str | os.PathLike | Image.Image,
    texts: Sequence[str],
    start_layer: int = 0,
) -> list[RelevanceMap]:
    """One gradient-weighted attention map (Chefer et al.) per text query: which patches make the image match it.

    Args:
        model: a DiffCLIP (or CLIP-like) dual encoder.
        processor: its processor (image processor and tokenizer).
        image: a path or a PIL image.
        texts: the queries (non-empty strings).
        start_layer: first layer whose attention enters the relevance (0: all layers; -1: the last only).
    """
    texts = _check_texts(texts)
    if not _has_text_tower(model):
        vision_tower(model)  # a text-only model: say that there is no vision tower first
        raise ValueError(
            f"{type(model).__name__} has no text tower; text-conditioned maps need a dual encoder (e.g. "
            "DiffCLIPModel). Use the class-token map for a vision tower."
        )
    tokenizer = tokenizer_of(processor)
    if tokenizer is None:
        raise ValueError("Text-conditioned maps need a processor with a tokenizer.")
    pixel_values, crop = preprocess_image(processor, image)
    tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    attentions, gradients, scores = text_attention_gradients(
        model,
        pixel_values.repeat(len(texts), 1, 1, 1),
        tokens["input_ids"],
        tokens.get("attention_mask"),
    )
    relevance = gradient_weighted_relevance(attentions, gradients, start_layer)
    maps = []
    for text, row, score in zip(texts, relevance, scores.tolist()):
        patch_map, image_map = to_image_map(row, *pixel_values.shape[-2:])
        maps.append(RelevanceMap(patch_map=patch_map, image_map=image_map, image=crop, label=text, score=score))
    return maps


# --------------------------------------------------------------------------------------------------
# Rendering (PIL only)
# --------------------------------------------------------------------------------------------------


def normalize_map(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """Min–max scale to [0, 1] (float32); a constant map becomes all zeros."""
    array = np.asarray(values, dtype=np.float32)
    low, high = float(array.min()), float(array.max())
    if high - low <= 1e-12:
        return np.zeros_like(array)
    return (array - low) / (high - low)


def colorize(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] → `uint8` RGB of shape `values.shape + (3,)`, jet-like (dark blue → cyan → yellow → dark
    red)."""
    values = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    positions = [position for position, _ in _COLORMAP_ANCHORS]
    channels = [np.interp(values, positions, [color[c] for _, color in _COLORMAP_ANCHORS]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def overlay_heatmap(image: Image.Image, heat: torch.Tensor | np.ndarray, alpha: float = 0.5) -> Image.Image:
    """`image` blended with the colourised, min–max scaled `heat` (resized to the image if needed)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    colored = Image.fromarray(colorize(normalize_map(heat)), mode="RGB")
    if colored.size != image.size:
        colored = colored.resize(image.size, Image.BILINEAR)
    return Image.blend(image.convert("RGB"), colored, alpha)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _draw_caption(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font, width: int) -> None:
    try:
        draw.text(xy, _fit_text(draw, text, font, width), fill=(0, 0, 0), font=font)
    except UnicodeEncodeError:  # Pillow's bitmap fallback font knows Latin-1 only
        text = text.encode("latin-1", "replace").decode("latin-1")
        draw.text(xy, _fit_text(draw, text, font, width), fill=(0, 0, 0), font=font)


def render_attention_grid(
    rows: Sequence[tuple[str, Sequence[RelevanceMap]]], cell_size: int = 224, alpha: float = 0.5
) -> Image.Image:
    """One row per model: its input crop, then an overlay per map, each `cell_size` pixels square and captioned
    (the model's name under the crop, the map's label under each overlay).

    `rows` holds `(model_label, maps)` pairs; rows may have different numbers of maps. The picture is
    `PAD + columns·(cell_size + PAD)` wide and `PAD + len(rows)·(cell_size + CAPTION_HEIGHT + PAD)` high.
    """
    if not rows or any(not maps for _, maps in rows):
        raise ValueError("render_attention_grid needs at least one row, each with at least one map.")
    if cell_size < 8:
        raise ValueError(f"cell_size must be at least 8 pixels, got {cell_size}.")
    columns = 1 + max(len(maps) for _, maps in rows)
    width = PAD + columns * (cell_size + PAD)
    height = PAD + len(rows) * (cell_size + CAPTION_HEIGHT + PAD)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for row_index, (model_label, maps) in enumerate(rows):
        top = PAD + row_index * (cell_size + CAPTION_HEIGHT + PAD)
        cells = [(maps[0].image, model_label)] + [
            (overlay_heatmap(m.image, m.image_map.numpy(), alpha), m.label) for m in maps
        ]
        for column, (cell, caption) in enumerate(cells):
            left = PAD + column * (cell_size + PAD)
            canvas.paste(cell.convert("RGB").resize((cell_size, cell_size), Image.BILINEAR), (left, top))
            _draw_caption(draw, (left + 1, top + cell_size + 2), caption, font, cell_size - 2)
    return canvas


# --------------------------------------------------------------------------------------------------
# Command line: `diffclip attention-map`
# --------------------------------------------------------------------------------------------------


def _model_label(name: str) -> str:
    return Path(name).name if os.path.isdir(name) else name


def attention_map_rows(
    model_names: Sequence[str],
    image: str | os.PathLike | Image.Image,
    texts: Sequence[str] = (),
    class_token: bool = False,
    method: str = "rollout",
    layer: int = -1,
    start_layer: int = 0,
    device: str | None = None,
    revisions: Sequence[str | None] | None = None,
    trust_remote_code: bool = False,
) -> list[tuple[str, list[RelevanceMap]]]:
    """Load every model (local folder or Hub id, at `revisions[i]` when given) and compute its maps for `image`:
    the class-token map when `class_token` is set or no query is given, then one text-conditioned map per query.
    No code from a model's folder runs unless `trust_remote_code` (see [`load_model_and_processor`])."""
    revisions = list(revisions) if revisions is not None else [None] * len(model_names)
    if len(revisions) != len(model_names):
        raise ValueError(f"Got {len(model_names)} models but {len(revisions)} revisions.")
    texts = _check_texts(texts) if texts else []
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    image = open_image(image)
    rows = []
    for name, revision in zip(model_names, revisions):
        model, processor = load_model_and_processor(
            name, device=device, revision=revision, trust_remote_code=trust_remote_code
        )
        vision_tower(model)
        maps = []
        if class_token or not texts:
            maps.append(image_attention_map(model, processor, image, method=method, layer=layer))
        if texts:
            maps.extend(text_relevance_maps(model, processor, image, texts, start_layer=start_layer))
        rows.append((_model_label(name), maps))
    return rows


def _run_cli(args: argparse.Namespace) -> int:
    check_output_file(args.output)  # before any model loads
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}.")
    if args.cell_size < 8:
        raise ValueError(f"--cell-size must be at least 8 pixels, got {args.cell_size}.")
    names = [args.model] + ([args.compare_model] if args.compare_model else [])
    rows = attention_map_rows(
        names,
        args.image,
        texts=args.text or [],
        class_token=args.class_token,
        method=args.method,
        layer=args.layer,
        start_layer=args.start_layer,
        device=args.device,
        revisions=[args.revision] + ([args.compare_revision] if args.compare_model else []),
        trust_remote_code=args.trust_remote_code,
    )
    grid = render_attention_grid(rows, cell_size=args.cell_size, alpha=args.alpha)
    output = Path(args.output)
    png = io.BytesIO()
    grid.save(png, format="PNG")
    atomic_write_bytes(output, png.getvalue())
    for label, maps in rows:
        for relevance in maps:
            score = "" if relevance.score is None else f"  cos(image, text) = {relevance.score:.4f}"
            print(f"{label}: {relevance.label}{score}")
    print(f"Wrote {output} ({grid.width}x{grid.height}).")
    return 0


def register_cli(subparsers) -> None:
    """Add `diffclip attention-map` to the `diffclip` command."""
    parser = subparsers.add_parser(
        "attention-map",
        help="Heat maps of where the image encoder looks, per text query, one row per model.",
        description="Draw where a DiffCLIP (or CLIP) image encoder looks: the input crop and one heat-map overlay "
        "per text query (gradient-weighted attention, Chefer et al. 2021), one row per model. Without --text, the "
        "class token's attention (rollout over layers) is drawn.",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--compare-model", help="A second model drawn in a second row, e.g. a CLIP baseline (same loading rules)."
    )
    parser.add_argument("--compare-revision", help="Hub branch, tag or commit of --compare-model.")
    parser.add_argument("--image", required=True, help="Path of the image.")
    parser.add_argument("--text", action="append", help="A text query; repeat for several (one column each).")
    parser.add_argument("--output", required=True, help="Path of the PNG to write.")
    parser.add_argument(
        "--class-token", action="store_true", help="Also draw the query-free class-token map when queries are given."
    )
    parser.add_argument("--method", choices=METHODS, default="rollout", help="Class-token map: rollout or one layer.")
    parser.add_argument("--layer", type=int, default=-1, help="Layer of --method layer (default: the last).")
    parser.add_argument(
        "--start-layer", type=int, default=0, help="First layer of the text-conditioned relevance (default: 0)."
    )
    parser.add_argument("--cell-size", type=int, default=224, help="Side of every picture cell in pixels.")
    parser.add_argument("--alpha", type=float, default=0.5, help="Opacity of the heat map (0 to 1).")
    parser.add_argument("--device", default=None, help="Device to run the models on (default: cuda if available).")
    parser.set_defaults(func=_run_cli)


__all__ = [
    "RelevanceMap",
    "attention_map_rows",
    "attention_rollout",
    "class_token_attention",
    "colorize",
    "eager_attention",
    "gradient_weighted_relevance",
    "image_attention_map",
    "load_model_and_processor",
    "normalize_map",
    "overlay_heatmap",
    "positive_mixing",
    "preprocess_image",
    "render_attention_grid",
    "text_attention_gradients",
    "text_relevance_maps",
    "to_image_map",
    "vision_attentions",
    "vision_tower",
]
