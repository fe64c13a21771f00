# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot accuracy and retrieval recall of one model on one dataset split, for Python users and the commands
`diffclip eval zero-shot | retrieval`: the suite's split readers (`evaluation.datasets.open_split`: webdataset,
split folders, ImageFolder, Karpathy JSON, JSON Lines) and its tasks (`paper_tasks.run_zero_shot`,
`run_retrieval`), with one report schema (CLIP_benchmark's metric names)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from .classifier import ZeroShotClassifier
from .data import ImageFolderData
from .datasets import Split, image_folder_split
from .features import FeatureCache
from .metrics import RECALL_KS
from .paper_tasks import DatasetSpec, ModelRun, run_retrieval, run_zero_shot


def dataset_of(
    data: str | os.PathLike | Split | ImageFolderData,
    split: str = "test",
    class_names: Any = None,
    key: str | None = None,
    templates: Sequence[str] | None = None,
    image_root: str | os.PathLike | None = None,
    name: str | None = None,
) -> DatasetSpec:
    """A [`DatasetSpec`] for `data`: a path or Hub id (opened with `open_split` when a task reads it), or a split
    already read (a [`Split`], or an [`ImageFolderData`] from `find_image_folder`)."""
    if isinstance(data, ImageFolderData):
        data = image_folder_split(data, str(data.root), split)
    if isinstance(data, Split):
        spec = DatasetSpec(name or data.dataset, data.dataset, templates=list(templates) if templates else None)
        spec.opened[split] = data
        return spec
    return DatasetSpec(
        name=name or str(data),
        data=str(data),
        classnames=class_names,
        key=key,
        templates=list(templates) if templates else None,
        image_root=str(image_root) if image_root is not None else None,
    )


def zero_shot_dataset(
    data: str | os.PathLike | Split | ImageFolderData,
    split: str = "test",
    class_names: Any = None,
    key: str | None = None,
    templates: Sequence[str] | None = None,
    classifier: ZeroShotClassifier | None = None,
    name: str | None = None,
) -> DatasetSpec:
    """[`dataset_of`], opened and checked for zero-shot before any model loads: a classification split, whose
    classes a saved `classifier` holds (matched by name; a mismatch lists the differences). Without `class_names`,
    the folders of a folder layout are matched to the classifier's class names, as to a class-name file."""
    spec = dataset_of(data, split, class_names, key, templates, name=name)
    opened = spec.split(split)
    if classifier is not None and class_names is None and opened.layout in ("image_folder", "split_folders"):
        spec = dataset_of(data, split, classifier.labels, None, templates, name=name)
        opened = spec.split(split)
    spec.check((split,), "classification")
    if classifier is not None:
        classifier.class_order(opened.class_names, source=str(class_names or f"the classes of {spec.data}"))
    return spec


def _model_run(model, processor, model_name, cache, batch_size, text_batch_size, num_workers, progress, processes):
    return ModelRun(
        model,
        processor,
        model_name or getattr(model.config, "_name_or_path", "") or type(model).__name__,
        cache=cache if cache is not None else FeatureCache(None),
        batch_size=batch_size,
        text_batch_size=text_batch_size,
        num_workers=num_workers,
        progress=progress,
        processes=processes,
    )


def evaluate_zero_shot(
    model: torch.nn.Module,
    processor,
    data: str | os.PathLike | Split | ImageFolderData,
    templates: Sequence[str] | None = None,
    classifier: ZeroShotClassifier | None = None,
    split: str = "test",
    class_names: Any = None,
    key: str | None = None,
    batch_size: int = 64,
    text_batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = False,
    cache: FeatureCache | None = None,
    model_name: str | None = None,
    processes: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Zero-shot accuracy of `model` on a classification split (`data` in any layout `open_split` reads; see
    [`dataset_of`]), with `templates` (default: the dataset's own, else "a photo of a {}.") or a saved
    `classifier`. The report is `paper_tasks.run_zero_shot`'s: `acc1`, `acc5`, `mean_per_class_recall`,
    `per_class`, `num_images`, `num_classes`, ... `processes` (`(rank, world)`) overrides the torchrun
    environment's (`(0, 1)`: encode everything here)."""
    spec = zero_shot_dataset(data, split, class_names, key, templates, classifier)
    run = _model_run(
        model, processor, model_name, cache, batch_size, text_batch_size, num_workers, progress, processes
    )
    report, _ = run_zero_shot(run, spec, split, classifier)
    return report


def evaluate_retrieval(
    model: torch.nn.Module,
    processor,
    data: str | os.PathLike | Split,
    ks: Sequence[int] = RECALL_KS,
    split: str = "test",
    image_root: str | os.PathLike | None = None,
    batch_size: int = 64,
    text_batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = False,
    cache: FeatureCache | None = None,
    model_name: str | None = None,
    processes: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Text→image and image→text Recall@k of `model` on a retrieval split (JSON Lines, Karpathy JSON or webdataset
    with captions): `paper_tasks.run_retrieval`'s report, `image_retrieval_recall@k` (text→image) and
    `text_retrieval_recall@k` (image→text), `num_images`, `num_captions`."""
    spec = dataset_of(data, split, image_root=image_root)
    run = _model_run(
        model, processor, model_name, cache, batch_size, text_batch_size, num_workers, progress, processes
    )
    report, _ = run_retrieval(run, spec, split, ks)
    return report


__all__ = ["dataset_of", "evaluate_retrieval", "evaluate_zero_shot", "zero_shot_dataset"]
