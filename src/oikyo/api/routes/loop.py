"""REST routes: continuous training (the loop) of a deployment: its policy, cycles and decisions,
the manual actions (trigger a cycle, pause, resume, cancel), and the lineage of a served answer
(:mod:`oikyo.loop.trace`; here rather than in routes/deployments.py, which does not import the loop).

Adapts :mod:`oikyo.loop.records` and :mod:`oikyo.loop.controller` as ``oikyo loop`` does
(``apply``, ``status``, ``history``, ``trigger``, ``pause``, ``resume``, ``cancel``); no loop logic
lives here. The controller itself runs beside the platform server (:mod:`oikyo.api.background`)
or as ``oikyo loop run``; these routes only record what it acts on.

A deployment that does not exist, or has no policy, is a 404. A policy that does not validate is a
422 listing every problem (``problems``: ``[{"field", "message"}]``); a cycle already running (for
``trigger``) or none running (for ``cancel``) is a 409.
"""

from __future__ import annotations

import json

import yaml
from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, Field

from oikyo.api.app import error_response
from oikyo.api.routes.deployments import known
from oikyo.errors import OikyoError

router = APIRouter(tags=["loop"])


class NotFound(OikyoError):
    http_status = 404


class Conflict(OikyoError):
    http_status = 409


class TriggerRequest(BaseModel):
    reason: str = Field("started by hand", max_length=500, description="Recorded with the cycle and its decision.")


def _record(name: str):
    """The deployment's applied policy record, else a 404 (no such deployment, or no policy)."""
    from oikyo.loop import records

    try:
        return records.get_record(known(name))
    except NotFound:
        raise
    except OikyoError as error:
        raise NotFound(str(error)) from None


def _status(record, cycles: int) -> dict:
    from oikyo.loop import records

    open_cycle = records.open_cycle(record.deployment)
    return {**records.describe_policy(record),
            "open_cycle": records.describe_cycle(open_cycle) if open_cycle is not None else None,
            "cycles": [records.describe_cycle(c) for c in records.cycles(record.deployment, limit=cycles)]}


def _problems(error: OikyoError) -> list[dict]:
    """PolicyError's "  - dotted.path: message" lines as ``[{"field", "message"}]``."""
    found = []
    for line in str(error).splitlines():
        if not line.startswith("  - "):
            continue
        field, sep, message = line[4:].partition(": ")
        if not sep or field == "(top)":  # a check of the whole policy (e.g. at least one trigger)
            field, message = None, message if sep else line[4:]
        found.append({"field": field, "message": message})
    return found or [{"field": None, "message": str(error)}]


def _invalid(message: str, problems: list[dict]):
    return error_response(422, message, "PolicyError", problems=problems)


@router.get("/loop")
def list_loops(cycles: int = Query(5, ge=0, le=100, description="Newest cycles shown per policy.")) -> list[dict]:
    """Every applied policy (paused or not, its controller) with the cycle in progress and the newest
    cycles (``oikyo loop status --json``)."""
    from oikyo.loop import records

    return [_status(record, cycles) for record in records.policies()]


@router.get("/loop/{deployment}")
def show_loop(deployment: str, cycles: int = Query(20, ge=1, le=500),
              decisions: int = Query(100, ge=1, le=1000)) -> dict:
    """One deployment's loop: the policy, the cycle in progress, cycles newest first and decisions
    newest first, each with its reason (``oikyo loop status`` and ``oikyo loop history``)."""
    from oikyo.loop import records

    record = _record(deployment)
    return {**_status(record, cycles),
            "decisions": [records.describe_decision(d) for d in records.history(record.deployment, limit=decisions)]}


@router.put("/loop/{deployment}/policy")
def apply_policy(deployment: str, body: dict = Body(..., description="The policy as JSON: the YAML file's "
                                                    "structure (docs/loop.md), training config inline.")):
    """Apply a policy to the deployment (replaces its earlier one; a paused loop stays paused)
    (``oikyo loop apply``). ``deployment`` in the body may be left out; if given it must be the path's."""
    from oikyo.loop import policy as policy_mod, records

    known(deployment)
    named = body.get("deployment", deployment)
    if named != deployment:
        return _invalid(f"the policy is for deployment {named!r}, not {deployment!r}",
                        [{"field": "deployment", "message": f"must be {deployment!r} (the path's), not {named!r}"}])
    data = {**body, "deployment": deployment}
    try:
        policy = policy_mod.parse(data)
    except OikyoError as error:
        return _invalid(str(error), _problems(error))
    if isinstance(policy.train.config, str):
        # A path means a file beside the YAML for `oikyo loop apply`; the server has no such folder.
        return _invalid("train.config must be the training config inline over the API",
                        [{"field": "train.config", "message": "give the config's settings as an object, not a path "
                                                              f"({policy.train.config!r})"}])
    source = yaml.safe_dump(json.loads(json.dumps(body)), sort_keys=False)
    return records.apply(policy, source)


@router.post("/loop/{deployment}/trigger", status_code=201)
def trigger(deployment: str, body: TriggerRequest | None = None) -> dict:
    """Start a cycle now, whatever the triggers and the cooldown say (``oikyo loop trigger``); 409
    while a cycle is running. The controller takes it from there."""
    from oikyo.loop import controller, records

    record = _record(deployment)
    try:
        cycle = controller.trigger_now(record.deployment, (body or TriggerRequest()).reason)
    except OikyoError as error:
        raise Conflict(str(error)) from None
    return records.describe_cycle(cycle)


@router.post("/loop/{deployment}/pause")
def pause(deployment: str) -> dict:
    """Stop the loop deciding anything for the deployment (a running canary keeps its split) (``oikyo loop pause``)."""
    from oikyo.loop import records

    return records.set_paused(_record(deployment).deployment, True)


@router.post("/loop/{deployment}/resume")
def resume(deployment: str) -> dict:
    """Let the loop act on a paused deployment again (``oikyo loop resume``)."""
    from oikyo.loop import records

    return records.set_paused(_record(deployment).deployment, False)


@router.post("/loop/{deployment}/cancel")
def cancel(deployment: str) -> dict:
    """End the cycle in progress: its training run is cancelled, a canary gives all traffic back to
    the champion (``oikyo loop cancel``); 409 when no cycle is running."""
    from oikyo.loop import controller, records

    record = _record(deployment)
    try:
        cycle = controller.cancel(record.deployment)
    except OikyoError as error:
        raise Conflict(str(error)) from None
    return records.describe_cycle(cycle)


@router.get("/deployments/{name}/requests/{response_id}/lineage")
def request_lineage(name: str, response_id: str) -> dict:
    """Lineage of one served answer (``oikyo deployments trace``): the request and its feedback, the model
    version that answered, its run and dataset version (from traffic: which requests), then each parent
    version down to the base model, with the loop cycle that trained each; 404 for an unknown
    deployment or response id."""
    from oikyo.api.refs import check_ref
    from oikyo.loop.trace import trace

    return trace(known(name), check_ref(response_id, "response id"))
