# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The paper's evaluations of one model on one dataset, from cached image features (evaluation.features): linear
probe, few-shot, zero-shot classification, OOD zero-shot (one classifier for ImageNet and its variants), retrieval
and MMVP-VLM. Each returns `(report, samples)`: `report` is JSON-ready (CLIP_benchmark's keys where they exist, the
model id, revision, feature kind and seed in each), `samples` the per-sample values a paired comparison needs
(`correct`: right/wrong per test image, pair or caption; `values`: per-sample scores; `labels` for per-class
metrics)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F

from ..core.loading import tokenizer_of
from ..core.text_files import load_templates
from .classifier import ZeroShotClassifier
from .datasets import Split, open_split
from .encoding import encode_texts, logit_scale_of
from .features import FEATURE_KINDS, FeatureCache, Features, encode_split
from .few_shot import DEFAULT_SEED as FEW_SHOT_SEED
from .few_shot import EPISODES, QUERIES, SHOTS, WAYS, few_shot
from .labels import DEFAULT_TEMPLATE, duplicate_labels
from .linear_probe import FIT_SEED, MAX_ITER, VALIDATION_SEED, linear_probe, paper_metric
from .metrics import RECALL_KS, classification_report, match_ranks, recall_at_k, retrieval_metrics, retrieval_ranks
from .mmvp import mmvp_prompts, score_mmvp


@dataclass
class ModelRun:
    """A loaded model and how to encode with it: `name` and `revision` as given (they name the cache and the
    reports), the feature `cache`, batch sizes, workers, progress bars."""

    model: torch.nn.Module
    processor: Any
    name: str
    revision: str | None = None
    cache: FeatureCache = field(default_factory=lambda: FeatureCache(None))
    batch_size: int = 64
    text_batch_size: int = 256
    num_workers: int = 0
    progress: bool = False
    memory: dict = field(default_factory=dict)  # features already computed in this run, by dataset and split
    processes: tuple[int, int] | None = None  # (rank, world) to encode with; default: torchrun's, if any

    def features(self, split: Split) -> Features:
        key = (split.dataset, split.split, split.fingerprint)
        if key not in self.memory:
            self.memory[key] = self._encode(split)
        return self.memory[key]

    def _encode(self, split: Split) -> Features:
        return encode_split(
            self.model,
            self.processor,
            split,
            self.name,
            self.revision,
            cache=self.cache,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            progress=self.progress,
            rank=self.processes[0] if self.processes else None,
            world=self.processes[1] if self.processes else None,
        )

    def identity(self, feature_kind: str | None = None, seed: int | None = None) -> dict[str, Any]:
        return {
            "model": self.name,
            "revision": self.revision,
            "commit_hash": getattr(self.model.config, "_commit_hash", None),
            "feature_kind": feature_kind,
            "seed": seed,
        }


@dataclass
class DatasetSpec:
    """A dataset of a suite or command: `data` (a folder, file, `wds/<name>` or Hub id) and how to read it."""

    name: str
    data: str
    classnames: Any = None  # a file, a list, or None (the dataset's own)
    key: str | None = None  # the entry of a JSON class-name / template file
    templates: Any = None  # a file, a list, or None (the dataset's own, else "a photo of a {}.")
    image_root: str | None = None
    metric: str | None = None  # linear probe: acc1 or mean_per_class_recall (default: the paper's for the name)
    opened: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # splits read, by name

    def split(self, split: str) -> Split:
        """The split, read once (layout, files, fingerprint) for the check and every task and model after it."""
        if split not in self.opened:
            self.opened[split] = open_split(self.data, split, self.classnames, self.key, self.image_root)
        return self.opened[split]

    def check(self, splits: Sequence[str], task: str | None = None) -> None:
        """Open `splits` (layout, class names, files) and check they hold `task`'s kind of data (`classification`,
        `retrieval` or `mmvp`): an error now rather than after hours of encoding."""
        for name in splits:
            split = self.split(name)
            if task is not None and split.task != task:
                raise ValueError(f"Dataset {self.name!r} ({self.data}) is a {split.task} set; this task needs {task}.")

    def template_list(self, split: Split) -> list[str]:
        if isinstance(self.templates, (list, tuple)):
            return list(self.templates)
        if self.templates:
            return load_templates(self.templates, self.key)
        if split.templates:  # CLIP_benchmark writes the class name as {c}
            return [t.replace("{c}", "{}") for t in split.templates]
        return [DEFAULT_TEMPLATE]


