# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The check every export runs on itself: each graph at each precision against the PyTorch model, on a fixed set of
real photographs and their captions (`photos/`, see its README for sources and licences).

Per graph and precision the report holds the largest absolute difference and the smallest cosine between the ONNX
and the PyTorch embeddings (unit-normalised, so that the figures do not depend on the embedding's scale; the vision
graph's pre-projection feature is compared raw), the zero-shot top-1 agreement with PyTorch on the photographs
(labels × one template, as `diffclip zero-shot` ranks them), the file size and the median latency of one batch (all
photographs, or all captions) on this machine. [`THRESHOLDS`] says what passes.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core.loading import image_processor_of, tokenizer_of
from ..evaluation import ZeroShotClassifier, encode_pixel_values, encode_texts
from .graphs import graph_file
from .runtime import OnnxDualEncoder


PHOTOS_FOLDER = Path(__file__).resolve().parent / "photos"

# The least each precision must reach: smallest cosine to PyTorch (image and text embeddings), largest absolute
# difference of the unit-norm embeddings, zero-shot top-1 agreement with PyTorch on the photographs.
THRESHOLDS = {
    "fp32": {"min_cosine": 0.99999, "max_abs_diff": 1e-4, "top1_agreement": 1.0},
    "fp16": {"min_cosine": 0.999, "max_abs_diff": 2e-2, "top1_agreement": 1.0},
    "int8": {"min_cosine": 0.99, "max_abs_diff": 0.1, "top1_agreement": 5 / 6},
}
LATENCY_RUNS = 3


def validation_set(folder: str | Path = PHOTOS_FOLDER) -> tuple[dict[str, Image.Image], list[str], list[str], str]:
    """`({file name: photograph}, captions, labels, template)` of the validation set."""
    folder = Path(folder)
    spec = json.loads((folder / "photos.json").read_text(encoding="utf-8"))
    images = {}
    for name in spec["images"]:
        with Image.open(folder / name) as image:
            images[name] = image.convert("RGB")
    return images, list(spec["images"].values()), list(spec["labels"]), spec["template"]


def _unit(array) -> np.ndarray:
    return F.normalize(torch.as_tensor(np.asarray(array, dtype=np.float32)), dim=-1).numpy()


def compare(reference: np.ndarray, candidate: np.ndarray, normalise: bool = True) -> dict:
    """`max_abs_diff` and `min_cosine` of two row-matched embedding arrays (unit-normalised first unless told)."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"The ONNX graph gives shape {candidate.shape}, PyTorch {reference.shape}.")
    cosines = (_unit(reference) * _unit(candidate)).sum(-1)
    if normalise:
        reference, candidate = _unit(reference), _unit(candidate)
    return {"max_abs_diff": float(np.abs(reference - candidate).max()), "min_cosine": float(cosines.min())}


def _median_seconds(function) -> float:
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _torch_reference(model, processor, pixel_values, captions, labels, template) -> dict:
    device = next(model.parameters()).device
    with torch.inference_mode():
        pooled = model.vision_model(pixel_values=pixel_values.to(device)).pooler_output.float().cpu().numpy()
    return {
        "image_embeds": encode_pixel_values(model, pixel_values).cpu().numpy(),
        "pooler_output": pooled,
        "text_embeds": encode_texts(model, tokenizer_of(processor), captions).numpy(),
        "classifier": ZeroShotClassifier.from_model(model, processor, labels, [template]),
    }


def validate_precision(encoder: OnnxDualEncoder, processor, reference: dict, pixel_values, captions) -> dict:
    """The report of one precision's two graphs against `reference` (see the module docstring)."""
    tokenizer = tokenizer_of(processor)
    image_embeds, pooled = encoder.run_vision(pixel_values)
    text_embeds = encode_texts(encoder, tokenizer, captions).numpy()
    classifier = ZeroShotClassifier.from_model(
        encoder, processor, reference["classifier"].labels, reference["classifier"].templates
    )
    want = reference["classifier"].logits(torch.from_numpy(reference["image_embeds"])).argmax(-1)
    got = classifier.logits(torch.from_numpy(image_embeds)).argmax(-1)
    agreement = float((want == got).float().mean())
    batch = np.asarray(pixel_values, dtype=np.float32)
    vision = {
        "image_embeds": compare(reference["image_embeds"], image_embeds),
        "pooler_output": compare(reference["pooler_output"], pooled, normalise=False),
        "top1_agreement": agreement,
        "file_bytes": graph_file(encoder.folder, "vision", encoder.precision).stat().st_size,
        "latency_ms_per_batch": 1000 * _median_seconds(lambda: encoder.run_vision(batch)),
        "batch_size": int(batch.shape[0]),
    }
    text = {
        "text_embeds": compare(reference["text_embeds"], text_embeds),
        "file_bytes": graph_file(encoder.folder, "text", encoder.precision).stat().st_size,
        "latency_ms_per_batch": 1000 * _median_seconds(lambda: encode_texts(encoder, tokenizer, captions)),
        "batch_size": len(captions),
    }
    return {"vision": vision, "text": text}


def failures(precision: str, result: dict, thresholds: dict | None = None) -> list[str]:
    """What in one precision's `result` misses its threshold, one phrase each (empty: it passes)."""
    limits = (thresholds or THRESHOLDS)[precision]
    problems = []
    for tower, key in (("vision", "image_embeds"), ("text", "text_embeds")):
        figures = result[tower][key]
        if not figures["min_cosine"] >= limits["min_cosine"]:
            problems.append(f"{tower} cosine {figures['min_cosine']:.6f} < {limits['min_cosine']}")
        if not figures["max_abs_diff"] <= limits["max_abs_diff"]:
            problems.append(f"{tower} max |difference| {figures['max_abs_diff']:.2e} > {limits['max_abs_diff']:.0e}")
    if not result["vision"]["top1_agreement"] >= limits["top1_agreement"]:
        problems.append(
            f"zero-shot top-1 agreement {result['vision']['top1_agreement']:.3f} < {limits['top1_agreement']:.3f}"
        )
    return problems


def validate_export(
    model, processor, folder: str | Path, precisions, thresholds: dict | None = None
) -> tuple[dict, list[str]]:
    """Check each precision's graphs in `folder` against `model`; returns `(report, problems)`, `problems` naming
    every figure below its threshold (empty: the export passes)."""
    images, captions, labels, template = validation_set()
    pixel_values = image_processor_of(processor)(images=list(images.values()), return_tensors="pt")[
        "pixel_values"
    ].float()
    reference = _torch_reference(model, processor, pixel_values, captions, labels, template)
    report = {
        "photographs": list(images),
        "num_captions": len(captions),
        "labels": labels,
        "template": template,
        "thresholds": {precision: (thresholds or THRESHOLDS)[precision] for precision in precisions},
        "results": {},
    }
    problems = []
    for precision in precisions:
        encoder = OnnxDualEncoder(folder, precision, device="cpu")
        result = validate_precision(encoder, processor, reference, pixel_values, captions)
        result["passed"] = not (found := failures(precision, result, thresholds))
        report["results"][precision] = result
        problems.extend(f"{precision}: {problem}" for problem in found)
    report["passed"] = not problems
    return report, problems


__all__ = [
    "PHOTOS_FOLDER",
    "THRESHOLDS",
    "compare",
    "failures",
    "validate_export",
    "validate_precision",
    "validation_set",
]
