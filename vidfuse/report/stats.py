"""Significance of a difference between two runs scored on the same test videos, and mean ± std over splits.

A 0.5-point gain on 3,783 videos is about one standard error; these tests say whether such a gain is more than
noise. The runs are paired (same videos), so the right test is McNemar's on the discordant videos: b = the
baseline is right and the run wrong, c = the other way round. Under "no difference" the c discordant videos out
of b + c follow Binomial(b + c, 1/2); the exact two-sided p-value doubles the smaller tail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
NOT_DISTINGUISHABLE = "not distinguishable from the baseline"


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for b and c discordant pairs (1.0 when there are none)."""
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))  # exact integer, one division at the end
    return min(1.0, 2 * tail / 2**n)


def bootstrap_difference_interval(
    b: int, c: int, n: int, *, samples: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy(run) - accuracy(baseline) over n paired videos.

    Resampling videos with replacement only matters through how many of each kind are drawn (b-type,
    c-type, concordant), so each bootstrap sample is one multinomial draw: exact, and cheap for any n.
    """
    if n == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, [b / n, c / n, (n - b - c) / n], size=samples)  # (samples, 3)
    differences = (draws[:, 1] - draws[:, 0]) / n
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedComparison:
    """A run against the baseline on the same n test videos."""

    n: int  # videos both runs scored
    b: int  # baseline right, run wrong
    c: int  # baseline wrong, run right
    p_value: float
    difference: float  # accuracy(run) - accuracy(baseline)
    interval: tuple[float, float]  # bootstrap 95 % interval of the difference

    @property
    def verdict(self) -> str:
        if self.p_value >= ALPHA:
            return NOT_DISTINGUISHABLE
        return "better than the baseline" if self.c > self.b else "worse than the baseline"


def compare_paired(baseline_correct: Sequence[bool], run_correct: Sequence[bool]) -> PairedComparison:
    """McNemar exact test and bootstrap interval for two aligned per-video correctness vectors."""
    baseline = np.asarray(baseline_correct, dtype=bool)
    run = np.asarray(run_correct, dtype=bool)
    if baseline.shape != run.shape:
        raise ValueError(f"paired vectors differ in length: {baseline.shape} vs {run.shape}")
    b = int(np.sum(baseline & ~run))
    c = int(np.sum(~baseline & run))
    n = int(baseline.size)
    return PairedComparison(
        n=n,
        b=b,
        c=c,
        p_value=mcnemar_exact(b, c),
        difference=(c - b) / n if n else 0.0,
        interval=bootstrap_difference_interval(b, c, n),
    )


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of a few per-split results."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std
