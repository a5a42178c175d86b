"""REST routes: training runs, the training config (schema, YAML), live metrics over server-sent events.

Adapts :mod:`oikyo.jobs.training` (validate, resolve, queue), :mod:`oikyo.jobs.runs` (list, show,
logs, cancel, resume), :mod:`oikyo.jobs.metrics` (series, live updates) and :mod:`oikyo.jobs.autostart`
(a background worker when none serves the queue, as ``oikyo train`` does unless ``--no-start-worker``).

``GET /runs/{id}/events`` is a ``text/event-stream``: ``event: state`` (``{"state"}``) first and on
every change, ``event: metrics`` (``{"step", "values"}``, ``id`` = the step) as rows land, a comment
line every :data:`HEARTBEAT_S` seconds while nothing happens, and ``event: end`` once the run has
finished and every row was sent; then the stream closes (a browser's EventSource should ``close()``
on ``end``, or it reconnects). A reconnecting client's ``Last-Event-ID`` (or ``?since_step=``) skips
the steps it has.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from oikyo.api.app import error_response
from oikyo.api.refs import check_ref
from oikyo.api.routes import DB_INT_MAX
from oikyo.errors import OikyoError

router = APIRouter(tags=["runs"])

POLL_S = 0.5  # how often a live stream looks for new metric rows (one indexed query)
HEARTBEAT_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
RETRY_MS = 2000  # what a browser waits before reconnecting a dropped stream


def problem_list(lines: list[str]) -> list[dict]:
    """"dotted.path: message" lines as ``[{"field", "message"}]``."""
    out = []
    for line in lines:
        field, sep, message = line.partition(": ")
        named = sep and " " not in field
        out.append({"field": field, "message": message} if named else {"field": None, "message": line})
    return out


def invalid_config(error: OikyoError) -> JSONResponse:
    problems = list(getattr(error, "problems", None) or [str(error)])
    return error_response(422, str(error), type(error).__name__, problems=problem_list(problems))


def worker_status(start: bool) -> dict:
    """Start a background worker unless one serves the queue (when ``start``); say what happened."""
    from oikyo.jobs import autostart

    if start:
        started = autostart.ensure_worker()
        if started is not None:
            return {"alive": True, "started_pid": started.pid, "log": str(started.log_path)}
    alive = autostart.worker_alive()
    note = None if alive else "No worker is running; start one with `oikyo worker`."
    return {"alive": alive, "started_pid": None, "note": note}


def run_info(run) -> dict:
    from oikyo.jobs import runs

    return {**runs.describe(run), "kind": run.kind}


class RunRequest(BaseModel):
    config: dict[str, Any] = Field(description="The training config, in the structure of the YAML file "
                                               "(groups model, data, method, lora, train, dpo, checkpoint).")
    name: str | None = Field(None, max_length=200, description="A name for the run (default: dataset and model).")
    start_worker: bool = Field(True, description="Start a background worker when none is running (like `oikyo train`).")


class ConfigRequest(BaseModel):
    config: dict[str, Any] = Field(description="The training config, in the structure of the YAML file.")


class ResumeRequest(BaseModel):
    start_worker: bool = Field(True, description="Start a background worker when none is running.")


@router.get("/runs")
def list_runs(state: str | None = None, limit: int = Query(50, ge=1, le=1000),
              offset: int = Query(0, ge=0, le=DB_INT_MAX)) -> list[dict]:
    """Runs (training and evaluation jobs), newest first."""
    from oikyo.jobs import runs

    return [run_info(r) for r in runs.list_runs(state=state, limit=limit, offset=offset)]


@router.post("/runs", status_code=201)
def submit_run(body: RunRequest):
    """Validate, resolve and queue a training run; 422 lists every problem (config, dataset, model)."""
    from oikyo.jobs import training
    from oikyo.train.config import ConfigError

    try:
        run = training.submit_config(body.config, name=body.name)
    except (ConfigError, training.SubmitError) as error:
        return invalid_config(error)
    return {**run_info(run), "worker": worker_status(body.start_worker)}


@router.get("/config/schema")
def config_schema() -> dict:
    """The training config's JSON schema (every field with type, bounds, default and description) and defaults."""
    from oikyo.jobs import training

    return training.config_schema()


@router.post("/config/yaml")
def config_yaml(body: ConfigRequest):
    """The config, validated and with every default filled in, as the YAML `oikyo train --config` reads."""
    from oikyo.jobs import training
    from oikyo.train.config import ConfigError

    try:
        return {"yaml": training.config_yaml(body.config)}
    except ConfigError as error:
        return invalid_config(error)


@router.get("/runs/{run_ref}")
def show_run(run_ref: str) -> dict:
    """Everything about a run: record, progress, checkpoints, model versions, history, config."""
    from oikyo.jobs import runs

    info = runs.show(check_ref(run_ref, "run id"))
    info["kind"] = runs.resolve(info["id"]).kind
    return info


