# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Command-line flags shared by every `diffclip eval ...` command and `diffclip embed` (device, dtype, batch sizes,
workers, progress) and the model loading they drive (through `core.loading`)."""

from __future__ import annotations

import argparse

from ..core.errors import positive_int
from ..core.loading import DTYPES, ModelLoader


def add_runtime_arguments(parser: argparse.ArgumentParser, default_batch_size: int) -> None:
    """`--device`, `--dtype`, `--batch-size`, `--text-batch-size`, `--num-workers` and `--no-progress`."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="model dtype (default: float32)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=default_batch_size, help="images per batch (memory bound)"
    )
    parser.add_argument("--text-batch-size", type=positive_int, default=256, help="texts per batch (default: 256)")
    parser.add_argument(
        "--num-workers", type=int, default=0, help="DataLoader worker processes reading images (default: 0)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def model_loader(args: argparse.Namespace) -> ModelLoader:
    """The typed loader the flags describe (`--device`, `--dtype`, `--trust-remote-code`), for tasks that load models
    themselves; `--no-progress` also silences the download bars."""
    if args.no_progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    return ModelLoader(args.device, args.dtype, args.trust_remote_code)


def load_model_from_args(args: argparse.Namespace):
    """The model and processor `--model` / `--revision` name, on `--device` in `--dtype`; with `--backend onnx`, the
    exported folder run by ONNX Runtime (export/) in `--onnx-precision`."""
    if getattr(args, "backend", "torch") == "onnx":
        from ..export import load_backend_model_and_processor

        return load_backend_model_and_processor(args.model, "onnx", args.onnx_precision, args.device, args.dtype)
    return model_loader(args)(args.model, args.revision)


__all__ = ["add_runtime_arguments", "load_model_from_args", "model_loader"]
