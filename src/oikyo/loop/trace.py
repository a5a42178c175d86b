"""Lineage of a served answer: from a response id back to the traffic its model learned from.

A client's response id (``chatcmpl-...``) names a ``served_requests`` row: when it was answered, by
which variant and model, with what status, and the feedback given on it. From there the chain goes
model version → its training run → its dataset version (for one built from traffic: the deployment,
the time range and the request ids it came from) → the model version it continued or was trained
from (``parent_model_version`` / ``base_model_version`` in its lineage), hop after hop, until a base
model. Each model version also shows the loop cycle that trained it, if one did (trigger, state, gate).

``oikyo deployments trace``, ``GET /api/v1/deployments/{name}/requests/{response_id}/lineage`` and the
dashboard's ``/deployments/{name}/requests/{response_id}`` page all show :func:`trace`'s answer::

    info = trace("support-bot", "chatcmpl-1a2b3c")
    info["request"]["feedback"]             # ratings and corrections on that answer
    [hop["model_version"]["id"] for hop in info["chain"]]   # the answering version first, then its parents
    info["chain"][0]["dataset"]["traffic"]  # {"deployment", "requests", "time_range", "request_ids", ...}
    info["base_model"]                      # where the chain ends (None when a record is missing)

Only reads the store; the chain is bounded (:data:`MAX_DEPTH` hops, and a version seen twice ends
it) so a corrupt lineage cannot loop.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from oikyo.errors import OikyoError
from oikyo.store import db
from oikyo.store.models import DatasetVersion, Feedback, LoopCycle, ModelVersion, Run, ServedRequest

MAX_DEPTH = 20  # model versions followed at most (a chain longer than this is cut, and says so)
REQUEST_IDS_SHOWN = 5  # request ids of a traffic dataset listed (the count is always given)


class TraceNotFound(OikyoError):
    """No such deployment, or no such response in it (the REST API answers 404)."""

    http_status = 404


def _iso(moment: datetime | None) -> str | None:
    from oikyo.loop.records import aware

    return aware(moment).isoformat() if moment else None


def trace(deployment: str, response_id: str) -> dict:
    """The lineage of response ``response_id`` of ``deployment``: ``{"deployment", "request", "chain",
    "base_model", "truncated"}``. ``chain`` holds one hop per model version, the one that answered
    first (empty when a base model answered); each hop has ``model_version``, ``run``, ``dataset``
    and ``cycle`` (None when absent), and ``missing`` when the version's record is not in the store."""
    from oikyo.serve.gateway import deployments

    try:
        deployments.get(deployment)
    except OikyoError as error:
        raise TraceNotFound(str(error)) from None
    with db.session() as s:
        served = s.get(ServedRequest, response_id)
        if served is None or served.deployment != deployment:
            raise TraceNotFound(f"no response {response_id!r} in deployment {deployment!r}; the id is what the "
                                f"client got back (`id` of the answer, e.g. chatcmpl-...)")
        request = _request(s, served)
        chain, base_model, truncated = _chain(s, served.model)
    return {"deployment": deployment, "request": request, "chain": chain, "base_model": base_model,
            "truncated": truncated}


def _request(s, served: ServedRequest) -> dict:
    """The served request's record and the feedback on it, with what that feedback says."""
    from oikyo.data import ratings

    feedback = list(s.scalars(select(Feedback).where(Feedback.deployment == served.deployment,
                                                     Feedback.response_id == served.id).order_by(Feedback.id)))
    verdict = "unrated"
    if feedback:
        highest = s.scalar(select(func.max(Feedback.rating)).where(Feedback.deployment == served.deployment))
        rated = [f.rating for f in feedback if f.rating is not None]
        verdict = ratings.verdict(rated[-1] if rated else None, corrected=any(f.correction for f in feedback),
                                  stars=ratings.uses_stars(highest))
    return {"id": served.id, "deployment": served.deployment, "created_at": _iso(served.created_at),
            "variant": served.variant, "model": served.model, "endpoint": served.endpoint,
            "status": served.status, "error": served.error, "latency_s": served.latency_s,
            "prompt_tokens": served.prompt_tokens, "completion_tokens": served.completion_tokens,
            "logged_content": served.request is not None, "verdict": verdict,
            "feedback": [{"id": f.id, "rating": f.rating, "comment": f.comment, "corrected": bool(f.correction),
                          "created_at": _iso(f.created_at)} for f in feedback]}


