# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Attention maps from a model: the image encoder's maps under the eager kernel, their gradients by autograd, and
the high-level API (one [`RelevanceMap`] per image and query, the rows of the `diffclip attention-map` grid)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import PretrainedConfig

from ..core.images import open_image
from ..core.loading import image_processor_of, load_model_and_processor, model_device_dtype, tokenizer_of
from .relevance import attention_rollout, class_token_attention, gradient_weighted_relevance, layer_index, to_image_map


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


def _check_dual_encoder(model: nn.Module) -> None:
    """Refuse a model that is not a dual encoder (text-conditioned maps need both towers): a model without a vision
    tower is named as such first (see [`vision_tower`]), then one without a text tower."""
    vision_tower(model)
    if getattr(model, "text_model", None) is None or getattr(model, "visual_projection", None) is None:
        raise ValueError(
            f"{type(model).__name__} has no text tower; text-conditioned maps need a dual encoder (e.g. "
            "DiffCLIPModel). Use the class-token map for a vision tower."
        )


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


def load_attention_model_and_processor(
    name_or_path: str,
    device: str | torch.device | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
):
    """A model (dual encoder or vision tower) and its processor through the package's one loader
    (`core.loading`: no code from the folder or repo runs unless `trust_remote_code`), in eval mode on
    `device` (`None`: CUDA when available). A folder without a tokenizer gets its image processor."""
    return load_model_and_processor(
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


def _kernel_request(config: PretrainedConfig) -> str | dict:
    """`config`'s kernels in the form `set_attn_implementation` takes: a name, or `{"": name, sub-config key: ...}`."""
    subs = {key: getattr(config, key, None) for key in getattr(config, "sub_configs", {}) or {}}
    subs = {key: sub for key, sub in subs.items() if isinstance(sub, PretrainedConfig)}
    if not subs:
        return config._attn_implementation
    return {"": config._attn_implementation, **{key: _kernel_request(sub) for key, sub in subs.items()}}


def _set_kernels(model: nn.Module, request: str | dict, saved: list[tuple[PretrainedConfig, str]]) -> None:
    """`model.set_attn_implementation(request)`, then every config in `saved` checked: one the switch left alone
    (transformers 4.57 declines models whose file fails its text heuristic, and a model may not be a
    `PreTrainedModel`) is set directly, parents before their sub-configs."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(request)
    for config, implementation in saved:
        wanted = request if isinstance(request, str) else implementation
        if config._attn_implementation != wanted:
            config._attn_implementation = wanted


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` with the eager attention kernel and in eval mode inside the block, then restore every config's
    kernel and the train/eval mode, also when the block raises. Switches with transformers'
    `set_attn_implementation`: under the eager kernel `output_attentions=True` returns the maps the output is computed
    from (transformers' CLIP returns none under sdpa)."""
    saved = [(config, config._attn_implementation) for config in _model_configs(model)]
    restore = _kernel_request(model.config) if isinstance(getattr(model, "config", None), PretrainedConfig) else None
    was_training = model.training
    try:
        _set_kernels(model, "eager", saved)
        model.eval()
        yield model
    finally:
        if restore is not None:
            _set_kernels(model, restore, saved)
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
    similarities. The gradients are autograd's, through the maps the model returns under the eager kernel (the
    maps its output is computed from); the parameters' `.grad` are left untouched.
    """
    _check_dual_encoder(model)
    if pixel_values.shape[0] != input_ids.shape[0]:
        raise ValueError(
            f"pixel_values and input_ids must pair up row by row, got {pixel_values.shape[0]} images and "
            f"{input_ids.shape[0]} texts."
        )
    device, dtype = model_device_dtype(model)
    # an input that requires grad keeps the maps in the graph even when every parameter is frozen
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
        # the images of a batch do not interact, so the gradient of the sum is each score's own gradient
        gradients = torch.autograd.grad(scores.sum(), attentions)
    return (
        tuple(a.detach().float() for a in attentions),
        tuple(g.float() for g in gradients),
        scores.detach(),
    )


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
        index = layer_index(layer, len(attentions))
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
    _check_dual_encoder(model)
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
    No code from a model's folder runs unless `trust_remote_code` (see [`load_attention_model_and_processor`])."""
    revisions = list(revisions) if revisions is not None else [None] * len(model_names)
    if len(revisions) != len(model_names):
        raise ValueError(f"Got {len(model_names)} models but {len(revisions)} revisions.")
    texts = _check_texts(texts) if texts else []
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    image = open_image(image)
    rows = []
    for name, revision in zip(model_names, revisions):
        model, processor = load_attention_model_and_processor(
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


__all__ = [
    "METHODS",
    "RelevanceMap",
    "attention_map_rows",
    "eager_attention",
    "image_attention_map",
    "load_attention_model_and_processor",
    "preprocess_image",
    "text_attention_gradients",
    "text_relevance_maps",
    "vision_attentions",
    "vision_tower",
]
