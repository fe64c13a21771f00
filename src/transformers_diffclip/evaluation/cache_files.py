# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Reading the feature cache's files (evaluation.features) safely: a file that is not readable safetensors is named,
and features whose content does not hold together are refused before any task uses them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .splits import Split


# The two features of every image (see evaluation.features).
FEATURE_KINDS = ("pre_projection", "projected")


def read_safetensors(path: Path, whole_metadata: bool = False) -> tuple[dict, dict[str, torch.Tensor]]:
    """`(manifest, tensors)` of a cache file (`(metadata, tensors)` with `whole_metadata`); a file that is not
    readable safetensors (truncated, damaged) or whose manifest is not JSON is a `ValueError` naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        tensors = load_file(str(path))
        found = json.loads(metadata.get("manifest", "{}"))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"The feature cache {path} is not a readable safetensors file (truncated or damaged: {error}); delete it "
            "and run again."
        ) from error
    if not isinstance(found, dict):
        raise ValueError(f"The feature cache {path} has no manifest; delete it and run again.")
    return (metadata if whole_metadata else found), tensors


def check_features(
    path: Path, tensors: dict[str, torch.Tensor], targets: Any, rows: int | None, split: Split | None
) -> None:
    """Refuse cached features that do not hold together: both kinds 2-D with one row per target, as many rows as
    the manifest recorded (`rows`) and as the split holds when its size is known, class labels within the split's
    classes, captions lists of strings."""

    def refuse(reason: str) -> ValueError:
        return ValueError(f"The feature cache {path} is damaged: {reason}; delete it and run again.")

    for kind in FEATURE_KINDS:
        tensor = tensors.get(kind)
        if tensor is None or tensor.dim() != 2 or not tensor.is_floating_point():
            raise refuse(f"no 2-D float tensor {kind!r}")
    count = len(tensors["projected"])
    if len(tensors["pre_projection"]) != count:
        raise refuse(f"{len(tensors['pre_projection'])} pre_projection rows for {count} projected rows")
    if isinstance(targets, torch.Tensor):
        if targets.dim() != 1 or targets.dtype != torch.long:
            raise refuse(f"labels of shape {tuple(targets.shape)} and type {targets.dtype}, not one integer per row")
    elif not isinstance(targets, list):
        raise refuse(f"targets of type {type(targets).__name__}, not a list")
    if len(targets) != count:
        raise refuse(f"{len(targets)} targets for {count} rows of features")
    if rows is not None and count != rows:
        raise refuse(f"{count} rows where its manifest recorded {rows}")
    if split is None:
        return
    if split.num_samples is not None and count != split.num_samples:
        raise refuse(f"{count} rows for the {split.num_samples} images of {split.describe()}")
    if split.task == "classification":
        if not isinstance(targets, torch.Tensor):
            raise refuse("no class labels for a classification split")
        classes = len(split.class_names or ())
        bad = targets[(targets < 0) | (targets >= classes)]
        if len(bad):
            raise refuse(f"class label {int(bad[0])} outside the {classes} classes of {split.describe()}")
    elif split.task == "retrieval":
        if not all(isinstance(t, list) and t and all(isinstance(c, str) for c in t) for t in targets):
            raise refuse("targets that are not lists of captions")


__all__ = ["FEATURE_KINDS", "check_features", "read_safetensors"]
