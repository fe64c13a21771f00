# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""`diffclip demo`: the Gradio page (the `demo` extra)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _run_demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from .app import build_demo

    if args.index is not None and not Path(args.index).is_dir():
        raise FileNotFoundError(f"--index {args.index}: no such folder (build one with `diffclip index`).")
    examples = []
    if args.examples:
        from ..search import list_images

        examples = list_images(args.examples)
    demo = build_demo(
        args.model,
        args.baseline,
        args.index,
        device=args.device,
        examples=examples,
        trust_remote_code=args.trust_remote_code,
        allow_private_urls=args.allow_private_urls,
    )
    if args.preload:
        for name in {args.model, args.baseline} - {None}:
            demo.diffclip_cache.get(name)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=False, ssr_mode=False, quiet=args.quiet)
    return 0


def register_cli(subparsers) -> None:
    """Add `diffclip demo`."""
    parser = subparsers.add_parser(
        "demo",
        help="a web page: DiffCLIP beside CLIP (zero-shot, attention maps) and image search",
        description="Serve the DiffCLIP demo page (Gradio): zero-shot probabilities of DiffCLIP and CLIP side by "
        "side, where each looks (attention maps), and search over a `diffclip index` folder.",
    )
    parser.add_argument("--model", help="a DiffCLIP model (default: the released CC12M and CC3M pairs)")
    parser.add_argument("--baseline", help="the CLIP model to compare with (default: the released CC12M CLIP)")
    parser.add_argument("--index", metavar="INDEX_DIR", help="a `diffclip index` folder for the search tab")
    parser.add_argument("--examples", metavar="SOURCE", help="example images: a folder or a list file")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--trust-remote-code", action="store_true", help="as for the other commands")
    parser.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="let the page's URL box fetch images from loopback, private and link-local addresses (trusted local "
        "use only: a public page would let visitors reach this machine and its network; also "
        "DIFFCLIP_ALLOW_PRIVATE_URLS=1)",
    )
    parser.add_argument("--preload", action="store_true", help="load --model and --baseline before serving")
    parser.add_argument("--quiet", action="store_true", help="do not print Gradio's start-up lines")
    parser.set_defaults(func=_run_demo)
