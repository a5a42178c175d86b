"""The study driver over the fake recipe: trials are tagged runs, pruning, failures, budgets,
several objectives, cross-validation, and the test split never read."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import inspect

from oikyo.jobs import runs
from oikyo.store import db
from oikyo.tune import budget as budgets
from oikyo.tune import study

from studyhelpers import WorkerThreads, lr_space, new_study, runs_of, steps_of, tune_env, wait_for  # noqa: F401

pytestmark = pytest.mark.usefixtures("tune_env")


@pytest.fixture
def workers():
    threads = WorkerThreads(1)
    yield threads
    threads.stop()


def _drive(ref: str, lines: list | None = None) -> dict:
    return study.run_study(ref, log=(lines.append if lines is not None else lambda line: None), poll_s=0.02)


def test_trials_are_ordinary_runs_tagged_with_their_study(workspace, dataset, model_dir, workers):
    record = new_study(dataset, model_dir, n_trials=3, sampler="random", name="lr-sweep")
    lines: list[str] = []
    info = _drive("lr-sweep", lines)
    assert info["state"] == "finished" and info["counts"] == {"complete": 3}
    found = study.trials(record.id)
    assert [t["number"] for t in found] == [0, 1, 2]
    tagged = runs_of(record.id)
    assert len(tagged) == 3 and {r.trial_number for r in tagged} == {0, 1, 2}
    for trial in found:
        [run_id] = trial["run_ids"]
        shown = runs.describe(runs.resolve(run_id))
        assert shown["study_id"] == record.id and shown["trial_number"] == trial["number"]
        assert shown["state"] == "succeeded"
        # the trial's lr is the run's, and its value is the best eval_loss the run reported
        assert runs.resolve(run_id).config["train"]["lr"] == pytest.approx(trial["params"]["train.lr"])
        best = min(v for _, v in runs.metric_series(run_id)["eval_loss"])
        assert trial["values"] == {"val_loss": pytest.approx(best)} and trial["tokens"] == 20 * 64
    assert sum("started" in line for line in lines) == 3 and sum("complete: val_loss" in line for line in lines) == 3
    # Optuna's tables live in optuna.db beside oikyo.db, never among oikyo's own tables
    assert (workspace / "optuna.db").is_file()
    tables = set(inspect(db.engine()).get_table_names())
    assert "tune_studies" in tables and "trials" not in tables and "studies" not in tables
    assert study.get(record.id[3:7]).id == record.id and study.get("lr-sweep").id == record.id
    assert [s.id for s in study.list_studies()] == [record.id]


def test_pruning_stops_bad_trials_early_through_the_job_systems_cancel(monkeypatch, dataset, model_dir, workers):
    monkeypatch.setenv("FAKE_LOSS_FROM_LR", "1")  # eval_loss + |log10 lr + 4|: lr far from 1e-4 is bad
    monkeypatch.setenv("FAKE_STEP_TIME", "0.04")  # slow enough for the driver to see step-5 evaluations
    record = new_study(dataset, model_dir, n_trials=8, sampler="random", pruner="median", seed=3)
    info = _drive(record.id)
    found = study.trials(record.id)
    pruned = [t for t in found if t["state"] == "pruned"]
    complete = [t for t in found if t["state"] == "complete"]
    assert info["counts"].get("pruned", 0) == len(pruned) >= 1 and len(found) == 8

    def badness(trial):
        return abs(math.log10(trial["params"]["train.lr"]) + 4)

    best = min(complete, key=lambda t: t["values"]["val_loss"])
    for trial in pruned:
        [run_id] = trial["run_ids"]
        run = runs.wait(run_id, timeout=30)  # the last pruned run may still be saving its checkpoint
        assert run.state == "cancelled" and steps_of(run) < 20  # stopped early, by the queue's cancel
        assert any(e.kind == "pruned" and f"pruned by study {record.name}" in e.message for e in runs.events(run_id))
        assert badness(trial) > badness(best)
        assert trial["intermediate"]  # what the pruner judged on
    for trial in complete:
        assert steps_of(runs.resolve(trial["run_ids"][0])) == 20


def test_a_failed_trial_is_recorded_with_its_reason_and_the_study_goes_on(monkeypatch, dataset, model_dir, workers):
    monkeypatch.setenv("FAKE_FAIL_LR_ABOVE", "0.001")
    record = new_study(dataset, model_dir, n_trials=5, sampler="random", pruner="none", seed=1)
    info = _drive(record.id)
    found = study.trials(record.id)
    failed = [t for t in found if t["state"] == "failed"]
    assert failed and len(failed) < 5 and info["state"] == "finished" and len(found) == 5
    for trial in found:
        if trial["params"]["train.lr"] > 0.001:
            assert trial["state"] == "failed"
            reason = trial["reason"]
            assert "failed" in reason and "diverged" in reason and trial["run_ids"][0] in reason
        else:
            assert trial["state"] == "complete" and trial["reason"] is None


def test_a_token_budget_is_a_cap(dataset, model_dir, workers):
    # each run trains 20 steps of 64 tokens = 1280 tokens: after the first, even the cheapest trial of the
    # space (all are 20 steps) would need 1280 x 1.05 of the 720 left, so nothing more is drawn
    record = new_study(dataset, model_dir, n_trials=30, parallel=2, budget="2000-tokens", sampler="random",
                       pruner="none")
    lines: list[str] = []
    _drive(record.id, lines)
    found = study.trials(record.id)
    assert len(found) == 1 and found[0]["tokens"] == 1280 <= 2000, lines
    assert study.get(record.id).launched == 1
    assert any("does not fit even the cheapest configuration of the space" in line for line in lines)


def test_drawn_trials_that_do_not_fit_are_skipped(monkeypatch, dataset, model_dir, workers):
    # the cheapest configuration cannot be told here, so the driver draws, and skips what does not fit
    monkeypatch.setattr(budgets, "cheapest_rows", lambda space, base: None)
    record = new_study(dataset, model_dir, n_trials=30, parallel=2, budget="2000-tokens", sampler="random",
                       pruner="none")
    lines: list[str] = []
    _drive(record.id, lines)
    found = study.trials(record.id)
    assert len([t for t in found if t["run_ids"]]) == 1 and sum(t["tokens"] for t in found) == 1280, lines
    skipped = [t for t in found if not t["run_ids"]]
    assert len(skipped) == 10 and all(t["state"] == "failed" and t["reason"].startswith("skipped: its estimated cost")
                                      for t in skipped)
    assert study.get(record.id).launched == 1  # skipped trials do not count against --trials
    assert any("none of the last 10 trials drawn fits" in line for line in lines)


def test_a_budget_left_over_goes_to_cheaper_trials(dataset, model_dir, workers):
    # 5 steps cost 320 tokens, 20 steps 1280: whatever comes first, the rest of 2000 tokens still
    # buys short trials; a long one drawn when it does not fit is skipped, and once not even a short
    # one fits the study ends
    space = {"params": {"train.lr": {"type": "float", "low": 1.0e-5, "high": 1.0e-3, "log": True},
                        "train.max_steps": {"type": "categorical", "choices": [5, 20]}}}
    record = new_study(dataset, model_dir, n_trials=30, budget="2000-tokens", sampler="random", pruner="none",
                       space=lr_space(space))
    _drive(record.id)
    found = study.trials(record.id)
    spent = sum(t["tokens"] for t in found)
    steps = [t["params"]["train.max_steps"] for t in found if t["run_ids"]]
    assert spent <= 2000 and 2000 - spent < 320 * budgets.MARGIN, (spent, steps)
    assert 5 in steps and len(steps) >= 3
    skipped = [t for t in found if not t["run_ids"]]
    assert skipped and all(t["params"]["train.max_steps"] == 20 for t in skipped)
    assert budgets.cheapest_rows(lr_space(space), record.base_config) == 5 * record.base_config["train"]["batch_size"]


def test_a_trial_that_reaches_the_budget_is_stopped(monkeypatch, dataset, model_dir, workers):
    # nothing is measured before the first trial, so it starts; at 500 tokens (8 of its 20 steps) it stops
    monkeypatch.setenv("FAKE_STEP_TIME", "0.1")  # the cancel reaches the run within a heartbeat (0.25 s)
    record = new_study(dataset, model_dir, n_trials=5, budget="500-tokens", sampler="random", pruner="none")
    lines: list[str] = []
    _drive(record.id, lines)
    [trial] = study.trials(record.id)
    assert trial["state"] == "pruned" and "budget 500-tokens was spent" in trial["reason"], lines
    [run_id] = trial["run_ids"]
    wait_for(lambda: runs.resolve(run_id).state == "cancelled", message="the stopped run is cancelled")
    assert any(e.kind == "pruned" and "budget 500-tokens is spent" in e.message for e in runs.events(run_id))
    assert 500 <= trial["tokens"] < 20 * 64  # stopped at the budget (a few steps later), before its end
    assert runs.metric_series(run_id)["eval_loss"]  # its validation losses so far stay with its run


def test_a_wall_time_budget_is_a_cap_too(monkeypatch, dataset, model_dir, workers):
    monkeypatch.setenv("FAKE_STEP_TIME", "0.05")  # a run trains about one second
    record = new_study(dataset, model_dir, n_trials=10, budget="2s", sampler="random", pruner="none")
    _drive(record.id)
    tagged = runs_of(record.id)
    walls = [(r.finished_at - r.started_at).total_seconds() for r in tagged]
    assert 1 <= len(tagged) <= 2
    assert sum(walls) < 2.0 + 0.5  # a trial that would overrun is skipped or stopped at the budget


def test_budgets_parse_or_say_what_they_accept():
    assert budgets.parse_budget("2h") == budgets.Budget("seconds", 7200.0, "2h")
    assert budgets.parse_budget("30m").limit == 1800 and budgets.parse_budget("90s").limit == 90
    assert budgets.parse_budget("5M-tokens") == budgets.Budget("tokens", 5e6, "5M-tokens")
    assert budgets.parse_budget("500k-tokens").limit == 500_000 and budgets.parse_budget(None) is None
    for bad in ("2 hours please", "5M", "-3h", "0s"):
        with pytest.raises(budgets.BudgetError) as caught:
            budgets.parse_budget(bad)
        assert bad in str(caught.value)
    assert not budgets.may_launch(budgets.parse_budget("100s"), spent=50, running=[(10.0, 60.0)])
    assert budgets.may_launch(budgets.parse_budget("100s"), spent=50, running=[(10.0, 40.0)])
    assert not budgets.may_launch(budgets.parse_budget("100s"), spent=0, running=[(0.0, None)])
    hundred = budgets.parse_budget("100-tokens")
    assert budgets.fits(hundred, spent=50, running=[], cost=45.0) and not budgets.fits(hundred, spent=50, running=[],
                                                                                       cost=48.0)  # x 1.05
    assert not budgets.fits(hundred, spent=30, running=[(10.0, 30.0)], cost=40.0)  # the running trial's rest counts
    assert budgets.fits(hundred, spent=0, running=[], cost=None) and budgets.fits(None, spent=1e9, running=[], cost=1.0)
    assert budgets.reached(hundred, 100) and not budgets.reached(hundred, 99) and not budgets.reached(None, 1e9)
    assert budgets.planned_rows({"train": {"max_steps": 60, "batch_size": 8, "grad_accum": 2}}) == 960
    assert budgets.planned_rows({"train": {"max_steps": None, "epochs": 3, "batch_size": 8}}) is None
    assert budgets.per_row([(800.0, 80), (1700.0, 160), (5.0, 0)]) == pytest.approx(2500 / 240)
    assert budgets.per_row([]) is None


def test_several_objectives_give_several_values_per_trial(monkeypatch, dataset, model_dir, workers):
    from oikyo.tune import objectives

    # The evaluation job needs a real model (tests/tune/test_study_real.py runs it); here its result is
    # stood in for, to check what the driver does with two objectives of opposite directions.
    scored: dict[str, str] = {}

    def fake_submit(run, names, *, split):
        assert split == "validation" and names == ["val_loss", "exact_match"]
        scored[run.id] = split
        return run.id  # a finished job: the run itself

    def fake_read(job_id, names):
        lr = runs.resolve(job_id).config["train"]["lr"]
        return {"exact_match": 1.0 / (1.0 + abs(math.log10(lr) + 4))}

    monkeypatch.setattr(objectives, "submit_evaluation", fake_submit)
    monkeypatch.setattr(objectives, "read_evaluation", fake_read)
    record = new_study(dataset, model_dir, n_trials=3, objectives=["val_loss", "exact_match"], sampler="random")
    assert record.directions == ["minimize", "maximize"] and record.pruner == "none"  # no pruning with two
    info = _drive(record.id)
    found = study.trials(record.id)
    assert len(found) == 3 and len(scored) == 3
    for trial in found:
        assert set(trial["values"]) == {"val_loss", "exact_match"} and trial["state"] == "complete"
    assert info["best_trials"]  # the Pareto front
    with pytest.raises(study.TuneError) as caught:
        new_study(dataset, model_dir, objectives=["val_loss", "exact_match"], pruner="median")
    assert "cannot prune multi-objective" in str(caught.value)


def test_cross_validation_runs_k_runs_per_trial_and_records_the_spread(dataset, model_dir, workers):
    record = new_study(dataset, model_dir, n_trials=2, cv=3, sampler="random")
    assert len(record.fold_datasets) == 3
    _drive(record.id)
    found = study.trials(record.id)
    assert [t["state"] for t in found] == ["complete", "complete"]
    for trial in found:
        assert len(trial["run_ids"]) == 3
        folds = [runs.resolve(r).dataset_version_id for r in trial["run_ids"]]
        assert folds == record.fold_datasets  # one run per fold, in turn
        per_fold = [min(v for _, v in runs.metric_series(r)["eval_loss"]) for r in trial["run_ids"]]
        assert trial["values"]["val_loss"] == pytest.approx(sum(per_fold) / 3)
        mean = sum(per_fold) / 3
        assert trial["std"]["val_loss"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in per_fold) / 3))
        # pruning steps run on over the folds: fold i is reported after the steps of folds before it
        assert max(trial["intermediate"]) == 60


def test_no_row_of_the_test_split_is_read_during_a_study(monkeypatch, tmp_path, model_dir, workers):
    import jobhelpers

    from oikyo.data import split, versions

    versions.import_dataset(jobhelpers.write_chat_rows(tmp_path / "held.jsonl", 60), name="held")
    dataset, _ = split.split_dataset("held", validation=0.2, test=0.2, seed=0)
    test_rows = {repr(row["messages"]) for row in versions.iter_rows(dataset, split="test")}
    assert test_rows
    seen_splits, leaked = [], []
    real_iter_rows = versions.iter_rows

    def watching(version, split=None, **kwargs):
        seen_splits.append(split)
        for row in real_iter_rows(version, split=split, **kwargs):
            if repr(row.get("messages")) in test_rows:
                leaked.append(row)
            yield row

    monkeypatch.setattr(versions, "iter_rows", watching)
    for options in ({}, {"cv": 2}):
        record = new_study(dataset, model_dir, n_trials=2, sampler="random", **options)
        _drive(record.id)
        assert all(t["state"] == "complete" for t in study.trials(record.id))
    assert seen_splits and "test" not in seen_splits and None not in seen_splits
    assert not leaked
    for fold in study.get(record.id).fold_datasets:  # the folds hold no test row either
        assert not {repr(r["messages"]) for r in real_iter_rows(versions.resolve(fold))} & test_rows


def test_a_base_config_that_validates_on_the_test_split_is_refused(tmp_path, model_dir):
    import jobhelpers

    from oikyo.data import split, versions
    from studyhelpers import BASE

    versions.import_dataset(jobhelpers.write_chat_rows(tmp_path / "held.jsonl", 40), name="held")
    dataset, _ = split.split_dataset("held", validation=0.2, test=0.2, seed=0)
    with pytest.raises(study.TuneError) as caught:
        new_study(dataset, model_dir, base=[*BASE, "data.eval_split=test"])
    assert "data.eval_split: a study never reads the test split" in str(caught.value)
    assert study.list_studies() == [] and runs.list_runs() == []


def test_a_repeated_configuration_takes_the_earlier_result_and_is_not_trained_again(dataset, model_dir, workers):
    # 2 configurations and 6 trials: every draw after both are trained is a repeat; 10 repeats in a row end it
    space = lr_space({"params": {"train.lr": {"type": "categorical", "choices": [1.0e-4, 1.0e-2]}}})
    record = new_study(dataset, model_dir, space=space, n_trials=6, sampler="random", pruner="none")
    lines: list[str] = []
    info = _drive(record.id, lines)
    found = study.trials(record.id)
    trained = [t for t in found if t["run_ids"]]
    repeats = [t for t in found if t["duplicate_of"] is not None]
    assert len(trained) == len(runs_of(record.id)) == 2, lines
    assert {t["params"]["train.lr"] for t in trained} == {1.0e-4, 1.0e-2}
    assert len(trained) + len(repeats) == len(found) and len(repeats) >= 10
    by_number = {t["number"]: t for t in found}
    for repeat in repeats:
        original = by_number[repeat["duplicate_of"]]
        assert original["run_ids"] and repeat["params"] == original["params"]
        assert repeat["state"] == "complete" and repeat["values"] == original["values"] and repeat["tokens"] == 0
        assert repeat["reason"].startswith(f"the same configuration as trial {original['number']}")
    assert study.get(record.id).launched == 2  # repeats do not count against --trials
    assert info["state"] == "finished"
    assert any("none of the last 10 trials drawn started" in line.lower() for line in lines), lines
