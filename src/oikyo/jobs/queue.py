"""The durable job queue: the states of a run and every transition between them.

A run moves ``queued → running → succeeded | failed | cancelled``. A worker *claims* a run with
one atomic conditional UPDATE (the row must still be queued, or running with an expired lease)
under a unique lease owner and checks that exactly one row changed, so on SQLite and PostgreSQL
alike no run is ever held by two workers at once. While training, the worker extends its lease
with :func:`heartbeat`; a worker that dies leaves a running run whose lease expires, and the next
worker's :func:`claim` takes it over (the recipe then resumes from its last complete checkpoint).
Every later transition is conditional on the lease owner too, so a worker that lost its lease can
never overwrite what the new owner records. Finished runs are never claimed again; a user may put a
failed or cancelled run back in the queue with :func:`requeue`.

Usage::

    from oikyo.jobs import queue
    owner = queue.new_owner()
    run = queue.claim(owner, lease_s=60)          # None when nothing is waiting
    cancel = queue.heartbeat(run.id, owner, 60)   # raises LeaseLost when another worker took over
    queue.complete(run.id, owner)

Times come from the workers' clocks (UTC), so machines sharing a database need synchronized clocks.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import and_, delete, func, or_, select, update

from oikyo import workspace
from oikyo.errors import OikyoError
from oikyo.store import db
from oikyo.store.models import ModelVersion, Run, RunEvent, Worker, utcnow

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
DEFAULT_MAX_ATTEMPTS = 3  # claims of one run whose worker keeps dying before the run is failed
_CANDIDATES = 16


class LeaseLost(Exception):
    """This worker no longer holds the run (its lease expired and another worker claimed it)."""


def new_run_id() -> str:
    return f"run-{secrets.token_hex(4)}"


def new_owner() -> str:
    """A lease owner name unique across machines and processes: host, pid and a random suffix."""
    return f"{socket.gethostname()[:60]}-{os.getpid()}-{secrets.token_hex(3)}"


def aware(moment: datetime | None) -> datetime | None:
    """``moment`` as an aware UTC datetime (SQLite hands stored times back without a zone)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


def add_event(session, run_id: str, kind: str, message: str) -> None:
    session.add(RunEvent(run_id=run_id, kind=kind, message=message, time=utcnow()))


def _orphaned(now: datetime):
    """Running, but its worker's lease ran out (the worker died or lost contact)."""
    return and_(Run.state == RUNNING, Run.lease_expires_at < now)


def _claimable(now: datetime):
    return or_(Run.state == QUEUED, _orphaned(now))


# --- submitting and reading ---------------------------------------------------------------------


def submit(*, name: str, config: dict, config_hash: str, base_model: str, dataset_version_id: str | None,
           seed: int | None, run_id: str | None = None, run_dir: Path | None = None,
           reproduced_from: str | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
           study_id: str | None = None, trial_number: int | None = None) -> Run:
    """Put a new run in the queue; returns its record (``study_id``/``trial_number`` tag a tuning trial's run)."""
    run_id = run_id or new_run_id()
    run_dir = run_dir or workspace.subdir("runs") / run_id
    run = Run(id=run_id, name=name, state=QUEUED, config=config, config_hash=config_hash,
              dataset_version_id=dataset_version_id, base_model=base_model, seed=seed,
              run_dir=str(run_dir), reproduced_from=reproduced_from, max_attempts=max_attempts,
              attempts=0, resume_count=0, cancel_requested=False, created_at=utcnow(),
              study_id=study_id, trial_number=trial_number)
    with db.session() as s:
        s.add(run)
        note = f" (reproducing {reproduced_from})" if reproduced_from else ""
        add_event(s, run_id, "submitted", f"queued{note}")
    return run


def get(run_id: str) -> Run:
    """The run with exactly this id (see :func:`oikyo.jobs.runs.resolve` for prefixes)."""
    with db.session() as s:
        run = s.get(Run, run_id)
    if run is None:
        raise OikyoError(f"no run {run_id!r}; `oikyo runs list` shows them")
    return run


# --- claiming and holding a run -----------------------------------------------------------------


def claim(owner: str, lease_s: float) -> Run | None:
    """Take the oldest waiting run (or one whose worker stopped heart-beating) for ``owner``.

    Returns the claimed run, or None when nothing is claimable. Safe with any number of workers:
    the UPDATE only matches a row that is still claimable, and only the worker whose UPDATE
    changed the row gets it.
    """
    while True:
        now = utcnow()
        with db.session() as s:
            candidates = s.execute(
                select(Run.id, Run.state, Run.attempts, Run.max_attempts, Run.lease_owner)
                .where(_claimable(now)).order_by(Run.created_at, Run.id).limit(_CANDIDATES)
            ).all()
        if not candidates:
            return None
        for row in candidates:
            if row.state == RUNNING and row.attempts >= row.max_attempts:
                _give_up(row, now)
                continue
            if _try_claim(row, owner, lease_s, now):
                return get(row.id)


