"""The queue's state machine and its claim: no run is ever held by two workers at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import update

from oikyo.errors import OikyoError
from oikyo.jobs import queue, runs
from oikyo.store import db
from oikyo.store.models import Run, utcnow

from jobhelpers import JOBS_TESTS


def _submit(n: int = 1, **kwargs) -> list[str]:
    return [queue.submit(name=f"job-{i}", config={"i": i}, config_hash=f"{i:064x}", base_model="tiny",
                         dataset_version_id=None, seed=i, **kwargs).id for i in range(n)]


def _expire(run_id: str) -> None:
    with db.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def _events(run_id: str) -> list[str]:
    return [e.kind for e in runs.events(run_id)]


def test_a_run_goes_queued_running_succeeded_and_is_never_claimed_again():
    [run_id] = _submit()
    assert queue.get(run_id).state == queue.QUEUED
    run = queue.claim("w1", lease_s=30)
    assert (run.id, run.state, run.lease_owner, run.attempts) == (run_id, "running", "w1", 1)
    before = queue.aware(run.lease_expires_at)
    time.sleep(0.01)
    assert queue.heartbeat(run_id, "w1", 30) is False
    assert queue.aware(queue.get(run_id).lease_expires_at) > before
    queue.complete(run_id, "w1")
    done = queue.get(run_id)
    assert done.state == "succeeded" and done.finished_at is not None and done.started_at is not None
    assert queue.claim("w2", lease_s=30) is None
    _expire(run_id)  # even with a lapsed lease, a finished run is never claimed
    assert queue.claim("w2", lease_s=30) is None
    with pytest.raises(OikyoError, match="already succeeded"):
        queue.request_cancel(run_id)
    with pytest.raises(OikyoError, match="reproduce"):
        queue.requeue(run_id)
    assert _events(run_id) == ["submitted", "claimed", "succeeded"]


@pytest.mark.parametrize("final", ["failed", "cancelled"])
def test_finished_runs_are_not_claimed_until_the_user_resumes_them(final):
    [run_id] = _submit()
    queue.claim("w1", lease_s=30)
    if final == "failed":
        queue.fail(run_id, "w1", "out of memory: lower the batch size")
        assert queue.get(run_id).error == "out of memory: lower the batch size"
    else:
        queue.mark_cancelled(run_id, "w1")
    _expire(run_id)
    assert queue.claim("w2", lease_s=30) is None
    resumed = queue.requeue(run_id)
    # counted when an attempt continues from a checkpoint (the worker's record_resume), not when queued
    assert (resumed.state, resumed.resume_count, resumed.attempts, resumed.error) == ("queued", 0, 0, None)
    again = queue.claim("w2", lease_s=30)
    assert again.id == run_id and again.attempts == 1 and again.lease_owner == "w2"
    with pytest.raises(OikyoError, match="is running"):
        queue.requeue(run_id)


def test_an_expired_lease_is_reclaimed_and_the_old_owner_can_record_nothing():
    [run_id] = _submit()
    queue.claim("dead-worker", lease_s=30)
    assert queue.claim("w2", lease_s=30) is None  # the lease is still good
    _expire(run_id)
    run = queue.claim("w2", lease_s=30)
    assert (run.id, run.lease_owner, run.attempts) == (run_id, "w2", 2)
    with pytest.raises(queue.LeaseLost):
        queue.heartbeat(run_id, "dead-worker", 30)
    with pytest.raises(queue.LeaseLost):
        queue.complete(run_id, "dead-worker")
    with pytest.raises(queue.LeaseLost):
        queue.fail(run_id, "dead-worker", "late")
    assert queue.get(run_id).state == "running"
    queue.complete(run_id, "w2")
    assert queue.get(run_id).state == "succeeded"
    assert "the lease of dead-worker expired" in " ".join(e.message for e in runs.events(run_id))


def test_a_run_whose_workers_keep_dying_is_failed_with_a_reason():
    [run_id] = _submit(max_attempts=2)
    queue.claim("w1", lease_s=30)
    _expire(run_id)
    assert queue.claim("w2", lease_s=30).attempts == 2
    _expire(run_id)
    assert queue.claim("w3", lease_s=30) is None
    run = queue.get(run_id)
    assert run.state == "failed"
    assert "stopped responding 2 times" in run.error and f"oikyo runs resume {run_id}" in run.error


def test_cancel_queued_running_and_orphaned_runs():
    queued, running, orphaned = _submit(3)
    assert queue.request_cancel(queued) == "cancelled before it started"
    assert queue.get(queued).state == "cancelled"
    assert queue.claim("w1", 30).id == running
    assert "cancel requested" in queue.request_cancel(running)
    assert queue.get(running).state == "running"
    assert queue.heartbeat(running, "w1", 30) is True  # the worker learns of it on its next heartbeat
    queue.mark_cancelled(running, "w1")
    assert queue.get(running).state == "cancelled"
    assert queue.claim("w2", 30).id == orphaned
    _expire(orphaned)  # its worker died: nobody would ever see the request, so cancel at once
    assert "no worker held it" in queue.request_cancel(orphaned)
    assert queue.get(orphaned).state == "cancelled"
    assert queue.claim("w3", 30) is None


def test_a_released_run_goes_back_to_the_queue_without_using_an_attempt():
    [run_id] = _submit()
    queue.claim("w1", 30)
    queue.release(run_id, "w1", "worker shut down")
    run = queue.get(run_id)
    assert (run.state, run.lease_owner, run.attempts) == ("queued", None, 0)
    assert queue.claim("w2", 30).attempts == 1


def _race_threads(n_threads: int) -> list[str]:
    """``n_threads`` workers claim until the queue is empty, all starting at once; the ids they won."""
    db.engine()
    barrier = threading.Barrier(n_threads)
    won: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claimer(index: int) -> None:
        try:
            barrier.wait()
            while (run := queue.claim(f"thread-{index}", lease_s=60)) is not None:
                with lock:
                    won.append(run.id)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return won


def test_threads_racing_for_one_run_produce_exactly_one_winner(backend):
    [run_id] = _submit()
    assert _race_threads(8) == [run_id]


def test_threads_claim_every_run_exactly_once(backend):
    ids = _submit(30)
    won = _race_threads(6)
    assert Counter(won).most_common(1)[0][1] == 1, "a run was claimed twice"
    assert sorted(won) == sorted(ids)


def test_threads_reclaim_every_expired_run_exactly_once(backend):
    ids = _submit(12)
    for _ in ids:
        queue.claim("dead-worker", 60)
    for run_id in ids:
        _expire(run_id)
    won = _race_threads(6)
    assert sorted(won) == sorted(ids) and len(set(won)) == len(won)
    assert all(queue.get(run_id).attempts == 2 for run_id in ids)


def test_worker_processes_claim_every_run_exactly_once(backend, tmp_path):
    ids = _submit(40)
    go = tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, str(JOBS_TESTS / "claim_race.py"), str(go), "60"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
                 for _ in range(4)]
    for process in processes:  # every process has opened the store before any of them claims
        assert process.stdout.readline().strip() == "ready", process.stderr.read()
    go.touch()
    won = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        won += json.loads(stdout.strip().splitlines()[-1])
    assert len(won) == len(set(won)), f"runs claimed twice: {[k for k, v in Counter(won).items() if v > 1]}"
    assert sorted(won) == sorted(ids)
