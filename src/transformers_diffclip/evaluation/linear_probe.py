# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The linear probe of the paper's Table 1, as El Banani et al.'s lgssl runs it (`lgssl/evaluation/linear_probe.py`,
`logistic_regression.py`, `configs/evaluation.yaml`), written here in torch on the CPU or a GPU.

**Classifier.** Multinomial logistic regression `nn.Linear(dim, classes)` initialised to zeros, fitted with one
`torch.optim.LBFGS(line_search_fn="strong_wolfe", max_iter=1000)` step, after `torch.manual_seed(0)`, on

    loss(W, b) = mean_i CE(W x_i + b, y_i) + (1 / C) * 0.5 * ||W||_2          (penalty="norm", lgssl)

(the L2 *norm*, not its square; the bias is not penalised). `penalty="squared"` minimises scikit-learn's (and CLIP's)
objective instead, `mean_i CE + 0.5 / (C n) * ||W||_2^2`, whose optimum `sklearn.linear_model.LogisticRegression`
computes; it is offered to compare with CLIP's protocol, never the default.

**Cost search.** Seven costs 1e-6 ... 1e6 (a factor 100 apart) scored on validation, then 29 log-spaced costs from
best/100 to best*100 (within [1e-6, 1e6]) searched by halving on the quartiles (25/50/75 %) around the best,
reusing scores already computed; ties go to the cost scored first. Validation is the dataset's own validation split
when given, else 20 % of each class of the training split, shuffled with `random.Random(93)`. The final classifier
is refitted on train + validation at the best cost and scored on test.

**Metric.** Top-1 accuracy, or the mean per-class accuracy (recall) for FGVC Aircraft, Oxford-IIIT Pets,
Caltech-101 and Flowers-102, the datasets lgssl's `evaluate.py` names. During the search, a class without
validation images counts 0 in the mean, as lgssl's `Accuracy` does (the same offset for every cost: the choice does
not change). Scores are compared as exact fractions of counts, not as float32 percentages.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import log10
from typing import Any

import torch
import torch.nn.functional as F

from .metrics import check_finite


COARSE_COSTS = (1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6)
FINE_STEPS = 29  # from best/100 to best*100: 8 steps per decade (lgssl, following CLIP's 96-cost sweep)
COST_RANGE = (1e-6, 1e6)
VALIDATION_FRACTION = 0.2
VALIDATION_SEED = 93
FIT_SEED = 0
MAX_ITER = 1000
PENALTIES = ("norm", "squared")
# lgssl's evaluate.py: mean per-class accuracy for these, top-1 accuracy for the other datasets.
MEAN_PER_CLASS_DATASETS = ("aircraft", "pets", "caltech101", "flowers")
_ALIASES = {
    "fgvc_aircraft": "aircraft",
    "fgvcaircraft": "aircraft",
    "oxford_pets": "pets",
    "oxford_iiit_pet": "pets",
    "oxfordiiitpet": "pets",
    "caltech_101": "caltech101",
    "flowers102": "flowers",
    "oxford_flowers102": "flowers",
    "flowers_102": "flowers",
}


def dataset_key(name: str) -> str:
    """The lgssl name of a dataset from the forms it comes in: `aircraft`, `wds/fgvc_aircraft`,
    `clip-benchmark/wds_vtab-pets`, `/data/caltech101`, `vtab/flowers` ... (lower case, prefixes dropped)."""
    key = str(name).rstrip("/").lower().replace("-", "_")
    key = key.rsplit("/", 1)[-1] if key.count("/") else key
    for prefix in ("wds_", "vtab_", "tfds_"):
        key = key.removeprefix(prefix)
    return _ALIASES.get(key, key)


def paper_metric(dataset: str) -> str:
    """`"mean_per_class_recall"` for the four datasets lgssl scores by mean per-class accuracy, else `"acc1"`."""
    return "mean_per_class_recall" if dataset_key(dataset) in MEAN_PER_CLASS_DATASETS else "acc1"


# --------------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------------


