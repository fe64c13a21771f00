# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""How sure a difference between two models is: a paired bootstrap interval over the samples both were scored on
(images, few-shot episodes, MMVP pairs) and McNemar's exact test for two classifiers' right/wrong answers.

**Paired bootstrap.** For per-sample scores `a_i`, `b_i` of two models on the same `n` samples, the difference of a
statistic (default: the mean) is recomputed on `resamples` draws of `n` sample indices with replacement (the same
indices for both models: the pairing), from a `torch.Generator` seeded with `seed`; the interval is the
percentile interval `[q_(alpha/2), q_(1 - alpha/2)]` of those differences (linear interpolation between order
statistics, `torch.quantile`'s default).

**McNemar's exact test.** With `b` the samples only model A gets right and `c` those only model B gets right, under
the null hypothesis each discordant sample is A's with probability 1/2: the two-sided p-value is
`min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)])`, and 1 when `b + c = 0`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import torch


DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
CONFIDENCE = 0.95


MIN_RESAMPLES = 1000  # fewer give intervals too rough to report


def _mean(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return values[index].mean(dim=-1)


def paired_bootstrap(
    a: torch.Tensor,
    b: torch.Tensor,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = CONFIDENCE,
    statistic: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    chunk: int = 200,
) -> dict[str, Any]:
    """The difference `statistic(a) - statistic(b)` and its paired bootstrap interval (see the module docstring).

    `statistic(values, index)` takes the per-sample values and a `(k, n)` batch of resampled indices and returns the
    `k` statistics; the default is the mean. Returns `difference`, `low`, `high`, `confidence`, `resamples`, `seed`."""
    a, b = torch.as_tensor(a, dtype=torch.float64).flatten(), torch.as_tensor(b, dtype=torch.float64).flatten()
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"Paired scores need the same non-zero number of samples, got {a.numel()} and {b.numel()}.")
    if resamples < MIN_RESAMPLES:
        raise ValueError(f"Use at least {MIN_RESAMPLES:,} bootstrap resamples, got {resamples}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}.")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("Paired scores must be finite.")
    statistic = statistic or _mean
    n = a.numel()
    everything = torch.arange(n).unsqueeze(0)
    difference = float(statistic(a, everything)[0] - statistic(b, everything)[0])
    generator = torch.Generator().manual_seed(int(seed))
    differences = []
    for start in range(0, resamples, chunk):
        index = torch.randint(0, n, (min(chunk, resamples - start), n), generator=generator)
        differences.append(statistic(a, index) - statistic(b, index))
    differences = torch.cat(differences)
    alpha = 1 - confidence
    low, high = torch.quantile(differences, torch.tensor([alpha / 2, 1 - alpha / 2], dtype=torch.float64)).tolist()
    return {
        "difference": difference,
        "low": low,
        "high": high,
        "confidence": confidence,
        "resamples": int(resamples),
        "seed": int(seed),
    }


def mean_per_class_statistic(labels: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A bootstrap statistic: the mean over classes of the per-class mean of the resampled correctness values (a
    class absent from a resample is left out of that resample's mean)."""
    labels = torch.as_tensor(labels).long()
    num_classes = int(labels.max()) + 1

    def statistic(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(index.shape[0]).unsqueeze(1).expand_as(index)
        flat = rows * num_classes + labels[index]
        size = index.shape[0] * num_classes
        hits = torch.zeros(size, dtype=torch.float64).index_add_(0, flat.flatten(), values[index].flatten().double())
        counts = torch.zeros(size, dtype=torch.float64).index_add_(
            0, flat.flatten(), torch.ones(flat.numel(), dtype=torch.float64)
        )
        hits, counts = hits.view(-1, num_classes), counts.view(-1, num_classes)
        present = counts > 0
        return (hits / counts.clamp(min=1)).where(present, 0).sum(dim=1) / present.sum(dim=1)

    return statistic


def mcnemar_exact(a_correct: torch.Tensor, b_correct: torch.Tensor) -> dict[str, Any]:
    """McNemar's exact (binomial) test on paired right/wrong answers: `only_a`, `only_b` (the discordant counts) and
    the two-sided `p_value`."""
    a_correct = torch.as_tensor(a_correct).bool().flatten()
    b_correct = torch.as_tensor(b_correct).bool().flatten()
    if a_correct.shape != b_correct.shape or a_correct.numel() == 0:
        raise ValueError("McNemar's test needs the same non-zero number of paired answers from both models.")
    only_a = int((a_correct & ~b_correct).sum())
    only_b = int((~a_correct & b_correct).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        p_value = 1.0
    else:
        tail = sum(math.comb(n, i) for i in range(k + 1))  # exact integers: no underflow for large n
        p_value = float(min(Fraction(1), Fraction(2 * tail, 2**n)))
    return {"only_a": only_a, "only_b": only_b, "p_value": p_value}


__all__ = ["DEFAULT_RESAMPLES", "mcnemar_exact", "mean_per_class_statistic", "paired_bootstrap"]
