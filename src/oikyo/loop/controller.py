"""The loop controller: acts on every applied policy, one small idempotent step at a time.

A cycle goes through these states, each step a short look at the store and at most one action::

    (trigger) -> collecting -> training -> evaluating -> canary_prepare -> canary -> promoted
                     |             |            |                             \\-> rolled_back
                     v             v            v
                  skipped        failed     gate_failed          (cancelled, overridden: by the user)

- **collecting**: a dataset version from the deployment's traffic and feedback since the previous
  cycle (:func:`oikyo.data.traffic.from_traffic`); too few usable examples end the cycle as skipped.
- **training**: the policy's training config, with the champion as its model (``model.start``:
  continue its adapter or merge it) and the new version as its dataset, replaying a share of the
  champion's training data (``data.mix_dataset: parent``). An ordinary queued run.
- **evaluating**: the challenger and the champion evaluated on the policy's fixed evaluation set;
  the gate compares them (paired bootstrap CI of the gate metric) and checks forgetting.
- **canary_prepare**: the deployment is given the challenger at weight 0 (a restart, when it does
  not serve it yet); then the challenger gets the canary share, live.
- **canary**: :func:`oikyo.loop.canary.judge` on every answered request since the canary began,
  every ``canary_poll_s``; promotion and rollback move the weights live (no restart).

Exactly-once: every decision is recorded with a per-cycle key before it is acted on; the jobs are
named after the cycle and looked up by name before anything is queued. A controller killed at any
point and started again finds the cycle where it was, queues nothing twice and loses no decision.
Manual actions win: a paused policy is left alone; a split changed by hand during a canary ends
the cycle as overridden without touching the deployment; a cancelled run cancels the cycle.

Usage::

    Controller(log=print).run()           # `oikyo loop run`: until interrupted
    Controller().tick()                   # one look at every policy (the tests' way)
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import select

from oikyo.errors import OikyoError
from oikyo.loop import canary, records
from oikyo.loop.policy import Policy, parse_duration
from oikyo.store import db
from oikyo.store.models import (DatasetVersion, DeploymentEvent, Evaluation, LoopCycle, ModelVersion, Run,
                                ServedRequest, utcnow)

log = logging.getLogger(__name__)

MANUAL = "manual"
_DONE_RUN = ("succeeded", "failed", "cancelled")


class Controller:
    """Acts on the applied policies (see the module docstring); one instance per process."""

    def __init__(self, *, owner: str | None = None, poll_s: float = 2.0, canary_poll_s: float = 1.0,
                 trigger_every_s: float = 15.0, lease_s: float = 120.0, start_workers: bool = True,
                 log: Callable[[str], None] | None = None):
        self.owner = owner or records.owner_name()
        self.poll_s, self.canary_poll_s, self.trigger_every_s = poll_s, canary_poll_s, trigger_every_s
        self.lease_s = lease_s
        self.start_workers = start_workers
        self._say = log or (lambda message: None)
        self._last_trigger_check: dict[str, float] = {}

    # ----------------------------------------------------------------- running

    def run(self, stop: threading.Event | None = None) -> None:
        """Tick until ``stop`` is set (or forever); sleeps shorter while a canary runs."""
        stop = stop or threading.Event()
        self._say(f"loop controller {self.owner} started")
        try:
            while not stop.is_set():
                busy = self.tick()
                stop.wait(self.canary_poll_s if busy else self.poll_s)
        finally:
            for record in records.policies():
                records.release(record.deployment, self.owner)
            self._say(f"loop controller {self.owner} stopped")

    def tick(self) -> bool:
        """One step for every policy this controller may act on; True when a canary is running."""
        busy = False
        for record in records.policies():
            if record.paused or not (record.policy or {}).get("enabled", True):
                continue
            if not records.claim(record.deployment, self.owner, self.lease_s):
                continue
            try:
                busy |= self.step(records.policy_of(record))
            except Exception as error:  # one deployment's trouble must not stop the others
                log.exception("loop step for %s failed", record.deployment)
                self._say(f"{record.deployment}: step failed: {error}")
        return busy

    def step(self, policy: Policy) -> bool:
        cycle = records.open_cycle(policy.deployment)
        if cycle is None:
            fired = self._due(policy)
            if fired is not None:
                start_cycle(policy.deployment, *fired)
            return False
        handler = getattr(self, f"_{cycle.state}")
        handler(policy, cycle)
        return records.get_cycle(cycle.id).state == "canary"

    # ----------------------------------------------------------------- triggers

    def _due(self, policy: Policy) -> tuple[str, str] | None:
        """(trigger, reason) when a trigger fires now, else None (checked every trigger_every_s)."""
        now_mono = time.monotonic()
        if now_mono - self._last_trigger_check.get(policy.deployment, -1e18) < self.trigger_every_s:
            return None
        self._last_trigger_check[policy.deployment] = now_mono
        return due(policy)

    # ----------------------------------------------------------------- states

    def _end(self, cycle: LoopCycle, state: str, action: str, reason: str, details: dict | None = None) -> None:
        records.decide(cycle.deployment, cycle.id, action, reason, details=details, key=action)
        records.update_cycle(cycle.id, state=state)
        self._say(f"{cycle.deployment} {cycle.id}: {action}: {reason}")

    def _collecting(self, policy: Policy, cycle: LoopCycle) -> None:
        from oikyo.data import traffic

        previous = _previous_cycle(cycle)
        since = records.aware(previous.created_at) if previous is not None else None
        try:
            version, report = traffic.from_traffic(policy.deployment, since=since,
                                                   feedback=tuple(policy.data.feedback),
                                                   name=f"{policy.deployment}-traffic")
        except OikyoError as error:
            self._end(cycle, "skipped", "skipped", f"no dataset from traffic: {error}")
            return
        rows = int(getattr(version, "rows", 0) or 0)
        details = {"dataset_version_id": version.id, "rows": rows, "report": report}
        if rows < policy.data.min_examples:
            self._end(cycle, "skipped", "skipped", f"{rows} usable examples from traffic, fewer than the policy's "
                      f"min_examples {policy.data.min_examples}", details)
            return
        records.decide(cycle.deployment, cycle.id, "dataset", f"dataset version {version.id} from traffic: "
                       f"{rows} examples", details=details, key="dataset")
        records.update_cycle(cycle.id, state="training", dataset_version_id=version.id)

    def _training(self, policy: Policy, cycle: LoopCycle) -> None:
        from oikyo.jobs import training

        name = job_name(cycle, "train")
        run = _run_named(name) if cycle.run_id is None else _run(cycle.run_id)
        if run is None:
            config = training_config(policy, cycle)
            try:
                run = training.submit_config(config, name=name)
            except OikyoError as error:
                self._end(cycle, "failed", "failed", f"the training config was refused: {error}")
                return
            records.decide(cycle.deployment, cycle.id, "train", f"training run {run.id} queued",
                           details={"run_id": run.id}, key="train")
            self._ensure_worker()
        if cycle.run_id != run.id:
            records.update_cycle(cycle.id, run_id=run.id)
        if run.state not in _DONE_RUN:
            return
        if run.state == "cancelled":
            self._end(cycle, "cancelled", "cancelled", f"training run {run.id} was cancelled")
        elif run.state == "failed":
            self._end(cycle, "failed", "failed", f"training run {run.id} failed: {run.error or 'see its log'}")
        else:
            challenger = _model_version_of(run.id)
            if challenger is None:
                self._end(cycle, "failed", "failed", f"training run {run.id} registered no model version")
                return
            records.decide(cycle.deployment, cycle.id, "trained", f"run {run.id} trained {challenger}",
                           details={"run_id": run.id, "challenger": challenger}, key="trained")
            records.update_cycle(cycle.id, state="evaluating", challenger=challenger)

    def _evaluating(self, policy: Policy, cycle: LoopCycle) -> None:
        jobs = dict(cycle.eval_jobs or {})
        runs: dict[str, Run] = {}
        for role, model in (("challenger", cycle.challenger), ("champion", cycle.champion)):
            name = job_name(cycle, f"eval-{role}")
            run = _run(jobs[role]) if role in jobs else _run_named(name)
            if run is None:
                try:
                    run = _submit_eval(policy, model, name, probe=role == "challenger")
                except OikyoError as error:
                    self._end(cycle, "failed", "failed", f"the {role}'s evaluation was refused: {error}")
                    return
                self._ensure_worker()
            runs[role] = run
            jobs[role] = run.id
        if jobs != (cycle.eval_jobs or {}):
            records.update_cycle(cycle.id, eval_jobs=jobs)
        bad = [f"{role} evaluation {run.id} {run.state}" for role, run in runs.items() if run.state in ("failed",
                                                                                                      "cancelled")]
        if bad:
            self._end(cycle, "failed", "failed", "; ".join(bad))
            return
        if any(run.state != "succeeded" for run in runs.values()):
            return
        outcome = gate(policy, runs["challenger"].id, runs["champion"].id)
        records.decide(cycle.deployment, cycle.id, "gate_passed" if outcome["passed"] else "gate_failed",
                       outcome["reason"], details=outcome, key="gate")
        details = {**(cycle.details or {}), "gate": outcome}
        if outcome["passed"]:
            records.update_cycle(cycle.id, state="canary_prepare", details=details)
        else:
            records.update_cycle(cycle.id, state="gate_failed", details=details)
        self._say(f"{cycle.deployment} {cycle.id}: gate {'passed' if outcome['passed'] else 'failed'}: "
                  f"{outcome['reason']}")

    def _canary_prepare(self, policy: Policy, cycle: LoopCycle) -> None:
        from oikyo.serve.gateway import deployments

        record = deployments.get(policy.deployment)
        weights = _weights(record)
        if weights.get(cycle.champion, 0) <= 0:
            self._end(cycle, "overridden", "overridden", f"the deployment no longer serves the champion "
                      f"{cycle.champion} (changed by hand): the challenger {cycle.challenger} is not canaried")
            return
        if deployments.status(record) != "running":
            if records.decide(cycle.deployment, cycle.id, "waiting", f"the deployment is {deployments.status(record)}"
                              "; the canary starts when it runs again", key="waiting"):
                self._say(f"{cycle.deployment} {cycle.id}: waiting for the deployment to run")
            return
        if cycle.challenger not in weights:
            records.decide(cycle.deployment, cycle.id, "canary_load", f"restarting the deployment to load "
                           f"{cycle.challenger} beside {cycle.champion} (no traffic yet)", key="canary_load")
            deployments.set_split(policy.deployment, f"{cycle.champion}=100,{cycle.challenger}=0")
            return  # next step: the deployment is running again with both loaded
        share = policy.canary.share
        records.decide(cycle.deployment, cycle.id, "canary_started", f"{cycle.challenger} gets {share:.0%} of the "
                       f"traffic, {cycle.champion} the rest", details={"share": share}, key="canary_started")
        deployments.set_weights(policy.deployment, {**{m: 0.0 for m in weights},
                                                     cycle.champion: 1.0 - share, cycle.challenger: share})
        records.update_cycle(cycle.id, state="canary", canary_started_at=utcnow())
        self._say(f"{cycle.deployment} {cycle.id}: canary started ({share:.0%} to {cycle.challenger})")

    def _canary(self, policy: Policy, cycle: LoopCycle) -> None:
        from oikyo.serve.gateway import deployments

        verdict = _recorded_verdict(cycle)
        if verdict is None:
            record = deployments.get(policy.deployment)
            expected = {cycle.champion: 1.0 - policy.canary.share, cycle.challenger: policy.canary.share}
            if not _same_weights(_weights(record), expected):
                self._end(cycle, "overridden", "overridden", "the deployment's split was changed by hand during "
                          "the canary; the loop leaves it as it is", details={"weights": _weights(record)})
                return
            started = records.aware(cycle.canary_started_at)
            timed_out = (utcnow() - started).total_seconds() >= policy.canary.max_duration_s
            judged = canary.judge(canary_outcomes(policy, cycle), share=policy.canary.share,
                                  alpha=policy.rollback.alpha, min_requests=policy.canary.min_requests,
                                  margin=policy.rollback.margin, timed_out=timed_out)
            if judged.action == "continue":
                return
            action = "promote" if judged.action == "promote" else "rollback"
            records.decide(cycle.deployment, cycle.id, action, judged.reason, details=judged.to_dict(),
                           key="verdict")
            records.update_cycle(cycle.id, details={**(cycle.details or {}), "canary": judged.to_dict()})
            verdict = action
        champion_weight, challenger_weight = (0.0, 1.0) if verdict == "promote" else (1.0, 0.0)
        deployments.set_weights(policy.deployment, {cycle.champion: champion_weight,
                                                    cycle.challenger: challenger_weight})
        state = "promoted" if verdict == "promote" else "rolled_back"
        records.update_cycle(cycle.id, state=state)
        self._say(f"{cycle.deployment} {cycle.id}: {state}")

    def _ensure_worker(self) -> None:
        if self.start_workers:
            from oikyo.jobs import autostart

            autostart.ensure_worker()


# --------------------------------------------------------------------- cycles and triggers


def start_cycle(deployment: str, trigger: str, reason: str) -> LoopCycle:
    """Open a cycle for ``deployment`` (its champion: the variant with the most traffic now)."""
    from oikyo.serve.gateway import deployments

    if records.open_cycle(deployment) is not None:
        raise OikyoError(f"{deployment} already has a cycle running; `oikyo loop status {deployment}` shows it")
    weights = _weights(deployments.get(deployment))
    champion = max(weights, key=weights.get)
    cycle_id = records.new_cycle_id()
    now = utcnow()
    with db.session() as s:
        s.add(LoopCycle(id=cycle_id, deployment=deployment, state="collecting", trigger=trigger, reason=reason,
                        champion=champion, created_at=now, updated_at=now))
    records.decide(deployment, cycle_id, "triggered", f"{trigger}: {reason}", key="triggered",
                   details={"trigger": trigger, "champion": champion})
    return records.get_cycle(cycle_id)


def trigger_now(deployment: str, reason: str = "started by hand") -> LoopCycle:
    """`oikyo loop trigger`: a manual cycle, whatever the triggers and the cooldown say."""
    records.get_record(deployment)
    return start_cycle(deployment, MANUAL, reason)


def cancel(deployment: str) -> LoopCycle:
    """`oikyo loop cancel`: end the open cycle; a canary gives all traffic back to the champion."""
    from oikyo.jobs import runs
    from oikyo.serve.gateway import deployments

    cycle = records.open_cycle(deployment)
    if cycle is None:
        raise OikyoError(f"{deployment} has no cycle running")
    if cycle.state == "training" and cycle.run_id:
        run = _run(cycle.run_id)
        if run is not None and run.state not in _DONE_RUN:
            runs.cancel(cycle.run_id)
    if cycle.state == "canary":
        deployments.set_weights(deployment, {cycle.champion: 1.0, cycle.challenger: 0.0})
    records.decide(deployment, cycle.id, "cancelled", "cancelled by the user", key="cancelled")
    return records.update_cycle(cycle.id, state="cancelled")


def due(policy: Policy, now: datetime | None = None) -> tuple[str, str] | None:
    """The first trigger of ``policy`` that fires now, as (trigger, reason), or None."""
    now = now or utcnow()
    last = records.last_cycle(policy.deployment)
    t = policy.triggers
    anchor = records.aware(last.created_at) if last is not None else records.aware(
        records.get_record(policy.deployment).applied_at)
    if last is not None and (now - anchor).total_seconds() < t.cooldown_s:
        return None
    if t.schedule:
        scheduled = t.next_scheduled(anchor)
        if scheduled is not None and scheduled <= now:
            return "schedule", f"scheduled by {t.schedule!r} at {scheduled.isoformat()}"
    if t.drift:
        event = _drift_since(policy.deployment, anchor)
        if event is not None:
            return "drift", f"drift alarm at {records.aware(event.time).isoformat()}: {event.title}"
    if t.metric_drop is not None:
        dropped = metric_drop(policy, now)
        if dropped is not None:
            return "metric_drop", dropped
    if t.new_examples:
        from oikyo.data import traffic

        since = records.aware(last.created_at) if last is not None else None
        count = traffic.count_usable(policy.deployment, since=since, feedback=tuple(policy.data.feedback))
        if count >= t.new_examples:
            return "new_examples", f"{count} usable examples from traffic (threshold {t.new_examples})"
    return None


def _drift_since(deployment: str, since: datetime):
    from oikyo.monitor import events

    with db.session() as s:
        candidates = s.scalars(select(DeploymentEvent).where(DeploymentEvent.deployment == deployment,
                                                             DeploymentEvent.time > since)
                               .order_by(DeploymentEvent.time))
        for event in candidates:
            if event.kind == events.DRIFT:
                return event
            alertname = ((event.details or {}).get("labels") or {}).get("alertname", "")
            if event.kind == events.ALERT_FIRING and "drift" in alertname.lower():
                return event
    return None


def metric_drop(policy: Policy, now: datetime) -> str | None:
    """Why the champion's answers count as dropped over the policy's window, or None."""
    drop = policy.triggers.metric_drop
    since = now - timedelta(seconds=parse_duration(drop.window))
    flags = canary.QUALITY_FLAGS
    with db.session() as s:
        rows = list(s.execute(select(ServedRequest.quality, ServedRequest.status)
                              .where(ServedRequest.deployment == policy.deployment, ServedRequest.created_at >= since)))
    answered = [q or {} for q, status in rows if status < 400]
    rated = [q for q in answered if "negative_feedback" in q]
    if drop.negative_feedback_share is not None and len(rated) >= drop.min_requests:
        share = sum(bool(q["negative_feedback"]) for q in rated) / len(rated)
        if share >= drop.negative_feedback_share:
            return (f"{share:.1%} of {len(rated)} rated answers in the last {drop.window} were rated negatively "
                    f"(threshold {drop.negative_feedback_share:.1%})")
    if drop.bad_share is not None and len(answered) >= drop.min_requests:
        share = sum(any(q.get(f) for f in flags) for q in answered) / len(answered)
        if share >= drop.bad_share:
            return (f"{share:.1%} of {len(answered)} answers in the last {drop.window} had a quality flag "
                    f"(threshold {drop.bad_share:.1%})")
    return None


# --------------------------------------------------------------------- training, evaluation, gate


def job_name(cycle: LoopCycle, what: str) -> str:
    return f"loop {cycle.deployment} {cycle.id} {what}"[:200]


def training_config(policy: Policy, cycle: LoopCycle) -> dict:
    """The policy's training config for this cycle: the champion as model, the new dataset version."""
    config = copy.deepcopy(policy.train.config if isinstance(policy.train.config, dict) else {})
    model = config.setdefault("model", {})
    model["name"] = cycle.champion
    if cycle.champion.startswith("mv-"):
        model["start"] = policy.train.start
    data = config.setdefault("data", {})
    data["dataset"] = cycle.dataset_version_id
    with db.session() as s:
        version = s.get(DatasetVersion, cycle.dataset_version_id)
        splits = dict(version.splits or {}) if version is not None else {}
    if not splits.get(data.get("train_split", "train")):
        data["train_split"] = None  # traffic versions are not split: train on every row
    if data.get("eval_split", "validation") and not splits.get(data.get("eval_split", "validation")):
        data["eval_split"] = None
    if policy.train.replay > 0:
        data["mix"], data["mix_dataset"] = policy.train.replay, "parent"
    return config


