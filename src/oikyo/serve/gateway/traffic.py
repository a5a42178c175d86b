"""A deployment's traffic for dashboards: requests, errors and latency, per variant and over time.

Read from the ``served_requests`` table, which the router fills for every answered request
(:mod:`oikyo.serve.gateway.request_log`), and the ``feedback`` table. Not from the router's Prometheus
``/metrics``: those counters live in the router process (gone when it stops, reset when it
restarts), need an API key to read, and keep latency only as histogram buckets; the table keeps
every request with its time, variant, status and exact latency, for a stopped deployment too.
Errors and latencies follow the A/B report (:mod:`oikyo.serve.gateway.ab`): an error is a server error
(status >= 500); latency percentiles are over successful requests::

    from oikyo.serve.gateway import traffic
    view = traffic.stats("support-bot", window_s=3600, buckets=60)
    view["variants"][0]["latency_p95_s"]; view["buckets"][-1]["requests"]
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import case, func, select

from oikyo.errors import OikyoError
from oikyo.serve.gateway.ab import percentile
from oikyo.store import db
from oikyo.store.models import Feedback, ServedRequest

MAX_BUCKETS = 500
MAX_ROWS = 200_000  # a window holding more requests is summarized from its newest rows


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _summary(rows: list[tuple]) -> dict:
    """Counts and latency percentiles of (time, variant, status, latency_s, ttft_s, tokens) rows."""
    requests = len(rows)
    errors = sum(1 for r in rows if r[2] >= 500)
    client_errors = sum(1 for r in rows if 400 <= r[2] < 500)
    ok = [r for r in rows if r[2] < 400]
    latencies = [r[3] for r in ok]
    ttfts = [r[4] for r in ok if r[4] is not None]
    return {"requests": requests, "errors": errors, "client_errors": client_errors,
            "error_rate": errors / requests if requests else 0.0,
            "latency_p50_s": percentile(latencies, 50), "latency_p95_s": percentile(latencies, 95),
            "latency_p99_s": percentile(latencies, 99), "ttft_p50_s": percentile(ttfts, 50),
            "ttft_p99_s": percentile(ttfts, 99),
            "output_tokens": sum(r[5] or 0 for r in ok)}


def stats(deployment: str, *, window_s: float = 3600.0, buckets: int = 60, now: datetime | None = None) -> dict:
    """Traffic of ``deployment`` over the last ``window_s`` seconds: totals, per variant (with the
    configured weights and feedback), and ``buckets`` equal time slices for charts (oldest first)."""
    from oikyo.serve.gateway import deployments

    if window_s <= 0 or not 1 <= buckets <= MAX_BUCKETS:
        raise OikyoError(f"window_s must be > 0 and buckets between 1 and {MAX_BUCKETS}")
    record = deployments.get(deployment)
    until = _aware(now or datetime.now(timezone.utc))
    since = until - timedelta(seconds=window_s)
    bucket_s = window_s / buckets
    with db.session() as s:
        found = s.execute(
            select(ServedRequest.created_at, ServedRequest.variant, ServedRequest.status, ServedRequest.latency_s,
                   ServedRequest.ttft_s, ServedRequest.completion_tokens)
            .where(ServedRequest.deployment == deployment, ServedRequest.created_at >= since,
                   ServedRequest.created_at <= until)
            .order_by(ServedRequest.created_at.desc()).limit(MAX_ROWS)).all()
        total, failed = s.execute(select(func.count(), func.sum(case((ServedRequest.status >= 500, 1), else_=0)))
                                  .where(ServedRequest.deployment == deployment)).one()
        feedback = {variant: (count, mean) for variant, count, mean in s.execute(
            select(Feedback.variant, func.count(Feedback.rating), func.avg(Feedback.rating))
            .where(Feedback.deployment == deployment).group_by(Feedback.variant))}
    rows = [(_aware(r[0]), *r[1:]) for r in reversed(found)]

    weights = {v["label"]: v["weight"] for v in record.variants}
    labels = list(weights) + sorted({r[1] for r in rows if r[1] not in weights}, key=str)
    variants = []
    for label in labels:
        count, mean = feedback.get(label, (0, None))
        variants.append({"variant": label, "weight": weights.get(label),
                         **_summary([r for r in rows if r[1] == label]),
                         "feedback_count": count, "feedback_mean": mean})

    slices: list[list[tuple]] = [[] for _ in range(buckets)]
    for row in rows:
        index = int((row[0] - since).total_seconds() // bucket_s)
        slices[min(max(index, 0), buckets - 1)].append(row)
    series = []
    for i, part in enumerate(slices):
        summary = _summary(part)
        by_variant: dict[str, int] = {}
        for row in part:
            by_variant[row[1] or ""] = by_variant.get(row[1] or "", 0) + 1
        series.append({"start": (since + timedelta(seconds=i * bucket_s)).isoformat(),
                       "requests": summary["requests"], "errors": summary["errors"],
                       "latency_p50_s": summary["latency_p50_s"], "latency_p95_s": summary["latency_p95_s"],
                       "by_variant": by_variant})
    return {"deployment": deployment, "source": "served_requests", "since": since.isoformat(),
            "until": until.isoformat(), "window_s": window_s, "bucket_s": bucket_s,
            "truncated": len(found) >= MAX_ROWS, "totals": _summary(rows), "variants": variants, "buckets": series,
            "all_time": {"requests": int(total or 0), "errors": int(failed or 0)}}
