"""Evaluations as durable jobs in the shared queue (runs with ``kind = "eval"``).

:func:`submit_evaluation` checks everything that can be checked before any model is loaded (the
model, the dataset version and split, the metrics, the overlap guard), pins the model and the
dataset version in the spec, and queues a run of kind ``eval``. A worker claims it like a training
run (same leases, heartbeats, cancel and resume); :mod:`oikyo.jobs.execution` dispatches it here, to
:func:`execute`, which runs :func:`oikyo.evaluate.runner.run_evaluation` with progress reported as
metrics (``step`` = work items done, ``total_steps``) and returns the evaluation records. The
worker stores them in the same transaction that marks the job succeeded::

    run = submit_evaluation(EvalSpec(model="mv-1a2b", dataset="support:test"))
    runs.wait(run.id)
    evaluations = records.list_evaluations(group_id=run.id)
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from oikyo import workspace
from oikyo.evaluate import records
from oikyo.evaluate.runner import EvalSpec, prepare, run_evaluation, total_work
from oikyo.store.models import Evaluation, Run

KIND = "eval"


@dataclass
class EvalJobResult:
    """What :func:`execute` hands back to the worker (the shape it expects of a recipe's result)."""

    status: str  # "succeeded" | "cancelled"
    records: list[Evaluation] = field(default_factory=list)
    summary: str = ""
    output_dir: Path | None = None


def _config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def submit_evaluation(spec: EvalSpec, *, name: str | None = None) -> Run:
    """Validate and queue an evaluation job; raises OikyoError (nothing queued) on any problem."""
    from oikyo.jobs import queue
    from oikyo.store import db
    from oikyo.store.models import utcnow

    prepared = prepare(spec)  # resolves and guards now, so mistakes are reported before queuing
    pinned = EvalSpec.from_dict({**spec.to_dict(), "dataset": prepared.dataset_id, "split": prepared.split,
                                 "target": prepared.target.to_dict()})
    config = {**pinned.to_dict(), "kind": KIND, "total_work": total_work(prepared)}
    run_id = queue.new_run_id()
    run_dir = workspace.subdir("runs") / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / "eval.json").write_text(json.dumps(config, indent=1, sort_keys=True))
    label = f"eval {prepared.target.label} on {prepared.dataset_name}{':' + prepared.split if prepared.split else ''}"
    run = Run(id=run_id, name=(name or label)[:200], state=queue.QUEUED, kind=KIND, config=config,
              config_hash=_config_hash(config), dataset_version_id=prepared.dataset_id,
              base_model=prepared.target.base_model, seed=spec.seed, run_dir=str(run_dir),
              max_attempts=queue.DEFAULT_MAX_ATTEMPTS, attempts=0, resume_count=0, cancel_requested=False,
              created_at=utcnow())
    with db.session() as s:
        s.add(run)
        queue.add_event(s, run_id, "submitted", f"queued: {label}")
    return run


def execute(run: Run, *, on_metrics: Callable[[int, dict], None], should_stop: Callable[[], bool],
            log: Callable[[str], None]) -> EvalJobResult:
    """Run a claimed evaluation job (called by the worker through oikyo.jobs.execution)."""
    from oikyo.evaluate.backend import Stopped

    spec = EvalSpec.from_dict(run.config)
    prepared = prepare(spec)
    last = {"step": -1}

    def progress(done: int, total: int, phase: str) -> None:
        if done != last["step"]:
            last["step"] = done
            on_metrics(done, {"total_steps": total, "examples_done": done})

    log(f"evaluating {prepared.target.label} ({prepared.target.kind}) on {prepared.dataset_name}@{prepared.dataset_id}"
        f"{':' + prepared.split if prepared.split else ''}: {len(prepared.examples)} examples, systems "
        f"{', '.join(s.role for s in prepared.systems)}, metrics {', '.join(prepared.metric_names)}")
    try:
        found = run_evaluation(prepared, group_id=run.id, run_id=run.id, progress=progress, should_stop=should_stop,
                               cache_dir=Path(run.run_dir) / "eval", log=log)
    except Stopped:
        log("stopped before the evaluation finished; systems already done are kept for a resume")
        return EvalJobResult(status="cancelled")
    for ev in found:
        log(f"{ev.id} {records.system_name(ev)} ({ev.role}): "
            + ", ".join(f"{k} {v:.4g}" for k, v in ev.metrics.items() if isinstance(v, float)))
    summary = "evaluations " + ", ".join(ev.id for ev in found)
    return EvalJobResult(status="succeeded", records=found, summary=summary)


def new_group_id() -> str:
    return f"eg-{secrets.token_hex(4)}"
