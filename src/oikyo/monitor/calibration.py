"""Drift thresholds from a stated false-alarm rate, calibrated on the reference itself.

The user states how many requests should pass, on average, between two false alarms: ``F``
(``--false-alarm-every 10000``). A variant's traffic is checked every ``s`` requests (the stride;
by default the window ``W``, so windows do not overlap): ``1/s`` checks per request. A check runs
``D`` detectors; it raises a false alarm when any of them crosses its threshold on traffic that has
not drifted. By the union bound (Bonferroni)::

    false alarms per request = (1/s) * P(any detector alarms) <= (1/s) * sum_d alpha_d

so each detector gets ``alpha_d = s / (F * D)``, and false alarms come at most once every ``F``
requests (fewer when detectors are correlated: the bound is conservative). Example: ``W = s = 200``,
``F = 10000``, ``D = 6``: ``alpha_d = 1/300`` per check.

The threshold of a detector is the ``1 - alpha_d`` quantile of its statistic on traffic that has
not drifted. That traffic is simulated from the reference: the reference rows are split at random
into a comparison half ``R`` (what live windows are compared with) and a calibration half ``C``;
:func:`bootstrap_windows` draws ``B`` windows of ``W`` rows from ``C`` with replacement (the
sampling variance of fresh traffic; drawing without replacement from a finite pool would
understate it), and the detector's statistic against ``R`` on each draw is its null distribution.
No constant is fixed by hand: a stricter rate or a bigger window moves every threshold.

- With enough draws (``alpha * B >= 10``: ten draws beyond the quantile) the threshold is the
  empirical quantile of the null draws.
- Otherwise a tail fitted to the draws extrapolates it: a normal tail for mean differences (window
  mean minus reference mean is close to normal at ``W >= 30`` by the central limit theorem) and a
  moment-matched gamma tail for non-negative, right-skewed statistics (MMD², total variation: the
  gamma approximation of the MMD null of Gretton et al., 2009), its quantile by Wilson-Hilferty.
- Centred statistics (``two_sided``, ``one_sided``: a window's mean against the mean expected of
  traffic that has not drifted) take that expectation from the calibration half, whose own mean
  is off the population's by its sampling error. Live traffic is fresh data, so its windows scatter
  around the population's mean, not ``C``'s: a threshold from windows of ``C`` around ``C``'s mean
  alone would miss that error, and with a small reference (a few hundred rows, where the error is
  as large as a window's own spread) it raised about one false alarm in five checks in the drift
  benchmark. So each null draw is also centred on its own bootstrap estimate of the centre (the
  mean over a resample of the whole of ``C``, or of the whole reference where the statistic allows,
  as lengths do: ``center_draws``): the tested values spread as ``window spread + centre error``,
  as a live window's do.
- Shares of categories (scripts, labels, quality flags) need a floor: a category absent from ``n``
  reference rows may still occur at a rate up to ``3/n`` (the "rule of three", a 95% upper bound),
  so a window must hold more of it than a Poisson count at that rate would give at level ``alpha``
  before it counts as a change (:func:`unseen_floor`).

Usage::

    alpha = per_check_alpha(false_alarm_every=10000, stride=200, detectors=6)
    null = bootstrap_windows(rng, pool_size=500, window=200, draws=draws_for(alpha))   # (B, W) indices
    cal = calibrate(null_raw_values, alpha, kind="two_sided")
    statistic = cal.statistic(live_raw_value); alarm = statistic > cal.threshold
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

KINDS = ("two_sided", "one_sided", "positive")
MIN_DRAWS, MAX_DRAWS = 1000, 5000
TAIL_DRAWS = 10  # draws beyond the quantile needed to read it off the draws themselves
EPSILON = 1e-12
MAX_SCORE = 1e6


def per_check_alpha(false_alarm_every: float, stride: int, detectors: int) -> float:
    """Each detector's false-alarm probability per check: ``stride / (false_alarm_every * detectors)``."""
    if false_alarm_every <= 0 or stride <= 0 or detectors <= 0:
        raise ValueError("false_alarm_every, stride and detectors must be positive")
    return min(0.5, stride / (false_alarm_every * detectors))


def draws_for(alpha: float) -> int:
    """How many null windows to draw: enough for the empirical quantile where affordable."""
    return int(min(MAX_DRAWS, max(MIN_DRAWS, math.ceil(2 * TAIL_DRAWS / alpha))))