def class_counts(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[list[int], list[int]]:
    """Per class: (correct predictions, images)."""
    labels = labels.cpu().long()
    correct = (predictions.cpu().long() == labels).long()
    total = torch.bincount(labels, minlength=num_classes)
    hits = torch.bincount(labels, weights=correct.double(), minlength=num_classes).round().long()
    return hits.tolist(), total.tolist()


def probe_score(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int, mean_per_class: bool, absent_as_zero: bool
) -> float:
    """Top-1 accuracy or mean per-class accuracy, as a fraction. `absent_as_zero`: classes without images count 0
    in the mean (lgssl's validation score) instead of being left out (the test score)."""
    hits, total = class_counts(predictions, labels, num_classes)
    if not mean_per_class:
        return sum(hits) / sum(total)
    recalls = [h / t for h, t in zip(hits, total) if t]
    if absent_as_zero:
        recalls += [0.0] * sum(1 for t in total if not t)
    return sum(recalls) / len(recalls)


# --------------------------------------------------------------------------------------------------
# The classifier
# --------------------------------------------------------------------------------------------------


def _objective(linear: torch.nn.Linear, features, labels, cost: float, penalty: str) -> torch.Tensor:
    loss = F.cross_entropy(linear(features), labels)
    if penalty == "norm":
        return loss.mean() + (1.0 / cost) * (0.5 * linear.weight.norm(p=2))  # lgssl's order of operations
    return loss + 0.5 / (cost * features.shape[0]) * linear.weight.pow(2).sum()


def fit_logistic_regression(
    features: torch.Tensor,
    labels: torch.Tensor,
    cost: float,
    num_classes: int | None = None,
    max_iter: int = MAX_ITER,
    penalty: str = "norm",
    device: str | torch.device | None = None,
) -> torch.nn.Linear:
    """A `nn.Linear(dim, num_classes)` fitted by L-BFGS to `features` (float) and `labels` (class indices) at
    `cost` (see the module docstring); on `device` (default: the features' device)."""
    if penalty not in PENALTIES:
        raise ValueError(f"Unknown penalty {penalty!r}; use one of {', '.join(PENALTIES)}.")
    if not cost > 0:
        raise ValueError(f"The cost must be positive, got {cost}.")
    device = torch.device(device) if device is not None else features.device
    features = features.to(device=device, dtype=torch.float32)
    labels = labels.to(device=device, dtype=torch.long)
    num_classes = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    torch.manual_seed(FIT_SEED)
    linear = torch.nn.Linear(features.shape[1], num_classes, bias=True)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
    linear = linear.to(device)
    optimizer = torch.optim.LBFGS(linear.parameters(), line_search_fn="strong_wolfe", max_iter=max_iter)

    def closure():
        optimizer.zero_grad()
        loss = _objective(linear, features, labels, cost, penalty)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return linear.requires_grad_(False)


@torch.no_grad()
def predict(linear: torch.nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """The class of highest probability (softmax of the logits, first index on ties, as lgssl's `argmax`)."""
    device = linear.weight.device
    return linear(features.to(device=device, dtype=torch.float32)).softmax(dim=-1).argmax(dim=-1).cpu()


# --------------------------------------------------------------------------------------------------
# The cost search
# --------------------------------------------------------------------------------------------------


def split_train_validation(
    labels: Sequence[int], fraction: float = VALIDATION_FRACTION
) -> tuple[list[int], list[int]]:
    """lgssl's held-out validation: per class (in order of first appearance), the indices shuffled with a fresh
    `random.Random(93)`; the first `int(n * fraction)` go to validation, the rest to training."""
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    train, validation = [], []
    for indices in by_class.values():
        random.Random(VALIDATION_SEED).shuffle(indices)
        cut = int(len(indices) * fraction)
        train.extend(indices[cut:])
        validation.extend(indices[:cut])
    return train, validation


def fine_costs(best_cost: float) -> list[float]:
    """The second stage's costs: `torch.logspace` (float32, as lgssl) from best/100 to best*100, 29 steps, kept
    within [1e-6, 1e6]."""
    costs = torch.logspace(log10(best_cost) - 2, log10(best_cost) + 2, FINE_STEPS, dtype=torch.float32)
    return costs[(costs >= COST_RANGE[0]) & (costs <= COST_RANGE[1])].tolist()


@dataclass
class CostSearch:
    """The outcome of [`search_cost`]: the best cost and every `(cost, validation score)` in the order scored."""

    best_cost: float
    best_score: float
    scores: list[tuple[float, float]] = field(default_factory=list)


def search_cost(score: Callable[[float], float], coarse: Sequence[float] = COARSE_COSTS) -> CostSearch:
    """lgssl's two-stage search over costs for a `score(cost)` to maximise (see the module docstring)."""
    visited: list[tuple[float, float]] = []
    coarse_scores = []
    for cost in coarse:
        coarse_scores.append(score(cost))
        visited.append((cost, coarse_scores[-1]))
    best = max(coarse_scores)
    best_cost = coarse[coarse_scores.index(best)]
    scores = {best_cost: best}
    costs = fine_costs(best_cost)
    while len(costs) > 1:
        n = len(costs)
        quartiles = (costs[n // 4], costs[n // 2], costs[-n // 4])
        for cost in quartiles:
            if cost not in scores:
                scores[cost] = score(cost)
                visited.append((cost, scores[cost]))
        low, middle, high = (scores[c] for c in quartiles)
        top = max(low, middle, high)
        if top == low:
            costs = costs[: n // 2]
        elif top == high:
            costs = costs[n // 2 :]
        else:
            costs = costs[n // 4 : -n // 4]
    best_cost, best = max(scores.items(), key=lambda item: item[1])
    return CostSearch(best_cost, best, visited)


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    validation_features: torch.Tensor | None = None,
    validation_labels: torch.Tensor | None = None,
    metric: str = "acc1",
    max_iter: int = MAX_ITER,
    penalty: str = "norm",
    device: str | torch.device | None = None,
    costs: Sequence[float] = COARSE_COSTS,
    refit_on_train_and_validation: bool = True,
    progress: Callable[[float, float], None] | None = None,
) -> dict[str, Any]:
    """The whole protocol: cost search on validation, refit, test. Returns `lp_acc1`, `lp_mean_per_class_recall`
    (fractions, CLIP_benchmark's names), `lp_metric` (the value of `metric`, the one the paper reports),
    `lp_metric_name`, `lp_best_cost`, `lp_validation_scores` (`[cost, score]` in the order scored) and the counts;
    `test_predictions` (a tensor, for paired comparisons) is returned too.

    Features must be finite (an error otherwise: never a score from a broken model)."""
    if metric not in ("acc1", "mean_per_class_recall"):
        raise ValueError(f"Unknown metric {metric!r}; use acc1 or mean_per_class_recall.")
    for what, tensor in (("train", train_features), ("test", test_features), ("validation", validation_features)):
        if tensor is not None:
            if tensor.dim() != 2 or tensor.shape[0] == 0:
                raise ValueError(f"The {what} features must be a non-empty (num_images, dim) matrix.")
            check_finite(tensor, f"{what} image")
    train_labels, test_labels = torch.as_tensor(train_labels).long(), torch.as_tensor(test_labels).long()
    if (validation_features is None) != (validation_labels is None):
        raise ValueError("Give both validation features and labels, or neither.")
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    classes = len(torch.unique(train_labels))
    if classes < 2:
        raise ValueError(f"The training split has {classes} class; a linear probe needs at least 2.")
    if validation_features is None:
        train_index, validation_index = split_train_validation(train_labels.tolist())
        if not validation_index:
            raise ValueError("No class has 5 or more training images: the 20 % validation split is empty.")
        validation_features, validation_labels = train_features[validation_index], train_labels[validation_index]
        train_features, train_labels = train_features[train_index], train_labels[train_index]
    validation_labels = torch.as_tensor(validation_labels).long()
    num_classes = max(num_classes, int(validation_labels.max()) + 1)
    mean_per_class = metric == "mean_per_class_recall"

    def score(cost: float) -> float:
        linear = fit_logistic_regression(train_features, train_labels, cost, num_classes, max_iter, penalty, device)
        value = probe_score(predict(linear, validation_features), validation_labels, num_classes, mean_per_class, True)
        if progress is not None:
            progress(cost, value)
        return value

    search = search_cost(score, costs)
    if refit_on_train_and_validation:
        final_features = torch.cat([train_features, validation_features])
        final_labels = torch.cat([train_labels, validation_labels])
    else:
        final_features, final_labels = train_features, train_labels
    linear = fit_logistic_regression(
        final_features, final_labels, search.best_cost, num_classes, max_iter, penalty, device
    )
    predictions = predict(linear, test_features)
    acc1 = probe_score(predictions, test_labels, num_classes, False, False)
    per_class = probe_score(predictions, test_labels, num_classes, True, False)
    return {
        "lp_acc1": acc1,
        "lp_mean_per_class_recall": per_class,
        "lp_metric": per_class if mean_per_class else acc1,
        "lp_metric_name": metric,
        "lp_best_cost": search.best_cost,
        "lp_validation_scores": [[cost, value] for cost, value in search.scores],
        "lp_penalty": penalty,
        "lp_max_iter": max_iter,
        "num_train": int(train_features.shape[0]),
        "num_validation": int(validation_features.shape[0]),
        "num_test": int(test_features.shape[0]),
        "num_classes": num_classes,
        "test_predictions": predictions,
    }


__all__ = [
    "COARSE_COSTS",
    "MEAN_PER_CLASS_DATASETS",
    "CostSearch",
    "dataset_key",
    "fine_costs",
    "fit_logistic_regression",
    "linear_probe",
    "paper_metric",
    "predict",
    "probe_score",
    "search_cost",
    "split_train_validation",
]
