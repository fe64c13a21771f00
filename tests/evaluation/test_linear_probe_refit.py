"""The linear probe's final classifier is fitted on train + validation at the best cost (lgssl refits on both), by
default: what the final fit is given is checked, since on easy data the test predictions of a train-only refit can
be identical."""

from __future__ import annotations

import numpy as np
import torch
from _paper_data import one_thread  # noqa: F401 (autouse fixture)

from transformers_diffclip.evaluation import linear_probe as probe_module


def _blobs(n, classes=3, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, (classes, dim))
    y = np.arange(n) % classes
    x = centres[y] + rng.normal(0, 1, (n, dim))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def _record_fits(monkeypatch):
    fits = []
    real = probe_module.fit_logistic_regression

    def recording(features, labels, cost, *args, **kwargs):
        fits.append((features.clone(), labels.clone(), cost))
        return real(features, labels, cost, *args, **kwargs)

    monkeypatch.setattr(probe_module, "fit_logistic_regression", recording)
    return fits


def _same_rows(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether `a` and `b` hold the same rows, in any order."""
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    return a.shape == b.shape and key(a) == key(b)


def test_final_fit_is_on_train_and_the_given_validation(monkeypatch):
    x, y = _blobs(60)
    xv, yv = _blobs(21, seed=1)
    xt, yt = _blobs(12, seed=2)
    fits = _record_fits(monkeypatch)
    report = probe_module.linear_probe(x, y, xt, yt, xv, yv, max_iter=30, costs=(1e-2, 1.0, 1e2))
    final_features, final_labels, final_cost = fits[-1]
    assert final_cost == report["lp_best_cost"]
    assert _same_rows(final_features, torch.cat([x, xv]))
    assert sorted(final_labels.tolist()) == sorted(torch.cat([y, yv]).tolist())
    # every fit of the search saw the training split alone
    assert all(_same_rows(features, x) for features, _, _ in fits[:-1])


def test_final_fit_without_a_validation_split_uses_every_training_image(monkeypatch):
    x, y = _blobs(50)
    xt, yt = _blobs(9, seed=3)
    fits = _record_fits(monkeypatch)
    report = probe_module.linear_probe(x, y, xt, yt, max_iter=30, costs=(1e-2, 1.0, 1e2))
    held_out = report["num_validation"]
    assert held_out == 3 + 3 + 3  # lgssl's int(20 %) of each class of 17, 17 and 16 images
    assert all(features.shape[0] == 50 - held_out for features, _, _ in fits[:-1])
    assert _same_rows(fits[-1][0], x)  # the 20 % held out for the search are back in the final fit