def _chain(s, model: str) -> tuple[list[dict], str | None, bool]:
    """Model version hops from ``model`` back to a base model: ``(hops, base_model, truncated)``."""
    hops: list[dict] = []
    seen: set[str] = set()
    ref = model
    while ref and ref.startswith("mv-"):
        if len(hops) >= MAX_DEPTH or ref in seen:
            return hops, None, True
        seen.add(ref)
        mv = s.get(ModelVersion, ref)
        if mv is None:
            hops.append({"model_version": {"id": ref}, "missing": True, "run": None, "dataset": None, "cycle": None})
            return hops, None, False
        hop = _hop(s, mv)
        hops.append(hop)
        ref = hop["model_version"]["parent"] or mv.base_model
    return hops, ref, False


def _hop(s, mv: ModelVersion) -> dict:
    """One model version with its training run, dataset version and the loop cycle that trained it."""
    lineage = mv.lineage or {}
    parent = lineage.get("parent_model_version") or lineage.get("base_model_version")
    run = s.get(Run, mv.run_id) if mv.run_id else None
    dataset_id = lineage.get("dataset_version") or (run.dataset_version_id if run else None)
    cycle = s.scalar(select(LoopCycle).where(LoopCycle.challenger == mv.id).order_by(LoopCycle.created_at.desc()))
    return {
        "model_version": {"id": mv.id, "kind": mv.kind, "base_model": mv.base_model, "run_id": mv.run_id,
                          "created_at": _iso(mv.created_at), "parent": parent,
                          "operation": lineage.get("operation") or ("trained_from" if parent else None),
                          "config_hash": lineage.get("config_hash"), "seed": lineage.get("seed")},
        "missing": False,
        "run": None if run is None else {
            "id": run.id, "name": run.name, "state": run.state, "base_model": run.base_model,
            "config_hash": run.config_hash, "seed": run.seed, "created_at": _iso(run.created_at),
            "finished_at": _iso(run.finished_at)},
        "dataset": _dataset(s, dataset_id) if dataset_id else None,
        "cycle": None if cycle is None else {
            "id": cycle.id, "deployment": cycle.deployment, "trigger": cycle.trigger, "reason": cycle.reason,
            "state": cycle.state, "champion": cycle.champion, "created_at": _iso(cycle.created_at),
            "finished_at": _iso(cycle.finished_at), "gate": _gate((cycle.details or {}).get("gate"))},
    }


def _gate(gate: dict | None) -> dict | None:
    if not gate:
        return None
    return {k: gate.get(k) for k in ("passed", "metric", "challenger", "champion", "gain", "gain_low", "forgetting",
                                     "reason")}


def _dataset(s, dataset_id: str) -> dict:
    """A dataset version in brief; one built from traffic says from which requests."""
    version = s.get(DatasetVersion, dataset_id)
    if version is None:
        return {"id": dataset_id, "missing": True}
    lineage = version.lineage or {}
    info = {"id": version.id, "name": version.name, "rows": version.rows, "format": version.format,
            "kind": version.kind, "created_at": _iso(version.created_at), "parent": version.parent_id,
            "operation": lineage.get("operation"), "missing": False, "traffic": None}
    if lineage.get("operation") == "from_traffic":
        request_ids = lineage.get("request_ids") or []
        info["traffic"] = {"deployment": lineage.get("deployment"), "requests": len(request_ids),
                           "request_ids": request_ids[:REQUEST_IDS_SHOWN],
                           "time_range": lineage.get("time_range") or {},
                           "model_versions": lineage.get("model_versions") or [],
                           "feedback": len(lineage.get("feedback_ids") or [])}
    return info
