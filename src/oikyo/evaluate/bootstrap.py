"""Paired bootstrap confidence intervals for the difference between two systems on the same examples.

Both systems are scored on the same n examples. A resample draws n example indices with
replacement, the *same* draw for both systems (that is what "paired" means: the variation between
examples, which both systems share, cancels out). Each metric is recomputed on the resample from its
per-example sufficient statistics (see :mod:`oikyo.evaluate.metrics`), so corpus-level metrics
(BLEU, macro-F1, perplexity) are resampled exactly, not approximated by per-example means::

    result = paired_bootstrap(stats_a, stats_b, aggregate, resamples=2000, seed=0)
    result.delta, result.low, result.high, result.significant

The interval is the percentile interval of ``metric(A) - metric(B)`` over the resamples;
``significant`` means it excludes 0. The same seed always gives the same interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95


@dataclass
class BootstrapResult:
    """``delta`` = metric(A) - metric(B) on all examples; [low, high] its confidence interval."""

    value_a: float
    value_b: float
    delta: float
    low: float
    high: float
    confidence: float
    resamples: int
    p_value: float  # two-sided: how often the resampled delta falls on the other side of 0

    @property
    def significant(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    def to_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """How often each example is drawn in each resample: (resamples, n), every row summing to n."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def paired_bootstrap(stats_a: np.ndarray, stats_b: np.ndarray, aggregate: Callable[[np.ndarray, int], np.ndarray],
                     *, resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
                     aggregate_b: Callable[[np.ndarray, int], np.ndarray] | None = None,
                     counts: np.ndarray | None = None) -> BootstrapResult:
    """Confidence interval of metric(A) - metric(B). stats_a: (n, d_a), stats_b: (n, d_b), rows paired."""
    stats_a, stats_b = np.asarray(stats_a, dtype=np.float64), np.asarray(stats_b, dtype=np.float64)
    n = stats_a.shape[0]
    if n == 0 or stats_b.shape[0] != n:
        raise ValueError(f"paired bootstrap needs the same non-zero number of examples (got {n} and {stats_b.shape[0]})")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    aggregate_b = aggregate_b or aggregate
    value_a = float(aggregate(stats_a.sum(0), n))
    value_b = float(aggregate_b(stats_b.sum(0), n))
    counts = resample_counts(n, resamples, seed) if counts is None else counts
    # (resamples, n) @ (n, d) -> (resamples, d): each resample's summed statistics.
    deltas = aggregate(counts @ stats_a, n) - aggregate_b(counts @ stats_b, n)
    deltas = deltas[np.isfinite(deltas)]
    if deltas.size == 0:
        nan = float("nan")
        return BootstrapResult(value_a, value_b, value_a - value_b, nan, nan, confidence, 0, nan)
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    below, above = float(np.mean(deltas <= 0)), float(np.mean(deltas >= 0))
    p_value = min(1.0, 2 * min(below, above))
    return BootstrapResult(value_a=value_a, value_b=value_b, delta=value_a - value_b, low=float(low),
                           high=float(high), confidence=confidence, resamples=int(deltas.size), p_value=p_value)


Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (``successes`` may be fractional: ties count half)."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
