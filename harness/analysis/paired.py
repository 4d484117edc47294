"""Paired tests for two runs over the same samples: McNemar's exact test and a paired bootstrap."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs ``b`` (right→wrong) and ``c``
    (wrong→right) against Binomial(b + c, 1/2), p = min(1, 2·P(X ≤ min(b, c)))."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be non-negative")
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    # log-space terms so thousands of discordant pairs neither overflow nor underflow
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
            for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(x - top) for x in logs)
    return min(1.0, 2.0 * tail)


@dataclass
class BootstrapResult:
    diff: float  # accuracy(b) − accuracy(a), percentage points
    low: float  # 95 % percentile interval
    high: float
    p_value: float  # two-sided: 2 · min(P*(d ≤ 0), P*(d ≥ 0))
    n_resamples: int


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, n_resamples: int = 10_000, seed: int = 0,
                     alpha: float = 0.05) -> BootstrapResult:
    """Resample the shared samples with replacement (the same indices for both runs) and read the
    distribution of the accuracy difference b − a."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("paired bootstrap needs two equally long, non-empty 0/1 vectors")
    rng = np.random.default_rng(seed)
    d = b - a
    diffs = np.empty(n_resamples)
    for start in range(0, n_resamples, 1000):  # chunks bound the index matrix's memory
        stop = min(start + 1000, n_resamples)
        idx = rng.integers(0, d.size, size=(stop - start, d.size))
        diffs[start:stop] = d[idx].mean(axis=1)
    diffs *= 100.0
    p = 2.0 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0)))
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return BootstrapResult(diff=100.0 * float(d.mean()), low=float(low), high=float(high),
                           p_value=min(1.0, p), n_resamples=n_resamples)
