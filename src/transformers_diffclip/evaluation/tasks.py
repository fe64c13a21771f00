# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The two evaluations: zero-shot accuracy on an ImageFolder tree and image/text retrieval recall on a JSON Lines
file. Images are streamed in batches; only embeddings (retrieval) or ranks (zero-shot) are kept."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from ..core.loading import image_processor_of, tokenizer_of
from .classifier import ZeroShotClassifier
from .data import ImageFolderData, RetrievalData, find_image_folder, image_loader, read_retrieval_jsonl
from .encoding import encode_pixel_values, encode_texts, progress_bar
from .labels import DEFAULT_TEMPLATE
from .metrics import (
    RECALL_KS,
    classification_report,
    match_ranks,
    non_finite_error,
    recall_at_k,
    retrieval_recall,
)


def evaluate_zero_shot(
    model: torch.nn.Module,
    processor,
    data: ImageFolderData | str | os.PathLike,
    templates: Sequence[str] = (DEFAULT_TEMPLATE,),
    classifier: ZeroShotClassifier | None = None,
    batch_size: int = 64,
    text_batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Zero-shot accuracy of `model` on an ImageFolder tree (see [`find_image_folder`], [`classification_report`]).

    The classifier covers every class of the data's label set; a given `classifier` is matched to those classes
    by name ([`ZeroShotClassifier.class_order`]), so one saved in another order scores the same, and one with
    other classes is an error. The true class's rank among the logits follows the package's tie rule (ties count
    against it, see `evaluation.metrics`). `per_class` is keyed by folder name; the report also says how folders
    were matched to classes (`class_matching`) and which class names occur twice (`duplicate_class_names`: such
    classes tie on every image, so neither can be ranked first).
    """
    if not isinstance(data, ImageFolderData):
        data = find_image_folder(data)
    if classifier is None:
        classifier = ZeroShotClassifier.from_model(
            model, processor, data.labels, templates, batch_size=text_batch_size, progress=progress
        )
    order = torch.tensor(classifier.class_order(data.labels, source="the data's label set"))
    paths = [path for path, _ in data.samples]
    targets = [data.folder_classes[folder] for _, folder in data.samples]
    loader = image_loader(
        paths, image_processor_of(processor), targets, batch_size=batch_size, num_workers=num_workers
    )
    ranks, truth, non_finite = [], [], 0
    for pixel_values, batch_targets in progress_bar(loader, progress, desc="Evaluating", unit="batch"):
        image_embeds = encode_pixel_values(model, pixel_values)
        non_finite += int((~torch.isfinite(image_embeds).all(dim=-1)).sum())
        if non_finite:  # counted over all images, so that the error says how many there are
            continue
        logits = classifier.logits(image_embeds).cpu()[:, order]
        ranks.append(match_ranks(logits, batch_targets))
        truth.append(batch_targets)
    if non_finite:
        raise non_finite_error(non_finite, len(paths), "image")
    class_keys = [None] * len(data.labels)
    for folder, c in zip(data.folders, data.folder_classes):
        class_keys[c] = folder
    report = classification_report(torch.cat(ranks), torch.cat(truth), class_keys)
    report["num_classes"] = len(data.labels)
    report["num_templates"] = len(classifier.templates)
    report["class_matching"] = data.matching
    report["duplicate_class_names"] = list(data.duplicates)
    return report


def evaluate_retrieval(
    model: torch.nn.Module,
    processor,
    data: RetrievalData | str | os.PathLike,
    ks: Sequence[int] = RECALL_KS,
    batch_size: int = 64,
    text_batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Text→image and image→text Recall@k of `model` on a retrieval set (see [`read_retrieval_jsonl`],
    [`retrieval_recall`]). Images are streamed; only their embeddings are kept."""
    if not isinstance(data, RetrievalData):
        data = read_retrieval_jsonl(data)
    recall_at_k(torch.zeros(1), ks)  # validates ks before any work
    text_embeds = encode_texts(
        model,
        tokenizer_of(processor),
        data.captions,
        batch_size=text_batch_size,
        progress=progress,
        description="captions",
    )
    loader = image_loader(data.images, image_processor_of(processor), batch_size=batch_size, num_workers=num_workers)
    image_embeds = [
        encode_pixel_values(model, pixel_values).cpu()
        for pixel_values, _ in progress_bar(loader, progress, desc="Encoding images", unit="batch")
    ]
    report = retrieval_recall(torch.cat(image_embeds), text_embeds, data.caption_image, ks)
    report["num_images"] = len(data.images)
    report["num_captions"] = len(data.captions)
    return report


__all__ = ["evaluate_retrieval", "evaluate_zero_shot"]
