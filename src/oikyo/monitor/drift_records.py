"""Drift check records: writing them, their history, and the readings the router's /metrics exports.

Light on purpose (no numpy, no torch): the router imports :func:`metric_readings` when Prometheus
scrapes it, and the dashboard reads :func:`history`. The checks themselves live in
:mod:`oikyo.monitor.drift`::

    history("support-bot", detector="input_embedding", limit=100)   # newest first, as dicts
    metric_readings("support-bot")     # latest score per (variant, detector) and check counts
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import func, select

from oikyo.store import db
from oikyo.store.models import DriftCheck

READINGS_TTL_S = 5.0  # a scrape every few seconds costs one query at most this often
LATEST_SCAN = 500  # newest checks read to find each (variant, detector)'s latest score

_cache: dict[str, tuple[float, dict]] = {}
_cache_lock = threading.Lock()


def describe(check: DriftCheck) -> dict:
    def iso(moment):
        return moment.isoformat() if moment else None

    return {"id": check.id, "deployment": check.deployment, "variant": check.variant, "detector": check.detector,
            "reference": check.reference, "window_start": iso(check.window_start), "window_end": iso(check.window_end),
            "requests": check.requests, "statistic": check.statistic, "threshold": check.threshold,
            "score": check.score, "alarm": check.alarm, "details": check.details, "created_at": iso(check.created_at)}


def history(deployment: str, detector: str | None = None, limit: int = 200, variant: str | None = None) -> list[dict]:
    """The deployment's drift checks, newest first (one detector's or one variant's when given)."""
    query = select(DriftCheck).where(DriftCheck.deployment == deployment)
    if detector:
        query = query.where(DriftCheck.detector == detector)
    if variant:
        query = query.where(DriftCheck.variant == variant)
    query = query.order_by(DriftCheck.created_at.desc(), DriftCheck.id.desc()).limit(max(1, int(limit)))
    with db.session() as s:
        return [describe(c) for c in s.scalars(query)]


def _read(deployment: str) -> dict:
    latest: dict[tuple[str, str], float] = {}
    with db.session() as s:
        newest = s.execute(select(DriftCheck.variant, DriftCheck.detector, DriftCheck.score)
                           .where(DriftCheck.deployment == deployment)
                           .order_by(DriftCheck.created_at.desc(), DriftCheck.id.desc()).limit(LATEST_SCAN))
        for variant, detector, score in newest:
            latest.setdefault((variant or "", detector), score)
        counts = s.execute(select(DriftCheck.variant, DriftCheck.detector, DriftCheck.alarm, func.count())
                           .where(DriftCheck.deployment == deployment)
                           .group_by(DriftCheck.variant, DriftCheck.detector, DriftCheck.alarm))
        totals = {(v or "", det, "true" if alarm else "false"): n for v, det, alarm, n in counts}
    return {"scores": latest, "checks": totals}


def metric_readings(deployment: str) -> dict:
    """``{"scores": {(variant, detector): score}, "checks": {(variant, detector, alarm): count}}``,
    read from the store at most every :data:`READINGS_TTL_S` seconds per deployment."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(deployment)
        if hit is not None and now - hit[0] < READINGS_TTL_S:
            return hit[1]
    readings = _read(deployment)
    with _cache_lock:
        _cache[deployment] = (now, readings)
    return readings


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