def _splits_with_validation(spec: DatasetSpec) -> tuple[Split, Split | None, Split]:
    train, test = spec.split("train"), spec.split("test")
    try:
        validation = spec.split("val")
    except (ValueError, FileNotFoundError):
        validation = None
    return train, validation, test


def image_splits(spec: DatasetSpec, task: str) -> list[Split]:
    """The splits of `spec` whose image features `task` reads: the linear probe's train, val (if the dataset has
    one) and test; few-shot's train and test; the test split of the others (zeroshot, ood, retrieval, mmvp)."""
    if task == "linear_probe":
        return [split for split in _splits_with_validation(spec) if split is not None]
    if task == "few_shot":
        return [spec.split("train"), spec.split("test")]
    return [spec.split("test")]


def _check_same_classes(a: Split, b: Split) -> None:
    if a.class_names != b.class_names:
        raise ValueError(f"{a.describe()} and {b.describe()} name different classes.")


def run_linear_probe(
    run: ModelRun,
    spec: DatasetSpec,
    feature_kind: str = "pre_projection",
    penalty: str = "norm",
    max_iter: int = MAX_ITER,
    device: str | None = None,
) -> tuple[dict, dict]:
    """lgssl's linear probe on `spec`'s train (+ val, if the dataset has one) and test splits."""
    if feature_kind not in FEATURE_KINDS:
        raise ValueError(f"Unknown feature kind {feature_kind!r}; use one of {', '.join(FEATURE_KINDS)}.")
    train, validation, test = _splits_with_validation(spec)
    _check_same_classes(train, test)
    metric = spec.metric or paper_metric(spec.name)
    train_features, test_features = run.features(train), run.features(test)
    validation_features = run.features(validation) if validation is not None else None
    result = linear_probe(
        train_features.kind(feature_kind),
        train_features.labels,
        test_features.kind(feature_kind),
        test_features.labels,
        validation_features.kind(feature_kind) if validation_features else None,
        validation_features.labels if validation_features else None,
        metric=metric,
        max_iter=max_iter,
        penalty=penalty,
        device=device,
    )
    predictions = result.pop("test_predictions")
    labels = test_features.labels
    report = {
        **run.identity(feature_kind, FIT_SEED),
        "dataset": spec.name,
        "data": spec.data,
        "task": "linear_probe",
        **result,
        "validation": "given val split" if validation is not None else "20 % of each training class",
        "validation_seed": VALIDATION_SEED,
    }
    samples = {"correct": (predictions == labels), "labels": labels, "metric": metric}
    return report, samples


def run_few_shot(
    run: ModelRun,
    spec: DatasetSpec,
    feature_kind: str = "pre_projection",
    episodes: int = EPISODES,
    way: int = WAYS,
    shot: int = SHOTS,
    query: int = QUERIES,
    seed: int = FEW_SHOT_SEED,
) -> tuple[dict, dict]:
    """lgssl's episodic few-shot on `spec`'s train (support) and test (queries) splits."""
    train, test = spec.split("train"), spec.split("test")
    _check_same_classes(train, test)
    train_features, test_features = run.features(train), run.features(test)
    result = few_shot(
        train_features.kind(feature_kind),
        train_features.labels,
        test_features.kind(feature_kind),
        test_features.labels,
        episodes=episodes,
        way=way,
        shot=shot,
        query=query,
        seed=seed,
        class_names=[str(n) for n in train.class_names] if train.class_names else None,
    )
    values = result.pop("episode_accuracies")
    report = {**run.identity(feature_kind, seed), "dataset": spec.name, "data": spec.data, "task": "few_shot"}
    report.update(result)
    return report, {"values": values}


def _classifier(run: ModelRun, class_names: Sequence, templates: Sequence[str]) -> ZeroShotClassifier:
    return ZeroShotClassifier.from_model(
        run.model,
        run.processor,
        list(class_names),
        templates,
        batch_size=run.text_batch_size,
        progress=run.progress,
        model_name=run.name,
    )


def _class_keys(split: Split) -> list[str]:
    """What `per_class` is keyed by: the class folders, else the class names when they are unique, else the class
    indices."""
    if split.class_keys and all(isinstance(k, str) for k in split.class_keys):
        return list(split.class_keys)
    names = [name if isinstance(name, str) else "/".join(map(str, name)) for name in split.class_names]
    return names if len(set(names)) == len(names) else [str(i) for i in range(len(names))]


