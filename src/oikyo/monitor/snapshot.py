"""One look at a deployment's health without Prometheus: what ``oikyo deployments watch`` shows.

Gathers, for the last ``window_s`` seconds: requests per second, the server-error rate, p50/p99
latency and time to first token (from the ``served_requests`` table, :mod:`oikyo.serve.gateway.traffic`);
the replicas and, given an API key, the queue depth and requests in flight read from the router's
own ``/metrics`` (the numbers Prometheus would scrape); the quality-flag shares per variant
(:func:`oikyo.monitor.quality.summary`); each drift detector's latest score (``drift_checks``); and
what is firing plus the newest events (:mod:`oikyo.monitor.events`)::

    from oikyo.monitor import snapshot
    view = snapshot.take("support-bot", window_s=300, api_key="oik-...")
    view["traffic"]["requests_per_s"], view["router"]["queue_depth"], view["firing"]

Every part that cannot be read says why in ``view["notes"]`` instead of failing the whole view (a
stopped router has no ``/metrics``; a deployment without drift checks has no scores).
"""

from __future__ import annotations

import logging

from oikyo.monitor import events

log = logging.getLogger(__name__)
DRIFT_SCAN = 200  # newest drift checks read to find each detector's latest score
METRICS_TIMEOUT_S = 2.0


def take(name: str, *, window_s: float = 300.0, api_key: str | None = None, recent: int = 5) -> dict:
    """A snapshot of ``name`` (raises :class:`~oikyo.errors.OikyoError` for an unknown deployment)."""
    from oikyo.serve.gateway import deployments, traffic

    info = deployments.show(name)
    notes: list[str] = []
    totals = traffic.stats(name, window_s=window_s, buckets=1)["totals"]
    view = {"deployment": name, "status": info["status"], "url": info["url"], "window_s": window_s,
            "traffic": {"requests": totals["requests"], "requests_per_s": totals["requests"] / window_s,
                        "errors": totals["errors"], "error_rate": totals["error_rate"],
                        "latency_p50_s": totals["latency_p50_s"], "latency_p99_s": totals["latency_p99_s"],
                        "ttft_p50_s": totals["ttft_p50_s"], "ttft_p99_s": totals.get("ttft_p99_s")},
            "replicas": _replicas(info), "router": _router_metrics(info, api_key, notes),
            "quality": _quality(name, window_s, notes), "drift": _drift(name, notes),
            "firing": [events.describe(e) for e in events.firing(name)],
            "events": [events.describe(e) for e in events.list_events(name, limit=recent)], "notes": notes}
    return view


def _replicas(info: dict) -> dict[str, dict[str, int]]:
    """Replica states per pool from the router's registry (empty when it is not running)."""
    out: dict[str, dict[str, int]] = {}
    for pool, replicas in (info.get("replica_processes") or {}).items():
        counts = out.setdefault(pool, {})
        for replica in replicas:
            counts[replica["state"]] = counts.get(replica["state"], 0) + 1
    return out


def _router_metrics(info: dict, api_key: str | None, notes: list[str]) -> dict | None:
    """Queue depth, requests in flight and ready replicas from the router's ``/metrics``."""
    if info["status"] not in ("starting", "running"):
        return None
    if not api_key:
        notes.append("queue depth: give an API key (--key or OIKYO_API_KEY) to read the router's /metrics")
        return None
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    url = info["url"].removesuffix("/v1") + "/metrics"
    try:
        response = httpx.get(url, headers={"Authorization": f"Bearer {api_key}"}, timeout=METRICS_TIMEOUT_S,
                             trust_env=False)
    except httpx.HTTPError as error:
        notes.append(f"the router's /metrics did not answer ({type(error).__name__})")
        return None
    if response.status_code != 200:
        notes.append(f"the router's /metrics answered {response.status_code} (is the API key valid?)")
        return None
    out = {"queue_depth": 0.0, "in_flight": 0.0, "ready_replicas": 0.0, "restarts": 0.0}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "oikyo_queue_depth":
                out["queue_depth"] += sample.value
            elif sample.name == "oikyo_requests_in_flight":
                out["in_flight"] += sample.value
            elif sample.name == "oikyo_replicas" and sample.labels.get("state") == "ready":
                out["ready_replicas"] += sample.value
            elif sample.name == "oikyo_replica_restarts_total":
                out["restarts"] += sample.value
    return out


def _quality(name: str, window_s: float, notes: list[str]) -> dict:
    """Quality-flag shares per variant; empty (with a note) when no answer was checked."""
    try:
        from oikyo.monitor import quality
    except ImportError:  # the quality signals are optional for this view
        notes.append("quality signals: not available in this installation")
        return {}
    found = quality.summary(name, window_s=window_s)
    if not found:
        notes.append("quality signals: no checked answers in the window (request logging on?)")
    return found


def _drift(name: str, notes: list[str]) -> list[dict]:
    """Each (variant, detector)'s latest drift check."""
    try:
        from oikyo.monitor import drift_records
    except ImportError:
        notes.append("drift: not available in this installation")
        return []
    latest: dict[tuple, dict] = {}
    for check in drift_records.history(name, limit=DRIFT_SCAN):  # newest first
        latest.setdefault((check["variant"], check["detector"]), check)
    if not latest:
        notes.append(f"drift: no checks yet (`oikyo deployments drift {name}`)")
    return [{"variant": c["variant"], "detector": c["detector"], "score": c["score"], "alarm": c["alarm"],
             "requests": c["requests"], "at": c["created_at"]} for c in latest.values()]