def _submit_eval(policy: Policy, model: str, name: str, *, probe: bool) -> Run:
    from oikyo.evaluate.jobs import submit_evaluation
    from oikyo.evaluate.runner import EvalSpec

    gate_plan = policy.gate
    metrics = [gate_plan.metric] if gate_plan.metric else None
    spec = EvalSpec(model=model, dataset=gate_plan.dataset, split=gate_plan.split, metrics=metrics,
                    limit=gate_plan.limit, baselines=False, probe=probe and gate_plan.forgetting_max is not None)
    return submit_evaluation(spec, name=name)


def _evaluation_of(job_id: str) -> Evaluation | None:
    with db.session() as s:
        return s.scalar(select(Evaluation).where(Evaluation.group_id == job_id, Evaluation.role == "model"))


def gate(policy: Policy, challenger_job: str, champion_job: str) -> dict:
    """The gate's outcome: the challenger against the champion on the gate metric (paired bootstrap
    CI of the difference) and its forgetting; ``passed`` and a one-line ``reason``."""
    from oikyo.evaluate import compare, records as eval_records

    challenger, champion = _evaluation_of(challenger_job), _evaluation_of(champion_job)
    if challenger is None or champion is None:
        return {"passed": False, "reason": "an evaluation left no record", "challenger_evaluation": None}
    plan = policy.gate
    report = compare.compare(challenger.id, champion.id, resamples=plan.resamples, seed=0)
    metric = plan.metric or eval_records.primary_metric(challenger.metrics) or report.get("primary_metric")
    delta = report["metrics"].get(metric)
    out = {"metric": metric, "challenger_evaluation": challenger.id, "champion_evaluation": champion.id,
           "require": plan.require, "margin": plan.margin, "paired_examples": report["paired_examples"]}
    if delta is None:
        return {**out, "passed": False, "reason": f"the evaluations have no comparable {metric!r}"}
    higher = delta.get("higher_is_better", True)
    gain, gain_low = (delta["delta"], delta["low"]) if higher else (-delta["delta"], -delta["high"])
    out.update(challenger=delta["a"], champion=delta["b"], gain=gain, gain_low=gain_low)
    figures = (f"{metric} {delta['a']:.4g} against the champion's {delta['b']:.4g} (gain {gain:+.4g}, 95% CI "
               f"low end {gain_low:+.4g}, {report['paired_examples']} paired examples)")
    if plan.require == "better" and not gain_low > 0:
        return {**out, "passed": False, "reason": f"not significantly better: {figures}"}
    if plan.require == "not_worse" and gain_low < -plan.margin:
        return {**out, "passed": False, "reason": f"possibly worse by more than {plan.margin:g}: {figures}"}
    if plan.forgetting_max is not None:
        forgetting = (challenger.forgetting or {}).get("forgetting")
        out["forgetting"] = forgetting
        if not isinstance(forgetting, (int, float)):
            return {**out, "passed": False, "reason": f"no forgetting score to check against {plan.forgetting_max}"}
        if forgetting > plan.forgetting_max:
            return {**out, "passed": False, "reason": f"forgetting {forgetting:.3g} above {plan.forgetting_max:g}; "
                                                      f"{figures}"}
        figures += f", forgetting {forgetting:.3g} (at most {plan.forgetting_max:g})"
    return {**out, "passed": True, "reason": figures}


