# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""`export_onnx`: a dual encoder as a self-contained ONNX folder, validated before it appears.

```
DIR/
  config.json, processor_config.json, preprocessor_config.json, tokenizer.json, tokenizer_config.json, ...
  export_config.json      what the readers need beyond the config: opset, logit scale, inputs and outputs
  export_report.json      the validation (see `validation.py`)
  onnx/vision_model.onnx, onnx/text_model.onnx            float32
  onnx/*_quantized.onnx (--quantize int8), onnx/*_fp16.onnx (--fp16)
```

The folder is written whole into a temporary sibling and moved into place only when every graph passes its
validation (`core.files.atomic_directory`): a failed export leaves nothing behind.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from ..core.files import atomic_directory, write_json
from ..core.loading import image_processor_of, inspect_model, load_model, load_processor, tokenizer_of
from .graphs import ONNX_OPSET, PRECISIONS, check_exportable, convert_fp16, export_tower, graph_file, quantize_int8
from .runtime import EXPORT_CONFIG_NAME, EXPORT_REPORT_NAME
from .validation import validate_export
from .web import check_web_source, copy_web_page


QUANTIZE_CHOICES = ("int8",)


def check_output_folder(output_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse, before any work, an `--output` that is a file, or a folder holding files without `overwrite`."""
    output_dir = Path(output_dir).expanduser()
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output {output_dir}: it is a file; give a folder.")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise ValueError(f"--output {output_dir}: the folder is not empty; pass --overwrite to replace it.")
    return output_dir


def _precisions(quantize: str | None, fp16: bool) -> list[str]:
    if quantize not in (None, *QUANTIZE_CHOICES):
        raise ValueError(f"Unknown quantization {quantize!r}; use one of {', '.join(QUANTIZE_CHOICES)}.")
    return ["fp32"] + (["int8"] if quantize == "int8" else []) + (["fp16"] if fp16 else [])


def export_config(model, name: str, processor, precisions: list[str], opset: int, attention: str) -> dict:
    """The facts a reader without transformers needs (the standalone reader, the web page)."""
    tokenizer = tokenizer_of(processor)
    text_config = model.config.text_config
    image_processor = image_processor_of(processor)
    crop = dict(image_processor.crop_size) if image_processor.crop_size is not None else {}
    size = int(model.config.vision_config.image_size)
    return {
        "format": "diffclip-onnx",
        "format_version": 1,
        "model": name,
        "model_type": model.config.model_type,
        "opset": opset,
        "attention": attention,
        "precisions": precisions,
        "files": {p: {t: graph_file("", t, p).as_posix() for t in ("vision", "text")} for p in precisions},
        "logit_scale": float(model.logit_scale.detach().float().cpu()),
        "projection_dim": int(model.config.projection_dim),
        "image_size": [int(crop.get("height") or size), int(crop.get("width") or size)],
        "max_text_length": int(min(text_config.max_position_embeddings, tokenizer.model_max_length)),
        "pad_token_id": int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
        "inputs": {"vision": ["pixel_values"], "text": ["input_ids", "attention_mask"]},
        "outputs": {"vision": ["image_embeds", "pooler_output"], "text": ["text_embeds"]},
    }


def write_graphs(model, folder: Path, precisions: list[str], opset: int = ONNX_OPSET, attention: str = "eager"):
    """The float32 graphs of both towers, then each other precision's made from them."""
    for tower in ("vision", "text"):
        fp32 = export_tower(model, tower, graph_file(folder, tower), opset=opset, attention=attention)
        if "int8" in precisions:
            quantize_int8(fp32, graph_file(folder, tower, "int8"))
        if "fp16" in precisions:
            convert_fp16(fp32, graph_file(folder, tower, "fp16"))


def export_onnx(
    model: str | os.PathLike,
    output_dir: str | os.PathLike,
    quantize: str | None = None,
    fp16: bool = False,
    overwrite: bool = False,
    attention: str = "eager",
    opset: int = ONNX_OPSET,
    revision: str | None = None,
    trust_remote_code: bool = False,
    thresholds: dict | None = None,
    web: bool = False,
) -> dict:
    """Export `model` (a folder, Hub id or original checkpoint, as every command takes) to `output_dir` and validate
    it; returns the report also written to `export_report.json`. A validation below its threshold raises a
    `ValueError` that lists what failed, and nothing is written. `web=True` also copies the browser page (the
    repository's `web/` folder and its npm runtime files) into the folder."""
    precisions = _precisions(quantize, fp16)
    output_dir = check_output_folder(output_dir, overwrite)
    web_folder = check_web_source() if web else None
    name = os.fspath(model)
    source = inspect_model(name, revision=revision, trust_remote_code=trust_remote_code)
    loaded = load_model(source).to(device="cpu", dtype=torch.float32).eval()
    check_exportable(loaded, repr(name))
    processor = load_processor(source.path, source.name, revision, source.trust_remote_code)
    report = {}

    def write(folder: Path) -> None:
        write_graphs(loaded, folder, precisions, opset, attention)
        loaded.config.save_pretrained(folder)
        processor.save_pretrained(folder)
        image_processor_of(processor).save_pretrained(folder)  # preprocessor_config.json, which transformers.js reads
        write_json(folder / EXPORT_CONFIG_NAME, export_config(loaded, name, processor, precisions, opset, attention))
        validation, problems = validate_export(loaded, processor, folder, precisions, thresholds)
        if problems:
            raise ValueError(f"The ONNX export of {name} fails its validation: {'; '.join(problems)}.")
        report.update(
            model=name,
            opset=opset,
            attention=attention,
            machine={"processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
            versions=_versions(),
            **validation,
        )
        write_json(folder / EXPORT_REPORT_NAME, report)
        if web_folder is not None:
            copy_web_page(folder, web_folder)

    atomic_directory(output_dir, write)
    return report


def _versions() -> dict:
    import onnx
    import onnxruntime
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


__all__ = ["PRECISIONS", "QUANTIZE_CHOICES", "check_output_folder", "export_config", "export_onnx", "write_graphs"]
