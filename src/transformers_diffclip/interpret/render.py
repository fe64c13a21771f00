# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Rendering attention maps with PIL only: one row per model, the model's input crop first, then one heat-map
overlay per map, captioned with the model's and the query's names. Every map is min–max scaled to [0, 1] on its own
for display; compare shapes across rows, not absolute colours."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..core.images import MAX_IMAGE_PIXELS_ENV, max_image_pixels
from .maps import RelevanceMap


# Display constants of `render_attention_grid` (pixels): grid size is
# width = PAD + cols·(cell + PAD), height = PAD + rows·(cell + CAPTION_HEIGHT + PAD).
PAD = 4
CAPTION_HEIGHT = 16
MIN_CELL_SIZE, MAX_CELL_SIZE = 8, 2048

# Jet-like colour map: (position, (r, g, b)) anchors, linearly interpolated.
_COLORMAP_ANCHORS = (
    (0.0, (0, 0, 128)),
    (0.125, (0, 0, 255)),
    (0.375, (0, 255, 255)),
    (0.625, (255, 255, 0)),
    (0.875, (255, 0, 0)),
    (1.0, (128, 0, 0)),
)


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
    """`text`, or its longest prefix that fits `width` pixels followed by "...", found with O(log n) measurements
    (a 100,000-character query is laid out as fast as a short one). The text is first cut to `4 · width + 4`
    characters: no glyph of a legible font is narrower than a quarter pixel, so nothing cut could have been shown."""
    ellipsis = "..."
    cap = 4 * max(width, 0) + 4
    if len(text) <= cap and draw.textlength(text, font=font) <= width:
        return text
    text = text[:cap]
    low, high = 0, len(text) + 1  # the longest prefix that fits with the ellipsis has a length in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        if draw.textlength(text[:middle] + ellipsis, font=font) <= width:
            low = middle
        else:
            high = middle
    return text[:low] + ellipsis


def _draw_caption(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font, width: int) -> None:
    try:
        draw.text(xy, _fit_text(draw, text, font, width), fill=(0, 0, 0), font=font)
    except UnicodeEncodeError:  # Pillow's bitmap fallback font knows Latin-1 only
        text = text.encode("latin-1", "replace").decode("latin-1")
        draw.text(xy, _fit_text(draw, text, font, width), fill=(0, 0, 0), font=font)


def grid_size(rows: int, columns: int, cell_size: int) -> tuple[int, int]:
    """`(width, height)` in pixels of a grid of `rows` x `columns` cells (the crop column included)."""
    return PAD + columns * (cell_size + PAD), PAD + rows * (cell_size + CAPTION_HEIGHT + PAD)


def check_grid(rows: int, columns: int, cell_size: int, flag: str = "cell_size") -> None:
    """Refuse, before anything is computed, a cell size outside [`MIN_CELL_SIZE`, `MAX_CELL_SIZE`] or a grid of
    more pixels than [`core.images.max_image_pixels`] (the picture is held in memory whole)."""
    if not MIN_CELL_SIZE <= cell_size <= MAX_CELL_SIZE:
        raise ValueError(f"{flag} must be between {MIN_CELL_SIZE} and {MAX_CELL_SIZE} pixels, got {cell_size}.")
    width, height = grid_size(rows, columns, cell_size)
    limit = max_image_pixels()
    if width * height > limit:
        raise ValueError(
            f"The picture would be {width} x {height} pixels ({rows} row(s) of {columns} cells of {cell_size} "
            f"pixels), more than the limit of {limit} pixels ({MAX_IMAGE_PIXELS_ENV}); use a smaller {flag} or "
            "fewer queries."
        )


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
    columns = 1 + max(len(maps) for _, maps in rows)
    check_grid(len(rows), columns, cell_size)
    width, height = grid_size(len(rows), columns, cell_size)
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


__all__ = [
    "CAPTION_HEIGHT",
    "MAX_CELL_SIZE",
    "MIN_CELL_SIZE",
    "PAD",
    "check_grid",
    "colorize",
    "grid_size",
    "normalize_map",
    "overlay_heatmap",
    "render_attention_grid",
]
