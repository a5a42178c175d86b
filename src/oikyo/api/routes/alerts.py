"""REST routes: Alertmanager's webhook (alerts become deployment events) and a deployment's events.

``POST /api/v1/alerts/alertmanager`` takes Alertmanager's webhook body (version 4: ``status``,
``alerts[]`` with ``status``, ``labels``, ``annotations``, ``startsAt``, ``endsAt``,
``fingerprint``) and records one event per alert and status on the deployment named by the alert's
``deployment`` label (:func:`oikyo.monitor.events.record`; kinds ``alert_firing`` /
``alert_resolved``). Alertmanager's receiver (docs/monitoring.md)::

    receivers:
      - name: oikyo
        webhook_configs:
          - url: http://127.0.0.1:8420/api/v1/alerts/alertmanager
            http_config: {authorization: {credentials_file: /home/me/.oikyo/ui-token}}

Decisions:

- Credentials: the server's login token (``oikyo ui`` prints it; the workspace file ``ui-token``)
  or an oikyo API key (``oikyo keys create``), as ``Authorization: Bearer ...``. An API key lets the
  monitoring stack use the one credential Prometheus already scrapes ``/metrics`` with, instead of
  the token that can do everything. Credentials are checked before the body is read.
- Redeliveries (retries, ``repeat_interval``, several Alertmanagers) land once: the dedupe key is
  the alert's fingerprint, status and start time.
- An alert naming a deployment oikyo does not know is still recorded under that name (the
  deployment may be gone, or the label misspelt: losing the alert would be worse) and listed in the
  answer's ``unknown_deployments``. An alert without a ``deployment`` label cannot belong anywhere:
  it is skipped and listed in ``skipped`` with the reason. Either way the answer is 200: Alertmanager
  does not retry a 4xx, and retrying would not help.
- A body that is not valid JSON or not Alertmanager's shape is a 422 saying what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timezone
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oikyo.api.auth import SESSION_COOKIE
from oikyo.api.routes.deployments import known

router = APIRouter(tags=["alerts"])
webhook_router = APIRouter(tags=["alerts"])  # its own credential check (token or API key): see app.py

WEBHOOK_PATH = "/alerts/alertmanager"
MAX_BODY_BYTES = 4 << 20  # Alertmanager batches a group's alerts; thousands of alerts fit in 4 MiB
SOURCE = "alertmanager"
log = logging.getLogger("oikyo.api.alerts")


class WebhookAlert(BaseModel):
    """One alert of Alertmanager's webhook body."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    status: Literal["firing", "resolved"] = Field(description="firing or resolved.")
    labels: dict[str, str] = Field(description="The alert's labels (alertname, deployment, severity, ...).")
    annotations: dict[str, str] = Field(default_factory=dict, description="summary, description, runbook ...")
    starts_at: datetime = Field(alias="startsAt", description="When the alert started firing.")
    ends_at: datetime | None = Field(None, alias="endsAt", description="When it resolved (zero time while firing).")
    generator_url: str | None = Field(None, alias="generatorURL", description="Link to the expression in Prometheus.")
    fingerprint: str | None = Field(None, max_length=64, description="Alertmanager's hash of the labels.")


class WebhookBody(BaseModel):
    """Alertmanager's webhook body, version 4 (fields oikyo does not use are ignored)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    version: str | None = Field(None, description="Alertmanager's webhook version ('4').")
    status: str | None = Field(None, description="firing when any alert of the group fires, else resolved.")
    receiver: str | None = Field(None, description="The receiver's name in Alertmanager's config.")
    external_url: str | None = Field(None, alias="externalURL", description="Alertmanager's own URL.")
    alerts: list[WebhookAlert] = Field(description="The group's alerts.")


def _authorized(request: Request) -> None:
    """The login token or a valid API key as a bearer token; 401 otherwise."""
    from oikyo.serve.gateway import keys

    secret = keys.bearer_token(request.headers.get("authorization"))
    if not secret and request.cookies.get(SESSION_COOKIE):
        # A browser session cannot post alerts (no CSRF dance for a machine-to-machine route).
        raise HTTPException(403, "This route takes 'Authorization: Bearer <token or API key>', not a browser session.")
    if not secret:
        raise HTTPException(401, "Send 'Authorization: Bearer <token>': the token `oikyo ui` printed or an "
                                 "oikyo API key (Alertmanager: webhook_configs.http_config.authorization).")
    if request.app.state.auth.token_ok(secret) or keys.verify(secret) is not None:
        return
    raise HTTPException(401, "Invalid token or API key.")


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"The body is over {MAX_BODY_BYTES} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"The body is over {MAX_BODY_BYTES} bytes.")
    return bytes(body)


def parse_webhook(raw: bytes) -> WebhookBody:
    """The webhook body, or a 422 naming what is wrong with it."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise HTTPException(422, f"The body is not JSON ({error}); expected Alertmanager's webhook body.") from None
    if not isinstance(data, dict):
        raise HTTPException(422, "The body must be a JSON object with an 'alerts' list (Alertmanager's webhook body).")
    try:
        return WebhookBody.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:10])
        raise HTTPException(422, f"Not Alertmanager's webhook body: {problems}") from None


