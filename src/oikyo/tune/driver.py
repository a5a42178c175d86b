"""The study driver: launches trials as training runs, follows them, prunes, scores and tells Optuna.

One :class:`Driver` per ``oikyo tune`` process. Each tick it

1. adopts trials whose driver stopped (RUNNING in Optuna, ``driver_seen`` older than
   ``OIKYO_TUNE_DRIVER_STALE_S``, default 30 s): their runs are followed again, not started anew;
2. follows each of its trials (:class:`Follower`): new ``eval_loss`` points of the current run go
   to ``trial.report`` (step = training steps summed over the trial's earlier folds + the run's
   step, so with ``--cv`` fold i of every trial is compared at the same steps) and
   ``trial.should_prune()``; a pruned trial's run is cancelled through the job system's own path
   (``queue.request_cancel``) with a run event "pruned by study ..."; a finished run is scored
   (``val_loss`` from its metrics, other objectives by an evaluation job on the validation split),
   then the next fold starts, or Optuna is told the mean over folds (the std goes to user attr ``std``);
   a failed run fails the trial with its reason (user attr ``reason``) and the study goes on;
3. with a budget, stops the trials still training once it is spent (:func:`oikyo.tune.budget.reached`:
   their runs are cancelled with a run event "stopped by study ...: its budget ... is spent", and
   the trials count as pruned, user attr ``reason``);
4. launches new trials while it follows fewer than ``parallel``, the budget allows, and a trial
   slot can be taken (:func:`oikyo.tune.study.take_slot`, then ``ask()``). With a budget, a drawn
   trial whose estimated cost does not fit what is left (:func:`oikyo.tune.budget.fits`) is skipped:
   told to Optuna as failed (user attrs ``skipped`` and ``reason``), its slot given back, and
   another drawn. A drawn configuration that a complete trial already trained is not trained again:
   it gets that trial's values (user attr ``duplicate_of``) and another is drawn. After
   :data:`SKIP_LIMIT` such draws in a row (skips or repeats), or once even the space's cheapest
   configuration does not fit (:func:`oikyo.tune.budget.cheapest_rows`), no more trials start.

A trial's state lives in Optuna's user attributes (``values``, ``fold_results``, ``eval_jobs``,
``offset``, ``driver``, ``driver_seen``) and in the runs tagged with it, so any driver can pick it up.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from oikyo.errors import OikyoError
from oikyo.jobs import metrics, queue
from oikyo.store import db
from oikyo.store.models import Run, TuneStudy
from oikyo.tune import budget as budgets
from oikyo.tune import objectives as objective_kinds
from oikyo.tune import study as studies

BEAT_S = 5.0  # how often a driver marks its trials as followed
STATUS_S = 30.0  # how often a status line is printed
# Draws in a row that start nothing (too costly for the budget left, or repeats) before a study stops starting trials.
SKIP_LIMIT = 10


def stale_after_s() -> float:
    try:
        return float(os.environ.get("OIKYO_TUNE_DRIVER_STALE_S", "30"))
    except ValueError:
        return 30.0


@dataclass
class Follower:
    """One trial this driver follows: its params, its runs (one per fold) and what they scored."""

    number: int
    trial_id: int
    values: dict
    overrides: list[str]
    run_ids: list[str] = field(default_factory=list)
    fold_results: list[dict] = field(default_factory=list)
    eval_jobs: list[str] = field(default_factory=list)
    reported: set[int] = field(default_factory=set)
    offset: int = 0
    last_step: int = 0


def _fmt(values: dict) -> str:
    def one(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return ", ".join(f"{key}={one(value)}" for key, value in values.items())


class Driver:
    """Drives one study from this process (see the module docstring)."""

    def __init__(self, study: TuneStudy, *, log: Callable[[str], None], should_stop: Callable[[], bool],
                 poll_s: float = 1.0):
        from oikyo.tune.space import Space

        self.study, self.say, self.should_stop, self.poll_s = study, log, should_stop, poll_s
        self.owner = queue.new_owner()
        seed = study.seed if study.launched == 0 else hash((study.seed, study.launched, self.owner)) % 2**31
        self.ostudy = studies.load_optuna(study, sampler_seed=seed)
        self.storage = studies.optuna_storage()
        self.space = Space.from_dict(study.space)
        self.budget = budgets.parse_budget(study.budget)
        self.folds: list[str | None] = list(study.fold_datasets or [None])
        self.pruning = study.pruner != "none" and len(study.objectives) == 1
        self.sign = 1.0 if study.directions[0] == "minimize" else -1.0  # eval_loss reported in the study's direction
        self.followers: dict[int, Follower] = {}
        self.base_yaml = studies.base_config_file(study)
        self._last_beat = self._last_status = 0.0
        self.budget_spent = False
        self.skips = 0  # trials drawn in a row that started nothing (too costly for the budget left, or repeats)
        self._finished_rows: dict[str, int] = {}  # rows trained by each finished run (they never change)

    # --- the loop --------------------------------------------------------------------------------

    def run(self) -> str:
        """Drive until every trial is done (``finished``), or stopped (``interrupted``); returns which."""
        studies.set_state(self.study.id, studies.RUNNING)
        self.say(f"Study {self.study.name} ({self.study.id}): {self.study.n_trials} trials, objectives "
                 f"{', '.join(f'{o} ({d})' for o, d in zip(self.study.objectives, self.study.directions))}, "
                 f"sampler {self.study.sampler}, pruner {self.study.pruner}"
                 + (f", {self.study.cv}-fold cross-validation" if self.study.cv else "")
                 + (f", budget {self.study.budget}" if self.study.budget else ""))
        while True:
            if self.should_stop():
                return self._interrupt()
            now = time.monotonic()
            if now - self._last_beat >= min(BEAT_S, stale_after_s()):
                self._adopt()
                self._beat()
                self._last_beat = now
            for follower in list(self.followers.values()):
                self._tick(follower)
            self._stop_at_budget()
            launched = self._launch_more()
            if not self.followers and not launched and not self._others_running():
                return self._finish()
            # Otherwise other drivers follow the last trials: this one waits with them, and adopts a trial
            # whose driver stops, so the study ends even if that driver dies.
            if now - self._last_status >= STATUS_S:
                self._status()
                self._last_status = now
            time.sleep(self.poll_s)

    def _interrupt(self) -> str:
        for follower in self.followers.values():  # adoptable at once by `oikyo tune --resume`
            self._attr(follower, "driver_seen", 0.0)
        studies.set_state(self.study.id, studies.INTERRUPTED)
        if self.followers:
            self.say(f"Stopped driving; trials {', '.join(str(n) for n in self.followers)} keep training. "
                     f"`oikyo tune --resume {self.study.name}` follows them again and goes on.")
        return studies.INTERRUPTED

    def _finish(self) -> str:
        studies.set_state(self.study.id, studies.FINISHED)
        self._status(final=True)
        return studies.FINISHED

    # --- launching -------------------------------------------------------------------------------

    def _launch_more(self) -> int:
        launched = 0
        while len(self.followers) < self.study.parallel:
            if self.skips >= SKIP_LIMIT or not self._budget_allows():  # a launch resets skips: the limit holds
                break
            if not studies.take_slot(self.study.id):
                break
            if self._start_trial():
                launched += 1
        return launched

    def _start_trial(self) -> bool:
        """Ask Optuna for a trial and launch it; False when it was skipped (it does not fit the budget left)."""
        trial = self.ostudy.ask()
        values = self.space.suggest(trial)
        follower = Follower(number=trial.number, trial_id=trial._trial_id, values=values,
                            overrides=self.space.overrides(values, self.study.base_config))
        self._attr(follower, "values", values)
        if self._repeats_a_trained_one(follower):
            return False
        if self.budget is not None and self._skip_unaffordable(follower):
            return False
        self.skips = 0
        self._attr(follower, "driver", self.owner)
        self._attr(follower, "driver_seen", time.time())
        self.followers[follower.number] = follower
        self._launch_run(follower)
        return True

    def _repeats_a_trained_one(self, follower: Follower) -> bool:
        """A drawn configuration that a complete trial of this study already trained is not trained again.

        A trial is a deterministic run of its configuration (the same seed, data and steps), so training it
        again would spend its tokens to learn the same value. Samplers do draw repeats: among a handful of
        draws from a space of 16 categorical configurations, about half of the studies draw one, and TPE
        draws its favourite again and again. The repeat is told to Optuna as complete with the earlier
        trial's values (what it would have reported), with user attrs ``duplicate_of`` and ``reason``; its
        slot is given back and another trial is drawn. :data:`SKIP_LIMIT` draws in a row that start nothing
        (repeats or budget skips) end the study's launching: the sampler keeps proposing what it has
        already seen, or the space is exhausted. Pruned and failed trials are not reused: whether a run
        is pruned depends on the trials beside it. True when the draw was a repeat.
        """
        import optuna

        for earlier in self.ostudy.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if earlier.number == follower.number or earlier.user_attrs.get("values") != follower.values:
                continue
            original = earlier.user_attrs.get("duplicate_of", earlier.number)
            self._attr(follower, "duplicate_of", original)
            self._attr(follower, "reason", f"the same configuration as trial {original}: its result, not trained again")
            values = list(earlier.values)
            self.ostudy.tell(follower.number, values if len(values) > 1 else values[0],
                             state=optuna.trial.TrialState.COMPLETE, skip_if_finished=True)
            studies.release_slot(self.study.id)
            self.skips += 1
            self.say(f"trial {follower.number} repeats trial {original}'s configuration: its result, not trained "
                     f"again  ({_fmt(follower.values)})")
            if self.skips >= SKIP_LIMIT:
                self.say(f"None of the last {SKIP_LIMIT} trials drawn started (repeats of trained configurations or "
                         "too costly for the budget left): no more trials start.")
            return True
        return False

    def _skip_unaffordable(self, follower: Follower) -> bool:
        """Skip the drawn trial when its estimated cost does not fit what the budget has left (see
        :mod:`oikyo.tune.budget`): Optuna is told it failed (it learns nothing from it), its slot is given
        back, and the caller draws again. True when skipped."""
        import optuna

        spent, running, measured = self._costs(measure=True, exclude=follower.number)
        # None (nothing measured yet, or a config that trains by epochs): it starts when nothing else runs,
        # and stopping at the budget keeps the cap
        cost = self._estimated_cost(
            budgets.planned_rows(self.space.config_for(follower.values, self.study.base_config)), measured)
        if budgets.fits(self.budget, spent=spent, running=running, cost=cost):
            return False
        left = max(0.0, self.budget.limit - spent - sum(rest or 0.0 for _, rest in running))
        reason = (f"skipped: its estimated cost ({self.budget.format(cost or 0.0)}) does not fit what the budget "
                  f"{self.budget.text} has left ({self.budget.format(left)})")
        self._attr(follower, "skipped", True)
        self._attr(follower, "reason", reason)
        self.ostudy.tell(follower.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        studies.release_slot(self.study.id)
        self.skips += 1
        self.say(f"trial {follower.number} {reason}  ({_fmt(follower.values)})")
        if self.skips >= SKIP_LIMIT:
            self.budget_spent = True
            self.say(f"Budget {self.budget.text}: none of the last {SKIP_LIMIT} trials drawn fits what is left "
                     f"({self.budget.format(left)}); no more trials start.")
        return True

    def _cheapest_fits(self, spent: float, running: list, measured: list) -> bool:
        """Whether the space's cheapest configuration fits what is left (True while that cannot be told);
        when it does not, no more trials are drawn (they would all be skipped)."""
        cost = self._estimated_cost(budgets.cheapest_rows(self.space, self.study.base_config), measured)
        if cost is None:
            return True
        if budgets.fits(self.budget, spent=spent, running=running, cost=cost):
            return True
        if not running:  # final: what is left only shrinks
            self.budget_spent = True
            left = max(0.0, self.budget.limit - spent)
            self.say(f"Budget {self.budget.text}: what is left ({self.budget.format(left)}) does not fit even the "
                     f"cheapest configuration of the space (about {self.budget.format(cost)}); no more trials start.")
        return False

    def _estimated_cost(self, rows: int | None, measured: list[tuple[float, int]]) -> float | None:
        """What a trial training ``rows`` rows (per fold) will spend, at the cost per row measured so far;
        None when either is unknown."""
        rate = budgets.per_row(measured)
        return rows * rate * len(self.folds) if rows is not None and rate is not None else None

    def _stop_at_budget(self) -> None:
        """Once the budget is spent, stop the trials still training (see :mod:`oikyo.tune.budget`)."""
        if self.budget is None or not self.followers:
            return
        spent = self._costs()[0]
        if not budgets.reached(self.budget, spent):
            return
        for follower in list(self.followers.values()):
            if not follower.run_ids:
                continue
            run = queue.get(follower.run_ids[-1])
            if run.state in queue.FINISHED or len(follower.fold_results) == len(follower.run_ids):
                continue  # trained: scored as usual (an evaluation job is not training)
            message = (f"stopped by study {self.study.name} ({self.study.id}), trial {follower.number}: its budget "
                       f"{self.budget.text} is spent ({self.budget.format(spent)})")
            if not self._stop_run(run.id, message):
                continue  # it finished meanwhile: scored as usual at the next tick
            self._attr(follower, "reason", f"stopped when the budget {self.budget.text} was spent")
            self._tell_pruned(follower, run, f" at the budget ({self.budget.format(spent)} spent)")

    def _launch_run(self, follower: Follower) -> None:
        from oikyo.jobs import training

        fold = len(follower.run_ids)
        overrides = list(follower.overrides)
        name = f"{self.study.name}-t{follower.number}"
        if self.folds[fold] is not None:
            overrides += [f"data.dataset={self.folds[fold]}", "data.train_split=train", "data.eval_split=validation"]
            name += f"-f{fold}"
        try:
            prepared = training.prepare(self.base_yaml, overrides, name=name[:200])
            run = training.enqueue(prepared, study_id=self.study.id, trial_number=follower.number)
        except OikyoError as error:
            self._fail(follower, f"its run could not be queued: {error}")
            return
        follower.run_ids.append(run.id)
        where = f" (fold {fold + 1}/{len(self.folds)})" if len(self.folds) > 1 else ""
        if fold == 0:
            self.say(f"trial {follower.number} started{where}: {_fmt(follower.values)}  run {run.id}")
        else:
            self.say(f"trial {follower.number}{where}: run {run.id}")

    # --- following -------------------------------------------------------------------------------

    def _tick(self, follower: Follower) -> None:
        if not follower.run_ids:
            self._launch_run(follower)
            return
        run = queue.get(follower.run_ids[-1])
        if len(follower.fold_results) == len(follower.run_ids):  # this fold is scored: the next one
            self._next_fold(follower, run)
            return
        if len(follower.eval_jobs) == len(follower.run_ids):
            self._check_evaluation(follower, run)
            return
        if self.pruning and self._report(follower, run):
            return
        if run.state == queue.SUCCEEDED:
            self._scored_run(follower, run)
        elif run.state == queue.FAILED:
            self._fail(follower, f"run {run.id} failed: {run.error}")
        elif run.state == queue.CANCELLED:
            if self._pruned_event(run.id):
                self._tell_pruned(follower, run, "")
            else:
                self._fail(follower, f"run {run.id} was cancelled")

    def _report(self, follower: Follower, run: Run) -> bool:
        """Report new eval_loss points; prune (cancel the run) when Optuna says so. True when pruned."""
        import optuna

        points = metrics.series(run.id, ["eval_loss"]).get("eval_loss") or []
        trial = optuna.trial.Trial(self.ostudy, follower.trial_id)
        for step, value in points:
            follower.last_step = max(follower.last_step, step)
            at = follower.offset + step
            if at in follower.reported:
                continue
            trial.report(self.sign * value, at)
            follower.reported.add(at)
            if run.state not in queue.FINISHED and trial.should_prune():
                self._prune(follower, run, at, value)
                return True
        return False

    def _prune(self, follower: Follower, run: Run, at: int, value: float) -> None:
        message = (f"pruned by study {self.study.name} ({self.study.id}), trial {follower.number}: "
                   f"eval_loss {value:.4f} at step {at} is worse than the study's {self.study.pruner} rule")
        if not self._stop_run(run.id, message):
            return  # it finished meanwhile: scored as usual at the next tick
        self._tell_pruned(follower, run, f" at step {at} (eval_loss {value:.4f})")

    @staticmethod
    def _stop_run(run_id: str, message: str) -> bool:
        """Cancel a trial's run with a "pruned" event saying why; False when it finished meanwhile."""
        try:
            queue.request_cancel(run_id)
        except OikyoError:
            return False
        with db.session() as s:
            queue.add_event(s, run_id, "pruned", message)
        return True

    def _pruned_event(self, run_id: str) -> bool:
        from oikyo.jobs import runs

        return any(event.kind == "pruned" for event in runs.events(run_id))

    def _scored_run(self, follower: Follower, run: Run) -> None:
        names = self.study.objectives
        if objective_kinds.needs_evaluation(names):
            split = "validation" if self.folds[len(follower.run_ids) - 1] else (run.config.get("data") or {}).get(
                "eval_split") or "validation"
            try:
                job = objective_kinds.submit_evaluation(run, names, split=split)
            except OikyoError as error:
                self._fail(follower, f"the model of run {run.id} could not be evaluated: {error}")
                return
            follower.eval_jobs.append(job)
            self._attr(follower, "eval_jobs", follower.eval_jobs)
            return
        self._fold_done(follower, run, {})

    def _check_evaluation(self, follower: Follower, run: Run) -> None:
        job = queue.get(follower.eval_jobs[-1])
        if job.state not in queue.FINISHED:
            return
        if job.state != queue.SUCCEEDED:
            self._fail(follower, f"evaluation job {job.id} of run {run.id} {job.state}: {job.error or ''}".rstrip(": "))
            return
        try:
            values = objective_kinds.read_evaluation(job.id, self.study.objectives)
        except OikyoError as error:
            self._fail(follower, str(error))
            return
        self._fold_done(follower, run, values)

    def _fold_done(self, follower: Follower, run: Run, values: dict) -> None:
        if objective_kinds.VAL_LOSS in self.study.objectives:
            best = objective_kinds.val_loss(run.id)
            if best is None:
                self._fail(follower, f"run {run.id} reported no eval_loss on its validation split")
                return
            values = {**values, objective_kinds.VAL_LOSS: best}
        follower.fold_results.append(values)
        self._attr(follower, "fold_results", follower.fold_results)
        self._next_fold(follower, run)

    def _next_fold(self, follower: Follower, run: Run) -> None:
        if len(follower.fold_results) < len(self.folds):
            if self.budget is not None and budgets.reached(self.budget, self._costs()[0]):
                self._attr(follower, "reason", f"stopped when the budget {self.budget.text} was spent")
                self._tell_pruned(follower, run, f" before fold {len(follower.run_ids) + 1} (the budget is spent)")
                return
            follower.offset += max(follower.last_step, metrics.progress(run).step)
            follower.last_step = 0
            self._attr(follower, "offset", follower.offset)
            self._launch_run(follower)
            return
        self._complete(follower)

    def _complete(self, follower: Follower) -> None:
        import optuna

        names = self.study.objectives
        means = [statistics.fmean(result[name] for result in follower.fold_results) for name in names]
        if len(follower.fold_results) > 1:
            self._attr(follower, "std", {name: statistics.pstdev(result[name] for result in follower.fold_results)
                                         for name in names})
        self.ostudy.tell(follower.number, means if len(means) > 1 else means[0],
                         state=optuna.trial.TrialState.COMPLETE, skip_if_finished=True)
        self.followers.pop(follower.number, None)
        shown = ", ".join(f"{name} {value:.4f}" for name, value in zip(names, means))
        self.say(f"trial {follower.number} complete: {shown}  ({_fmt(follower.values)})")

    def _tell_pruned(self, follower: Follower, run: Run, where: str) -> None:
        import optuna

        self.ostudy.tell(follower.number, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
        self.followers.pop(follower.number, None)
        self.say(f"trial {follower.number} pruned{where}: run {run.id} cancelled  ({_fmt(follower.values)})")

    def _fail(self, follower: Follower, reason: str) -> None:
        import optuna

        self._attr(follower, "reason", reason)
        self.ostudy.tell(follower.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        self.followers.pop(follower.number, None)
        self.say(f"trial {follower.number} failed: {reason}")

    def _attr(self, follower: Follower, key: str, value) -> None:
        try:
            self.storage.set_trial_user_attr(follower.trial_id, key, value)
        except RuntimeError:
            pass  # the trial finished meanwhile (another driver told Optuna): nothing left to note

    # --- adopting trials of stopped drivers ------------------------------------------------------

    def _beat(self) -> None:
        for follower in self.followers.values():
            self._attr(follower, "driver_seen", time.time())

    def _adopt(self) -> None:
        import optuna

        stale = time.time() - stale_after_s()
        for trial in self.ostudy.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if trial.number in self.followers:
                continue
            seen = trial.user_attrs.get("driver_seen")
            started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
            if (seen if seen is not None else started) > stale:
                continue
            follower = self._rebuild(trial)
            self._attr(follower, "driver", self.owner)
            self._attr(follower, "driver_seen", time.time())
            self.followers[follower.number] = follower
            self.say(f"trial {trial.number}: following it again (its driver stopped); runs "
                     f"{', '.join(follower.run_ids) or 'none yet'}")

    def _rebuild(self, trial) -> Follower:
        from sqlalchemy import select

        attrs = trial.user_attrs
        values = attrs.get("values") or dict(trial.params)
        with db.session() as s:
            run_ids = list(s.scalars(select(Run.id).where(Run.study_id == self.study.id,
                                                          Run.trial_number == trial.number)
                                     .order_by(Run.created_at, Run.id)))
        return Follower(number=trial.number, trial_id=trial._trial_id, values=values,
                        overrides=self.space.overrides(values, self.study.base_config), run_ids=run_ids,
                        fold_results=list(attrs.get("fold_results") or []),
                        eval_jobs=list(attrs.get("eval_jobs") or []),
                        reported={int(step) for step in trial.intermediate_values},
                        offset=int(attrs.get("offset") or 0))

    def _others_running(self) -> bool:
        import optuna

        return bool(self.ostudy.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))

    # --- budget and status -----------------------------------------------------------------------

    def _run_cost(self, run: Run, tokens: dict[str, float], now,
                  measure: bool = False) -> tuple[float, float | None, int]:
        """(spent, still to spend: 0 when finished, None when not known yet, rows trained: counted only with
        ``measure``) of one run, in the budget's unit."""
        if run.state in queue.FINISHED or run.started_at is None:
            if run.state not in queue.FINISHED:
                return 0.0, None, 0
            rows = self._rows_done(run) if measure and run.started_at is not None else 0
            if self.budget.kind == "tokens":
                return tokens.get(run.id, 0.0), 0.0, rows
            if run.finished_at is None:
                return 0.0, 0.0, 0
            return max(0.0, (queue.aware(run.finished_at) - queue.aware(run.started_at)).total_seconds()), 0.0, rows
        now_progress = metrics.progress(run)
        if self.budget.kind == "tokens":
            # the tokens and the step they were counted at come from one read, so the projection is consistent
            step, spent = metrics.latest(run.id).get("tokens", (0, 0.0))
        else:
            step, spent = now_progress.step, max(0.0, (now - queue.aware(run.started_at)).total_seconds())
        rows = step * budgets.rows_per_step(run.config or {})
        return spent, budgets.project(spent, step, now_progress.total_steps), rows

    def _rows_done(self, run: Run) -> int:
        """Rows a finished run trained on (its last reported step x rows per step), read once per run."""
        if run.id not in self._finished_rows:
            step = metrics.latest(run.id).get("tokens", (0, 0.0))[0] if self.budget.kind == "tokens" else \
                metrics.progress(run).step
            self._finished_rows[run.id] = step * budgets.rows_per_step(run.config or {})
        return self._finished_rows[run.id]

    def _costs(self, measure: bool = False, exclude: int | None = None):
        """(spent by every trial, [(spent, still to spend) of each unfinished trial], [(spent, rows trained) of
        each run that trained rows]) in the budget's unit; the last, for the cost per row
        (:func:`budgets.per_row`), only with ``measure`` (else empty: counting rows reads each run's metrics).
        ``exclude``: a trial left out of the running ones (the one being decided on)."""
        import optuna

        all_runs = studies.study_runs(self.study.id)
        tokens = studies.run_tokens([run.id for run in all_runs]) if self.budget.kind == "tokens" else {}
        now = studies.utcnow()
        costs = {run.id: self._run_cost(run, tokens, now, measure) for run in all_runs}
        finished = [costs[run.id][0] for run in all_runs if run.state == queue.SUCCEEDED]
        per_run = statistics.fmean(finished) if finished else None
        by_trial: dict[int, list[Run]] = {}
        for run in all_runs:
            by_trial.setdefault(run.trial_number, []).append(run)
        running = []
        for trial in self.ostudy.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if trial.number == exclude:
                continue
            trial_runs = by_trial.get(trial.number, [])
            spent = sum(costs[run.id][0] for run in trial_runs)
            rest = costs[trial_runs[-1].id][1] if trial_runs else None
            if rest is None:
                rest = per_run
            estimate = per_run
            if estimate is None and trial_runs and rest is not None:
                estimate = costs[trial_runs[-1].id][0] + rest  # the current run's projected total
            later = len(self.folds) - max(1, len(trial_runs))  # folds not started yet
            if rest is not None and later > 0:
                rest = rest + later * estimate if estimate is not None else None
            running.append((spent, rest))
        spent = sum(cost[0] for cost in costs.values())
        return spent, running, [(cost, rows) for cost, _, rows in costs.values() if rows > 0]

    def _budget_allows(self) -> bool:
        if self.budget is None:
            return True
        if self.budget_spent:
            return False
        spent, running, measured = self._costs(measure=True)
        if budgets.may_launch(self.budget, spent=spent, running=running):
            return self._cheapest_fits(spent, running, measured)
        if not running:
            self.budget_spent = True
            self.say(f"Budget {self.budget.text} spent ({self.budget.format(spent)}): no more trials start.")
        return False

    def _status(self, final: bool = False) -> None:
        import optuna

        found = self.ostudy.get_trials(deepcopy=False)
        counts = {state: sum(1 for t in found if t.state == state) for state in optuna.trial.TrialState}
        done = sum(counts[s] for s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                                       optuna.trial.TrialState.FAIL))
        line = (f"{self.study.name}: {done}/{self.study.n_trials} trials done "
                f"({counts[optuna.trial.TrialState.RUNNING]} running, {counts[optuna.trial.TrialState.PRUNED]} pruned, "
                f"{counts[optuna.trial.TrialState.FAIL]} failed)")
        complete = [t for t in found if t.state == optuna.trial.TrialState.COMPLETE]
        if complete and len(self.study.objectives) == 1:
            best = min(complete, key=lambda t: self.sign * t.value)
            line += f"; best {self.study.objectives[0]} {best.value:.4f} (trial {best.number})"
        if self.budget is not None:
            line += f"; budget {self.budget.format(self._costs()[0])} of {self.budget.text}"
        self.say(("Done. " if final else "") + line)
