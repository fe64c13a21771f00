# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""What a result needs to be reproduced (`metadata`), and the result in LAION CLIP_benchmark's JSON layout.

Every zero-shot and retrieval report of the package names its metrics as CLIP_benchmark does (below); the
`clip_benchmark` format only puts them in CLIP_benchmark's envelope, without the package's other facts.

CLIP_benchmark (`clip_benchmark eval ... --output result.json`) writes one object per run:
`{"dataset", "model", "pretrained", "task", "metrics", "language"}`, with `task` `"zeroshot_classification"`
(metrics `acc1`, `acc5`, `mean_per_class_recall`) or `"zeroshot_retrieval"` (metrics
`image_retrieval_recall@k`, text→image, and `text_retrieval_recall@k`, image→text); `acc5` is undefined (NaN
there, `null` here: NaN is not JSON) with fewer than 5 classes.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Any

import torch

from .metrics import TIE_RULE


FORMATS = ("json", "clip_benchmark")


def _versions() -> dict[str, str]:
    import transformers

    from .. import __version__

    return {
        "transformers_diffclip": __version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def report_metadata(
    model: torch.nn.Module,
    model_name: str,
    revision: str | None = None,
    data: str | None = None,
    templates: list[str] | None = None,
    **counts: Any,
) -> dict[str, Any]:
    """The facts a result depends on: the model as named, its revision and the commit it resolved to (Hub models;
    `None` for local folders), its class and dtype, the data, the templates, counts (`num_images`, ...), the
    package versions and the tie rule of the ranks."""
    parameter = next(model.parameters())
    metadata = {
        "model": model_name,
        "revision": revision,
        "commit_hash": getattr(model.config, "_commit_hash", None),
        "model_type": getattr(model.config, "model_type", None),
        "model_class": type(model).__name__,
        "dtype": str(parameter.dtype).removeprefix("torch."),
        "data": data,
    }
    if templates is not None:
        metadata["templates"] = list(templates)
    metadata.update(counts)
    metadata["versions"] = _versions()
    metadata["tie_rule"] = TIE_RULE
    return metadata


def clip_benchmark_result(
    report: Mapping[str, Any], task: str, dataset: str, model: str, pretrained: str | None = None
) -> dict[str, Any]:
    """`report` (of `run_zero_shot` / `evaluate_zero_shot` or `run_retrieval` / `evaluate_retrieval`, whose metrics
    already carry CLIP_benchmark's names) in CLIP_benchmark's file layout (module docstring): its metrics only, in
    its envelope."""
    if task == "zeroshot_classification":
        metrics = {name: report[name] for name in ("acc1", "acc5", "mean_per_class_recall")}
    elif task == "zeroshot_retrieval":
        metrics = {
            name: value
            for name, value in report.items()
            if name.startswith(("image_retrieval_recall@", "text_retrieval_recall@"))
        }
    else:
        raise ValueError(f"Unknown CLIP_benchmark task {task!r}; use zeroshot_classification or zeroshot_retrieval.")
    return {
        "dataset": dataset,
        "model": model,
        "pretrained": pretrained or "",
        "task": task,
        "metrics": metrics,
        "language": "en",
    }


__all__ = ["FORMATS", "clip_benchmark_result", "report_metadata"]