# --------------------------------------------------------------------- canary


def canary_outcomes(policy: Policy, cycle: LoopCycle) -> list[canary.Outcome]:
    """Every request the two arms answered since the canary began, judged good or bad (read afresh,
    so feedback given since the last look counts)."""
    started = records.aware(cycle.canary_started_at)
    arms = {cycle.champion: canary.CHAMPION, cycle.challenger: canary.CHALLENGER}
    signals = set(policy.rollback.signals)
    flags = policy.quality_flags()
    latency_limit = policy.rollback.latency_limit_s if "latency" in signals else None
    with db.session() as s:
        rows = list(s.execute(select(ServedRequest.variant, ServedRequest.model, ServedRequest.status,
                                     ServedRequest.quality, ServedRequest.latency_s)
                              .where(ServedRequest.deployment == cycle.deployment,
                                     ServedRequest.created_at >= started)))
    outcomes = []
    for variant, model, status, quality, latency in rows:
        arm = arms.get(variant) or arms.get(model)
        if arm is None:
            continue
        quality = dict(quality or {})
        if "negative_feedback" not in signals:
            quality.pop("negative_feedback", None)
        why = canary.is_bad(status if "error" in signals else min(status, 499), quality, latency,
                            latency_limit_s=latency_limit, flags=flags)
        outcomes.append(canary.Outcome(arm, why is not None, why))
    return outcomes


