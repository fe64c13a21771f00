# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""ONNX export of a dual encoder (`diffclip export onnx`), its validation, and the ONNX Runtime backend the commands
run with `--backend onnx`. See docs/deployment.md."""

from .graphs import ONNX_OPSET, PRECISIONS, graph_file
from .onnx import export_onnx
from .runtime import (
    EXPORT_CONFIG_NAME,
    EXPORT_REPORT_NAME,
    OnnxDualEncoder,
    add_backend_arguments,
    backend_of,
    check_same_backend,
    load_backend_model_and_processor,
    load_onnx_model_and_processor,
)


__all__ = [
    "EXPORT_CONFIG_NAME",
    "EXPORT_REPORT_NAME",
    "ONNX_OPSET",
    "OnnxDualEncoder",
    "PRECISIONS",
    "add_backend_arguments",
    "backend_of",
    "check_same_backend",
    "export_onnx",
    "graph_file",
    "load_backend_model_and_processor",
    "load_onnx_model_and_processor",
]
