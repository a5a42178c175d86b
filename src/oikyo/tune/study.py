"""Tuning studies: Optuna searches whose trials are ordinary training runs in the job queue.

A study is one record in ``tune_studies`` (oikyo's view: the resolved base config with its dataset
pinned, the search space, the objectives and their directions, sampler, pruner, folds, trial count,
parallelism, budget, seed, state) plus one Optuna study in Optuna's RDB storage, which holds the
trials (params, values, intermediate values, states, user attributes). Every trial trains through
:mod:`oikyo.jobs.training` like ``oikyo train`` does, tagged ``runs.study_id``/``runs.trial_number``,
so its records, checkpoints, live metrics and lineage are the ordinary ones.

Invariants:

- N trials means N trials: a driver takes a trial slot with ONE conditional UPDATE on
  ``tune_studies`` (``launched < n_trials``, rowcount 1) before ``ask()``, as the queue's claim does,
  so any number of drivers on any number of machines never start more than ``n_trials``.
- No trial runs twice: a trial's runs are queued once, and the queue's claim gives each to one worker.
- A driver that stops (Ctrl-C, a crash) leaves its trials' runs training; the next driver
  (``--resume``/``--join``) adopts trials whose driver stopped heart-beating (user attribute
  ``driver_seen``) and follows their runs instead of starting new ones.
- Model selection never reads the test split (see :mod:`oikyo.tune.objectives`).

Usage::

    from oikyo.tune import study
    s = study.create_study("base.yaml", objectives=["val_loss"], n_trials=20, name="lr-sweep")
    study.run_study(s.id, log=print)           # drives it to the end (see oikyo.tune.driver)
    study.trials("lr-sweep")                    # [{"number", "state", "params", "values", "run_ids", ...}]
    study.describe(study.get("lr-sweep"))       # JSON-ready, for the REST API
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from sqlalchemy import func, select, update

from oikyo import workspace
from oikyo.errors import OikyoError
from oikyo.store import db
from oikyo.store.models import Metric, Run, TuneStudy, utcnow
from oikyo.tune import budget as budgets
from oikyo.tune import objectives as objective_kinds
from oikyo.tune import results

SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("median", "sha", "hyperband", "none")
RUNNING, INTERRUPTED, FINISHED = "running", "interrupted", "finished"
OPTUNA_SCHEMA = "optuna"


class TuneError(OikyoError):
    """A study cannot be created or driven; ``problems`` lists every problem found (one line each)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


# --- Optuna's storage --------------------------------------------------------------------------

_storage_lock = threading.Lock()
_storages: dict[str, Any] = {}


def optuna_url() -> tuple[str, dict]:
    """(SQLAlchemy URL, engine kwargs) of Optuna's storage for this workspace (see :func:`optuna_storage`)."""
    from sqlalchemy.engine import make_url

    url = workspace.database_url()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:":
            raise TuneError("tuning studies need a database file or server (OIKYO_DATABASE_URL is in memory)")
        beside = Path(database).with_name("optuna.db")
        return f"sqlite:///{beside}", {"connect_args": {"timeout": 60}}
    if parsed.get_backend_name() == "postgresql":
        return url, {"connect_args": {"options": f"-c search_path={OPTUNA_SCHEMA}"}, "pool_pre_ping": True}
    raise TuneError(f"tuning studies need SQLite or PostgreSQL; the store is {parsed.get_backend_name()}")


def optuna_storage():
    """Optuna's RDB storage for this workspace's database, kept apart from oikyo's own tables.

    Why apart: Optuna's RDB storage runs its own Alembic migrations, with its own
    ``alembic_version`` table and tables named ``studies``, ``trials`` ..., which would clash with
    oikyo's Alembic table (and could clash with its tables) in the same schema. So on PostgreSQL
    Optuna gets the same database with a separate schema ``optuna`` (created when missing;
    connections set ``search_path=optuna``), so every machine that shares oikyo's database shares
    the studies too; on SQLite it gets a file ``optuna.db`` beside the workspace's ``oikyo.db``
    (in WAL mode, with a long busy timeout, as several drivers write it at once).
    """
    import optuna
    from sqlalchemy import create_engine, text

    url, engine_kwargs = optuna_url()
    with _storage_lock:
        if url in _storages:
            return _storages[url]
        if url.startswith("sqlite"):
            import sqlite3

            connection = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=60)
            connection.execute("PRAGMA journal_mode=WAL")  # persistent: every later connection uses it
            connection.close()
        else:
            engine = create_engine(url)
            with engine.begin() as connection:
                connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
            engine.dispose()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the driver prints its own lines
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        _storages[url] = storage
        return storage