def _moment(value: datetime | None) -> datetime | None:
    """An aware time, or None for Alertmanager's zero time (0001-01-01: not set)."""
    if value is None or value.year < 1971:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _fingerprint(alert: WebhookAlert) -> str:
    if alert.fingerprint:
        return alert.fingerprint
    text = json.dumps(sorted(alert.labels.items()))  # same labels, same alert (as Alertmanager hashes them)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_webhook(body: WebhookBody) -> dict:
    """Record each alert of ``body`` as an event; what was recorded, duplicated, skipped."""
    from oikyo.monitor import events
    from oikyo.serve.gateway import deployments

    recorded, duplicates, skipped, unknown = 0, 0, [], set()
    names = {d["name"] for d in deployments.list_deployments()}
    for alert in body.alerts:
        name = alert.labels.get("alertname", "alert")
        deployment = alert.labels.get("deployment", "")
        if not deployment or len(deployment) > 100:
            skipped.append({"alertname": name, "reason": "no 'deployment' label" if not deployment
                            else "the 'deployment' label is over 100 characters"})
            continue
        if deployment not in names:
            unknown.add(deployment)
        fingerprint = _fingerprint(alert)
        starts, ends = _moment(alert.starts_at), _moment(alert.ends_at)
        summary = alert.annotations.get("summary")
        kind = events.ALERT_FIRING if alert.status == "firing" else events.ALERT_RESOLVED
        when = starts if alert.status == "firing" else (ends or datetime.now(timezone.utc))
        details = {"alert_key": fingerprint, "alertname": name, "status": alert.status, "labels": alert.labels,
                   "annotations": alert.annotations, "starts_at": starts.isoformat() if starts else None,
                   "ends_at": ends.isoformat() if ends else None, "generator_url": alert.generator_url,
                   "receiver": body.receiver, "external_url": body.external_url}
        row = events.record(deployment, kind, SOURCE, f"{name}: {summary}" if summary else name,
                            severity=alert.labels.get("severity"), details=details, time=when,
                            dedupe_key=f"am:{fingerprint}:{alert.status}:{alert.starts_at.isoformat()}")
        recorded, duplicates = (recorded + 1, duplicates) if row is not None else (recorded, duplicates + 1)
    if skipped:
        log.warning("Alertmanager sent %d alert(s) without a usable 'deployment' label: %s", len(skipped), skipped)
    return {"recorded": recorded, "duplicates": duplicates, "skipped": skipped,
            "unknown_deployments": sorted(unknown)}


@webhook_router.post(WEBHOOK_PATH)
async def alertmanager_webhook(request: Request) -> dict:
    """Alertmanager's webhook receiver: one deployment event per alert and status (see docs/monitoring.md)."""
    from starlette.concurrency import run_in_threadpool

    await run_in_threadpool(_authorized, request)  # an API key is looked up in the store: off the event loop
    body = parse_webhook(await _read_body(request))
    return await run_in_threadpool(record_webhook, body)


@router.get("/deployments/{name}/events")
def deployment_events(name: str, limit: int = Query(50, ge=1, le=1000),
                      kind: list[str] | None = Query(None, description="Only these kinds (repeatable).")) -> dict:
    """A deployment's recent events (newest first) and the alerts firing now."""
    from oikyo.monitor import events

    known(name)
    return {"deployment": name, "events": [events.describe(e) for e in events.list_events(name, limit, kind)],
            "firing": [events.describe(e) for e in events.firing(name)]}
