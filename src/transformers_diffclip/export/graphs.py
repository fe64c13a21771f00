# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The two ONNX graphs of a dual encoder (DiffCLIP, transformers' CLIP), their files, and their int8 and fp16
variants.

- `onnx/vision_model.onnx`: `pixel_values` (batch, 3, H, W) → `image_embeds` (batch, projection_dim, projected, not
  normalised, as `get_image_features`) and `pooler_output` (batch, hidden_size: the pre-projection feature);
- `onnx/text_model.onnx`: `input_ids`, `attention_mask` (batch, sequence; int64) → `text_embeds` (batch,
  projection_dim, as `get_text_features`);
- `*_quantized.onnx` (dynamic int8, onnxruntime's own quantizer) and `*_fp16.onnx` (onnxruntime's float16
  converter, float32 inputs and outputs kept) beside them: the file names transformers.js reads.

The graphs are built by `torch.onnx.export(..., dynamo=True)` (`torch.export`, then ONNX opset [`ONNX_OPSET`]), with
dynamic batch and sequence axes: no graph is edited by hand. The TorchScript exporter (`dynamo=False`) cannot be used:
it has no translation of `aten::rms_norm` (the differential attention's per-head norm) at the opsets it supports.
The differential attention is exported as it computes with the kernel the model is set to: "eager" (both softmax maps
written out, `A1 − λ·A2`, one product with the values; the default) or "sdpa" (one scaled-dot-product attention per
map, `A1·V − λ·A2·V`). The CPU's chunked sdpa kernel (`combined_maps_attention`) sizes its chunks from the input
shapes, which `torch.export` cannot keep dynamic, so an "sdpa" export takes the registry kernel on every device.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn


ONNX_OPSET = 18
ONNX_FOLDER = "onnx"
TOWERS = ("vision", "text")
GRAPH_NAMES = {"vision": "vision_model", "text": "text_model"}
PRECISIONS = ("fp32", "int8", "fp16")
PRECISION_SUFFIXES = {"fp32": "", "int8": "_quantized", "fp16": "_fp16"}
ATTENTION_PATHS = ("eager", "sdpa")
INPUT_NAMES = {"vision": ["pixel_values"], "text": ["input_ids", "attention_mask"]}
OUTPUT_NAMES = {"vision": ["image_embeds", "pooler_output"], "text": ["text_embeds"]}


def graph_file(folder: str | os.PathLike, tower: str, precision: str = "fp32") -> Path:
    """`folder/onnx/{vision,text}_model{,_quantized,_fp16}.onnx`."""
    if tower not in GRAPH_NAMES:
        raise ValueError(f"Unknown tower {tower!r}; use one of {', '.join(TOWERS)}.")
    if precision not in PRECISION_SUFFIXES:
        raise ValueError(f"Unknown ONNX precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    return Path(folder) / ONNX_FOLDER / f"{GRAPH_NAMES[tower]}{PRECISION_SUFFIXES[precision]}.onnx"


def check_exportable(model: nn.Module, name: str = "the model") -> None:
    """Refuse a model without the parts the graphs are made of: both towers and both projections (CLIP-like)."""
    missing = [
        part
        for part in ("vision_model", "visual_projection", "text_model", "text_projection")
        if not isinstance(getattr(model, part, None), nn.Module)
    ]
    if missing:
        raise ValueError(
            f"Cannot export {name} ({type(model).__name__}) to ONNX: it has no {', '.join(missing)}; the export "
            "takes a CLIP-like dual encoder (DiffCLIP, transformers' CLIP) with projected towers."
        )


class VisionGraph(nn.Module):
    """What `vision_model.onnx` computes: the projected image embedding and the pooled feature before projection."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.vision_model = model.vision_model
        self.visual_projection = model.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return self.visual_projection(pooled), pooled


class TextGraph(nn.Module):
    """What `text_model.onnx` computes: the projected text embedding (pooled at the end-of-text token)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.text_model = model.text_model
        self.text_projection = model.text_projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.text_projection(pooled)


def _differential_layers(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if hasattr(module, "cpu_combined_maps")]


@contextlib.contextmanager
def attention_path(model: nn.Module, path: str) -> Iterator[None]:
    """Run `model` with the attention kernel `path` ("eager" or "sdpa", the latter without the CPU's shape-sized
    chunks, see the module docstring), and restore its kernel afterwards."""
    if path not in ATTENTION_PATHS:
        raise ValueError(f"Unknown attention path {path!r}; use one of {', '.join(ATTENTION_PATHS)}.")
    configs = [model.config, *(getattr(model.config, f"{t}_config", None) for t in ("text", "vision"))]
    before = [getattr(config, "_attn_implementation", None) for config in configs if config is not None]
    layers = _differential_layers(model)
    model.set_attn_implementation(path)
    for layer in layers:
        layer.cpu_combined_maps = frozenset()
    try:
        yield
    finally:
        for layer in layers:
            with contextlib.suppress(AttributeError):
                del layer.cpu_combined_maps  # back to the class's setting
        with contextlib.suppress(Exception):
            model.set_attn_implementation(before[0] or "eager")


def _example_inputs(model: nn.Module, tower: str) -> tuple[torch.Tensor, ...]:
    device = next(model.parameters()).device
    if tower == "vision":
        config = model.config.vision_config
        size = config.image_size
        generator = torch.Generator().manual_seed(0)
        return (torch.randn(2, config.num_channels, size, size, generator=generator).to(device),)
    config = model.config.text_config
    input_ids = torch.tensor([[config.bos_token_id, 320, 1125, config.eos_token_id, 0, 0, 0]] * 2, device=device)
    input_ids[1, 4:] = torch.tensor([539, 320, config.eos_token_id])
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 4:] = 0
    return input_ids.clamp(max=config.vocab_size - 1), attention_mask


def _dynamic_shapes(model: nn.Module, tower: str) -> dict:
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    if tower == "vision":
        return {"pixel_values": {0: batch}}
    sequence = torch.export.Dim("sequence", min=2, max=model.config.text_config.max_position_embeddings)
    return {"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}}


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's progress lines and its warnings about optional packages (torchvision) stay off stderr."""
    from transformers.utils import logging as transformers_logging

    names = ("", "torch.onnx", "torch.export", "torch._export", "onnxscript")  # "": the quantizer logs to the root
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    verbosity = transformers_logging.get_verbosity()
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    transformers_logging.set_verbosity_error()  # set_attn_implementation's notes on the towers' sub-configs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        transformers_logging.set_verbosity(verbosity)


def export_tower(
    model: nn.Module, tower: str, path: str | os.PathLike, opset: int = ONNX_OPSET, attention: str = "eager"
) -> Path:
    """Write the ONNX graph of one tower of `model` (float32, in evaluation mode) to `path` (one file, weights
    inside)."""
    check_exportable(model)
    graph = VisionGraph(model) if tower == "vision" else TextGraph(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_exporter(), attention_path(model, attention), torch.no_grad():
        program = torch.onnx.export(
            graph.eval(),
            _example_inputs(model, tower),
            dynamo=True,
            opset_version=opset,
            input_names=INPUT_NAMES[tower],
            output_names=OUTPUT_NAMES[tower],
            dynamic_shapes=_dynamic_shapes(model, tower),
            external_data=False,
            optimize=True,
            verbose=False,
        )
        program.save(str(path), external_data=False)
    return path


def quantize_int8(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Dynamic int8 quantisation of a float32 graph (onnxruntime's `quantize_dynamic`: int8 weights of the matrix
    products, activations quantised per batch at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_exporter():
        quantize_dynamic(
            str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
        )
    return Path(target)


def convert_fp16(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """The graph in float16 (onnxruntime's float16 converter), with float32 inputs and outputs kept, so that callers
    feed and read the same arrays as the float32 graph."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet_exporter():
        converted = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(converted, str(target))
    return Path(target)


__all__ = [
    "ATTENTION_PATHS",
    "GRAPH_NAMES",
    "ONNX_FOLDER",
    "ONNX_OPSET",
    "PRECISIONS",
    "TOWERS",
    "TextGraph",
    "VisionGraph",
    "attention_path",
    "check_exportable",
    "convert_fp16",
    "export_tower",
    "graph_file",
    "quantize_int8",
]