@router.get("/runs/{run_ref}/metrics")
def run_metrics(run_ref: str, names: str | None = Query(None, description="Comma-separated metric names."),
                since_step: int | None = Query(None, ge=-DB_INT_MAX, le=DB_INT_MAX,
                                               description="Only steps after this one.")) -> dict:
    """``{"series": {name: [[step, value], ...]}}`` in step order."""
    from oikyo.jobs import metrics, runs

    run = runs.resolve(check_ref(run_ref, "run id"))
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else None
    series = metrics.series(run.id, wanted, since_step=since_step)
    return {"run": run.id, "state": run.state, "series": {k: [list(p) for p in v] for k, v in series.items()}}


def sse(event: str | None, data: Any = None, *, id: int | str | None = None, comment: str | None = None) -> str:
    """One server-sent event in the wire format."""
    lines = []
    if comment is not None:
        lines.append(f": {comment}")
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    if data is not None:
        lines.append("data: " + json.dumps(data, separators=(",", ":"), allow_nan=False))
    return "\n".join(lines) + "\n\n"


async def event_stream(run_id: str, since_step: int | None = None, *, poll_s: float | None = None,
                       heartbeat_s: float | None = None) -> AsyncIterator[str]:
    """The events of one run until it has finished and every metric row was sent.

    Each pass is one cheap query (:func:`oikyo.jobs.metrics.updates`, in a thread so the server
    keeps serving). A client that disconnects cancels this generator at its next ``await``.
    """
    from oikyo.jobs import metrics

    poll_s = POLL_S if poll_s is None else poll_s
    heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
    yield f"retry: {RETRY_MS}\n\n"
    after_id, state, last_sent = 0, None, time.monotonic()
    while True:
        update = await run_in_threadpool(metrics.updates, run_id, after_id=after_id, since_step=since_step)
        after_id = update.last_id
        if update.state != state:
            state = update.state
            last_sent = time.monotonic()
            yield sse("state", {"state": state})
        for step, values in update.steps:
            last_sent = time.monotonic()
            yield sse("metrics", {"step": step, "values": values}, id=step)
        if update.finished:
            yield sse("end", {"state": state})
            return
        if update.more:
            continue
        if time.monotonic() - last_sent >= heartbeat_s:
            last_sent = time.monotonic()
            yield sse(None, comment="heartbeat")
        await asyncio.sleep(poll_s)


@router.get("/runs/{run_ref}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
def run_events(run_ref: str, since_step: int | None = Query(None, ge=-DB_INT_MAX, le=DB_INT_MAX,
                                                           description="Only steps after this one."),
               last_event_id: str | None = Header(None, description="Sent by a reconnecting EventSource.")):
    """Live metrics and state changes as server-sent events (see the module docstring)."""
    from oikyo.jobs import runs

    run = runs.resolve(check_ref(run_ref, "run id"))
    if last_event_id and last_event_id.strip().lstrip("-").isdigit():
        resumed = int(last_event_id.strip())
        since_step = resumed if since_step is None else max(since_step, resumed)
    return StreamingResponse(event_stream(run.id, since_step), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/runs/{run_ref}/logs")
def run_logs(run_ref: str, tail: int | None = Query(500, ge=1, le=100_000)) -> dict:
    """The last ``tail`` lines of the run's train.log."""
    from oikyo.jobs import runs

    run = runs.resolve(check_ref(run_ref, "run id"))
    return {"run": run.id, "state": run.state, "lines": runs.read_log(run.id, tail=tail)}


@router.get("/runs/{run_ref}/checkpoints")
def run_checkpoints(run_ref: str) -> list[dict]:
    """The run's complete checkpoints (step, path, eval loss, best flag)."""
    from oikyo.jobs import checkpoints, runs

    run = runs.resolve(check_ref(run_ref, "run id"))
    return [{"step": c.step, "path": c.path, "eval_loss": c.eval_loss, "is_best": c.is_best,
             "created_at": c.created_at.isoformat() if c.created_at else None}
            for c in checkpoints.list_checkpoints(run.id)]


@router.post("/runs/{run_ref}/cancel")
def cancel_run(run_ref: str) -> dict:
    """Cancel a run: a queued one at once; a running one saves a checkpoint and stops."""
    from oikyo.jobs import queue, runs

    message = runs.cancel(check_ref(run_ref, "run id"))
    run = queue.get(runs.resolve(run_ref).id)
    return {"message": message, **run_info(run)}


@router.post("/runs/{run_ref}/resume")
def resume_run(run_ref: str, body: ResumeRequest | None = None) -> dict:
    """Queue a failed or cancelled run again; it continues from its last complete checkpoint."""
    from oikyo.jobs import runs

    run = runs.resume(check_ref(run_ref, "run id"))
    return {**run_info(run), "worker": worker_status(body.start_worker if body else True)}


@router.post("/runs/{run_ref}/reproduce", status_code=201)
def reproduce_run(run_ref: str, body: ResumeRequest | None = None) -> dict:
    """Queue a new run from a run's recorded config: the same dataset version and seed (`oikyo runs reproduce`)."""
    from oikyo.jobs import runs

    run = runs.reproduce(check_ref(run_ref, "run id"))
    return {**run_info(run), "worker": worker_status(body.start_worker if body else True)}