def _split_labels(split: Split, features: Features) -> torch.Tensor:
    """The class of each image under this split's class names: a folder split's own targets (cached features may
    come from a run that named the classes in another order, e.g. `diffclip embed`), else the features' labels."""
    if split.targets is None:
        return features.labels
    if len(split.targets) != len(features.projected):
        raise ValueError(f"{split.describe()} has {len(split.targets)} images but {len(features.projected)} features.")
    return torch.as_tensor(split.targets, dtype=torch.long)


def _zero_shot_scores(
    classifier: ZeroShotClassifier,
    features: Features,
    columns: Sequence[int] | None,
    targets: torch.Tensor,
    class_keys: Sequence[str] | None = None,
) -> tuple[dict, torch.Tensor]:
    """CLIP_benchmark's metrics (`acc1`, `acc5`, `mean_per_class_recall`) and `per_class`, `num_images`,
    `num_classes` of the classifier's logits over the `columns` (default: all), and whether each image is right."""
    logits = classifier.logits(F.normalize(features.projected, dim=-1)).cpu()
    if columns is not None:
        logits = logits[:, torch.as_tensor(columns)]
    ranks = match_ranks(logits, targets)
    metrics = classification_report(ranks, targets, class_keys, num_classes=int(logits.shape[1]))
    metrics["num_classes"] = int(logits.shape[1])
    return metrics, ranks < 1


def run_zero_shot(
    run: ModelRun, spec: DatasetSpec, split: str = "test", classifier: ZeroShotClassifier | None = None
) -> tuple[dict, dict]:
    """Zero-shot classification of `spec`'s `split` with its class names and templates, or with a saved
    `classifier`, matched to the split's classes by name ([`ZeroShotClassifier.class_order`]: one saved in
    another order scores the same, one with other classes is an error).

    The report holds CLIP_benchmark's `acc1`, `acc5` (`None` under 5 classes), `mean_per_class_recall`, then
    `per_class` (top-1 by class folder, else class name), `num_images`, `num_classes`, `num_templates`, how folders
    met class names (`class_matching`, folder layouts) and the class names listed twice (`duplicate_class_names`:
    such classes tie on every image, so by the tie rule neither is ever ranked first)."""
    test = spec.split(split)
    if test.task != "classification":
        raise ValueError(f"{spec.name} is a {test.task} set, not a classification set.")
    if classifier is None:
        classifier = _classifier(run, test.class_names, spec.template_list(test))
        columns = None
    else:
        columns = classifier.class_order(test.class_names, source=f"the classes of {spec.name}")
    features = run.features(test)
    metrics, correct = _zero_shot_scores(
        classifier, features, columns, _split_labels(test, features), _class_keys(test)
    )
    report = {**run.identity("projected", None), "dataset": spec.name, "data": spec.data, "task": "zeroshot"}
    report.update(
        metrics,
        num_templates=len(classifier.templates),
        templates=list(classifier.templates),
        class_matching=test.extra.get("class_matching"),
        duplicate_class_names=duplicate_labels(test.class_names),
    )
    return report, {"correct": correct}


def variant_columns(reference: Split, variant: Split) -> list[int]:
    """For each class of `variant`, its column in the reference (ImageNet) classifier: by folder name (WordNet id)
    when both have folder keys and they meet, by the integer folder names of ImageNet-V2 (`0` ... `999`), else by
    class name; an error names the classes that cannot be placed."""
    keys = reference.class_keys or []
    variant_keys = variant.class_keys or []
    position = {k: i for i, k in enumerate(keys)}
    if variant_keys and all(k in position for k in variant_keys):
        return [position[k] for k in variant_keys]
    if variant_keys and all(k.isdigit() and int(k) < len(reference.class_names) for k in variant_keys):
        return [int(k) for k in variant_keys]
    names = {}
    for i, name in enumerate(reference.class_names):
        names.setdefault(str(name), []).append(i)
    missing = [str(n) for n in variant.class_names if len(names.get(str(n), [])) != 1]
    if missing:
        raise ValueError(
            f"{len(missing)} classes of {variant.describe()} are not exactly one class of {reference.describe()} "
            f"(by WordNet-id folder, by V2's numbered folder, or by name): {missing[:10]}."
        )
    return [names[str(n)][0] for n in variant.class_names]


