"""The canary's sequential test: rolls a worse challenger back fast, rarely rolls back an equal one,
promotes an equal or better one after its minimum requests, and is inconclusive at the deadline."""

from __future__ import annotations

import math
import random

import pytest
from scipy import integrate

from oikyo.loop.canary import CHALLENGER, CHAMPION, Outcome, is_bad, judge, log_likelihood_ratio


def _run(p_champion: float, p_challenger: float, share: float, seed: int, *, n_max: int = 1500,
         min_requests: int = 100, every: int = 1):
    """Requests one by one, judged after every ``every``: (action, challenger requests, total)."""
    rng = random.Random(seed)
    outcomes: list[Outcome] = []
    for i in range(n_max):
        arm = CHALLENGER if rng.random() < share else CHAMPION
        outcomes.append(Outcome(arm, rng.random() < (p_challenger if arm == CHALLENGER else p_champion)))
        if i % every == 0:
            verdict = judge(outcomes, share=share, min_requests=min_requests, margin=0.02, alpha=0.05)
            if verdict.action != "continue":
                return verdict.action, verdict.challenger_requests, i + 1
    return "continue", None, n_max


def test_likelihood_ratio_matches_numeric_integration():
    for k, n, s in [(3, 5, 0.2), (0, 4, 0.5), (10, 12, 0.1), (1, 30, 0.3)]:
        integral, _ = integrate.quad(lambda p: p**k * (1 - p) ** (n - k), s, 1)
        expected = integral / ((1 - s) * s**k * (1 - s) ** (n - k))
        assert math.exp(log_likelihood_ratio(k, n, s)) == pytest.approx(expected, rel=1e-6)
    assert log_likelihood_ratio(0, 0, 0.2) == 0.0
    with pytest.raises(ValueError):
        log_likelihood_ratio(1, 2, 1.0)


def test_a_much_worse_challenger_is_rolled_back_within_a_handful_of_its_answers():
    results = [_run(0.05, 0.6, 0.2, seed) for seed in range(100)]
    assert all(action == "rollback" for action, _, _ in results)
    answered = sorted(n for _, n, _ in results)
    assert answered[len(answered) // 2] <= 15  # the median worse answers served before the rollback
    assert answered[-1] <= 40


def test_an_equal_challenger_is_rarely_rolled_back_although_judged_after_every_request():
    # Anytime validity: checking after every request must not inflate the false-rollback rate above alpha.
    results = [_run(0.1, 0.1, 0.2, seed, n_max=800, min_requests=10**6) for seed in range(200)]
    rollbacks = sum(action == "rollback" for action, _, _ in results)
    assert rollbacks <= 0.05 * 200 + 4  # alpha = 0.05, with room for sampling noise (binomial sd ~3)


def test_equal_or_better_challengers_are_promoted_after_their_minimum_requests():
    for p_champion, p_challenger in [(0.1, 0.1), (0.4, 0.05), (0.0, 0.0)]:
        results = [_run(p_champion, p_challenger, 0.3, seed, min_requests=60) for seed in range(40)]
        promoted = [n for action, n, _ in results if action == "promote"]
        assert len(promoted) >= 37, (p_champion, p_challenger, results)
        assert min(promoted) >= 60


def test_the_deadline_rolls_back_what_could_not_be_judged():
    outcomes = [Outcome(CHAMPION, False)] * 20 + [Outcome(CHALLENGER, False)] * 5
    assert judge(outcomes, share=0.2, min_requests=50).action == "continue"
    verdict = judge(outcomes, share=0.2, min_requests=50, timed_out=True)
    assert verdict.action == "rollback" and "inconclusive" in verdict.reason
    # over the margin at the minimum: not promoted, rolled back at the deadline
    worse = [Outcome(CHAMPION, False)] * 100 + [Outcome(CHALLENGER, i < 2) for i in range(50)]
    assert judge(worse, share=0.33, min_requests=50, margin=0.02).action == "continue"
    assert judge(worse, share=0.33, min_requests=50, margin=0.1).action == "promote"


def test_what_counts_as_bad():
    assert is_bad(500, None, 0.1, latency_limit_s=None) == "error"
    assert is_bad(400, None, 0.1, latency_limit_s=None) is None  # the client's mistake
    assert is_bad(200, {"invalid_json": True}, 0.1, latency_limit_s=None) == "invalid_json"
    assert is_bad(200, {"invalid_json": True}, 0.1, latency_limit_s=None, flags=("degenerate",)) is None
    assert is_bad(200, {"negative_feedback": True}, 0.1, latency_limit_s=None) == "negative_feedback"
    assert is_bad(200, {}, 3.0, latency_limit_s=2.0) == "latency"
    assert is_bad(200, {"degenerate": False, "negative_feedback": False}, 1.0, latency_limit_s=2.0) is None
    verdict = judge([Outcome(CHALLENGER, True, "invalid_json"), Outcome(CHAMPION, True, "error")], share=0.5)
    assert verdict.bad_reasons == {CHAMPION: {"error": 1}, CHALLENGER: {"invalid_json": 1}}
