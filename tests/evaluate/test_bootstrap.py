"""Paired bootstrap: a known difference is detected, identical systems are not, the seed fixes the interval."""

from __future__ import annotations

import numpy as np
import pytest

from oikyo.evaluate import metrics
from oikyo.evaluate.bootstrap import paired_bootstrap, resample_counts


def _binary(rate: float, n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < rate).astype(float).reshape(-1, 1)


def test_a_known_difference_is_detected():
    a, b = _binary(0.8, 300, 1), _binary(0.4, 300, 2)
    result = paired_bootstrap(a, b, metrics.mean_aggregate, resamples=2000, seed=0)
    assert result.delta == pytest.approx(a.mean() - b.mean())
    assert result.low > 0 and result.significant and result.p_value < 0.01
    assert result.low < result.delta < result.high


def test_identical_systems_give_an_interval_containing_zero():
    a = _binary(0.6, 200, 3)
    result = paired_bootstrap(a, a.copy(), metrics.mean_aggregate, resamples=1000, seed=0)
    assert result.low <= 0 <= result.high and not result.significant and result.delta == 0


def test_a_small_noisy_difference_is_not_significant():
    rng = np.random.default_rng(5)
    a = _binary(0.5, 40, 4)
    b = a.copy()
    flip = rng.choice(40, 2, replace=False)
    b[flip] = 1 - b[flip]  # two examples differ, in either direction
    assert not paired_bootstrap(a, b, metrics.mean_aggregate, resamples=2000, seed=0).significant


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    a, b = _binary(0.7, 100, 6), _binary(0.5, 100, 7)
    first = paired_bootstrap(a, b, metrics.mean_aggregate, resamples=1000, seed=42)
    again = paired_bootstrap(a, b, metrics.mean_aggregate, resamples=1000, seed=42)
    other = paired_bootstrap(a, b, metrics.mean_aggregate, resamples=1000, seed=43)
    assert (first.low, first.high) == (again.low, again.high)
    assert (first.low, first.high) != (other.low, other.high)


def test_pairing_removes_shared_example_difficulty():
    # B is A minus a small constant on every example: a paired test sees it at once.
    rng = np.random.default_rng(8)
    difficulty = rng.random(100).reshape(-1, 1) * 10
    result = paired_bootstrap(difficulty + 0.1, difficulty, metrics.mean_aggregate, resamples=500, seed=0)
    assert result.low == pytest.approx(0.1) and result.high == pytest.approx(0.1)


def test_corpus_metrics_are_resampled_through_their_statistics():
    preds_a = ["the cat sat on the mat"] * 10 + ["hello world"] * 10
    preds_b = ["a dog stood"] * 10 + ["goodbye"] * 10
    refs = ["the cat sat on the mat"] * 10 + ["hello world"] * 10
    bleu = metrics.METRICS["bleu"]
    a, b = bleu.score(preds_a, refs), bleu.score(preds_b, refs)
    result = paired_bootstrap(a.stats, b.stats, bleu.aggregate, resamples=300, seed=0)
    assert result.value_a == pytest.approx(100.0) and result.value_b == pytest.approx(b.value)
    assert result.significant


def test_resample_counts_draw_n_examples_each_time():
    counts = resample_counts(7, 50, seed=0)
    assert counts.shape == (50, 7) and (counts.sum(1) == 7).all()


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError):
        paired_bootstrap(np.zeros((3, 1)), np.zeros((4, 1)), metrics.mean_aggregate)
