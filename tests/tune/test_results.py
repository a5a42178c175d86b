"""oikyo.tune.results and plots on small in-memory studies whose answers are known by construction."""

from __future__ import annotations

import math
import random

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from oikyo.errors import OikyoError
from oikyo.tune import plots, results

optuna.logging.set_verbosity(optuna.logging.WARNING)

DIST = {
    "train.lr": FloatDistribution(1e-5, 1e-2, log=True),
    "lora.r": IntDistribution(4, 64, log=True),
    "train.scheduler": CategoricalDistribution(["cosine", "linear"]),
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _add(study, values, params=None, state=TrialState.COMPLETE, **kw):
    params = params or {"train.lr": 1e-4, "lora.r": 8, "train.scheduler": "cosine"}
    dist = {k: DIST[k] for k in params}
    study.add_trial(create_trial(params=params, distributions=dist, values=values, state=state, **kw))


def _lr_study(n: int, seed: int = 0, direction: str = "minimize"):
    """value = (log10(lr) + 3.5)^2 + small noise; r and the scheduler are drawn at random and do nothing."""
    rng = random.Random(seed)
    study = optuna.create_study(direction=direction)
    for _ in range(n):
        lr = 10 ** rng.uniform(-5, -2)
        params = {"train.lr": lr, "lora.r": rng.choice([4, 8, 16, 32]),
                  "train.scheduler": rng.choice(["cosine", "linear"])}
        _add(study, [(math.log10(lr) + 3.5) ** 2 + rng.gauss(0, 0.01)], params)
    return study


def _dominates(a, b, signs):
    return all(s * x <= s * y for s, x, y in zip(signs, a, b)) and any(s * x < s * y for s, x, y in zip(signs, a, b))


# --- summarize ---------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_single_objective_best_is_the_min_or_max_of_complete_trials_only(direction):
    study = optuna.create_study(direction=direction)
    for v in [0.5, 0.2, 0.9, 0.4]:
        _add(study, [v], user_attrs={"std": {"val_loss": 0.01}, "fold_results": [{"val_loss": v}] * 2, "driver": "x"})
    # A pruned trial keeps its last intermediate value; it beats everything yet must never be ranked.
    _add(study, [-5.0 if direction == "minimize" else 5.0], state=TrialState.PRUNED,
         intermediate_values={3: -5.0 if direction == "minimize" else 5.0}, user_attrs={"reason": "median pruner"})
    _add(study, None, state=TrialState.FAIL, user_attrs={"reason": "CUDA out of memory"})

    runs = {n: [f"run-{n}a", f"run-{n}b"] for n in range(6)}  # the runs table's view, passed in
    summary = results.summarize(study, objectives=["val_loss"], run_ids=runs)

    want = 0.2 if direction == "minimize" else 0.9
    number = [0.5, 0.2, 0.9, 0.4].index(want)
    assert summary["best"]["values"] == [want] and summary["best"]["number"] == number
    assert summary["best"]["run_ids"] == [f"run-{number}a", f"run-{number}b"]
    assert summary["best"]["std"] == {"val_loss": 0.01} and len(summary["best"]["fold_results"]) == 2
    assert "driver" not in summary["best"]  # only the named attrs travel
    assert summary["pareto_front"] is None
    assert summary["counts"] == {"complete": 4, "pruned": 1, "failed": 1, "running": 0, "waiting": 0, "total": 6}
    assert summary["directions"] == [direction] and summary["objectives"] == ["val_loss"]
    pruned, failed = summary["incomplete"]
    assert (pruned["state"], pruned["last_step"], pruned["reason"]) == ("pruned", 3, "median pruner")
    assert pruned["run_ids"] == ["run-4a", "run-4b"]
    text = "\n".join(results.format_lines(summary))
    assert "std across 2 folds: val_loss=0.01" in text and f"runs: run-{number}a, run-{number}b" in text
    assert (failed["state"], failed["reason"]) == ("failed", "CUDA out of memory")


def test_ties_at_the_best_value_are_named_and_the_first_trial_shown():
    study = optuna.create_study()
    for v in [0.3, 0.1, 0.2, 0.1]:
        _add(study, [v])
    summary = results.summarize(study)
    assert summary["best"]["number"] == 1
    assert any("#1, #3 tie" in note for note in summary["notes"])


def test_multi_objective_front_is_exactly_the_non_dominated_trials_sorted_by_the_first_objective():
    rng = random.Random(3)
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["json_field_accuracy", "forgetting"])
    points = [(round(rng.random(), 3), round(rng.random(), 3)) for _ in range(25)]
    for p in points:
        _add(study, list(p))
    _add(study, [0.99, 0.0], state=TrialState.PRUNED)  # would dominate all; it is not complete
    study.add_trial(create_trial(state=TrialState.RUNNING))

    summary = results.summarize(study)

    signs = [-1, 1]
    expected = {i for i, p in enumerate(points) if not any(_dominates(q, p, signs) for q in points)}
    front = summary["pareto_front"]
    assert {row["number"] for row in front} == expected and len(expected) >= 3
    firsts = [row["values"][0] for row in front]
    assert firsts == sorted(firsts, reverse=True)  # maximize: best accuracy first
    assert summary["best"] is None
    assert summary["objectives"] == ["json_field_accuracy", "forgetting"]
    assert summary["counts"]["running"] == 1 and summary["counts"]["pruned"] == 1


