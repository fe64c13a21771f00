# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The numbers arXiv:2503.06626 prints (percent), per released checkpoint, for the suite's report to show beside the
measured ones. Keys: `linear_probe/<dataset>`, `linear_probe/average`, `few_shot/average`, `zeroshot/imagenet`,
`retrieval/<dataset>/image_retrieval_recall@5` and `.../text_retrieval_recall@5`, `mmvp/average`, `ood/average_gain`
(DiffCLIP minus CLIP, the paper's only OOD figure in numbers)."""

from __future__ import annotations


LINEAR_PROBE_DATASETS = (
    "caltech101",
    "dtd",
    "pets",
    "flowers",
    "sun397",
    "aircraft",
    "cifar10",
    "cifar100",
    "food101",
)


def _retrieval(f30_img, f8_img, coco_img, f30_txt, f8_txt, coco_txt) -> dict[str, float]:
    values = {}
    for dataset, image, text in (
        ("flickr30k", f30_img, f30_txt),
        ("flickr8k", f8_img, f8_txt),
        ("mscoco", coco_img, coco_txt),
    ):
        values[f"retrieval/{dataset}/image_retrieval_recall@5"] = image
        values[f"retrieval/{dataset}/text_retrieval_recall@5"] = text
    return values


def _probe(values) -> dict[str, float]:
    return {f"linear_probe/{name}": value for name, value in zip(LINEAR_PROBE_DATASETS, values)}


PUBLISHED: dict[str, dict[str, float]] = {
    "hammh0a/ViTB16_CC3M": {
        **_retrieval(31.8, 35.4, 19.4, 43.4, 46.2, 25.4),
        "zeroshot/imagenet": 13.6,
        "linear_probe/average": 63.8,
        "few_shot/average": 73.9,
    },
    "hammh0a/DiffCLIP_ViTB16_CC3M": {
        **_retrieval(32.9, 36.5, 20.9, 44.7, 47.8, 27.6),
        "zeroshot/imagenet": 14.4,
        "linear_probe/average": 64.8,
        "few_shot/average": 74.6,
        **_probe((76.2, 60.2, 62.2, 86.6, 56.2, 34.6, 83.9, 63.7, 59.4)),
    },
    "hammh0a/ViTB16_CC12M": {
        **_retrieval(62.5, 62.1, 41.3, 76.8, 77.7, 53.8),
        "zeroshot/imagenet": 31.8,
        "linear_probe/average": 77.0,
        "few_shot/average": 85.3,
        "mmvp/average": 21.9,
    },
    "hammh0a/DiffCLIP_ViTB16_CC12M": {
        **_retrieval(62.2, 61.5, 42.3, 77.4, 77.4, 55.5),
        "zeroshot/imagenet": 33.8,
        "linear_probe/average": 77.3,
        "few_shot/average": 85.4,
        **_probe((89.5, 71.8, 83.0, 93.5, 69.4, 46.4, 90.7, 73.3, 77.7)),
        "mmvp/average": 27.6,
    },
}
OOD_AVERAGE_GAIN = 2.1  # DiffCLIP minus CLIP, averaged over ImageNet-V2, -A, -R, -Sketch (the paper's text)


def published_for(name: str | None) -> dict[str, float]:
    """The published numbers of a released checkpoint, by its Hub id (or the id's last part); `{}` otherwise."""
    if not name:
        return {}
    if name in PUBLISHED:
        return PUBLISHED[name]
    for repo, values in PUBLISHED.items():
        if repo.split("/", 1)[1] == str(name).rstrip("/").rsplit("/", 1)[-1]:
            return values
    return {}


__all__ = ["LINEAR_PROBE_DATASETS", "OOD_AVERAGE_GAIN", "PUBLISHED", "published_for"]