def _try_claim(row, owner: str, lease_s: float, now: datetime) -> bool:
    with db.session() as s:
        result = s.execute(
            update(Run).where(Run.id == row.id, _claimable(now))
            .values(state=RUNNING, lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s),
                    attempts=Run.attempts + 1, started_at=func.coalesce(Run.started_at, now))
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return False
        if row.state == RUNNING:
            message = (f"reclaimed by {owner} (attempt {row.attempts + 1}): the lease of {row.lease_owner} "
                       "expired; resuming from the last complete checkpoint")
        else:
            message = f"claimed by {owner} (attempt {row.attempts + 1})"
        add_event(s, row.id, "claimed", message)
    return True


def _give_up(row, now: datetime) -> None:
    """Fail a run whose workers died ``max_attempts`` times in a row (it would likely kill the next one)."""
    reason = (f"the worker running it stopped responding {row.attempts} times (crashed, killed or out of "
              f"memory; last owner {row.lease_owner}); `oikyo runs resume {row.id}` tries again")
    with db.session() as s:
        result = s.execute(
            update(Run).where(Run.id == row.id, _orphaned(now))
            .values(state=FAILED, error=reason, finished_at=now, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            add_event(s, row.id, "failed", reason)


def requeue_orphans() -> list[str]:
    """Put the running runs whose lease expired (their worker died) back in the queue, or fail those
    that used up ``max_attempts``; returns their ids.

    :func:`claim` takes such a run over only when a worker is free; busy workers call this at each
    heartbeat, so that while every worker is busy no run shows ``running`` without a live owner for
    longer than one lease. The attempt still counts towards ``max_attempts``.
    """
    now = utcnow()
    with db.session() as s:
        rows = s.execute(select(Run.id, Run.attempts, Run.max_attempts, Run.lease_owner)
                         .where(_orphaned(now))).all()
    moved = []
    for row in rows:
        if row.attempts >= row.max_attempts:
            _give_up(row, now)
            moved.append(row.id)
            continue
        with db.session() as s:
            result = s.execute(
                update(Run).where(Run.id == row.id, Run.lease_owner == row.lease_owner, _orphaned(now))
                .values(state=QUEUED, lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                add_event(s, row.id, "released", f"the lease of {row.lease_owner} expired (its worker stopped "
                          f"responding; attempt {row.attempts} of {row.max_attempts}); back in the queue to resume "
                          "from the last complete checkpoint")
                moved.append(row.id)
    return moved


def heartbeat(run_id: str, owner: str, lease_s: float) -> bool:
    """Extend ``owner``'s lease on a running run; returns whether a cancel was requested.

    Raises :class:`LeaseLost` when the run is no longer ``owner``'s (taken over or finished).
    """
    with db.session() as s:
        result = s.execute(
            update(Run).where(Run.id == run_id, Run.lease_owner == owner, Run.state == RUNNING)
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            raise LeaseLost(run_id)
        return bool(s.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


def _finish(run_id: str, owner: str, state: str, message: str, *, error: str | None = None,
            extra: list | None = None, values: dict | None = None) -> None:
    """Move ``owner``'s running run to ``state`` (and add ``extra`` records) in one transaction."""
    now = utcnow()
    with db.session() as s:
        result = s.execute(
            update(Run).where(Run.id == run_id, Run.lease_owner == owner, Run.state == RUNNING)
            .values(state=state, error=error, lease_expires_at=None,
                    finished_at=None if state == QUEUED else now, **(values or {}))
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            raise LeaseLost(run_id)
        for record in extra or []:
            s.add(record)
        add_event(s, run_id, state if state != QUEUED else "released", message)


def complete(run_id: str, owner: str, model_version: ModelVersion | None = None) -> None:
    """Mark the run succeeded and register its model version, atomically."""
    note = f"; model version {model_version.id}" if model_version is not None else ""
    _finish(run_id, owner, SUCCEEDED, f"succeeded{note}", extra=[model_version] if model_version else None)


def fail(run_id: str, owner: str, reason: str) -> None:
    """Mark the run failed with a readable ``reason``; its files stay where they are."""
    _finish(run_id, owner, FAILED, reason, error=reason)


def mark_cancelled(run_id: str, owner: str, message: str = "cancelled on request") -> None:
    _finish(run_id, owner, CANCELLED, message, error=None)


def release(run_id: str, owner: str, reason: str) -> None:
    """Give a running run back to the queue (the worker is shutting down); another worker resumes it."""
    _finish(run_id, owner, QUEUED, reason, values={"lease_owner": None, "attempts": Run.attempts - 1})


# --- user requests ------------------------------------------------------------------------------


def request_cancel(run_id: str) -> str:
    """Cancel a run: at once when queued or orphaned, else ask its worker to stop. Returns what happened."""
    for _ in range(5):
        run = get(run_id)
        now = utcnow()
        if run.state in FINISHED:
            raise OikyoError(f"run {run_id} already {run.state}; nothing to cancel")
        orphaned = run.state == RUNNING and (aware(run.lease_expires_at) or now) < now
        with db.session() as s:
            if run.state == QUEUED or orphaned:
                where = (Run.state == QUEUED) if run.state == QUEUED else _orphaned(now)
                values = {"state": CANCELLED, "finished_at": now, "cancel_requested": True,
                          "lease_expires_at": None}
                message = "cancelled before it started" if run.state == QUEUED else (
                    "cancelled (no worker held it); its last checkpoint is kept")
            else:
                where = and_(Run.state == RUNNING, Run.lease_owner == run.lease_owner)
                values = {"cancel_requested": True}
                message = "cancel requested; the worker saves a checkpoint and stops at the next step"
            result = s.execute(update(Run).where(Run.id == run_id, where).values(**values)
                               .execution_options(synchronize_session=False))
            if result.rowcount == 1:
                add_event(s, run_id, "cancel", message)
                return message
    raise OikyoError(f"run {run_id} kept changing state; try again")


def requeue(run_id: str) -> Run:
    """Put a failed or cancelled run back in the queue; it resumes from its last complete checkpoint."""
    run = get(run_id)
    if run.state == SUCCEEDED:
        raise OikyoError(f"run {run_id} succeeded; nothing to resume (`oikyo runs reproduce {run_id}` "
                         "trains it again as a new run)")
    if run.state not in (FAILED, CANCELLED):
        raise OikyoError(f"run {run_id} is {run.state}; only failed or cancelled runs can be resumed")
    with db.session() as s:
        result = s.execute(
            update(Run).where(Run.id == run_id, Run.state.in_((FAILED, CANCELLED)))
            .values(state=QUEUED, error=None, cancel_requested=False, finished_at=None, lease_owner=None,
                    lease_expires_at=None, attempts=0)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            raise OikyoError(f"run {run_id} changed state meanwhile; look again with `oikyo runs show {run_id}`")
        add_event(s, run_id, "requeued", f"queued again after it {run.state}; continues from its last checkpoint")
    return get(run_id)


def record_resume(run_id: str, owner: str, step: int) -> bool:
    """Count that ``owner``'s attempt continues from the complete checkpoint at ``step`` (``resume_count``).

    The worker calls it as an attempt starts, whatever ended the attempt before (a lost lease, a killed
    worker, a shutdown or a user's resume). Returns False, counting nothing, when ``owner`` no longer
    holds the run.
    """
    with db.session() as s:
        result = s.execute(
            update(Run).where(Run.id == run_id, Run.lease_owner == owner, Run.state == RUNNING)
            .values(resume_count=Run.resume_count + 1)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return False
        add_event(s, run_id, "resumed", f"{owner} continues from the complete checkpoint at step {step}")
    return True


# --- the workers themselves ---------------------------------------------------------------------


def worker_seen(owner: str, state: str, run_id: str | None = None) -> None:
    """Record that worker ``owner`` is alive (``idle``/``busy``) or has ``stopped``."""
    now = utcnow()
    with db.session() as s:
        record = s.get(Worker, owner)
        if record is None:
            s.add(Worker(id=owner, hostname=socket.gethostname()[:200], pid=os.getpid(), state=state,
                         current_run_id=run_id, started_at=now, last_seen_at=now))
        else:
            record.state, record.current_run_id, record.last_seen_at = state, run_id, now


def live_workers(max_age_s: float) -> list[Worker]:
    """Workers that reported themselves alive within the last ``max_age_s`` seconds."""
    since = utcnow() - timedelta(seconds=max_age_s)
    with db.session() as s:
        return list(s.scalars(select(Worker).where(Worker.state != "stopped", Worker.last_seen_at >= since)))


def forget_stopped_workers(older_than_s: float = 7 * 24 * 3600) -> None:
    """Drop the records of workers not seen for a week (they are only kept to tell who ran what lately)."""
    since = utcnow() - timedelta(seconds=older_than_s)
    with db.session() as s:
        s.execute(delete(Worker).where(Worker.last_seen_at < since))
