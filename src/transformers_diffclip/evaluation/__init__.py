# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot classification and retrieval evaluation of DiffCLIP and other CLIP-like dual encoders.

One job per module: `labels` (class names and templates), `data` (images, ImageFolder trees, JSON Lines),
`encoding` (text and image embeddings), `classifier` ([`ZeroShotClassifier`]), `metrics` (the one ranking rule of
every Recall@K and accuracy), `tasks` (the two evaluations), `loading` (the one model loader of every command),
`reports` (metadata, CLIP_benchmark layout) and `cli` (the commands).
"""

from .classifier import CLASSIFIER_CONFIG_NAME, CLASSIFIER_WEIGHTS_NAME, ZeroShotClassifier
from .data import (
    IMAGE_EXTENSIONS,
    ImageDataset,
    ImageFolderData,
    RetrievalData,
    check_image_sources,
    find_image_folder,
    image_batches,
    load_image,
    match_folders,
    read_retrieval_jsonl,
)
from .encoding import encode_pixel_values, encode_texts
from .labels import (
    DEFAULT_TEMPLATE,
    Label,
    check_templates,
    duplicate_labels,
    fill_template,
    load_class_names,
    load_templates,
    parse_label_list,
)
from .loading import DTYPES, inspect_model, load_model_and_processor, resolve_device
from .metrics import (
    RECALL_KS,
    TIE_RULE,
    check_finite,
    classification_report,
    match_ranks,
    recall_at_k,
    retrieval_ranks,
    retrieval_recall,
)
from .reports import clip_benchmark_result, report_metadata
from .tasks import evaluate_retrieval, evaluate_zero_shot


__all__ = [
    "CLASSIFIER_CONFIG_NAME",
    "CLASSIFIER_WEIGHTS_NAME",
    "DEFAULT_TEMPLATE",
    "DTYPES",
    "IMAGE_EXTENSIONS",
    "RECALL_KS",
    "TIE_RULE",
    "ImageDataset",
    "ImageFolderData",
    "Label",
    "RetrievalData",
    "ZeroShotClassifier",
    "check_finite",
    "check_image_sources",
    "check_templates",
    "classification_report",
    "clip_benchmark_result",
    "duplicate_labels",
    "encode_pixel_values",
    "encode_texts",
    "evaluate_retrieval",
    "evaluate_zero_shot",
    "fill_template",
    "find_image_folder",
    "image_batches",
    "inspect_model",
    "load_class_names",
    "load_image",
    "load_model_and_processor",
    "load_templates",
    "match_folders",
    "match_ranks",
    "parse_label_list",
    "read_retrieval_jsonl",
    "recall_at_k",
    "report_metadata",
    "resolve_device",
    "retrieval_ranks",
    "retrieval_recall",
]
