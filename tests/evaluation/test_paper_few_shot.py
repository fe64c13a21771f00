"""Few-shot (evaluation.few_shot) against an explicit loop written here from the protocol: lgssl's sampler draws
(classes by `randperm` of the global generator after `torch.manual_seed`, then per class `multinomial` support and
query picks), one query and one prototype at a time in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _paper_data import one_thread  # noqa: F401 (autouse fixture)

from transformers_diffclip.evaluation.few_shot import few_shot, sample_episodes


def _data(seed=0, classes=7, dim=5):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 2
    train_labels = torch.tensor([c for c in range(classes) for _ in range(6 + c)])  # 6..12 train images per class
    test_labels = torch.tensor([c for c in range(classes) for _ in range(3 + 2 * c)])  # some classes below 6 queries
    train_labels = train_labels[torch.randperm(len(train_labels), generator=g)]
    test_labels = test_labels[torch.randperm(len(test_labels), generator=g)]
    train = centres[train_labels] + torch.randn(len(train_labels), dim, generator=g) * 1.5
    test = centres[test_labels] + torch.randn(len(test_labels), dim, generator=g) * 1.5
    return train, train_labels, test, test_labels


def _explicit(train, train_labels, test, test_labels, episodes, seed, way=5, shot=5, query=6):
    torch.manual_seed(seed)
    classes = sorted(set(train_labels.tolist()))
    accuracies = []
    for _ in range(episodes):
        picked = torch.randperm(len(classes))[:way]
        support, queries = [], []
        for c in picked.tolist():
            members = np.argwhere(train_labels.numpy() == classes[c]).reshape(-1)
            support.append((classes[c], members[torch.multinomial(torch.ones(len(members)), shot).numpy()]))
            tests = np.argwhere(test_labels.numpy() == classes[c]).reshape(-1)
            if len(tests) >= query:
                tests = tests[torch.multinomial(torch.ones(len(tests)), query).numpy()]
            queries.extend(tests.tolist())
        all_support = np.concatenate([idx for _, idx in support])
        mean = train[all_support].double().mean(0)

        def unit(v, mean=mean):
            v = v.double() - mean
            return v / v.norm()

        prototypes = [(c, torch.stack([unit(train[i]) for i in idx]).mean(0)) for c, idx in support]
        right = 0
        for q in queries:
            v = unit(test[q])
            distances = [float((v - p).norm()) for _, p in prototypes]
            right += prototypes[distances.index(min(distances))][0] == int(test_labels[q])
        accuracies.append(100.0 * right / len(queries))
    return accuracies


def test_few_shot_matches_the_explicit_loop():
    train, train_labels, test, test_labels = _data()
    report = few_shot(train, train_labels, test, test_labels, episodes=300, seed=8)
    expected = _explicit(train, train_labels, test, test_labels, 300, seed=8)
    np.testing.assert_allclose(report["episode_accuracies"].double().numpy(), expected, atol=1e-4)
    assert report["fewshot_acc_mean"] == pytest.approx(np.mean(expected), abs=1e-4)
    assert report["fewshot_acc_std"] == pytest.approx(np.std(expected, ddof=1), abs=1e-4)
    assert report["fewshot_episodes"] == 300 and report["seed"] == 8
    assert 20 < report["fewshot_acc_mean"] < 100


def test_episodes_are_seeded_and_per_class():
    _, train_labels, _, test_labels = _data(seed=1)
    first = list(sample_episodes(train_labels, test_labels, episodes=20, seed=3))
    again = list(sample_episodes(train_labels, test_labels, episodes=20, seed=3))
    other = list(sample_episodes(train_labels, test_labels, episodes=20, seed=4))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))
    for support, queries in first:
        labels = train_labels[support].view(5, 5)
        assert (labels == labels[:, :1]).all() and len(set(labels[:, 0].tolist())) == 5  # 5 distinct classes
        assert len(set(support.tolist())) == 25  # without replacement
        assert set(test_labels[queries].tolist()) <= set(labels[:, 0].tolist())
        counts = torch.bincount(test_labels)
        assert len(queries) == sum(min(6, int(counts[c])) for c in labels[:, 0].tolist())


def test_class_with_too_few_shots_is_named():
    train, train_labels, test, test_labels = _data()
    keep = torch.ones(len(train_labels), dtype=torch.bool)
    keep[torch.nonzero(train_labels == 2).flatten()[:3]] = False  # class 2: 8 - 3 = 5 images ... then 4
    keep[torch.nonzero(train_labels == 0).flatten()[:2]] = False  # class 0: 6 - 2 = 4 images
    names = [f"class{c}" for c in range(7)]
    with pytest.raises(ValueError, match=r"class0 \(4\)"):
        few_shot(train[keep], train_labels[keep], test, test_labels, episodes=2, class_names=names)


def test_non_finite_features_are_an_error():
    train, train_labels, test, test_labels = _data()
    test[0, 0] = math.inf
    with pytest.raises(ValueError, match="not finite"):
        few_shot(train, train_labels, test, test_labels, episodes=2)
