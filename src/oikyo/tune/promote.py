"""Promote a study's trial: train its config as the final model, then evaluate it ONCE on the test split.

Model selection (the study) only ever reads the train and validation splits, or folds of them; the
test split is read here, after the choice is made, by one ordinary evaluation job (the model against
its base, with the forgetting probe). A promotion is one ``tune_promotions`` row per (study, trial),
taken with a unique constraint, so however often ``oikyo tune promote`` runs, and from however many
machines, one trial's test score is measured once; running it again follows the promotion where it
stands (training, evaluating) or shows its result.

Which trial: ``--trial N``, or by default the best trial of a one-objective study, or the only point
of a multi-objective study's Pareto front (with several points the user chooses; they are listed).

Usage::

    from oikyo.tune import promote
    outcome = promote.promote("lr-sweep", log=print)             # blocks until evaluated
    outcome["test"]["model"]["metrics"]                            # the test-split scores
"""

from __future__ import annotations

import secrets
import time
from typing import Callable

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from oikyo.errors import OikyoError
from oikyo.store import db
from oikyo.store.models import TunePromotion, TuneStudy, utcnow
from oikyo.tune import objectives as objective_kinds
from oikyo.tune import study as studies

TRAINING, EVALUATING, DONE, FAILED = "training", "evaluating", "done", "failed"
POLL_S = 1.0
STATUS_S = 30.0


class PromoteError(OikyoError):
    """A trial cannot be promoted (not complete, not on the front, no such trial ...)."""


def choose_trial(study: TuneStudy, number: int | None) -> dict:
    """The trial to promote (a :func:`oikyo.tune.study.trials` row); raises PromoteError saying why not."""
    listed = studies.trials(study)
    found = {trial["number"]: trial for trial in listed}
    complete = {n: t for n, t in found.items() if t["state"] == "complete" and t["values"]}
    if number is not None:
        if number not in found:
            raise PromoteError(f"study {study.name} has no trial {number} (trials 0..{max(found, default=-1)})")
        if number not in complete:
            raise PromoteError(f"trial {number} of {study.name} is {found[number]['state']}; only a complete "
                               f"trial can be promoted")
        return complete[number]
    best = studies.describe(study, listed)["best_trials"]
    if not best:
        raise PromoteError(f"study {study.name} has no complete trial yet; `oikyo tune show {study.name}` shows it")
    if len(best) > 1:
        front = "; ".join(f"trial {n}: " + ", ".join(f"{k} {v:.4g}" for k, v in complete[n]["values"].items())
                          for n in best)
        raise PromoteError(f"study {study.name} has {len(best)} Pareto-optimal trials ({front}); choose one with "
                           f"--trial N")
    return complete[best[0]]


def get_promotion(study_id: str, number: int) -> TunePromotion | None:
    with db.session() as s:
        return s.scalar(select(TunePromotion).where(TunePromotion.study_id == study_id,
                                                    TunePromotion.trial_number == number))


def promotions(study_id: str) -> list[TunePromotion]:
    """A study's promotions, oldest first."""
    with db.session() as s:
        return list(s.scalars(select(TunePromotion).where(TunePromotion.study_id == study_id)
                              .order_by(TunePromotion.created_at)))


def _set(promotion_id: str, **values) -> None:
    with db.session() as s:
        s.execute(update(TunePromotion).where(TunePromotion.id == promotion_id).values(**values)
                  .execution_options(synchronize_session=False))


def _claim(study: TuneStudy, trial: dict) -> tuple[TunePromotion, bool]:
    """This trial's promotion row: (row, True) when this call made it, (existing row, False) otherwise."""
    row = TunePromotion(id=f"pr-{secrets.token_hex(4)}", study_id=study.id, trial_number=trial["number"],
                        params=trial["params"], state=TRAINING, created_at=utcnow())
    try:
        with db.session() as s:
            s.add(row)
        return row, True
    except IntegrityError:
        existing = get_promotion(study.id, trial["number"])
        assert existing is not None
        return existing, False


def _submit_training(study: TuneStudy, promotion: TunePromotion) -> str:
    """Queue the final run: the study's base config with the trial's params, on the study's own dataset
    (its train split; with --cv the folds were only for choosing). Returns the run id."""
    from oikyo.jobs import training
    from oikyo.tune.space import Space

    base = studies.base_config_file(study)
    overrides = Space.from_dict(study.space).overrides(promotion.params, study.base_config)
    prepared = training.prepare(base, overrides, name=f"{study.name}-promoted-t{promotion.trial_number}"[:200])
    run = training.enqueue(prepared)
    _set(promotion.id, run_id=run.id)
    return run.id


