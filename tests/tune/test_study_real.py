"""One study end to end over the real recipe on a tiny random model: the real eval_loss path for
val_loss and pruning, and the real evaluation job on the validation split for metric objectives."""

from __future__ import annotations

from pathlib import Path

import pytest

from oikyo.evaluate import records
from oikyo.jobs import runs
from oikyo.tune import study

from studyhelpers import WorkerThreads, lr_space, runs_of, tune_env  # noqa: F401

pytestmark = pytest.mark.usefixtures("tune_env")

BASE = ["train.max_steps=4", "train.batch_size=4", "data.max_length=64", "train.eval_every=2",
        "checkpoint.save_every=4"]


@pytest.fixture
def real_recipe(monkeypatch):
    monkeypatch.delenv("OIKYO_RECIPE", raising=False)


def _real_study(tiny_model_dir: Path, tmp_path: Path, objectives: list[str]) -> None:
    import jobhelpers

    dataset = jobhelpers.make_dataset(tmp_path)
    record = study.create_study(None, BASE, dataset=dataset.id, model=str(tiny_model_dir), space=lr_space(),
                                objectives=objectives, n_trials=2, sampler="random")
    workers = WorkerThreads(1)
    try:
        info = study.run_study(record.id, log=lambda line: None, poll_s=0.1)
    finally:
        workers.stop()
    found = study.trials(record.id)
    assert info["state"] == "finished" and [t["state"] for t in found] == ["complete", "complete"], found
    for trial in found:
        [run_id] = trial["run_ids"]
        points = runs.metric_series(run_id, ["eval_loss"])["eval_loss"]
        assert [step for step, _ in points] == [2, 4]  # the real recipe's validation losses
        assert trial["values"]["val_loss"] == pytest.approx(min(v for _, v in points))
        [job] = trial["eval_runs"]
        [model_eval] = records.list_evaluations(group_id=job, role="model")
        assert model_eval.split == "validation" and model_eval.dataset_version_id == dataset.id
        assert trial["values"]["exact_match"] == pytest.approx(model_eval.metrics["exact_match"])
        if "forgetting" in objectives:
            assert trial["values"]["forgetting"] == pytest.approx(model_eval.forgetting["forgetting"])
        else:
            assert [e.role for e in records.list_evaluations(group_id=job)] == ["model"]  # no baselines needed
    assert all(r.trial_number is not None for r in runs_of(record.id))


def test_a_real_study_on_a_tiny_model(real_recipe, tiny_model_dir: Path, tmp_path):
    _real_study(tiny_model_dir, tmp_path, ["val_loss", "exact_match"])


@pytest.mark.slow  # the forgetting probe generates 60 answers per model and trial (~1 min on 2 cores)
def test_a_real_study_with_forgetting_as_an_objective(real_recipe, tiny_model_dir: Path, tmp_path):
    _real_study(tiny_model_dir, tmp_path, ["val_loss", "exact_match", "forgetting"])
