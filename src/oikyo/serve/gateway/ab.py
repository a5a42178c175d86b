"""A/B testing: traffic splits between model versions, sticky per user, and the report that compares them.

A split ``--split mv-a=90,mv-b=10`` gives each variant a share of the requests that name the
deployment. A request with a user (the ``X-User-Id`` header, else OpenAI's ``user`` field) always
gets the same variant: sha256(deployment name + user) is read as a number in [0, 1) and falls in
one variant's slice of the cumulative weights, so no state is kept and every router process agrees.
A request without a user gets a random variant with the same weights. A weight of 0 keeps a variant
loaded but gives it no share: :func:`choose` never picks it, for any user (a request naming the
variant or its model directly still reaches it). Weights of a running deployment change live
(:func:`reweight` checks new ones; see ``deployments.set_weights``)::

    variants = make_variants(parse_split("mv-a=90,mv-b=10"))
    choose(variants, user="alice", salt="support-bot")      # the same Variant for alice every time
    report("support-bot")                                   # per-variant stats and a verdict

The report takes every recorded request of the deployment (always recorded, content or not) and
the feedback on them. Per variant: requests, error rate (server errors, status >= 500; client
mistakes are not the model's fault) with a Wilson 95% interval, latency p50/p95 and time to first
token p50 of successful requests, and the feedback mean with a Student-t 95% interval. Each
variant is compared with the first one (the control): feedback by Welch's t-test, error rate by
Fisher's exact test, latency by the Mann-Whitney U test. The verdict is on feedback (the primary
metric) at alpha = 0.05, and says when there is too little feedback to tell.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import asdict, dataclass, replace

from oikyo.errors import OikyoError
from oikyo.evaluate.bootstrap import wilson_interval

ALPHA = 0.05
MIN_FEEDBACK = 2  # ratings per variant needed before a t-test means anything
_ITEM = re.compile(r"^\s*(?P<model>[^=\s]+)\s*=\s*(?P<weight>[0-9]*\.?[0-9]+)\s*$")


@dataclass(frozen=True)
class Variant:
    """One arm of a split: ``label`` tags responses, ``model`` is what serves it, ``weight`` its share."""

    label: str
    model: str
    weight: float

    def to_dict(self) -> dict:
        return asdict(self)


def parse_split(text: str) -> list[tuple[str, float]]:
    """``"mv-a=90,mv-b=10"`` as ``[("mv-a", 90.0), ("mv-b", 10.0)]`` (weights are relative)."""
    items = []
    for part in (p for p in text.split(",") if p.strip()):
        match = _ITEM.match(part)
        if match is None:
            raise OikyoError(f"bad --split item {part.strip()!r}: write MODEL=WEIGHT, e.g. mv-1a2b=90,mv-3c4d=10")
        items.append((match["model"], float(match["weight"])))
    if not items:
        raise OikyoError("--split is empty: write MODEL=WEIGHT,..., e.g. mv-1a2b=90,mv-3c4d=10")
    models = [m for m, _ in items]
    if len(set(models)) != len(models):
        raise OikyoError(f"--split names a model twice: {text}")
    if sum(w for _, w in items) <= 0:
        raise OikyoError("--split weights must not all be 0")
    return items


def reweight(variants: list[Variant], weights: dict[str, float]) -> list[Variant]:
    """``variants`` (same labels, models and order) with new weights from ``weights``, keyed by a
    variant's label or model; variants left out keep their weight. Each weight is a finite number
    >= 0 and the total is positive; otherwise an OikyoError and nothing changes."""
    if not isinstance(weights, dict) or not weights:
        raise OikyoError("give at least one weight, as {variant: weight}")
    names = ", ".join(v.label for v in variants)
    given: dict[str, float] = {}
    for key, weight in weights.items():
        variant = next((v for v in variants if key in (v.label, v.model)), None)
        if variant is None:
            raise OikyoError(f"{key!r} is not a variant of this deployment; its variants are {names}")
        if variant.label in given:
            raise OikyoError(f"variant {variant.label} is given two weights")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise OikyoError(f"the weight of {key} must be a number >= 0, not {weight!r}")
        given[variant.label] = float(weight)
    out = [replace(v, weight=given.get(v.label, v.weight)) for v in variants]
    if sum(v.weight for v in out) <= 0:
        raise OikyoError(f"the weights must not all be 0 (variants: {names})")
    return out


def same_arms(a: list[Variant], b: list[Variant]) -> bool:
    """Whether ``a`` and ``b`` have the same variants (labels and models, in order), whatever their weights."""
    return [(v.label, v.model) for v in a] == [(v.label, v.model) for v in b]


def bucket(user: str, salt: str) -> float:
    """A stable number in [0, 1) for ``user`` within ``salt`` (the deployment)."""
    digest = hashlib.sha256(f"{salt}\x00{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose(variants: list[Variant], user: str | None, salt: str, rng: random.Random | None = None) -> Variant:
    """The variant for this request: by the user's bucket when there is a user, else at random.
    A variant of weight 0 is never chosen (its slice of the cumulative weights is empty)."""
    if len(variants) == 1:
        return variants[0]
    total = sum(v.weight for v in variants)
    point = (bucket(user, salt) if user else (rng or random).random()) * total
    cumulative = 0.0
    for variant in variants:
        cumulative += variant.weight
        if point < cumulative and variant.weight > 0:
            return variant
    return next(v for v in reversed(variants) if v.weight > 0)


# ----------------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation (numpy's default); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def mean_interval(values: list[float]) -> tuple[float | None, tuple[float, float] | None]:
    """Mean and Student-t 95% interval (None for the interval with fewer than 2 values)."""
    if not values:
        return None, None
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    from scipy import stats

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, (mean - half, mean + half)


def _compare(control: dict, other: dict, raw: dict) -> dict:
    """Tests of ``other`` against ``control``: feedback (Welch), errors (Fisher), latency (Mann-Whitney)."""
    from scipy import stats

    out: dict = {"variant": other["variant"], "control": control["variant"]}
    a, b = raw[control["variant"]]["ratings"], raw[other["variant"]]["ratings"]
    if len(a) >= MIN_FEEDBACK and len(b) >= MIN_FEEDBACK:
        if len(set(a)) == 1 and len(set(b)) == 1:  # no variance at all: the t-test is undefined
            p = 1.0 if a[0] == b[0] else 0.0
        else:
            p = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
        out["feedback"] = {"difference": sum(b) / len(b) - sum(a) / len(a), "p_value": p}
    table = [[other["errors"], other["requests"] - other["errors"]],
             [control["errors"], control["requests"] - control["errors"]]]
    if other["requests"] and control["requests"]:
        out["error_rate"] = {"difference": other["error_rate"] - control["error_rate"],
                             "p_value": float(stats.fisher_exact(table).pvalue)}
    la, lb = raw[control["variant"]]["latencies"], raw[other["variant"]]["latencies"]
    if la and lb:
        out["latency"] = {"p50_difference_s": percentile(lb, 50) - percentile(la, 50),
                          "p_value": float(stats.mannwhitneyu(lb, la).pvalue)}
    out["verdict"] = _verdict(out, control, other)
    out["significant"] = bool(out.get("feedback") and out["feedback"]["p_value"] < ALPHA)
    return out


def _verdict(comparison: dict, control: dict, other: dict) -> str:
    parts = []
    feedback = comparison.get("feedback")
    if feedback is None:
        parts.append(f"not enough feedback to compare {other['variant']} with {control['variant']} "
                     f"(need {MIN_FEEDBACK}+ ratings each)")
    elif feedback["p_value"] < ALPHA:
        better = "higher" if feedback["difference"] > 0 else "lower"
        parts.append(f"significant difference: {other['variant']} is rated {better} than {control['variant']} "
                     f"({other['feedback_mean']:.2f} vs {control['feedback_mean']:.2f}, p={feedback['p_value']:.3g})")
    else:
        parts.append(f"no significant difference in feedback between {other['variant']} and {control['variant']} "
                     f"(p={feedback['p_value']:.3g})")
    errors = comparison.get("error_rate")
    if errors and errors["p_value"] < ALPHA:
        worse = "more" if errors["difference"] > 0 else "fewer"
        parts.append(f"{other['variant']} has significantly {worse} errors (p={errors['p_value']:.3g})")
    return "; ".join(parts)


def summarize(labels: list[str], requests: list[dict], ratings: list[dict]) -> dict:
    """The report from plain rows: requests ``{variant, status, latency_s, ttft_s}``, ratings ``{variant, rating}``."""
    raw = {label: {"ratings": [], "latencies": [], "ttfts": [], "requests": 0, "errors": 0} for label in labels}
    for row in requests:
        bucket_ = raw.get(row["variant"])
        if bucket_ is None:
            continue
        bucket_["requests"] += 1
        if row["status"] >= 500:
            bucket_["errors"] += 1
        elif row["status"] < 400:
            bucket_["latencies"].append(row["latency_s"])
            if row.get("ttft_s") is not None:
                bucket_["ttfts"].append(row["ttft_s"])
    for row in ratings:
        if row["variant"] in raw:
            raw[row["variant"]]["ratings"].append(float(row["rating"]))
    variants = []
    for label in labels:
        r = raw[label]
        mean, interval = mean_interval(r["ratings"])
        variants.append({
            "variant": label, "requests": r["requests"], "errors": r["errors"],
            "error_rate": r["errors"] / r["requests"] if r["requests"] else 0.0,
            "error_rate_ci95": wilson_interval(r["errors"], r["requests"]),
            "latency_p50_s": percentile(r["latencies"], 50), "latency_p95_s": percentile(r["latencies"], 95),
            "ttft_p50_s": percentile(r["ttfts"], 50),
            "feedback_count": len(r["ratings"]), "feedback_mean": mean, "feedback_ci95": interval,
        })
    comparisons = [_compare(variants[0], other, raw) for other in variants[1:]]
    return {"variants": variants, "comparisons": comparisons, "alpha": ALPHA,
            "significant": any(c["significant"] for c in comparisons),
            "verdict": "; ".join(c["verdict"] for c in comparisons) or "only one variant: nothing to compare"}


def report(deployment: str) -> dict:
    """The A/B report of a deployment from its recorded requests and feedback."""
    from oikyo.serve.gateway import deployments, request_log

    record = deployments.get(deployment)
    labels = [v["label"] for v in record.variants]
    requests = request_log.request_rows(deployment)
    ratings = request_log.feedback_rows(deployment)
    out = summarize(labels, requests, ratings)
    out["deployment"] = deployment
    out["weights"] = {v["label"]: v["weight"] for v in record.variants}
    return out
