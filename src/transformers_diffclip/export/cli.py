# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""`diffclip export onnx`: parse, call [`export_onnx`], print."""

from __future__ import annotations

import argparse

from ..core.loading import add_model_arguments
from .graphs import ATTENTION_PATHS, ONNX_OPSET


def _run_export_onnx(args: argparse.Namespace) -> int:
    from .onnx import export_onnx

    report = export_onnx(
        args.model,
        args.output,
        quantize=args.quantize,
        fp16=args.fp16,
        overwrite=args.overwrite,
        attention=args.attention,
        revision=args.revision,
        trust_remote_code=args.trust_remote_code,
        web=args.web,
    )
    print(f"Exported {args.model} to {args.output} (opset {report['opset']}); validation on the test photographs:")
    for precision, result in report["results"].items():
        vision, text = result["vision"], result["text"]
        print(
            f"  {precision:>4}: image cosine {vision['image_embeds']['min_cosine']:.6f}, text cosine "
            f"{text['text_embeds']['min_cosine']:.6f}, top-1 agreement {100 * vision['top1_agreement']:.0f}%, "
            f"{vision['latency_ms_per_batch']:.1f} ms per {vision['batch_size']} images, "
            f"{(vision['file_bytes'] + text['file_bytes']) / 2**20:.1f} MiB"
        )
    if args.web:
        print(f"The browser page is in {args.output}: serve it (python -m http.server -d {args.output}) and open it.")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add `diffclip export onnx`."""
    parser = subparsers.add_parser("export", help="export a model for other runtimes (ONNX)")
    formats = parser.add_subparsers(dest="task", metavar="FORMAT")
    formats.required = True
    onnx = formats.add_parser(
        "onnx",
        help="the image and the text tower as two ONNX graphs, validated against PyTorch",
        description="Write onnx/vision_model.onnx and onnx/text_model.onnx (dynamic batch and sequence axes, opset "
        f"{ONNX_OPSET}), optional int8 and fp16 variants, the config, tokenizer and preprocessor files, and "
        "export_report.json. The export checks itself on fixed photographs; below its thresholds it fails and "
        "writes nothing.",
    )
    add_model_arguments(onnx, default_model=None)
    onnx.add_argument("--output", required=True, metavar="DIR", help="the folder to write (new or empty)")
    onnx.add_argument(
        "--quantize", choices=("int8",), help="also write *_quantized.onnx (dynamic int8, onnxruntime's quantizer)"
    )
    onnx.add_argument("--fp16", action="store_true", help="also write *_fp16.onnx (float16 weights and compute)")
    onnx.add_argument(
        "--attention",
        choices=ATTENTION_PATHS,
        default="eager",
        help="the attention kernel the graphs are traced through (default: eager; both compute the same)",
    )
    onnx.add_argument(
        "--web",
        action="store_true",
        help="also copy the browser page (web/, with its runtime files from web/node_modules) into the folder",
    )
    onnx.add_argument("--overwrite", action="store_true", help="replace a non-empty --output folder")
    onnx.set_defaults(func=_run_export_onnx)


__all__ = ["register_cli"]