def _recorded_verdict(cycle: LoopCycle) -> str | None:
    """The canary's verdict (promote or rollback) when it was recorded before it was carried out."""
    return records.decided(cycle.id, "verdict")


def _weights(record) -> dict[str, float]:
    """model -> weight of the deployment's variants."""
    return {v["model"]: float(v["weight"]) for v in record.variants}


def _same_weights(actual: dict[str, float], expected: dict[str, float]) -> bool:
    total_a = sum(actual.values()) or 1.0
    total_e = sum(expected.values()) or 1.0
    names = set(actual) | set(expected)
    return all(abs(actual.get(n, 0.0) / total_a - expected.get(n, 0.0) / total_e) < 1e-6 for n in names)


# --------------------------------------------------------------------- store lookups


def _previous_cycle(cycle: LoopCycle) -> LoopCycle | None:
    with db.session() as s:
        return s.scalar(select(LoopCycle).where(LoopCycle.deployment == cycle.deployment,
                                                LoopCycle.created_at < cycle.created_at,
                                                LoopCycle.dataset_version_id.is_not(None))
                        .order_by(LoopCycle.created_at.desc()))


def _run(run_id: str) -> Run | None:
    with db.session() as s:
        return s.get(Run, run_id)


def _run_named(name: str) -> Run | None:
    with db.session() as s:
        return s.scalar(select(Run).where(Run.name == name).order_by(Run.created_at.desc()))


def _model_version_of(run_id: str) -> str | None:
    with db.session() as s:
        return s.scalar(select(ModelVersion.id).where(ModelVersion.run_id == run_id)
                        .order_by(ModelVersion.created_at))
