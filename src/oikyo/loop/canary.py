"""The canary's verdict: is the challenger worse than the champion on what the model says?

During a canary the deployment sends a share ``s`` of its traffic to the challenger and the rest to
the champion. Every answered request is an outcome: *bad* when it failed the user in any way the
policy watches (:func:`is_bad`): a server error, a quality flag of the answer (invalid JSON, schema
mismatch, degenerate, empty), negative feedback, or a latency above the policy's limit. Otherwise
it is good. Feedback arrives late, so the outcomes are read afresh on every check.

**Rollback: an anytime-valid sequential test.** Requests go to the challenger at random with
probability ``s``, whatever they ask. If both models fail equally often, each bad outcome is then
the challenger's with probability ``s``, independently of the others. Among ``n`` bad outcomes,
``k`` of the challenger's are a run of Bernoulli(pi) draws, and "the challenger is worse" is
``pi > s``. The test is Robbins' mixture sequential probability ratio test: the likelihood ratio
of a uniform prior on ``pi`` in ``(s, 1)`` against ``pi = s``::

    LR(k, n) = integral_s^1 pi^k (1 - pi)^(n - k) dpi / ((1 - s) * s^k * (1 - s)^(n - k))

Under "equally good" LR is a martingale, so by Ville's inequality it ever reaches ``1/alpha`` with
probability at most ``alpha``, however often it is looked at. The controller checks it every
second and rolls back the moment it crosses: a much worse challenger is caught after a handful of
its answers, and no fixed sample size has to be waited out.

**Promotion: enough traffic, no evidence of harm, within a margin.** The challenger is promoted
when it has answered ``min_requests``, the test above has not crossed, and its bad rate is at most
the champion's plus ``margin`` (point estimates). A canary that reaches ``max_duration`` before
that is rolled back as inconclusive: the automation never promotes what it could not judge.

Usage::

    verdict = judge([Outcome("champion", False), Outcome("challenger", True), ...], share=0.2,
                    alpha=0.05, min_requests=100, margin=0.02)
    verdict.action        # "rollback" | "promote" | "continue"
    verdict.reason        # one line, with the counts and the likelihood ratio
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scipy.special import betainc, betaln

CHAMPION, CHALLENGER = "champion", "challenger"
QUALITY_FLAGS = ("invalid_json", "schema_mismatch", "degenerate", "empty")


@dataclass(frozen=True)
class Outcome:
    """One answered request of the canary: which arm served it and whether it was bad (and why)."""

    arm: str  # CHAMPION | CHALLENGER
    bad: bool
    why: str | None = None


def is_bad(status: int, quality: dict | None, latency_s: float | None, *, latency_limit_s: float | None,
           flags: tuple[str, ...] = QUALITY_FLAGS) -> str | None:
    """Why a served request counts as bad (``"error"``, a quality flag, ``"negative_feedback"``,
    ``"latency"``), or None when it is good. Client mistakes (4xx) are not the model's fault: good."""
    if status >= 500:
        return "error"
    quality = quality or {}
    for flag in flags:
        if quality.get(flag):
            return flag
    if quality.get("negative_feedback"):
        return "negative_feedback"
    if latency_limit_s is not None and latency_s is not None and latency_s > latency_limit_s:
        return "latency"
    return None


def log_likelihood_ratio(k: int, n: int, share: float) -> float:
    """log LR of "the challenger's share of bad outcomes is above ``share``" (uniform prior on
    (share, 1)) against "it is ``share``", after ``k`` of ``n`` bad outcomes were the challenger's."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    if n == 0:
        return 0.0
    # integral_s^1 pi^k (1-pi)^(n-k) dpi = B(k+1, n-k+1) * (1 - I_s(k+1, n-k+1))
    tail = 1.0 - float(betainc(k + 1, n - k + 1, share))
    if tail <= 0.0:
        return -math.inf
    numerator = float(betaln(k + 1, n - k + 1)) + math.log(tail) - math.log1p(-share)
    null = k * math.log(share) + (n - k) * math.log1p(-share)
    return numerator - null


@dataclass
class Verdict:
    action: str  # "rollback" | "promote" | "continue"
    reason: str
    champion_requests: int
    challenger_requests: int
    champion_bad: int
    challenger_bad: int
    likelihood_ratio: float
    threshold: float
    bad_reasons: dict

    def to_dict(self) -> dict:
        return asdict(self)


def judge(outcomes: list[Outcome], *, share: float, alpha: float = 0.05, min_requests: int = 100,
          margin: float = 0.02, timed_out: bool = False) -> Verdict:
    """The canary's verdict on its outcomes so far (see the module docstring); ``timed_out``: the
    canary reached its maximum duration, so anything but a promotion is a rollback."""
    arms = {CHAMPION: [0, 0], CHALLENGER: [0, 0]}  # arm -> [requests, bad]
    reasons: dict[str, dict[str, int]] = {CHAMPION: {}, CHALLENGER: {}}
    for outcome in outcomes:
        arms[outcome.arm][0] += 1
        if outcome.bad:
            arms[outcome.arm][1] += 1
            why = outcome.why or "bad"
            reasons[outcome.arm][why] = reasons[outcome.arm].get(why, 0) + 1
    (n_champ, bad_champ), (n_chall, bad_chall) = arms[CHAMPION], arms[CHALLENGER]
    log_lr = log_likelihood_ratio(bad_chall, bad_champ + bad_chall, share)
    lr = math.exp(min(log_lr, 700.0))
    threshold = 1.0 / alpha
    rate_champ = bad_champ / n_champ if n_champ else 0.0
    rate_chall = bad_chall / n_chall if n_chall else 0.0
    counts = (f"challenger {bad_chall}/{n_chall} bad ({rate_chall:.1%}), champion {bad_champ}/{n_champ} bad "
              f"({rate_champ:.1%}), likelihood ratio {lr:.3g} (rollback at {threshold:g})")
    common = dict(champion_requests=n_champ, challenger_requests=n_chall, champion_bad=bad_champ,
                  challenger_bad=bad_chall, likelihood_ratio=lr, threshold=threshold, bad_reasons=reasons)
    if log_lr >= math.log(threshold):
        return Verdict("rollback", f"the challenger is worse: {counts}", **common)
    if n_chall >= min_requests and rate_chall <= rate_champ + margin:
        return Verdict("promote", f"the challenger is at least as good (within {margin:g}) after "
                                  f"{n_chall} requests: {counts}", **common)
    if timed_out:
        why = (f"fewer than {min_requests} challenger requests" if n_chall < min_requests
               else f"its bad rate is above the champion's by more than {margin:g}")
        return Verdict("rollback", f"inconclusive at the canary's maximum duration ({why}): {counts}", **common)
    return Verdict("continue", counts, **common)
