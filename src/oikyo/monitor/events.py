"""What happened to a deployment that its owner should see: alerts that fired or resolved, drift alarms.

Events are rows of ``deployment_events`` (:class:`~oikyo.store.models.DeploymentEvent`). Anything
in oikyo records them through :func:`record`: the Alertmanager webhook route
(:mod:`oikyo.api.routes.alerts`) for every alert it is told about, the drift detectors for an
alarm. ``oikyo deployments show``, ``oikyo deployments watch`` and the dashboard list them::

    from oikyo.monitor import events
    events.record("support-bot", events.ALERT_FIRING, "alertmanager", "OikyoHighLatencyP99",
                  severity="warning", details={"alert_key": "5f1c..."}, dedupe_key="am:5f1c...:firing:...")
    events.list_events("support-bot", limit=20)      # newest first
    events.firing("support-bot")                     # alerts whose latest event is a firing one

Invariants:

- A ``dedupe_key`` lands once. Alertmanager redelivers a notification (retries, repeat_interval,
  several replicas of Alertmanager); the key's unique constraint in the database, not a read
  before the write, makes the second delivery a no-op, so two servers racing cannot both record it.
- An alert is identified by ``details["alert_key"]`` (the webhook uses Alertmanager's fingerprint,
  a hash of the alert's labels), or by ``source`` and ``title`` when there is none. It is firing
  when its latest ``alert_firing`` / ``alert_resolved`` event, by ``time``, is a firing one. ``time``
  is when the alert started or ended (not when the notification arrived), so a late redelivery of
  an old "firing" cannot hide the "resolved" that followed it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from oikyo.errors import OikyoError
from oikyo.store import db
from oikyo.store.models import DeploymentEvent, utcnow

ALERT_FIRING = "alert_firing"
ALERT_RESOLVED = "alert_resolved"
DRIFT = "drift"
ALERT_KINDS = (ALERT_FIRING, ALERT_RESOLVED)

MAX_KEY = 200  # the dedupe_key column's width
MAX_FIRING_SCAN = 5000  # alert events read to decide what is firing (newest first)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; every time here is UTC.
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _fit_key(key: str) -> str:
    """``key`` itself when it fits the column, else a prefix plus its hash (still unique)."""
    if len(key) <= MAX_KEY:
        return key
    return key[: MAX_KEY - 65] + ":" + hashlib.sha256(key.encode()).hexdigest()


def record(deployment: str, kind: str, source: str, title: str, *, severity: str | None = None,
           details: dict | None = None, dedupe_key: str | None = None,
           time: datetime | None = None) -> DeploymentEvent | None:
    """Record one event on ``deployment``; the new row, or None when ``dedupe_key`` was already recorded.

    ``kind``: :data:`ALERT_FIRING`, :data:`ALERT_RESOLVED`, :data:`DRIFT`, ... (at most 32 chars);
    ``source``: who says so (``alertmanager``, ``drift``, ``oikyo``); ``title``: one line for people;
    ``details``: anything JSON (labels, annotations, values, examples); ``time``: when it happened
    (default now).
    """
    for name, value, width in (("deployment", deployment, 100), ("kind", kind, 32), ("source", source, 32)):
        if not value or len(value) > width:
            raise OikyoError(f"an event's {name} must be 1 to {width} characters, got {value!r}")
    if severity is not None and len(severity) > 16:
        severity = severity[:16]
    row = DeploymentEvent(deployment=deployment, kind=kind, source=source, title=title or kind,
                          severity=severity, details=details,
                          dedupe_key=_fit_key(dedupe_key) if dedupe_key else None,
                          time=_aware(time) if time else utcnow())
    try:
        with db.session() as s:
            s.add(row)
    except IntegrityError:
        if dedupe_key is None:
            raise
        return None  # already recorded: a redelivery
    return row


def list_events(deployment: str, limit: int = 50, kinds: list[str] | tuple[str, ...] | None = None) -> list[DeploymentEvent]:
    """The newest ``limit`` events of ``deployment`` (only ``kinds`` when given), newest first."""
    query = select(DeploymentEvent).where(DeploymentEvent.deployment == deployment)
    if kinds:
        query = query.where(DeploymentEvent.kind.in_(list(kinds)))
    query = query.order_by(DeploymentEvent.time.desc(), DeploymentEvent.id.desc()).limit(max(1, int(limit)))
    with db.session() as s:
        return list(s.scalars(query))


def alert_key(event: DeploymentEvent) -> str:
    """The identity of the alert an event is about (see the module docstring)."""
    details = event.details or {}
    return str(details.get("alert_key") or f"{event.source}:{event.title}")


def firing(deployment: str) -> list[DeploymentEvent]:
    """The alerts of ``deployment`` firing now: for each alert, its latest event when that is a
    firing one (the event that says when it started), newest first."""
    query = (select(DeploymentEvent)
             .where(DeploymentEvent.deployment == deployment, DeploymentEvent.kind.in_(ALERT_KINDS))
             .order_by(DeploymentEvent.time.desc(), DeploymentEvent.id.desc()).limit(MAX_FIRING_SCAN))
    with db.session() as s:
        rows = list(s.scalars(query))
    seen: set[str] = set()
    now_firing = []
    for row in rows:  # newest first: the first event seen for a key is that alert's latest
        key = alert_key(row)
        if key in seen:
            continue
        seen.add(key)
        if row.kind == ALERT_FIRING:
            now_firing.append(row)
    return now_firing


def describe(event: DeploymentEvent) -> dict:
    """An event as plain JSON-able data (REST answers, ``--json`` output, the dashboard)."""
    return {"id": event.id, "deployment": event.deployment, "time": _aware(event.time).isoformat(),
            "kind": event.kind, "source": event.source, "severity": event.severity, "title": event.title,
            "details": event.details or {}}
