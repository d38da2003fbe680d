"""McNemar exact test, bootstrap interval and mean ± std against independent computations."""

from __future__ import annotations

import statistics
from fractions import Fraction
from math import comb

import numpy as np
import pytest

from vidfuse.report import stats


def _binomial_two_sided_p(b: int, c: int) -> float:
    """Exact two-sided binomial test at 1/2 by the "as or less likely" rule, in exact fractions."""
    n = b + c
    pmf = [Fraction(comb(n, k), 2**n) for k in range(n + 1)]
    observed = pmf[b]
    return float(sum(p for p in pmf if p <= observed))


@pytest.mark.parametrize("b, c", [(0, 0), (1, 9), (9, 1), (5, 5), (3, 10), (0, 6), (40, 61), (120, 151), (7, 0)])
def test_mcnemar_exact_equals_a_binomial_computation(b, c):
    assert stats.mcnemar_exact(b, c) == pytest.approx(_binomial_two_sided_p(b, c), rel=1e-12)


def test_mcnemar_known_values():
    assert stats.mcnemar_exact(1, 9) == pytest.approx(22 / 1024)  # 2 * (1 + 10) / 2**10
    assert stats.mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(5, 5) == 1.0  # doubled tail beyond 1 is capped


def test_compare_paired_counts_discordant_videos_and_says_the_verdict():
    baseline = [True] * 50 + [False] * 50
    run = [True] * 48 + [False] * 2 + [True] * 3 + [False] * 47  # b = 2, c = 3: a +1 point "gain"
    result = stats.compare_paired(baseline, run)
    assert (result.n, result.b, result.c) == (100, 2, 3)
    assert result.difference == pytest.approx(0.01)
    assert result.p_value == pytest.approx(_binomial_two_sided_p(2, 3))
    assert result.verdict == stats.NOT_DISTINGUISHABLE
    low, high = result.interval
    assert low < 0 < high

    clear_gain = stats.compare_paired([False] * 30 + [True] * 70, [True] * 100)  # b = 0, c = 30
    assert clear_gain.p_value < 1e-8
    assert clear_gain.verdict == "better than the baseline"
    assert clear_gain.interval[0] > 0


def test_bootstrap_interval_matches_resampling_videos():
    """The multinomial shortcut gives the interval that resampling the videos themselves gives."""
    b, c, n = 40, 61, 500
    differences = np.array([-1] * b + [1] * c + [0] * (n - b - c))  # run minus baseline, per video
    rng = np.random.default_rng(123)
    resampled = [rng.choice(differences, size=n, replace=True).mean() for _ in range(4000)]
    naive_low, naive_high = np.percentile(resampled, [2.5, 97.5])
    low, high = stats.bootstrap_difference_interval(b, c, n)
    assert low == pytest.approx(naive_low, abs=0.006)
    assert high == pytest.approx(naive_high, abs=0.006)
    assert low < (c - b) / n < high
    assert stats.bootstrap_difference_interval(0, 0, 100) == (0.0, 0.0)  # identical predictions


def test_mean_std_over_splits():
    mean, std = stats.mean_std([0.80, 0.83, 0.77])
    assert mean == pytest.approx(statistics.mean([0.80, 0.83, 0.77]))
    assert std == pytest.approx(statistics.stdev([0.80, 0.83, 0.77]))  # sample std: (n - 1)
    assert std == pytest.approx(0.03)
    assert stats.mean_std([0.5]) == (0.5, 0.0)
