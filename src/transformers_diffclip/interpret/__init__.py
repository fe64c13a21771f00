# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Attention maps (`diffclip attention-map`): where a DiffCLIP (or CLIP) image encoder looks, with and without a
text query.

Modules: `relevance` (the math on attention maps: pure tensor functions), `maps` (the maps and their gradients from a
model, and the high-level API), `render` (the picture, PIL only) and `cli` (the command).

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

Gradients with respect to the maps are taken by autograd through the maps the model returns: under the eager
kernel, `output_attentions=True` returns the maps the layer's output is computed from (`A1 − λ·A2` for DiffCLIP's
differential layers, the softmax maps for standard ones), so `∂s/∂A` is exact and no module is hooked.

**Attention kernels.** transformers' CLIP returns no maps under sdpa, and only the eager kernel returns maps that
carry the gradient. [`eager_attention`] therefore switches the model to `"eager"` with transformers'
`set_attn_implementation` for the computation and restores every config's previous kernel (and the train/eval
mode) afterwards, also when the computation fails.

Rendering ([`render_attention_grid`]) uses PIL only: one row per model, the model's input crop first, then one
heat-map overlay per map, captioned with the model's and the query's names. Every map is min–max scaled to [0, 1]
on its own for display; compare shapes across rows, not absolute colours.
"""

from .maps import (
    METHODS,
    RelevanceMap,
    attention_map_rows,
    eager_attention,
    image_attention_map,
    load_model_and_processor,
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
    "load_model_and_processor",
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
