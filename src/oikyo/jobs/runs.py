"""The runs service API: list, show, logs, metrics, cancel, resume, reproduce, wait.

What ``oikyo runs ...``, the REST API and the dashboard call. References are a run id or a unique
prefix of it (``run-`` may be left out).

Usage::

    from oikyo.jobs import runs
    runs.list_runs(state="running")
    info = runs.show("run-1a2b3c4d")         # a JSON-ready dict: state, error, checkpoints, model versions ...
    runs.cancel("1a2b")                       # queued: at once; running: the worker checkpoints and stops
    runs.resume("1a2b")                       # failed/cancelled: back in the queue, continues from its checkpoint
    new = runs.reproduce("1a2b")              # a new run from the recorded resolved config
    for line in runs.follow_log("1a2b"): print(line)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from sqlalchemy import func, select

from oikyo.errors import OikyoError
from oikyo.jobs import checkpoints, metrics, model_versions, queue, training
from oikyo.store import db
from oikyo.store.models import Run, RunEvent


def resolve(ref: str) -> Run:
    """The run a user means by ``ref``: an id or a unique prefix (with or without ``run-``)."""
    return db.by_id_prefix(Run, ref, id_prefix="run-", noun="run", list_hint="oikyo runs list")


def list_runs(state: str | None = None, limit: int = 50, offset: int = 0) -> list[Run]:
    """Runs, newest first (optionally only those in ``state``; ``offset`` skips that many, for paging)."""
    if state is not None and state not in queue.STATES:
        raise OikyoError(f"unknown state {state!r}; states are {', '.join(queue.STATES)}")
    query = select(Run).order_by(Run.created_at.desc(), Run.id).limit(limit).offset(max(offset, 0))
    if state:
        query = query.where(Run.state == state)
    with db.session() as s:
        return list(s.scalars(query))


def count_by_state() -> dict[str, int]:
    """How many runs are in each state (one aggregated query): ``{"running": 2, "succeeded": 40}``."""
    with db.session() as s:
        return {state: count for state, count in s.execute(select(Run.state, func.count()).group_by(Run.state))}


def events(run_id: str) -> list[RunEvent]:
    with db.session() as s:
        return list(s.scalars(select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.id)))


def _iso(moment) -> str | None:
    return queue.aware(moment).isoformat() if moment else None


def describe(run: Run) -> dict:
    """A run's record as a JSON-ready dict (no checkpoints, metrics or events)."""
    return {
        "id": run.id, "name": run.name, "state": run.state, "error": run.error,
        "base_model": run.base_model, "dataset_version": run.dataset_version_id, "seed": run.seed,
        "config_hash": run.config_hash, "run_dir": run.run_dir, "attempts": run.attempts,
        "resume_count": run.resume_count, "cancel_requested": run.cancel_requested,
        "lease_owner": run.lease_owner, "lease_expires_at": _iso(run.lease_expires_at),
        "reproduced_from": run.reproduced_from, "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
        "study_id": run.study_id, "trial_number": run.trial_number,
    }


def show(ref: str) -> dict:
    """Everything about a run: record, progress, checkpoints, model versions, history, config."""
    run = resolve(ref)
    info = describe(run)
    now = metrics.progress(run)
    info["progress"] = {"step": now.step, "total_steps": now.total_steps, "eta_s": now.eta_s,
                        "latest": now.values}
    info["checkpoints"] = [{"step": c.step, "path": c.path, "eval_loss": c.eval_loss, "is_best": c.is_best}
                           for c in checkpoints.list_checkpoints(run.id)]
    info["model_versions"] = [{"id": mv.id, "kind": mv.kind, "path": mv.path}
                              for mv in model_versions.list_versions(run_id=run.id)]
    info["events"] = [{"time": _iso(e.time), "kind": e.kind, "message": e.message} for e in events(run.id)]
    info["log"] = str(log_path(run))
    info["config"] = run.config
    return info


def log_path(run: Run) -> Path:
    return Path(run.run_dir) / "train.log"


def read_log(ref: str, tail: int | None = None) -> list[str]:
    """The lines of a run's train.log (the last ``tail`` of them when given)."""
    path = log_path(resolve(ref))
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return lines[-tail:] if tail else lines


def follow_log(ref: str, poll_s: float = 0.5, from_start: bool = True) -> Iterator[str]:
    """Yield the log's lines as they are written, until the run has finished and the log is drained."""
    run = resolve(ref)
    path = log_path(run)
    position = 0 if from_start else (path.stat().st_size if path.is_file() else 0)
    pending = ""
    while True:
        finished = queue.get(run.id).state in queue.FINISHED  # read before draining: no line is missed
        if path.is_file():
            with open(path, encoding="utf-8", errors="replace") as handle:
                handle.seek(position)
                chunk = handle.read()
                position = handle.tell()
            pending += chunk
            *lines, pending = pending.split("\n")
            yield from lines
        if finished:
            if pending:
                yield pending
            return
        time.sleep(poll_s)


def metric_series(ref: str, names: list[str] | None = None) -> dict[str, list[tuple[int, float]]]:
    return metrics.series(resolve(ref).id, names)


def metric_rows(ref: str) -> list[dict]:
    return metrics.rows(resolve(ref).id)


def progress(ref: str) -> metrics.Progress:
    """State, step, newest loss/lr/tokens-per-second, total steps and ETA (what a progress bar shows)."""
    return metrics.progress(resolve(ref))


def cancel(ref: str) -> str:
    """Cancel a run; returns what happened (cancelled at once, or the worker was asked to stop)."""
    return queue.request_cancel(resolve(ref).id)


def resume(ref: str) -> Run:
    """Put a failed or cancelled run back in the queue; it continues from its last complete checkpoint."""
    return queue.requeue(resolve(ref).id)


def reproduce(ref: str) -> Run:
    """Queue a new run from a run's recorded resolved config (same dataset version and seed)."""
    return training.reproduce(resolve(ref))


def wait(ref: str, timeout: float | None = None, poll_s: float = 0.2) -> Run:
    """Block until the run has finished (or ``timeout`` seconds passed); returns its record."""
    run = resolve(ref)
    deadline = None if timeout is None else time.monotonic() + timeout
    while run.state not in queue.FINISHED:
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
        run = queue.get(run.id)
    return run
