"""What a study optimizes: the objectives, their directions, and how a trial's run is scored.

Three kinds of objective, never measured on the test split:

- ``val_loss`` (minimize): the best ``eval_loss`` the run reported on its validation split while it
  trained (the live metrics of :mod:`oikyo.jobs.metrics`); no extra work.
- an evaluation metric (``json_field_accuracy``, ``rougeL``, ``exact_match`` ...; direction from
  the metric registry's ``higher_is_better``): the trial's model version evaluated on the
  VALIDATION split by an ordinary evaluation job (:func:`oikyo.evaluate.jobs.submit_evaluation`),
  so it runs on the workers and leaves an ordinary evaluation record.
- ``forgetting`` (minimize): the forgetting probe of the trial's model against its base
  (:mod:`oikyo.evaluate.forgetting`), in the same evaluation job; the probe reads no dataset rows
  (the job itself scores one validation row when no metric objective asks for more).

Usage::

    directions(["json_field_accuracy", "forgetting"])     # ["maximize", "minimize"]
    problems(["val_loss", "no_such_metric"])              # ["--objective no_such_metric: ..."]
    val_loss(run_id)                                      # best eval_loss, or None
    job = submit_evaluation(run, ["rougeL"], split="validation")  # None when only val_loss is asked
    values = read_evaluation(job, ["rougeL"])             # {"rougeL": 0.41} once the job succeeded
"""

from __future__ import annotations

from oikyo.errors import OikyoError

VAL_LOSS = "val_loss"
FORGETTING = "forgetting"
SPECIAL = (VAL_LOSS, FORGETTING)


def _registry():
    from oikyo.evaluate import metrics as registry

    return registry


def direction(name: str) -> str:
    """``minimize`` or ``maximize`` for one objective."""
    if name in SPECIAL:
        return "minimize"
    from oikyo.evaluate.records import _higher_is_better

    return "maximize" if _higher_is_better(name) else "minimize"


def directions(names: list[str]) -> list[str]:
    return [direction(name) for name in names]


def problems(names: list[str]) -> list[str]:
    """One line per objective that cannot be used (unknown metric, given twice)."""
    found = []
    known = sorted(_registry().METRICS)
    for name in names:
        if name in SPECIAL:
            continue
        if name not in _registry().METRICS:
            found.append(f"--objective {name}: not an objective; use val_loss, forgetting or an evaluation metric "
                         f"({', '.join(known)})")
    if len(set(names)) != len(names):
        found.append(f"--objective: each objective once please (got {', '.join(names)})")
    return found


def metric_names(names: list[str]) -> list[str]:
    """The objectives that are evaluation metrics (scored by an evaluation job)."""
    return [name for name in names if name not in SPECIAL]


def needs_evaluation(names: list[str]) -> bool:
    return any(name != VAL_LOSS for name in names)


def val_loss(run_id: str) -> float | None:
    """The best (lowest) ``eval_loss`` the run reported on its validation split, or None."""
    from oikyo.jobs import metrics

    points = metrics.series(run_id, ["eval_loss"]).get("eval_loss") or []
    return min(value for _, value in points) if points else None


def submit_evaluation(run, names: list[str], *, split: str) -> str | None:
    """Queue the evaluation job that scores ``run``'s model version for ``names`` (None when none needs one).

    The model is evaluated on ``split`` of the run's own dataset version (the validation split,
    or a fold's): model selection never reads the test split.
    """
    if not needs_evaluation(names):
        return None
    from oikyo.evaluate.jobs import submit_evaluation as submit
    from oikyo.evaluate.runner import EvalSpec
    from oikyo.jobs import model_versions

    found = model_versions.list_versions(run_id=run.id)
    if not found:
        raise OikyoError(f"run {run.id} succeeded without a model version to evaluate")
    metrics = metric_names(names)
    forgetting = FORGETTING in names
    spec = EvalSpec(model=found[-1].id, dataset=run.dataset_version_id, split=split,
                    metrics=metrics or ["loss"], limit=None if metrics else 1,
                    baselines=forgetting, few_shot_k=0, probe=forgetting)
    job = submit(spec, name=f"{run.name}-eval"[:200])
    return job.id


def read_evaluation(job_id: str, names: list[str]) -> dict[str, float]:
    """The objective values an evaluation job found (raises OikyoError when a value is missing)."""
    from oikyo.evaluate import records

    values: dict[str, float] = {}
    model = [ev for ev in records.list_evaluations(group_id=job_id, limit=None) if ev.role == "model"]
    if not model:
        raise OikyoError(f"evaluation job {job_id} stored no evaluation of the model")
    record = model[0]
    for name in metric_names(names):
        value = record.metrics.get(name)
        if not isinstance(value, (int, float)):
            raise OikyoError(f"evaluation {record.id} has no {name} (it has {', '.join(record.metrics) or 'none'})")
        values[name] = float(value)
    if FORGETTING in names:
        value = (record.forgetting or {}).get("forgetting")
        if not isinstance(value, (int, float)):
            raise OikyoError(f"evaluation {record.id} holds no forgetting probe result")
        values[FORGETTING] = float(value)
    return values
