# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Few-shot classification of the paper's Table 1, as lgssl runs it (`lgssl/evaluation/fewshot.py`,
`configs/evaluation.yaml`: 5,000 episodes, 5-way, 5-shot, 6 queries, centred, normalised, prototypes).

**Episodes.** The classes are the sorted distinct training labels. Per episode: `torch.randperm(classes)[:way]`
picks the classes; per picked class, `torch.multinomial(ones(n), shot)` picks `shot` support images of its training
images and `torch.multinomial(ones(m), query)` `query` test images (all `m` when the class has fewer), each without
replacement, drawn in that order from one `torch.Generator` seeded with `seed`: the episodes of lgssl's sampler run
after `torch.manual_seed(seed)`.

**Classification.** Support and queries are centred on the support mean and L2-normalised; each class's prototype
is the mean of its support features; a query takes the class of the prototype nearest in Euclidean distance (the
first on ties, as `min`). An episode's accuracy is the fraction of its queries classified right; the result is the
mean and the standard deviation (Bessel-corrected, as `torch.std`) over episodes, in percent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .metrics import check_finite


EPISODES = 5000
WAYS = 5
SHOTS = 5
QUERIES = 6
DEFAULT_SEED = 0
# At most this many episodes (200 x lgssl's 5,000): one accuracy each is held in memory.
MAX_EPISODES = 1_000_000


def check_episodes(episodes: int, what: str = "episodes") -> int:
    """`episodes` when it is an integer from 1 to [`MAX_EPISODES`]; else a `ValueError` naming `what`."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or not 1 <= episodes <= MAX_EPISODES:
        shown = repr(episodes)[:40]
        raise ValueError(f"{what} must be an integer from 1 to {MAX_EPISODES:,}, got {shown}.")
    return episodes


def class_indices(labels: torch.Tensor, classes: Sequence[int]) -> list[torch.Tensor]:
    labels = torch.as_tensor(labels).long()
    return [torch.nonzero(labels == c).flatten() for c in classes]


def check_episode_setup(train_labels, way: int, shot: int, class_names: Sequence[str] | None = None):
    """The distinct training classes; an error when there are fewer than `way`, or when a class has fewer training
    images than `shot` (named, with its count)."""
    train_labels = torch.as_tensor(train_labels).long()
    classes = sorted(torch.unique(train_labels).tolist())
    if way < 1 or shot < 1:
        raise ValueError(f"way and shot must be at least 1, got {way}-way {shot}-shot.")
    if len(classes) < way:
        raise ValueError(f"{way}-way episodes need {way} classes; the training split has {len(classes)}.")
    counts = torch.bincount(train_labels)
    short = [c for c in classes if int(counts[c]) < shot]
    if short:
        named = ", ".join(
            f"{class_names[c] if class_names is not None and c < len(class_names) else c!s} ({int(counts[c])})"
            for c in short[:10]
        )
        raise ValueError(
            f"{len(short)} class(es) have fewer training images than the {shot} shots: {named}"
            + (f" and {len(short) - 10} more" if len(short) > 10 else "")
            + "."
        )
    return classes


def sample_episodes(
    train_labels: torch.Tensor,
    test_labels: torch.Tensor,
    episodes: int = EPISODES,
    way: int = WAYS,
    shot: int = SHOTS,
    query: int = QUERIES,
    seed: int = DEFAULT_SEED,
    class_names: Sequence[str] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`(support indices into train, query indices into test)` per episode (see the module docstring): support
    grouped by class, `shot` per class, in the order the classes were drawn. The setup is checked (see
    `check_episode_setup`; `class_names` name the short classes) when the first episode is drawn."""
    classes = check_episode_setup(train_labels, way, shot, class_names)
    train_of = class_indices(train_labels, classes)
    test_of = class_indices(test_labels, classes)
    generator = torch.Generator().manual_seed(int(seed))
    for _ in range(episodes):
        support, queries = [], []
        for c in torch.randperm(len(classes), generator=generator)[:way].tolist():
            train_c, test_c = train_of[c], test_of[c]
            support.append(train_c[torch.multinomial(torch.ones(len(train_c)), shot, generator=generator)])
            if len(test_c) < query:
                queries.append(test_c)
            else:
                queries.append(test_c[torch.multinomial(torch.ones(len(test_c)), query, generator=generator)])
        yield torch.cat(support), torch.cat(queries)


def episode_accuracy(support: torch.Tensor, support_labels, queries: torch.Tensor, query_labels, way: int, shot: int):
    """The fraction of `queries` whose nearest centred, normalised prototype has their label."""
    mean = support.mean(dim=0, keepdim=True)
    support = F.normalize(support - mean, dim=-1, p=2)
    queries = F.normalize(queries - mean, dim=-1, p=2)
    prototypes = support.view(way, shot, -1).mean(dim=1)
    prototype_labels = support_labels.view(way, shot)[:, 0]
    distances = (queries[:, None] - prototypes[None, :]).norm(dim=-1, p=2)
    predicted = prototype_labels[distances.argmin(dim=1)]
    return (predicted == query_labels).float().mean()


def few_shot(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    episodes: int = EPISODES,
    way: int = WAYS,
    shot: int = SHOTS,
    query: int = QUERIES,
    seed: int = DEFAULT_SEED,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """lgssl's episodic few-shot evaluation. Returns `fewshot_acc_mean`, `fewshot_acc_std` (percent),
    `fewshot_episodes`, the setting (`fewshot_way`, `fewshot_shot`, `fewshot_query`, `seed`) and
    `episode_accuracies` (a tensor, in percent, one per episode: the samples of a paired bootstrap)."""
    check_episodes(episodes)
    if query < 1:
        raise ValueError(f"query must be at least 1, got {query}.")
    check_finite(train_features, "train image")
    check_finite(test_features, "test image")
    train_labels, test_labels = torch.as_tensor(train_labels).long(), torch.as_tensor(test_labels).long()
    train_features, test_features = train_features.float(), test_features.float()
    accuracies = torch.empty(episodes, dtype=torch.float32)
    for i, (support, queries) in enumerate(
        sample_episodes(train_labels, test_labels, episodes, way, shot, query, seed, class_names)
    ):
        if len(queries) == 0:
            raise ValueError("An episode drew classes without any test image: every class needs test images.")
        accuracies[i] = episode_accuracy(
            train_features[support], train_labels[support], test_features[queries], test_labels[queries], way, shot
        )
    accuracies = accuracies * 100.0
    return {
        "fewshot_acc_mean": accuracies.mean().item(),
        "fewshot_acc_std": accuracies.std().item() if episodes > 1 else 0.0,
        "fewshot_episodes": episodes,
        "fewshot_way": way,
        "fewshot_shot": shot,
        "fewshot_query": query,
        "seed": int(seed),
        "episode_accuracies": accuracies,
    }


__all__ = [
    "EPISODES",
    "MAX_EPISODES",
    "QUERIES",
    "SHOTS",
    "WAYS",
    "check_episodes",
    "episode_accuracy",
    "few_shot",
    "sample_episodes",
]