def _submit_test_evaluation(study: TuneStudy, promotion: TunePromotion, run_id: str) -> str:
    """Queue the one test-split evaluation (model against base, with the forgetting probe)."""
    from oikyo.evaluate.jobs import submit_evaluation
    from oikyo.evaluate.runner import EvalSpec
    from oikyo.jobs import model_versions

    found = model_versions.list_versions(run_id=run_id)
    if not found:
        raise PromoteError(f"the promoted run {run_id} succeeded without a model version")
    metrics = objective_kinds.metric_names(list(study.objectives)) or None  # None: chosen from the references
    spec = EvalSpec(model=found[-1].id, dataset=study.dataset_version_id, split="test", metrics=metrics,
                    baselines=True, few_shot_k=0, probe=True)
    job = submit_evaluation(spec, name=f"{study.name}-promoted-t{promotion.trial_number}-test"[:200])
    with db.session() as s:  # conditional: a concurrent promote that queued one first keeps its job
        result = s.execute(update(TunePromotion).where(TunePromotion.id == promotion.id,
                                                       TunePromotion.eval_job_id.is_(None))
                           .values(eval_job_id=job.id, state=EVALUATING).execution_options(synchronize_session=False))
        won = result.rowcount == 1
    if not won:
        from oikyo.jobs import queue

        queue.request_cancel(job.id)
        return get_promotion(study.id, promotion.trial_number).eval_job_id
    return job.id


def _follow(run_id: str, what: str, log: Callable[[str], None], should_stop: Callable[[], bool]):
    """Wait for a queued job, with a status line now and then; returns its finished record (None if stopped)."""
    from oikyo.jobs import queue, runs

    last = 0.0
    while (run := queue.get(run_id)).state not in queue.FINISHED:
        if should_stop():
            return None
        if time.monotonic() - last >= STATUS_S:
            last = time.monotonic()
            progress = runs.progress(run_id)
            log(f"{what} {run_id}: {run.state}, step {progress.step}/{progress.total_steps or '?'}")
        time.sleep(POLL_S)
    return run


def describe(promotion: TunePromotion) -> dict:
    """A promotion with its test-split results (JSON-ready)."""
    from oikyo.evaluate import records

    info = {"id": promotion.id, "study_id": promotion.study_id, "trial": promotion.trial_number,
            "params": promotion.params, "run_id": promotion.run_id, "eval_job_id": promotion.eval_job_id,
            "state": promotion.state, "error": promotion.error, "model_version": None, "test": {}}
    if promotion.run_id:
        from oikyo.jobs import model_versions

        found = model_versions.list_versions(run_id=promotion.run_id)
        info["model_version"] = found[-1].id if found else None
    if promotion.eval_job_id:
        for ev in records.list_evaluations(group_id=promotion.eval_job_id, limit=None):
            info["test"][ev.role] = {"evaluation": ev.id, "metrics": ev.metrics, "forgetting": ev.forgetting}
    return info


def promote(ref: str, trial: int | None = None, *, log: Callable[[str], None] = print,
            should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Train the chosen trial's config and evaluate it once on the test split; returns :func:`describe`.

    Blocks until done (a worker must serve the queue: the CLI starts one). Stopped (``should_stop``)
    or interrupted, running it again follows the same promotion where it stands.
    """
    study = studies.get(ref)
    chosen = choose_trial(study, trial)
    promotion, new = _claim(study, chosen)
    values = ", ".join(f"{k} {v:.4g}" for k, v in chosen["values"].items())
    if new:
        log(f"Promoting trial {chosen['number']} of {study.name} ({values})")
    else:
        log(f"Trial {chosen['number']} of {study.name} was promoted before ({promotion.id}, {promotion.state}); "
            f"following it (its test split is evaluated once)")
    if promotion.state == DONE:
        return describe(promotion)
    if promotion.state == FAILED:  # the user resumed the failed run or job (`oikyo runs resume`): follow it again
        _set(promotion.id, state=EVALUATING if promotion.eval_job_id else TRAINING, error=None)
    try:
        return _drive(study, promotion, log, should_stop)
    except OikyoError as error:
        _set(promotion.id, state=FAILED, error=str(error), finished_at=utcnow())
        raise


def _drive(study: TuneStudy, promotion: TunePromotion, log, should_stop) -> dict:
    run_id = promotion.run_id or _submit_training(study, promotion)
    if promotion.eval_job_id is None:
        log(f"Training the final model: run {run_id}")
        run = _follow(run_id, "run", log, should_stop)
        if run is None:
            return describe(get_promotion(study.id, promotion.trial_number))
        if run.state != "succeeded":
            raise PromoteError(f"the promoted run {run_id} ended {run.state}: {run.error or 'no reason recorded'}; "
                               f"`oikyo runs resume {run_id}` and promote again")
        job_id = _submit_test_evaluation(study, get_promotion(study.id, promotion.trial_number), run_id)
    else:
        job_id = promotion.eval_job_id
    log(f"Evaluating it once on the test split (against its base model, with the forgetting probe): job {job_id}")
    job = _follow(job_id, "evaluation", log, should_stop)
    if job is None:
        return describe(get_promotion(study.id, promotion.trial_number))
    if job.state != "succeeded":
        raise PromoteError(f"the test evaluation {job_id} ended {job.state}: {job.error or 'no reason recorded'}")
    _set(promotion.id, state=DONE, finished_at=utcnow())
    return describe(get_promotion(study.id, promotion.trial_number))