def run_ood(run: ModelRun, reference: DatasetSpec, variants: Sequence[DatasetSpec]) -> tuple[dict, dict]:
    """ImageNet and its variants in one run with one classifier (the reference's classes and templates); a variant
    with fewer classes (ImageNet-A, -R: 200) is scored over its classes' logits only. `ood_average`: the mean top-1
    over the variants (not the reference)."""
    reference_split = reference.split("test")
    templates = reference.template_list(reference_split)
    classifier = _classifier(run, reference_split.class_names, templates)
    results, samples = {}, {}
    for spec in [reference, *variants]:
        split = reference_split if spec is reference else spec.split("test")
        columns = None if spec is reference else variant_columns(reference_split, split)
        if columns is not None and columns == list(range(len(reference_split.class_names))):
            columns = None
        features = run.features(split)
        metrics, correct = _zero_shot_scores(
            classifier, features, columns, _split_labels(split, features), _class_keys(split)
        )
        results[spec.name] = metrics
        samples[spec.name] = {"correct": correct}
    accuracies = [results[spec.name]["acc1"] for spec in variants]
    report = {
        **run.identity("projected", None),
        "task": "ood",
        "reference": reference.name,
        "datasets": results,
        "ood_average": sum(accuracies) / len(accuracies) if accuracies else None,
        "num_templates": len(templates),
    }
    return report, samples


def run_retrieval(
    run: ModelRun, spec: DatasetSpec, split: str = "test", ks: Sequence[int] = RECALL_KS
) -> tuple[dict, dict]:
    """Text→image and image→text Recall@k (CLIP_benchmark's `image_retrieval_recall@k`, `text_retrieval_recall@k`,
    see `evaluation.metrics.retrieval_metrics`) on `spec`'s `split` (Karpathy JSON, webdataset with `txt`, or JSON
    Lines)."""
    recall_at_k(torch.zeros(1), ks)  # validates ks before any work
    test = spec.split(split)
    if test.task != "retrieval":
        raise ValueError(f"{spec.name} is a {test.task} set, not a retrieval set.")
    features = run.features(test)
    captions, owners = [], []
    for image, texts in enumerate(features.targets):
        captions.extend(texts)
        owners.extend([image] * len(texts))
    text_embeds = encode_texts(
        run.model,
        tokenizer_of(run.processor),
        captions,
        batch_size=run.text_batch_size,
        progress=run.progress,
        description="captions",
    )
    text_ranks, image_ranks = retrieval_ranks(features.projected, text_embeds, owners)
    report = {**run.identity("projected", None), "dataset": spec.name, "data": spec.data, "task": "retrieval"}
    report.update(retrieval_metrics(text_ranks, image_ranks, ks))
    report.update(num_images=len(features.targets), num_captions=len(captions))
    return report, {"image_retrieval": text_ranks < 5, "text_retrieval": image_ranks < 5}


def run_mmvp(run: ModelRun, spec: DatasetSpec) -> tuple[dict, dict]:
    """MMVP-VLM as evaluate_vlm.py scores it (evaluation.mmvp)."""
    split = spec.split("test")
    if split.task != "mmvp":
        raise ValueError(f"{spec.name} is not an MMVP-VLM folder (Questions.csv, 'MLLM_VLM Images/').")
    features = run.features(split)
    texts = encode_texts(run.model, tokenizer_of(run.processor), mmvp_prompts(split), batch_size=run.text_batch_size)
    result = score_mmvp(features.projected, texts, logit_scale_of(run.model), split)
    correct = result.pop("pair_correct")
    report = {**run.identity("projected", None), "dataset": spec.name, "data": spec.data, "task": "mmvp", **result}
    return report, {"correct": correct}


def dataset_spec(name: str, entry: str | Mapping[str, Any]) -> DatasetSpec:
    """A [`DatasetSpec`] from a suite file's entry: a string (`data`) or a mapping of its fields."""
    if isinstance(entry, str):
        return DatasetSpec(name=name, data=entry)
    if not isinstance(entry, Mapping) or "data" not in entry:
        raise ValueError(f"Dataset {name!r}: expected a 'data' path or id, got {repr(entry)[:60]}.")
    allowed = {f.name for f in fields(DatasetSpec) if f.init} - {"name"}
    unknown = sorted(repr(key)[:60] for key in set(entry) - allowed)
    if unknown:
        raise ValueError(
            f"Dataset {name!r}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(allowed))}."
        )
    return DatasetSpec(name=name, **{k: (str(v) if k == "data" else v) for k, v in entry.items()})


__all__ = [
    "DatasetSpec",
    "ModelRun",
    "dataset_spec",
    "image_splits",
    "run_few_shot",
    "run_linear_probe",
    "run_mmvp",
    "run_ood",
    "run_retrieval",
    "run_zero_shot",
    "variant_columns",
]
