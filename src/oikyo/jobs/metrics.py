"""Live training metrics: written in small batches while a run trains, read while it goes on.

The worker hands :class:`MetricsWriter` whatever the recipe reports (``on_metrics(step, {...})``);
rows go to the ``metrics`` table at least every second, and at once for an evaluation and for a step
the recipe checkpoints after (``durable``), so the CLI, the REST API and the dashboard can follow a
run by polling. :func:`progress` turns the newest rows into what a progress bar shows: step, loss,
learning rate, tokens/s and an ETA from the step rate.

A resumed run reports again the steps after its checkpoint: as an attempt starts, :func:`drop_after`
deletes what the lost attempt stored after that step, and the steps up to it were stored before the
checkpoint was written, so every step is stored once, with the values of the attempt that counts.

Usage::

    writer = MetricsWriter(run_id)
    writer.add(10, {"loss": 2.3, "lr": 1e-4})      # from the recipe's on_metrics
    writer.flush()
    series(run_id)["loss"]                           # [(step, value), ...]
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import delete, func, insert, select

from oikyo.store import db
from oikyo.store.models import Metric, Run, utcnow

log = logging.getLogger("oikyo.jobs")

FLUSH_ROWS = 64
FLUSH_SECONDS = 1.0
RATE_WINDOW = 20  # steps used to estimate the step rate for the ETA


class MetricsWriter:
    """Buffers metric rows and writes them in small batches (one INSERT per batch)."""

    def __init__(self, run_id: str, *, sinks: list | None = None, warn: Callable[[str], None] | None = None,
                 flush_rows: int = FLUSH_ROWS, flush_seconds: float = FLUSH_SECONDS,
                 durable: Callable[[int], bool] | None = None):
        self.run_id = run_id
        # durable(step): the recipe writes a checkpoint after this step, so its rows are stored first
        # (a kill after the checkpoint must not lose steps that the next attempt will not train again)
        self.durable = durable or (lambda step: False)
        self.sinks = sinks or []  # exporters (TensorBoard, MLflow, W&B) fed every report
        self.warn = warn or log.warning
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self._rows: list[dict] = []
        self._last_flush = time.monotonic()
        self._warned_nonfinite = False

    def add(self, step: int, values: dict) -> None:
        """Record one report; numbers only (NaN and infinities are reported once in the log, not stored)."""
        now = utcnow()
        numeric = {}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                if not self._warned_nonfinite:
                    self.warn(f"step {step}: {name} is {value}; non-finite values are not stored")
                    self._warned_nonfinite = True
                continue
            numeric[str(name)[:64]] = float(value)
            self._rows.append({"run_id": self.run_id, "step": int(step), "name": str(name)[:64],
                               "value": float(value), "time": now})
        for sink in self.sinks:
            sink.log(int(step), numeric)
        due = time.monotonic() - self._last_flush >= self.flush_seconds
        if len(self._rows) >= self.flush_rows or due or "eval_loss" in numeric or self.durable(int(step)):
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows; on a database error keep them and try again with the next batch."""
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        try:
            with db.session() as s:
                s.execute(insert(Metric), rows)
        except Exception as error:  # noqa: BLE001 - a busy database must not kill the training
            self._rows = rows + self._rows
            self.warn(f"could not write {len(rows)} metric rows yet ({error.__class__.__name__}); will retry")


def drop_after(run_id: str, step: int) -> int:
    """Delete the run's rows of steps after ``step`` (an attempt resuming there reports them again);
    returns how many were deleted."""
    with db.session() as s:
        return s.execute(delete(Metric).where(Metric.run_id == run_id, Metric.step > step)).rowcount


def series(run_id: str, names: list[str] | None = None,
           since_step: int | None = None) -> dict[str, list[tuple[int, float]]]:
    """Every stored value of a run per metric name, in step order, one per step (the newest):
    ``{"loss": [(1, 2.3), ...]}`` (only steps after ``since_step`` when given)."""
    query = select(Metric.name, Metric.step, Metric.value).where(Metric.run_id == run_id)
    if names:
        query = query.where(Metric.name.in_(names))
    if since_step is not None:
        query = query.where(Metric.step > since_step)
    out: dict[str, list[tuple[int, float]]] = {}
    with db.session() as s:
        for name, step, value in s.execute(query.order_by(Metric.name, Metric.step, Metric.id)):
            points = out.setdefault(name, [])
            if points and points[-1][0] == step:  # written twice (a late row of a lost attempt): the newest wins
                points[-1] = (step, value)
            else:
                points.append((step, value))
    return out