def test_objective_names_fall_back_when_the_study_does_not_name_them():
    study = optuna.create_study(directions=["minimize", "minimize"])
    assert results.objective_names(study) == ["value 0", "value 1"]
    study.set_user_attr("objectives", ["only-one"])  # wrong length: not trusted
    assert results.objective_names(study) == ["value 0", "value 1"]
    study.set_user_attr("objectives", ["a", "b"])
    assert results.objective_names(study) == ["a", "b"]
    assert results.objective_names(study, ["val_loss", "forgetting"]) == ["val_loss", "forgetting"]


def test_a_study_with_no_complete_trial_says_so():
    study = optuna.create_study()
    _add(study, None, state=TrialState.FAIL, user_attrs={"reason": "bad config"})
    study.add_trial(create_trial(state=TrialState.RUNNING))
    summary = results.summarize(study)
    assert summary["best"] is None and summary["pareto_front"] is None
    assert summary["notes"] == ["no trial has completed yet (1 failed, 1 running): nothing to rank"]
    text = "\n".join(results.format_lines(summary, results.importances(study)))
    assert "no trial has completed yet" in text and "#0 failed: bad config" in text
    assert "not computed: needs 2 complete trials" in text


# --- importances -------------------------------------------------------------------------------


def test_importances_name_the_param_that_drives_the_value():
    imp = results.importances(_lr_study(30))
    assert list(imp["params"])[0] == "train.lr" and imp["params"]["train.lr"] > 0.5
    assert sum(imp["params"].values()) == pytest.approx(1.0)
    assert imp["n_complete"] == 30 and not imp["few_trials"] and imp["reason"] is None
    assert results.importances(_lr_study(30)) == imp  # seeded: the report and its plot agree


def test_multi_objective_importances_come_one_per_objective():
    rng = random.Random(1)
    study = optuna.create_study(directions=["minimize", "minimize"])
    for _ in range(20):
        lr, r = 10 ** rng.uniform(-5, -2), rng.choice([4, 8, 16, 32, 64])
        _add(study, [math.log10(lr) ** 2, math.log2(r)], {"train.lr": lr, "lora.r": r})
    first, second = results.all_importances(study)
    assert (first["objective"], list(first["params"])[0]) == ("value 0", "train.lr")
    assert (second["objective"], list(second["params"])[0]) == ("value 1", "lora.r")
    with pytest.raises(OikyoError, match="out of range"):
        results.importances(study, target_index=2)


def test_importances_refuse_with_a_reason_when_they_cannot_mean_anything():
    one = _lr_study(1)
    assert results.importances(one)["params"] is None
    assert "needs 2 complete trials" in results.importances(one)["reason"]

    fixed = optuna.create_study()
    for v in [0.1, 0.2, 0.3]:
        _add(fixed, [v])  # the same params every time
    assert "no parameter took more than one value" in results.importances(fixed)["reason"]

    flat = optuna.create_study()
    for lr in [1e-4, 1e-3, 1e-2]:
        _add(flat, [0.5], {"train.lr": lr})
    assert "was the same in every complete trial" in results.importances(flat)["reason"]


def test_importances_on_few_trials_are_marked():
    imp = results.importances(_lr_study(5))
    assert imp["few_trials"] and imp["params"] is not None
    text = "\n".join(results.format_lines(results.summarize(_lr_study(5)), imp))
    assert "few trials (n=5), a rough guide" in text


# --- history and text --------------------------------------------------------------------------


def test_history_tracks_the_best_complete_value_and_lists_every_trial():
    study = optuna.create_study(direction="maximize")
    _add(study, [0.2])
    _add(study, [0.9], state=TrialState.PRUNED, intermediate_values={1: 0.9}, user_attrs={"reason": "pruned at step 1"})
    _add(study, [0.5])
    _add(study, [0.4])
    rows = results.history(study)
    assert [r["state"] for r in rows] == ["complete", "pruned", "complete", "complete"]
    assert [r["best_so_far"] for r in rows] == [0.2, 0.2, 0.5, 0.5]
    assert rows[1]["values"] == [0.9] and rows[1]["reason"] == "pruned at step 1" and rows[1]["last_step"] == 1


def test_format_lines_report_counts_front_and_why_trials_stopped():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["json_field_accuracy", "forgetting"])
    _add(study, [0.8, 0.05])
    _add(study, [0.7, 0.01])
    _add(study, [0.6, 0.09])  # dominated by both
    _add(study, None, state=TrialState.PRUNED, intermediate_values={40: 0.3}, user_attrs={"reason": "median pruner"})
    _add(study, None, state=TrialState.FAIL, user_attrs={"reason": "CUDA out of memory"})

    summary = results.summarize(study, run_ids={0: ["run-a", "run-b"]})
    lines = results.format_lines(summary, results.all_importances(study))
    text = "\n".join(lines)

    assert lines[0].endswith("5 trials (3 complete, 1 pruned, 1 failed)")
    assert "Objective: maximize json_field_accuracy, minimize forgetting" in text
    assert "Pareto front: 2 trials" in text and "#2 " not in text.split("Not complete")[0]
    assert text.index("#0  json_field_accuracy=0.8") < text.index("#1  json_field_accuracy=0.7")
    assert "runs: run-a, run-b" in text
    assert "#3 pruned at step 40: median pruner" in text and "#4 failed: CUDA out of memory" in text
    assert all("[" not in line or "]" not in line for line in lines)  # no Rich markup


