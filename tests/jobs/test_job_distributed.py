"""A queued run with train.nproc=2 through a real worker: torchrun under the worker, rank 0's metrics in
the store, checkpoints recorded, an adapter model version, and the curve of the same run in one process."""

from __future__ import annotations

from pathlib import Path

import pytest

from oikyo.jobs import checkpoints, model_versions, queue, runs
from oikyo.jobs.worker import Worker

from jobhelpers import make_dataset, submit

SETTINGS = ("train.max_steps=6", "train.batch_size=4", "data.max_length=64", "train.eval_every=3",
            "checkpoint.save_every=3", "checkpoint.keep_best=1", "lora.dropout=0", "train.num_threads=1")


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    from oikyo.models import bundled
    from oikyo.models.loading import tiny_model_dir

    try:
        bundled.bundled_gguf_path()
    except bundled.BundledModelMissing as error:
        pytest.skip(str(error))
    tokenizer = bundled.ensure_bundled_tokenizer(models_dir=tmp_path_factory.mktemp("tokenizer"))
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "tiny", tokenizer)


def test_a_worker_runs_a_two_process_run_like_a_one_process_run(monkeypatch, small_model, tmp_path):
    monkeypatch.delenv("OIKYO_RECIPE", raising=False)
    dataset = make_dataset(tmp_path)
    worker = Worker(lease_s=10, heartbeat_s=0.5, poll_s=0.1)

    run = submit(dataset, small_model, *SETTINGS, "train.nproc=2", name="two")
    worker.run(once=True)
    done = queue.get(run.id)
    assert done.state == "succeeded", done.error
    log = (Path(run.run_dir) / "train.log").read_text()
    assert "Launching 2 training processes with torchrun" in log and "processes=2" in log
    assert log.count("Saved checkpoint step-000006") == 1  # rank 0 alone speaks
    curve = dict(runs.metric_series(run.id, ["loss"])["loss"])
    assert sorted(curve) == [1, 2, 3, 4, 5, 6]
    [mv] = model_versions.list_versions(run_id=run.id)
    assert mv.kind == "adapter" and (Path(mv.path) / "adapter_model.safetensors").is_file()
    recorded = checkpoints.list_checkpoints(run.id)
    assert recorded and all(Path(c.path, "COMPLETE").exists() and Path(c.path, "dcp").is_dir() for c in recorded)

    single = submit(dataset, small_model, *SETTINGS, name="one")
    worker.run(once=True)
    assert queue.get(single.id).state == "succeeded"
    reference = dict(runs.metric_series(single.id, ["loss"])["loss"])
    assert max(abs(reference[s] - curve[s]) for s in curve) <= 1e-5