@dataclass
class Updates:
    """What a live follower has not seen yet: the run's state and the new values, grouped by step."""

    state: str
    steps: list[tuple[int, dict[str, float]]]  # [(step, {name: value}), ...] in the order written
    last_id: int  # pass back as ``after_id`` next time
    more: bool  # the batch was full: ask again at once

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled") and not self.more


def updates(run_id: str, *, after_id: int = 0, since_step: int | None = None, limit: int = 5000) -> Updates:
    """Metric rows written after row ``after_id`` (and after step ``since_step``), for following a run live.

    One indexed query per call (plus the run's state, read first: a run seen finished has all its
    rows in the batch, so a follower stops once ``finished`` without missing any). A step whose values
    were written in two batches (loss, then eval_loss) appears once per batch.
    """
    with db.session() as s:
        state = s.scalar(select(Run.state).where(Run.id == run_id))
        query = (select(Metric.id, Metric.step, Metric.name, Metric.value)
                 .where(Metric.run_id == run_id, Metric.id > after_id).order_by(Metric.id).limit(limit))
        if since_step is not None:
            query = query.where(Metric.step > since_step)
        found = s.execute(query).all()
    steps: dict[int, dict[str, float]] = {}
    for _id, step, name, value in found:
        steps.setdefault(step, {})[name] = value
    last = found[-1][0] if found else after_id
    return Updates(state=state or "unknown", steps=list(steps.items()), last_id=last, more=len(found) >= limit)


def rows(run_id: str) -> list[dict]:
    """Every metric row of a run (step, name, value, time) in the order written."""
    with db.session() as s:
        found = s.execute(select(Metric.step, Metric.name, Metric.value, Metric.time)
                          .where(Metric.run_id == run_id).order_by(Metric.id)).all()
    return [{"step": step, "name": name, "value": value, "time": moment.isoformat()}
            for step, name, value, moment in found]


def latest(run_id: str) -> dict[str, tuple[int, float]]:
    """The newest (step, value) of every metric of a run."""
    with db.session() as s:
        newest = (select(Metric.name, func.max(Metric.id).label("id")).where(Metric.run_id == run_id)
                  .group_by(Metric.name).subquery())
        found = s.execute(select(Metric.name, Metric.step, Metric.value).join(newest, Metric.id == newest.c.id)).all()
    return {name: (step, value) for name, step, value in found}


@dataclass
class Progress:
    """What a progress display shows about a run right now."""

    run_id: str
    state: str
    step: int = 0
    total_steps: int | None = None
    values: dict[str, float] = field(default_factory=dict)  # newest loss, lr, tokens_per_s, eval_loss ...
    steps_per_s: float | None = None
    eta_s: float | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")


def progress(run: Run) -> Progress:
    """The run's state, newest metrics, total steps (when known) and ETA from the recent step rate."""
    newest = latest(run.id)
    step = max((s for s, _ in newest.values()), default=0)
    values = {name: value for name, (_, value) in newest.items()}
    total = _total_steps(run.config, values, step)
    rate = _step_rate(run.id)
    eta = None
    if total and rate and step < total:
        eta = (total - step) / rate
    return Progress(run_id=run.id, state=run.state, step=step, total_steps=total, values=values,
                    steps_per_s=rate, eta_s=eta, error=run.error)


def _total_steps(config: dict, values: dict[str, float], step: int) -> int | None:
    """Total optimizer steps: reported by the recipe, set in the config, or estimated from the epoch."""
    if values.get("total_steps"):
        return int(values["total_steps"])
    train = (config or {}).get("train") or {}
    max_steps = train.get("max_steps")
    if isinstance(max_steps, int) and max_steps > 0:
        return max_steps
    epochs, epoch = train.get("epochs") or train.get("num_epochs"), values.get("epoch")
    if isinstance(epochs, (int, float)) and epochs > 0 and epoch and epoch > 0 and step > 0:
        return max(step, round(step * epochs / epoch))
    return None


def _step_rate(run_id: str) -> float | None:
    """Steps per second over the last few reported steps (None until there are two of them)."""
    with db.session() as s:
        points = s.execute(select(Metric.step, Metric.time).where(Metric.run_id == run_id, Metric.name == "loss")
                           .order_by(Metric.id.desc()).limit(RATE_WINDOW)).all()
    if len(points) < 2:
        return None
    (last_step, last_time), (first_step, first_time) = points[0], points[-1]
    seconds = (last_time - first_time).total_seconds()
    if seconds <= 0 or last_step <= first_step:
        return None
    return (last_step - first_step) / seconds
