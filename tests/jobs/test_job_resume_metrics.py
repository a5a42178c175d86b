"""A run taken over after its attempt was lost: the resume is counted, and its metrics hold each step once.

The lost attempt is staged in the store (claimed by a worker that never comes back, metrics written for
steps beyond its last checkpoint, the lease expired); a real worker then takes the run over with the fake
recipe. What the API, the CLI's series and the run page show is checked (issue 22).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from oikyo.jobs import metrics, queue, runs
from oikyo.jobs.execution import checkpoint_steps
from oikyo.jobs.metrics import MetricsWriter
from oikyo.jobs.worker import Worker
from oikyo.store import db
from oikyo.store.models import Run, utcnow

import fake_recipe as fake
from jobhelpers import submit

LOST_VALUE = 99.0  # what the lost attempt reported: never a fake-recipe loss


def _lose_an_attempt(run_id: str, steps: int, checkpoint: int | None) -> None:
    """A worker claims the run, stores ``steps`` steps of metrics, checkpoints at ``checkpoint`` and dies."""
    run = queue.claim("dead-worker", lease_s=30)
    assert run.id == run_id
    writer = MetricsWriter(run_id)
    for step in range(1, steps + 1):
        writer.add(step, {"loss": LOST_VALUE, "lr": 0.5})
    writer.flush()
    if checkpoint is not None:
        fake._save(Path(run.run_dir), checkpoint, None)
    with db.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def _run_page(run_id: str) -> tuple[str, dict]:
    """The run page's HTML and the REST API's metric series, as a logged-in browser gets them."""
    from oikyo.api.app import create_app

    token = "test-login-token-0123456789"
    with TestClient(create_app(token)) as client:
        assert client.post("/api/v1/login", json={"token": token}).status_code == 200
        api = client.get(f"/api/v1/runs/{run_id}/metrics").json()["series"]
        return client.get(f"/runs/{run_id}").text, api


@pytest.mark.parametrize("checkpoint, resumes", [(5, 1), (None, 0)])
def test_a_lost_attempt_is_counted_as_a_resume_and_its_steps_are_replaced(fake_recipe, dataset, model_dir,
                                                                          checkpoint, resumes):
    run = submit(dataset, model_dir, "train.max_steps=12", "checkpoint.save_every=5")
    _lose_an_attempt(run.id, steps=8, checkpoint=checkpoint)
    Worker(lease_s=2, heartbeat_s=0.25, poll_s=0.1).run(once=True)

    done = queue.get(run.id)
    assert done.state == "succeeded" and done.attempts == 2
    assert done.resume_count == resumes  # a start from step 0 is no resume
    kinds = [e.kind for e in runs.events(run.id)]
    assert kinds.count("resumed") == resumes

    loss = runs.metric_series(run.id, ["loss"])["loss"]
    assert [step for step, _ in loss] == list(range(1, 13))  # each step once
    kept = checkpoint or 0  # the steps up to the checkpoint keep the lost attempt's values
    expected = [LOST_VALUE] * kept + [fake.fake_loss(run.seed, s, 12) for s in range(kept + 1, 13)]
    assert [value for _, value in loss] == expected
    stored = [(r["step"], r["name"]) for r in metrics.rows(run.id)]
    assert len(stored) == len(set(stored))  # no duplicate rows behind the series either

    page, api = _run_page(run.id)
    assert [step for step, _ in api["loss"]] == list(range(1, 13))
    assert re.search(rf"\(resumed {resumes}×\)", page), "the run page shows the resume count"


def test_a_user_resume_is_counted_when_the_run_continues_not_when_it_is_queued(fake_recipe, dataset, model_dir):
    run = submit(dataset, model_dir, "train.max_steps=12", "checkpoint.save_every=5")
    _lose_an_attempt(run.id, steps=6, checkpoint=5)
    owner = queue.claim("second-worker", lease_s=30).lease_owner
    queue.fail(run.id, owner, "out of memory")  # the second attempt failed before it resumed
    assert queue.requeue(run.id).resume_count == 0
    Worker(lease_s=2, heartbeat_s=0.25, poll_s=0.1).run(once=True)
    done = queue.get(run.id)
    assert (done.state, done.resume_count) == ("succeeded", 1)
    assert [s for s, _ in runs.metric_series(run.id, ["loss"])["loss"]] == list(range(1, 13))


def test_a_checkpointed_step_is_stored_before_the_checkpoint_and_series_keep_the_newest_value(fake_recipe):
    [run_id] = [queue.submit(name="m", config={}, config_hash="0" * 64, base_model="tiny",
                             dataset_version_id=None, seed=0).id]
    durable = checkpoint_steps({"checkpoint": {"save_every": 4}, "train": {"max_steps": 10}})
    assert [s for s in range(1, 11) if durable(s)] == [4, 8, 10]
    writer = MetricsWriter(run_id, flush_seconds=3600, durable=durable)
    writer.add(3, {"loss": 3.0})
    assert metrics.series(run_id) == {}  # buffered
    writer.add(4, {"loss": 4.0})
    assert metrics.series(run_id) == {"loss": [(3, 3.0), (4, 4.0)]}  # stored before step 4's checkpoint
    writer.add(4, {"loss": 4.5})  # a late row for the same step (a worker that lost its lease)
    writer.flush()
    assert metrics.series(run_id) == {"loss": [(3, 3.0), (4, 4.5)]}
    assert metrics.drop_after(run_id, 3) == 2
    assert metrics.series(run_id) == {"loss": [(3, 3.0)]}
