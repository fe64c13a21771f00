# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The `diffclip attention-map` command: load the models, compute their maps, draw the grid, write the PNG."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from ..core.files import atomic_write_bytes, check_output_file
from ..core.loading import add_model_arguments
from .maps import METHODS, attention_map_rows
from .render import check_grid, render_attention_grid


def _run_cli(args: argparse.Namespace) -> int:
    check_output_file(args.output)  # before any model loads
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}.")
    names = [args.model] + ([args.compare_model] if args.compare_model else [])
    texts = args.text or []
    maps = len(texts) + (1 if args.class_token or not texts else 0)
    check_grid(len(names), 1 + maps, args.cell_size, flag="--cell-size")  # before any model loads
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


__all__ = ["register_cli"]
