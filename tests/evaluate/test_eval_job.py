"""Evaluation end to end through the job system on the tiny model: two real LoRA runs, eval jobs, stored
evaluations with every field, the leaderboard, compare (deltas, CIs, config diff), resume from cache."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from oikyo.evaluate import forgetting, jobs, records
from oikyo.evaluate.compare import compare
from oikyo.evaluate.runner import EvalSpec, run_evaluation
from oikyo.jobs import queue, runs
from oikyo.jobs.worker import Worker
from oikyo.store import db
from oikyo.store.models import Run

from evalhelpers import make_json_dataset

TRAIN = ("train.max_steps=3", "train.batch_size=4", "data.max_length=64", "checkpoint.save_every=3",
         "train.eval_every=3", "checkpoint.keep_best=1")


@pytest.fixture
def real_recipe(monkeypatch):
    monkeypatch.delenv("OIKYO_RECIPE", raising=False)
    monkeypatch.setattr(forgetting, "MAX_NEW_TOKENS", 3)  # the probe's answers: short on a random model


def _worker() -> Worker:
    return Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.1)


def _train(dataset, model_dir, *extra: str) -> Run:
    from oikyo.jobs import training

    run = training.submit_training(None, [*TRAIN, *extra], dataset=dataset.id, model=str(model_dir))
    _worker().run(once=True)
    done = queue.get(run.id)
    assert done.state == "succeeded", done.error
    return done


def test_eval_jobs_store_evaluations_rank_and_compare(real_recipe, tiny_model_dir, tmp_path):
    dataset = make_json_dataset(tmp_path, "items", 30)
    first = _train(dataset, tiny_model_dir, "train.lr=0.0002")
    second = _train(dataset, tiny_model_dir, "train.lr=0.01")

    job = jobs.submit_evaluation(EvalSpec(model=first.id, max_new_tokens=5, few_shot_k=2))
    assert job.kind == "eval" and job.state == "queued" and job.dataset_version_id == dataset.id
    _worker().run(once=True)
    done = queue.get(job.id)
    assert done.state == "succeeded", done.error
    group = records.group(records.list_evaluations(group_id=job.id, limit=1)[0])
    assert [e.role for e in group] == ["model", "base", "few_shot"]
    model = group[0]
    [mv] = [v for v in __import__("oikyo.jobs.model_versions", fromlist=["x"]).list_versions(run_id=first.id)]
    assert model.model_version_id == mv.id and model.run_id == job.id and model.model_ref == first.id
    assert model.dataset_version_id == dataset.id and model.split == "test" and not model.forced_overlap
    assert model.generation["max_new_tokens"] == 5 and model.metric_versions["json_field_accuracy"] == "1"
    assert model.forgetting is not None and {"forgetting", "flagged", "perplexity_ratio"} <= set(model.forgetting)
    progress = runs.progress(job.id)
    assert progress.total_steps and progress.step == progress.total_steps  # progress was reported as it went
    assert any("succeeded; evaluations" in e.message for e in runs.events(job.id))

    # The second model, without baselines or probe.
    job2 = jobs.submit_evaluation(EvalSpec(model=second.id, max_new_tokens=5, baselines=False, probe=False))
    _worker().run(once=True)
    assert queue.get(job2.id).state == "succeeded"

    board = records.leaderboard(dataset.id, metric="loss")
    assert board["metric"] == "loss" and not board["higher_is_better"]
    values = [row["value"] for row in board["rows"]]
    assert values == sorted(values) and len(board["rows"]) == 3  # mv 1, mv 2, base (few-shot has no loss)
    assert {row["system"] for row in board["rows"]} >= {model.model_version_id, model.base_model}

    report = compare(first.id, second.id, resamples=500)
    assert report["paired_examples"] == dataset.splits["test"]
    loss = report["metrics"]["loss"]
    assert loss["low"] <= loss["delta"] <= loss["high"] and "verdict" in loss
    assert report["config_diff"]["train.lr"] == [0.0002, 0.01]
    assert "data.dataset" not in report["config_diff"]  # same data: not a difference


def test_the_cli_shows_leaderboard_compare_and_evaluations(adapter_version, json_dataset, tiny_model_dir):
    from oikyo.cli.main import app

    found = run_evaluation(EvalSpec(model=adapter_version.id, max_new_tokens=4, probe=False, few_shot_k=1))
    records.save(found)
    cli = CliRunner()
    board = cli.invoke(app, ["models", "leaderboard", "--dataset", json_dataset.name, "--metric", "loss"])
    assert board.exit_code == 0, board.output
    assert "lower is better" in board.output
    ranked = json.loads(cli.invoke(app, ["models", "leaderboard", "-d", f"{json_dataset.id}:test", "--json"]).output)
    assert ranked["metric"] == "json_field_accuracy" and ranked["split"] == "test"
    assert {row["system"] for row in ranked["rows"]} == {adapter_version.id, str(tiny_model_dir),
                                                         f"{tiny_model_dir} (1-shot)"}

    result = cli.invoke(app, ["compare", adapter_version.id, str(tiny_model_dir), "--resamples", "200"])
    assert result.exit_code == 0, result.output
    assert "paired examples" in result.output and "A - B" in result.output and "loss" in result.output
    assert "train.lr" in result.output  # the config diff against a base model (no config)

    listed = cli.invoke(app, ["evals", "list", "--json"])
    assert listed.exit_code == 0 and found[0].id in {e["id"] for e in json.loads(listed.output)}
    assert cli.invoke(app, ["evals", "list"]).exit_code == 0
    shown = cli.invoke(app, ["evals", "show", found[0].id, "--examples", "1"])
    assert shown.exit_code == 0 and "metric version" in shown.output and "prediction:" in shown.output
    missing = cli.invoke(app, ["evals", "show", "ev-nothere"])
    assert missing.exit_code == 2 and "no evaluation matches" in missing.output


def test_an_interrupted_job_resumes_from_the_systems_it_finished(adapter_version, tmp_path, monkeypatch):
    from oikyo.evaluate import backend

    spec = EvalSpec(model=adapter_version.id, max_new_tokens=4, probe=False, few_shot_k=0)
    cache = tmp_path / "eval-cache"
    calls = {"n": 0}
    real = backend.ModelBackend.generate

    def stop_after_first(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise backend.Stopped()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(backend.ModelBackend, "generate", stop_after_first)
    with pytest.raises(backend.Stopped):
        run_evaluation(spec, cache_dir=cache)
    assert (cache / "model.json").is_file() and not (cache / "base.json").exists()
    monkeypatch.setattr(backend.ModelBackend, "generate", real)
    first = run_evaluation(spec, cache_dir=cache)  # model read back, base generated now
    fresh = run_evaluation(spec)
    assert [e.metrics for e in first] == [e.metrics for e in fresh]


def test_a_queued_eval_job_can_be_cancelled(adapter_version):
    job = jobs.submit_evaluation(EvalSpec(model=adapter_version.id, probe=False))
    assert "cancelled before it started" in runs.cancel(job.id)
    with db.session() as s:
        assert s.get(Run, job.id).state == "cancelled"


def test_the_base_models_probe_is_measured_once_and_reused(adapter_version, json_dataset, monkeypatch):
    calls = []
    real = forgetting.run_probe

    def counting(backend, adapter, **kwargs):
        calls.append(adapter)
        return real(backend, adapter, **kwargs)

    monkeypatch.setattr(forgetting, "run_probe", counting)
    spec = EvalSpec(model=adapter_version.id, max_new_tokens=4, probe=True, few_shot_k=0, limit=2)
    first = run_evaluation(spec)[0].forgetting
    assert calls == ["model", None]  # the adapter, then the base model
    second = run_evaluation(spec)[0].forgetting
    assert calls == ["model", None, "model"]  # the base model's probe came from the cache
    assert second["base"] == first["base"] and second["forgetting"] == first["forgetting"]
