"""Paired bootstrap intervals against closed forms and McNemar's exact test against scipy.stats.binomtest."""

from __future__ import annotations

import math

import pytest
import torch
from _paper_data import one_thread  # noqa: F401 (autouse fixture)

from transformers_diffclip.evaluation.significance import mcnemar_exact, mean_per_class_statistic, paired_bootstrap


def test_bootstrap_interval_of_a_mean_difference_matches_the_normal_closed_form():
    # differences d_i = a_i - b_i in {-1, 0, 1}: the bootstrap distribution of their mean is close to
    # N(mean(d), var_plugin(d) / n); its 95 % percentile interval is mean +- 1.96 * sd / sqrt(n)
    g = torch.Generator().manual_seed(1)
    n = 4000
    a = (torch.rand(n, generator=g) < 0.62).double()
    b = (torch.rand(n, generator=g) < 0.58).double()
    result = paired_bootstrap(a, b, resamples=4000, seed=3)
    d = a - b
    half = 1.959964 * d.std(unbiased=False).item() / math.sqrt(n)
    assert result["difference"] == pytest.approx(d.mean().item(), abs=1e-12)
    assert result["low"] == pytest.approx(d.mean().item() - half, abs=0.12 * half)
    assert result["high"] == pytest.approx(d.mean().item() + half, abs=0.12 * half)
    again = paired_bootstrap(a, b, resamples=4000, seed=3)
    assert (again["low"], again["high"]) == (result["low"], result["high"])  # seeded


def test_bootstrap_of_two_samples_has_the_exact_distribution():
    # d = (0, 1): a resampled mean is 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4, so the 2.5 % and 97.5 % quantiles
    # are 0 and 1
    result = paired_bootstrap(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]), resamples=2000, seed=0)
    assert result["difference"] == 0.5 and result["low"] == 0.0 and result["high"] == 1.0


def test_pairing_narrows_the_interval():
    # identical per-sample scores plus a constant: every resample gives the same difference
    a = torch.rand(50, generator=torch.Generator().manual_seed(0))
    result = paired_bootstrap(a + 0.25, a, resamples=1000)
    assert result["low"] == pytest.approx(0.25) and result["high"] == pytest.approx(0.25)


def test_mean_per_class_statistic_on_the_full_sample():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    correct = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    value = mean_per_class_statistic(labels)(correct, torch.arange(6).unsqueeze(0))
    assert value.item() == pytest.approx((2 / 3 + 1 + 0) / 3)
    # a resample holding only class 1: the mean is over the classes present
    assert mean_per_class_statistic(labels)(correct, torch.tensor([[3, 4, 3, 4, 3, 3]])).item() == 1.0


def test_bootstrap_refuses_bad_input():
    with pytest.raises(ValueError, match="1,000"):
        paired_bootstrap(torch.ones(3), torch.ones(3), resamples=10)
    with pytest.raises(ValueError, match="same"):
        paired_bootstrap(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap(torch.tensor([1.0, float("nan")]), torch.ones(2))


@pytest.mark.parametrize("only_a,only_b,both", [(0, 0, 5), (3, 0, 2), (7, 2, 10), (12, 30, 1), (400, 460, 3)])
def test_mcnemar_matches_scipy_binomtest(only_a, only_b, both):
    from scipy.stats import binomtest

    a = torch.tensor([1] * only_a + [0] * only_b + [1] * both + [0] * 4)
    b = torch.tensor([0] * only_a + [1] * only_b + [1] * both + [0] * 4)
    result = mcnemar_exact(a, b)
    assert (result["only_a"], result["only_b"]) == (only_a, only_b)
    n = only_a + only_b
    expected = 1.0 if n == 0 else binomtest(min(only_a, only_b), n, 0.5).pvalue
    assert result["p_value"] == pytest.approx(expected, rel=1e-9)