def reset_storage() -> None:
    """Forget cached storages (tests switch workspaces)."""
    with _storage_lock:
        for storage in _storages.values():
            storage.engine.dispose()
        _storages.clear()


def make_sampler(name: str, seed: int | None, n_trials: int):
    """The Optuna sampler called ``name``. TPE with ``constant_liar`` so parallel trials spread out."""
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    startup = min(10, max(3, n_trials // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def make_pruner(name: str, n_trials: int):
    """The Optuna pruner called ``name``; steps are training steps (summed over folds with --cv)."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(2, n_trials // 5)), n_warmup_steps=0)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def load_optuna(study: TuneStudy, *, sampler_seed: int | None = None):
    """The Optuna study behind ``study``, with its sampler and pruner (seeded with ``sampler_seed``, else
    the study's seed)."""
    import optuna

    seed = study.seed if sampler_seed is None else sampler_seed
    return optuna.load_study(study_name=study.optuna_name, storage=optuna_storage(),
                             sampler=make_sampler(study.sampler, seed, study.n_trials),
                             pruner=make_pruner(study.pruner, study.n_trials))


# --- creating and finding studies --------------------------------------------------------------


def _option_problems(*, objectives: list[str], n_trials: int, parallel: int, cv: int | None, sampler: str | None,
                     pruner: str | None, budget: str | None) -> list[str]:
    problems = objective_kinds.problems(objectives)
    if not objectives:
        problems.append("--objective: name at least one (val_loss, forgetting or an evaluation metric)")
    if n_trials < 1:
        problems.append(f"--trials: must be at least 1 (got {n_trials})")
    if parallel < 1:
        problems.append(f"--parallel: must be at least 1 (got {parallel})")
    if cv is not None and cv < 2:
        problems.append(f"--cv: cross-validation needs at least 2 folds (got {cv})")
    if sampler is not None and sampler not in SAMPLERS:
        problems.append(f"--sampler {sampler}: use one of {', '.join(SAMPLERS)}")
    if pruner is not None and pruner not in PRUNERS:
        problems.append(f"--pruner {pruner}: use one of {', '.join(PRUNERS)}")
    if pruner not in (None, "none") and len(objectives) > 1:
        problems.append(f"--pruner {pruner}: Optuna cannot prune multi-objective studies "
                        f"({len(objectives)} objectives); leave --pruner out or pass --pruner none")
    try:
        budgets.parse_budget(budget)
    except budgets.BudgetError as error:
        problems.append(f"--budget: {error}")
    return problems


def _config_problems(config: dict, objectives: list[str], pruner: str, cv: int | None) -> list[str]:
    """Problems of the base config for a study: the test split is never read, and eval_loss must exist."""
    data = config.get("data") or {}
    problems = []
    for field in ("train_split", "eval_split"):
        if data.get(field) == "test":
            problems.append(f"data.{field}: a study never reads the test split (it selects models on the "
                            "validation split); use train/validation")
    needs_eval_loss = objective_kinds.VAL_LOSS in objectives or pruner != "none"
    if needs_eval_loss and not cv and not data.get("eval_split"):
        problems.append("data.eval_split: val_loss and pruning need validation losses; set data.eval_split "
                        "(e.g. validation) or pass --pruner none with another objective")
    train = config.get("train") or {}
    if needs_eval_loss and train.get("eval_every") in (0,):
        problems.append("train.eval_every: must report validation losses for val_loss and pruning")
    return problems


def create_study(config: str | Path | None = None, overrides: Iterable[str] = (), *, dataset: str | None = None,
                 model: str | None = None, space: str | Path | Any | None = None,
                 objectives: list[str] | tuple[str, ...] = (objective_kinds.VAL_LOSS,), n_trials: int = 20,
                 parallel: int = 1, budget: str | None = None, sampler: str | None = None,
                 pruner: str | None = None, cv: int | None = None, seed: int = 0, name: str | None = None,
                 log: Callable[[str], None] | None = None) -> TuneStudy:
    """Validate everything, then record a new study (nothing is queued yet; :func:`run_study` drives it).

    Raises :class:`TuneError` listing every problem (options, search space, config, dataset and
    model references) before anything is stored or queued.
    """
    import optuna

    from oikyo.jobs import training
    from oikyo.train.config import ConfigError
    from oikyo.tune.space import Space, SpaceError, load_space

    objectives = list(objectives)
    problems = _option_problems(objectives=objectives, n_trials=n_trials, parallel=parallel, cv=cv,
                                sampler=sampler, pruner=pruner, budget=budget)
    if name is not None and find(name) is not None:
        problems.append(f"--name {name}: a study of that name exists; `oikyo tune --join {name}` drives it")
    space_obj = prepared = None
    try:
        space_obj = space if isinstance(space, Space) else load_space(space)
    except SpaceError as error:
        problems += [f"space: {p}" for p in error.problems]
    try:
        prepared = training.prepare(config, overrides, dataset=dataset, model=model, log=log)
    except (ConfigError, training.SubmitError) as error:
        problems += error.problems
    if space_obj is None or prepared is None:
        raise TuneError("the study was not created:\n" + "\n".join(f"  - {p}" for p in problems), problems)
    base = prepared.config_dict
    pruner = pruner or ("median" if len(objectives) == 1 else "none")
    # Several objectives: TPE (multi-objective TPE in Optuna) rather than NSGA-II, whose first generation
    # (50 trials by default) is random: studies of tens of trials learn sooner with TPE.
    sampler = sampler or "tpe"
    problems += _config_problems(base, objectives, pruner, cv)
    problems += [f"space: {p}" for p in space_obj.check_against(base)]
    if problems:
        raise TuneError("the study was not created:\n" + "\n".join(f"  - {p}" for p in problems), problems)
    fold_ids = None
    if cv:
        from oikyo.tune.folds import make_folds

        fold_ids = [version.id for version in make_folds(prepared.dataset.id, cv, seed=seed)]
    study_id = f"st-{secrets.token_hex(4)}"
    record = TuneStudy(id=study_id, name=(name or f"{prepared.name}-{study_id[3:]}")[:200],
                       optuna_name=f"oikyo-{study_id}", base_config=base, space=space_obj.to_dict(),
                       objectives=objectives, directions=objective_kinds.directions(objectives), sampler=sampler,
                       pruner=pruner, cv=cv, fold_datasets=fold_ids, n_trials=n_trials, parallel=parallel,
                       budget=budget, seed=seed, state=RUNNING, launched=0, dataset_version_id=prepared.dataset.id,
                       created_at=utcnow())
    optuna.create_study(storage=optuna_storage(), study_name=record.optuna_name, directions=record.directions,
                        load_if_exists=True)
    with db.session() as s:
        s.add(record)
    return record


def find(name_or_id: str) -> TuneStudy | None:
    """The study with exactly this name or id, or None."""
    with db.session() as s:
        return s.scalar(select(TuneStudy).where((TuneStudy.name == name_or_id) | (TuneStudy.id == name_or_id)))


def get(ref: str) -> TuneStudy:
    """The study a user means: its name, its id, or a unique prefix of the id (``st-`` may be left out)."""
    found = find(ref.strip())
    if found is not None:
        return found
    return db.by_id_prefix(TuneStudy, ref, id_prefix="st-", noun="study", list_hint="oikyo tune list")


def list_studies(limit: int = 100) -> list[TuneStudy]:
    """Studies, newest first."""
    with db.session() as s:
        return list(s.scalars(select(TuneStudy).order_by(TuneStudy.created_at.desc(), TuneStudy.id).limit(limit)))


def take_slot(study_id: str) -> bool:
    """Take one trial slot (ONE conditional UPDATE, as the queue's claim): False when all are taken."""
    with db.session() as s:
        result = s.execute(update(TuneStudy).where(TuneStudy.id == study_id, TuneStudy.launched < TuneStudy.n_trials)
                           .values(launched=TuneStudy.launched + 1).execution_options(synchronize_session=False))
        return result.rowcount == 1


def release_slot(study_id: str) -> None:
    """Give back a slot taken by :func:`take_slot` for a trial that did not train (skipped by the budget)."""
    with db.session() as s:
        s.execute(update(TuneStudy).where(TuneStudy.id == study_id, TuneStudy.launched > 0)
                  .values(launched=TuneStudy.launched - 1).execution_options(synchronize_session=False))


def set_state(study_id: str, state: str) -> None:
    with db.session() as s:
        s.execute(update(TuneStudy).where(TuneStudy.id == study_id)
                  .values(state=state, finished_at=utcnow() if state == FINISHED else None)
                  .execution_options(synchronize_session=False))


def run_study(ref: str, *, log: Callable[[str], None] = print, should_stop: Callable[[], bool] = lambda: False,
              poll_s: float = 1.0) -> dict:
    """Drive a study until its trials are done, its budget is spent or ``should_stop()``; returns :func:`describe`.

    Any number of drivers may run one study at once (``oikyo tune --join``); a driver started on a
    study whose driver stopped follows that driver's trials first (``oikyo tune --resume``).
    """
    from oikyo.tune.driver import Driver

    Driver(get(ref), log=log, should_stop=should_stop, poll_s=poll_s).run()
    return describe(get(ref))


def base_config_file(study: TuneStudy) -> Path:
    """The study's base config as a YAML file in the workspace (written atomically, once per caller), so
    trials and promotions go through the same ``training.prepare(file, overrides)`` as `oikyo train`."""
    import os

    import yaml

    folder = workspace.subdir("tune") / study.id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "base.yaml"
    tmp = folder / f".base.yaml.{os.getpid()}.{threading.get_ident()}"
    tmp.write_text(yaml.safe_dump(study.base_config, sort_keys=False, allow_unicode=True))
    tmp.replace(path)
    return path


# --- reading a study ---------------------------------------------------------------------------


def study_runs(study_id: str) -> list[Run]:
    """The training runs of a study's trials, oldest first."""
    with db.session() as s:
        return list(s.scalars(select(Run).where(Run.study_id == study_id).order_by(Run.created_at, Run.id)))


def run_tokens(run_ids: list[str]) -> dict[str, float]:
    """The newest ``tokens`` metric of each run (training tokens consumed so far)."""
    if not run_ids:
        return {}
    with db.session() as s:
        newest = (select(Metric.run_id, func.max(Metric.id).label("id"))
                  .where(Metric.run_id.in_(run_ids), Metric.name == "tokens").group_by(Metric.run_id).subquery())
        found = s.execute(select(Metric.run_id, Metric.value).join(newest, Metric.id == newest.c.id)).all()
    return {run_id: value for run_id, value in found}


def _iso(moment) -> str | None:
    from oikyo.jobs.queue import aware

    return aware(moment).isoformat() if moment else None


def trials(ref: str | TuneStudy) -> list[dict]:
    """Every trial: number, state, params, values (by objective), run_ids, reason, duplicate_of (the trial whose
    result a repeated configuration took), started/finished, tokens."""
    study = ref if isinstance(ref, TuneStudy) else get(ref)
    by_trial: dict[int, list[str]] = {}
    for run in study_runs(study.id):
        by_trial.setdefault(run.trial_number, []).append(run.id)
    tokens = run_tokens([run_id for ids in by_trial.values() for run_id in ids])
    out = []
    for trial in load_optuna(study).get_trials(deepcopy=False):
        attrs = trial.user_attrs
        values = None
        if trial.values is not None:
            values = dict(zip(study.objectives, trial.values))
        run_ids = by_trial.get(trial.number, [])
        out.append({
            "number": trial.number, "state": results.state_name(trial),
            "params": attrs.get("values") or dict(trial.params), "values": values,
            "std": attrs.get("std"), "fold_values": attrs.get("fold_results"), "run_ids": run_ids,
            "eval_runs": attrs.get("eval_jobs") or [], "reason": attrs.get("reason"),
            "duplicate_of": attrs.get("duplicate_of"),
            "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
            "finished": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
            "tokens": sum(tokens.get(run_id, 0.0) for run_id in run_ids),
            "intermediate": {int(step): value for step, value in sorted(trial.intermediate_values.items())},
        })
    return out


def describe(study: TuneStudy, found: list[dict] | None = None) -> dict:
    """A study's record with its trial counts and best trials, JSON-ready (for the REST API).

    ``found``: the study's :func:`trials` when the caller has read them already (they are not read twice)."""
    found = trials(study) if found is None else found
    counts: dict[str, int] = {}
    for trial in found:
        counts[trial["state"]] = counts.get(trial["state"], 0) + 1
    complete = [t for t in found if t["state"] == "complete" and t["values"]]
    best = []
    if len(study.objectives) == 1 and complete:
        sign = 1 if study.directions[0] == "minimize" else -1
        best = [min(complete, key=lambda t: sign * t["values"][study.objectives[0]])["number"]]
    elif complete:
        best = sorted(t.number for t in load_optuna(study).best_trials)
    return {
        "id": study.id, "name": study.name, "state": study.state, "objectives": study.objectives,
        "directions": study.directions, "sampler": study.sampler, "pruner": study.pruner, "cv": study.cv,
        "fold_datasets": study.fold_datasets, "n_trials": study.n_trials, "parallel": study.parallel,
        "budget": study.budget, "seed": study.seed, "launched": study.launched,
        "dataset_version": study.dataset_version_id, "optuna_name": study.optuna_name,
        "created_at": _iso(study.created_at), "finished_at": _iso(study.finished_at),
        "counts": counts, "best_trials": best, "base_config": study.base_config, "space": study.space,
    }
