"""`oikyo tune promote` on the real recipe and a tiny random model: the study never reads the test
split; promote trains the chosen trial's config and evaluates it once on the test split, however
often it is run; a multi-objective front with several points asks which one."""

from __future__ import annotations

import json

import pytest

from oikyo.jobs import queue
from oikyo.store import db
from oikyo.store.models import Run
from oikyo.tune import promote, study

from studyhelpers import WorkerThreads, lr_space  # noqa: F401

REAL = ["train.max_steps=4", "train.batch_size=4", "data.max_length=64", "train.eval_every=2",
        "checkpoint.save_every=2", "checkpoint.keep_best=1"]


@pytest.fixture
def real_env(monkeypatch):
    monkeypatch.delenv("OIKYO_RECIPE", raising=False)
    monkeypatch.setenv("OIKYO_WORKER_LEASE_S", "4")
    monkeypatch.setenv("OIKYO_WORKER_HEARTBEAT_S", "0.5")
    study.reset_storage()
    threads = WorkerThreads(1)
    yield
    threads.stop()
    study.reset_storage()


@pytest.fixture
def held_out(tmp_path):
    """A conversations dataset split into train/validation/test; returns (version, test prompts)."""
    from oikyo.data import split, versions

    rows = [{"messages": [{"role": "user", "content": f"Add {i} and {i + 3}."},
                          {"role": "assistant", "content": f"{2 * i + 3}"}]} for i in range(40)]
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    versions.import_dataset(path, name="sums")
    version, _ = split.split_dataset("sums", validation=0.2, test=0.2, seed=0)
    test_prompts = {row["messages"][0]["content"] for row in versions.iter_rows(version, split="test")}
    return version, test_prompts


def _watch_splits(monkeypatch) -> list:
    """Record the split of every dataset read through versions.iter_rows from now on."""
    from oikyo.data import versions

    seen: list = []
    real = versions.iter_rows

    def watching(version, split=None, **kwargs):
        seen.append(split)
        return real(version, split=split, **kwargs)

    monkeypatch.setattr(versions, "iter_rows", watching)
    return seen


def _eval_jobs() -> list[Run]:
    from sqlalchemy import select

    with db.session() as s:
        return list(s.scalars(select(Run).where(Run.kind == "eval")))


def test_promote_trains_the_best_trial_and_evaluates_the_test_split_once(real_env, tiny_model_dir, held_out,
                                                                         monkeypatch):
    version, _test_prompts = held_out
    record = study.create_study(None, REAL, dataset=version.id, model=str(tiny_model_dir), space=lr_space(
        {"params": {"train.lr": {"type": "categorical", "choices": [1.0e-5, 3.0e-3]}}}), n_trials=2,
        sampler="random", pruner="none", name="promote-me")
    seen = _watch_splits(monkeypatch)
    info = study.run_study(record.id, log=lambda line: None, poll_s=0.05)
    assert info["counts"] == {"complete": 2}
    assert "test" not in seen  # model selection never read the test split
    [best] = info["best_trials"]

    lines: list[str] = []
    outcome = promote.promote("promote-me", log=lines.append)
    assert outcome["state"] == "done" and outcome["trial"] == best
    run = queue.get(outcome["run_id"])
    assert run.state == "succeeded" and run.config["train"]["lr"] == study.trials(record)[best]["params"]["train.lr"]
    assert outcome["model_version"] and set(outcome["test"]) >= {"model", "base"}
    assert "test" in seen
    [job] = _eval_jobs()
    assert job.config["split"] == "test" and job.id == outcome["eval_job_id"]

    again = promote.promote("promote-me", log=lines.append)  # the same trial: shown, never scored twice
    assert again["id"] == outcome["id"] and len(_eval_jobs()) == 1
    assert any("was promoted before" in line for line in lines)


def test_promote_refuses_what_it_cannot_promote(real_env, tiny_model_dir, held_out):
    version, _ = held_out
    study.create_study(None, REAL, dataset=version.id, model=str(tiny_model_dir), n_trials=1, name="young",
                       space=lr_space())
    with pytest.raises(promote.PromoteError, match="no complete trial yet"):
        promote.promote("young", log=lambda line: None)
    with pytest.raises(promote.PromoteError, match="has no trial 7"):
        promote.promote("young", trial=7, log=lambda line: None)


def test_a_front_of_several_points_asks_for_a_trial(monkeypatch, real_env, tiny_model_dir, held_out):
    import optuna

    version, _ = held_out
    record = study.create_study(None, REAL, dataset=version.id, model=str(tiny_model_dir), n_trials=2,
                                name="front", space=lr_space(), objectives=["val_loss", "forgetting"])
    ostudy = study.load_optuna(record)
    distribution = optuna.distributions.FloatDistribution(1e-6, 0.1, log=True)
    for lr, values in ((1e-4, [1.0, 0.3]), (1e-3, [0.8, 0.5])):  # neither dominates the other
        ostudy.add_trial(optuna.trial.create_trial(params={"train.lr": lr}, distributions={"train.lr": distribution},
                                                   values=values, user_attrs={"values": {"train.lr": lr}}))
    with pytest.raises(promote.PromoteError, match="2 Pareto-optimal trials .*choose one with --trial"):
        promote.promote("front", log=lambda line: None)
