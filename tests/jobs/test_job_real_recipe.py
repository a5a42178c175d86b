"""The whole job path over the real recipe (oikyo.train) on a tiny random model: train, register,
reproduce with an identical loss curve, and survive a SIGKILLed worker by resuming exactly."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from oikyo.jobs import checkpoints, model_versions, queue, runs
from oikyo.jobs.worker import Worker

from jobhelpers import make_dataset, start_worker_process, submit, wait_for

SETTINGS = ("train.batch_size=4", "data.max_length=64", "train.eval_every=3", "checkpoint.save_every=3",
            "checkpoint.keep_best=1")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 random Llama with the bundled tokenizer (built once for this module)."""
    from oikyo.models import bundled
    from oikyo.models.loading import tiny_model_dir

    try:
        bundled.bundled_gguf_path()
    except bundled.BundledModelMissing as error:
        pytest.skip(str(error))
    tokenizer = bundled.ensure_bundled_tokenizer(models_dir=tmp_path_factory.mktemp("tokenizer"))
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "tiny", tokenizer)


@pytest.fixture
def real_recipe(monkeypatch):
    monkeypatch.delenv("OIKYO_RECIPE", raising=False)
    monkeypatch.setenv("OIKYO_WORKER_LEASE_S", "4")
    monkeypatch.setenv("OIKYO_WORKER_HEARTBEAT_S", "0.5")
    monkeypatch.setenv("OIKYO_WORKER_POLL_S", "0.2")


def _worker() -> Worker:
    return Worker(lease_s=4, heartbeat_s=0.5, poll_s=0.1)


def _curve(run_id: str) -> dict[int, float]:
    """The loss per step (the last value reported for a step that was trained twice)."""
    return dict(runs.metric_series(run_id, ["loss"])["loss"])


def test_a_real_run_trains_registers_and_reproduces_with_the_same_curve(real_recipe, tiny_model, tmp_path):
    dataset = make_dataset(tmp_path)
    run = submit(dataset, tiny_model, "train.max_steps=6", *SETTINGS)
    _worker().run(once=True)
    done = queue.get(run.id)
    assert done.state == "succeeded", done.error
    curve = _curve(run.id)
    assert sorted(curve) == [1, 2, 3, 4, 5, 6]
    [mv] = model_versions.list_versions(run_id=run.id)
    assert mv.kind == "adapter" and (Path(mv.path) / "adapter_model.safetensors").is_file()
    assert mv.lineage["dataset_hash"] == dataset.content_hash and "peft" in mv.lineage["packages"]
    recorded = checkpoints.list_checkpoints(run.id)
    assert recorded and all(Path(c.path, "COMPLETE").exists() for c in recorded)
    assert sum(c.is_best for c in recorded) == 1 and all(c.eval_loss is not None for c in recorded)

    again = runs.reproduce(run.id)
    _worker().run(once=True)
    assert queue.get(again.id).state == "succeeded"
    assert _curve(again.id) == curve  # CPU training from the recorded config: the identical curve


@pytest.mark.slow  # two worker processes import torch and transformers (~1 min on 2 cores)
def test_a_real_run_survives_a_killed_worker_and_resumes_exactly(real_recipe, tiny_model, tmp_path):
    dataset = make_dataset(tmp_path)
    steps = ("train.max_steps=12", *SETTINGS)
    run = submit(dataset, tiny_model, *steps)
    first = start_worker_process(log=tmp_path / "w1.log")
    try:
        wait_for(lambda: (checkpoints.latest_step(Path(run.run_dir)) or 0) >= 3, timeout=180,
                 message="the first checkpoint")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
    interrupted = queue.get(run.id)
    assert interrupted.state == "running", "the run finished before the kill; make it longer"
    resume_step = checkpoints.latest_step(Path(run.run_dir))
    second = start_worker_process("--idle-exit", "60", log=tmp_path / "w2.log")
    try:
        done = wait_for(lambda: (r := queue.get(run.id)).state in queue.FINISHED and r, timeout=240,
                        message="the resumed run to finish")
    finally:
        second.terminate()
        second.wait(timeout=60)
    assert done.state == "succeeded" and done.attempts == 2, done.error
    assert f"step {resume_step}" in "\n".join(runs.read_log(run.id))

    reference = submit(dataset, tiny_model, *steps)  # the same run, never interrupted
    _worker().run(once=True)
    expected, resumed = _curve(reference.id), _curve(run.id)
    assert sorted(resumed) == list(range(1, 13))
    for step in range(resume_step + 1, 13):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
