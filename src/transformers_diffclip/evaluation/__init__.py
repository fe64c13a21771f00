# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot classification and retrieval evaluation of DiffCLIP and other CLIP-like dual encoders.

One job per module: `labels` (class names and templates from the command line, duplicates), `data` (image
batches, ImageFolder trees, JSON Lines), `datasets` (every published layout, one split reader), `encoding` (text
and image embeddings), `classifier` ([`ZeroShotClassifier`]), `metrics` (the one ranking rule of every Recall@K
and accuracy, CLIP_benchmark's metric names), `paper_tasks` (every task of the suite, zero-shot and retrieval
included), `tasks` (zero-shot and retrieval of one split for Python users and `diffclip eval zero-shot |
retrieval`), `reports` (metadata, CLIP_benchmark's file layout) and `cli` (the commands). Model loading, image opening
and class-name/template files are `transformers_diffclip.core`.
"""

from .classifier import CLASSIFIER_CONFIG_NAME, CLASSIFIER_WEIGHTS_NAME, ZeroShotClassifier
from .data import (
    ImageDataset,
    ImageFolderData,
    RetrievalData,
    find_image_folder,
    image_loader,
    match_folders,
    read_retrieval_jsonl,
)
from .encoding import encode_pixel_values, encode_texts
from .labels import DEFAULT_TEMPLATE, duplicate_labels, fill_template, parse_label_list
from .metrics import (
    RECALL_KS,
    TIE_RULE,
    check_finite,
    classification_report,
    match_ranks,
    recall_at_k,
    retrieval_metrics,
    retrieval_ranks,
    retrieval_recall,
)
from .reports import clip_benchmark_result, report_metadata
from .tasks import dataset_of, evaluate_retrieval, evaluate_zero_shot, zero_shot_dataset


__all__ = [
    "CLASSIFIER_CONFIG_NAME",
    "CLASSIFIER_WEIGHTS_NAME",
    "DEFAULT_TEMPLATE",
    "RECALL_KS",
    "TIE_RULE",
    "ImageDataset",
    "ImageFolderData",
    "RetrievalData",
    "ZeroShotClassifier",
    "check_finite",
    "classification_report",
    "clip_benchmark_result",
    "dataset_of",
    "duplicate_labels",
    "encode_pixel_values",
    "encode_texts",
    "evaluate_retrieval",
    "evaluate_zero_shot",
    "fill_template",
    "find_image_folder",
    "image_loader",
    "match_folders",
    "match_ranks",
    "parse_label_list",
    "read_retrieval_jsonl",
    "recall_at_k",
    "report_metadata",
    "retrieval_metrics",
    "retrieval_ranks",
    "retrieval_recall",
    "zero_shot_dataset",
]
