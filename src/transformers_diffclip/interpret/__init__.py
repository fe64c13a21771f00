# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Attention maps (`diffclip attention-map`): where a DiffCLIP (or CLIP) image encoder looks, with and without a
text query: class-token attention and rollout, and gradient-weighted relevance for a text query (Chefer et al.
2021).

Modules: `relevance` (the math on attention maps: pure tensor functions), `maps` (the maps and their gradients from a
model, and the high-level API), `render` (the picture, PIL only) and `cli` (the command). The methods, what they do
with the negative entries of differential maps, and why: docs/attention-maps.md.
"""

from .maps import (
    METHODS,
    RelevanceMap,
    attention_map_rows,
    eager_attention,
    image_attention_map,
    load_attention_model_and_processor,
    preprocess_image,
    text_attention_gradients,
    text_relevance_maps,
    vision_attentions,
    vision_tower,
)
from .relevance import (
    attention_rollout,
    class_token_attention,
    gradient_weighted_relevance,
    patch_grid,
    positive_mixing,
    to_image_map,
)
from .render import CAPTION_HEIGHT, PAD, colorize, normalize_map, overlay_heatmap, render_attention_grid


__all__ = [
    "CAPTION_HEIGHT",
    "METHODS",
    "PAD",
    "RelevanceMap",
    "attention_map_rows",
    "attention_rollout",
    "class_token_attention",
    "colorize",
    "eager_attention",
    "gradient_weighted_relevance",
    "image_attention_map",
    "load_attention_model_and_processor",
    "normalize_map",
    "overlay_heatmap",
    "patch_grid",
    "positive_mixing",
    "preprocess_image",
    "render_attention_grid",
    "text_attention_gradients",
    "text_relevance_maps",
    "to_image_map",
    "vision_attentions",
    "vision_tower",
]