# --- plots -------------------------------------------------------------------------------------


def _assert_png(path):
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000, path


def test_plots_of_a_single_objective_study(tmp_path, monkeypatch):
    import optuna.visualization.matplotlib as vm

    seen = {}
    real = vm.plot_parallel_coordinate

    def spy(study, params=None, **kw):
        ax = real(study, params, **kw)
        seen["params"] = params
        seen["log_axes"] = [a for a in ax.figure.axes if a.get_yscale() == "log"]
        return ax

    monkeypatch.setattr(vm, "plot_parallel_coordinate", spy)
    study = _lr_study(12)
    answer = plots.write_plots(study, tmp_path / "plots")

    assert set(answer) == {"history", "importances", "parallel_coordinates", "pareto_front"}
    for name in ("history", "importances", "parallel_coordinates"):
        _assert_png(answer[name]["path"])
    assert answer["pareto_front"] == {"skipped": "the study has one objective"}
    assert seen["params"] == ["lora.r", "train.lr", "train.scheduler"]
    assert len(seen["log_axes"]) == 2  # train.lr and lora.r are log-scaled


def test_parallel_coordinates_leave_out_params_that_did_not_vary(tmp_path, monkeypatch):
    import optuna.visualization.matplotlib as vm

    seen = {}
    real = vm.plot_parallel_coordinate
    monkeypatch.setattr(vm, "plot_parallel_coordinate",
                        lambda s, params=None, **kw: seen.update(p=params) or real(s, params, **kw))
    study = optuna.create_study()
    for lr in [1e-4, 1e-3, 3e-3]:
        _add(study, [lr], {"train.lr": lr, "lora.r": 8})
    _assert_png(plots.write_plots(study, tmp_path)["parallel_coordinates"]["path"])
    assert seen["p"] == ["train.lr"]


def test_plots_of_a_two_objective_study(tmp_path):
    rng = random.Random(2)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for _ in range(8):
        lr = 10 ** rng.uniform(-5, -2)
        _add(study, [rng.random(), lr * 10], {"train.lr": lr, "lora.r": rng.choice([8, 16])})
    answer = results.write_plots(study, tmp_path, objectives=["json_field_accuracy", "forgetting"])
    names = {"history-json_field_accuracy", "history-forgetting", "importances", "pareto_front",
             "parallel_coordinates-json_field_accuracy", "parallel_coordinates-forgetting"}
    assert set(answer) == names
    for name in names:
        _assert_png(answer[name]["path"])


def test_plots_skip_calmly_on_a_study_with_one_trial_or_none(tmp_path):
    study = _lr_study(1)
    answer = results.write_plots(study, tmp_path / "one")
    _assert_png(answer["history"]["path"])
    assert "needs 2 complete trials" in answer["importances"]["skipped"]
    assert answer["parallel_coordinates"] == {"skipped": "needs 2 complete trials, has 1"}

    empty = plots.write_plots(optuna.create_study(), tmp_path / "none")
    assert all("path" not in v for v in empty.values())
    assert empty["history"] == {"skipped": "no trial has completed yet"}
    assert list((tmp_path / "none").iterdir()) == []


def test_history_falls_back_to_plain_matplotlib_when_optunas_plot_fails(tmp_path, monkeypatch):
    import optuna.visualization.matplotlib as vm

    def broken(*args, **kwargs):
        raise RuntimeError("experimental API changed")

    monkeypatch.setattr(vm, "plot_optimization_history", broken)
    monkeypatch.setattr(vm, "plot_parallel_coordinate", broken)
    answer = plots.write_plots(_lr_study(4), tmp_path)
    _assert_png(answer["history"]["path"])
    assert answer["parallel_coordinates"] == {"skipped": "drawing failed: RuntimeError: experimental API changed"}


def test_trials_skipped_by_the_budget_show_as_one_line():
    study = optuna.create_study()
    _add(study, [0.5])
    for _ in range(3):
        _add(study, None, state=TrialState.FAIL,
             user_attrs={"skipped": True, "reason": "skipped: its estimated cost (36000 tokens) does not fit"})
    _add(study, None, state=TrialState.FAIL, user_attrs={"reason": "CUDA out of memory"})
    lines = results.format_lines(results.summarize(study))
    assert "  3 failed trials were skipped, never trained: their estimated cost did not fit what the budget had " \
           "left (#1, #2, #3)" in lines
    assert "  #4 failed: CUDA out of memory" in lines and not any("#1 failed" in line for line in lines)