def bootstrap_windows(rng: np.random.Generator, pool_size: int, window: int, draws: int) -> np.ndarray:
    """``draws`` windows of ``window`` indices into a pool of ``pool_size`` rows, with replacement: (B, W)."""
    return rng.integers(0, pool_size, size=(draws, window))


@dataclass
class Calibrated:
    """A detector's threshold and how it was found; :meth:`statistic` turns a raw value into the tested one."""

    kind: str  # two_sided: |raw - center|; one_sided: max(raw - center, 0); positive: raw
    center: float  # the null mean of the raw value (0 for positive statistics)
    threshold: float
    alpha: float
    draws: int
    method: str  # empirical | normal | gamma, and "+floor" when the floor decided

    def statistic(self, raw: float) -> float:
        if self.kind == "two_sided":
            return abs(raw - self.center)
        if self.kind == "one_sided":
            return max(raw - self.center, 0.0)
        return max(raw, 0.0)

    def score(self, raw: float) -> float:
        return min(MAX_SCORE, self.statistic(raw) / max(self.threshold, EPSILON))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "center": self.center, "threshold": self.threshold, "alpha": self.alpha,
                "draws": self.draws, "method": self.method}


def calibrate(null_raw: np.ndarray, alpha: float, kind: str, floor: float = 0.0,
              center_draws: np.ndarray | None = None) -> Calibrated:
    """The ``1 - alpha`` threshold of a statistic whose raw values on null windows are ``null_raw``.

    ``center_draws`` (centred kinds): the raw value on a bootstrap resample of the whole calibration
    pool, one per null draw; each draw is then tested against its own centre, so the threshold also
    covers the error of the centre (see the module's docstring)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    raw = np.asarray(null_raw, dtype=np.float64)
    center = float(raw.mean()) if kind != "positive" else 0.0
    centers = center if center_draws is None or kind == "positive" else np.asarray(center_draws, np.float64)
    tested = {"two_sided": lambda: np.abs(raw - centers), "one_sided": lambda: np.maximum(raw - centers, 0.0),
              "positive": lambda: np.maximum(raw, 0.0)}[kind]()
    if alpha * len(raw) >= TAIL_DRAWS:
        threshold, method = float(np.quantile(tested, 1 - alpha, method="higher")), "empirical"
    elif kind == "positive":
        threshold, method = gamma_quantile(tested, alpha), "gamma"
    else:
        sigma = float((raw - centers).std(ddof=1))
        z = NormalDist().inv_cdf(1 - alpha / 2 if kind == "two_sided" else 1 - alpha)
        threshold, method = z * sigma, "normal"
    if floor > threshold:
        threshold, method = floor, f"{method}+floor"
    return Calibrated(kind, center, max(threshold, EPSILON), alpha, len(raw), method)


def gamma_quantile(values: np.ndarray, alpha: float) -> float:
    """The ``1 - alpha`` quantile of a gamma distribution with the mean and variance of ``values``."""
    mean, var = float(np.mean(values)), float(np.var(values, ddof=1))
    if mean <= 0 or var <= 0:
        return float(np.max(values))
    shape, scale = mean * mean / var, var / mean
    z = NormalDist().inv_cdf(1 - alpha)
    c = 1.0 / (9.0 * shape)  # Wilson-Hilferty: (X / (shape*scale))^(1/3) is close to normal
    return float(shape * scale * max(0.0, 1 - c + z * math.sqrt(c)) ** 3)


def center_windows(rng: np.random.Generator, pool_size: int, draws: int) -> np.ndarray:
    """``draws`` bootstrap resamples of the whole pool (B, pool_size): each gives one estimate of the centre."""
    return rng.integers(0, pool_size, size=(draws, pool_size))


def poisson_upper(rate: float, alpha: float) -> int:
    """The smallest ``k`` with P(Poisson(rate) > k) <= alpha."""
    term = total = math.exp(-rate)
    k = 0
    while 1 - total > alpha and k < 100000:
        k += 1
        term *= rate / k
        total += term
    return k


def unseen_floor(window: int, reference_rows: int, alpha: float) -> float:
    """The share of a window a category unseen in ``reference_rows`` rows may take by chance at level ``alpha``."""
    rate = 3.0 * window / max(1, reference_rows)  # rule of three: its rate may be up to 3/n
    return poisson_upper(rate, alpha) / window
