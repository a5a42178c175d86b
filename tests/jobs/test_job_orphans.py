"""A run whose worker died while every other worker is busy: back in the queue within one lease, not
``running`` under a dead owner until some worker is free (found by the kill battery, issue 22)."""

from __future__ import annotations

import time

from sqlalchemy import update

from oikyo.jobs import execution, queue, runs
from oikyo.store import db
from oikyo.store.models import Run

from jobhelpers import submit


def _orphan_beside_a_busy_worker(dataset, model_dir, max_attempts: int = 3):
    """An orphaned run (claimed by a worker that never beats again, lease 0.2 s) and a busy worker's heartbeat."""
    busy = submit(dataset, model_dir, name="busy")
    assert queue.claim("busy-host-2-bbbbbb", lease_s=30).id == busy.id
    orphan = submit(dataset, model_dir, name="orphan")
    with db.session() as s:
        s.execute(update(Run).where(Run.id == orphan.id).values(max_attempts=max_attempts))
    assert queue.claim("dead-host-1-aaaaaa", lease_s=0.2).id == orphan.id
    time.sleep(0.3)  # the dead worker's lease expires; the busy one's does not
    return orphan, execution.Heartbeat(queue.get(busy.id), "busy-host-2-bbbbbb", 30, 0.1, lambda _line: None)


def test_a_busy_workers_heartbeat_puts_a_dead_workers_run_back_in_the_queue(backend, fake_recipe, dataset, model_dir):
    orphan, beat = _orphan_beside_a_busy_worker(dataset, model_dir)
    beat.run_once()
    back = queue.get(orphan.id)
    assert back.state == "queued" and back.lease_owner is None and back.attempts == 1  # the killed attempt counts
    assert "the lease of dead-host-1-aaaaaa expired" in runs.events(orphan.id)[-1].message
    assert queue.get(beat.job.id).state == "running"  # the busy worker's own run is untouched
    again = queue.claim("new-host-3-cccccc", lease_s=30)
    assert again.id == orphan.id and again.attempts == 2
    assert not queue.requeue_orphans()  # nothing else is orphaned


def test_an_orphan_that_used_up_its_attempts_fails_with_the_reason(backend, fake_recipe, dataset, model_dir):
    orphan, beat = _orphan_beside_a_busy_worker(dataset, model_dir, max_attempts=1)
    beat.run_once()
    failed = queue.get(orphan.id)
    assert failed.state == "failed" and "stopped responding 1 times" in failed.error
    assert queue.claim("new-host-3-cccccc", lease_s=30) is None
