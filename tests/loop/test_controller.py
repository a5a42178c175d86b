"""The loop controller's state machine on a real store, with training, evaluation and the deployment's
restarts replaced by fakes: a whole cycle to promotion and to rollback, exactly-once across a
controller killed and restarted at every step, manual actions winning, and the triggers."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from oikyo.errors import OikyoError
from oikyo.loop import controller as ctl
from oikyo.loop import records
from oikyo.loop.policy import PolicyError, parse
from oikyo.serve.gateway import deployments
from oikyo.store import db
from oikyo.store.models import (DatasetVersion, Deployment, DeploymentEvent, LoopDecision, ModelVersion, Run,
                                ServedRequest, utcnow)

CHAMPION, CHALLENGER = "mv-champ01", "mv-chall01"
_ids = itertools.count()


def _policy(**changes) -> dict:
    policy = {"deployment": "bot", "triggers": {"new_examples": 10, "cooldown": "1s"},
              "data": {"min_examples": 5},
              "train": {"config": {"train": {"max_steps": 3}}, "start": "continue", "replay": 0.25},
              "gate": {"dataset": "eval-set", "metric": "exact_match"},
              "canary": {"share": 0.25, "min_requests": 20, "max_duration": "10m"}}
    for key, value in changes.items():
        policy[key] = {**policy.get(key, {}), **value} if isinstance(value, dict) else value
    return policy


class Fakes:
    """What the controller calls outside the store, recorded; runs finish when the test says so."""

    def __init__(self, monkeypatch):
        self.usable = 50
        self.dataset_rows = 40
        self.gate_passes = True
        self.submitted: list[dict] = []
        self.splits: list[str] = []
        from oikyo.data import traffic
        from oikyo.jobs import training

        monkeypatch.setattr(traffic, "count_usable", lambda deployment, since=None, feedback=(): self.usable,
                            raising=False)
        monkeypatch.setattr(traffic, "from_traffic", self.from_traffic, raising=False)
        monkeypatch.setattr(training, "submit_config", self.submit_config)
        monkeypatch.setattr(ctl, "_submit_eval", self.submit_eval)
        monkeypatch.setattr(ctl, "gate", lambda policy, a, b: {"passed": self.gate_passes,
                                                               "reason": "fake gate", "metric": "exact_match"})
        monkeypatch.setattr(deployments, "status", lambda record: "running")
        monkeypatch.setattr(deployments, "set_split", self.set_split)

    def from_traffic(self, deployment, *, since=None, feedback=(), name=None):
        if self.dataset_rows == 0:
            raise OikyoError("no usable examples")
        version = DatasetVersion(id=f"ds{next(_ids):06d}", content_hash=f"h{next(_ids)}", name=name, kind="chat",
                                 rows=self.dataset_rows, artifact="x", lineage={}, created_at=utcnow())
        with db.session() as s:
            s.add(version)
        return version, {"kept": self.dataset_rows}

    def _run(self, name, kind, config):
        run = Run(id=f"r{next(_ids):07d}", name=name, state="queued", kind=kind, config=config, config_hash="0",
                  base_model="tiny", run_dir="/nonexistent", created_at=utcnow())
        with db.session() as s:
            s.add(run)
        self.submitted.append({"name": name, "config": config})
        return run

    def submit_config(self, config, *, name=None, log=None):
        return self._run(name, "train", config)

    def submit_eval(self, policy, model, name, *, probe):
        return self._run(name, "eval", {"model": model, "probe": probe})

    def set_split(self, name, split, **_):
        self.splits.append(split)
        weights = dict(item.split("=") for item in split.split(","))
        with db.session() as s:
            record = s.get(Deployment, name)
            record.variants = [{"label": m, "model": m, "weight": float(w)} for m, w in weights.items()]
        return {}


def _finish(run_id: str, state: str = "succeeded", model_version: str | None = None) -> None:
    with db.session() as s:
        s.get(Run, run_id).state = state
        if model_version:
            s.add(ModelVersion(id=model_version, run_id=run_id, base_model="tiny", kind="adapter", path="/x",
                               lineage={}, created_at=utcnow()))


def _serve(arm: str, n: int, *, bad: int = 0) -> None:
    with db.session() as s:
        for i in range(n):
            s.add(ServedRequest(id=f"q{next(_ids)}", deployment="bot", variant=arm, model=arm, endpoint="chat",
                                status=200, latency_s=0.1, created_at=utcnow(),
                                quality={"invalid_json": i < bad}))


@pytest.fixture
def fakes(monkeypatch):
    with db.session() as s:
        s.add(Deployment(name="bot", model=CHAMPION, variants=[{"label": CHAMPION, "model": CHAMPION, "weight": 1.0}],
                         host="127.0.0.1", port=1, engine="native", log_requests=True, settings={}, state="running",
                         created_at=utcnow()))
    return Fakes(monkeypatch)


def _controller() -> ctl.Controller:
    """A fresh controller, as after a restart (a new owner whose lease is free: the old one released it or
    the test gives the lease up, as an expired lease would)."""
    with db.session() as s:
        from oikyo.store.models import LoopPolicy

        for record in s.scalars(select(LoopPolicy)):
            record.owner, record.lease_until = None, None
    return ctl.Controller(trigger_every_s=0, start_workers=False)


def _state() -> str:
    return records.last_cycle("bot").state


def _actions() -> list[str]:
    return [d.action for d in reversed(records.history("bot"))]


def _weights() -> dict[str, float]:
    return {v["model"]: v["weight"] for v in deployments.get("bot").variants}


def _to_canary(fakes) -> str:
    """Trigger, build data, train, evaluate and start the canary, restarting the controller at every step."""
    records.apply(parse(_policy()))
    _controller().tick()
    assert _state() == "collecting"
    _controller().tick()
    assert _state() == "training"
    for _ in range(3):  # killed and restarted while the run trains: one run, never two
        _controller().tick()
    trains = [s for s in fakes.submitted if s["name"].endswith(" train")]
    assert len(trains) == 1
    config = trains[0]["config"]
    cycle = records.last_cycle("bot")
    assert config["model"] == {"name": CHAMPION, "start": "continue"}
    assert config["data"]["dataset"] == cycle.dataset_version_id
    assert (config["data"]["mix"], config["data"]["mix_dataset"]) == (0.25, "parent")
    assert (config["data"]["train_split"], config["data"]["eval_split"]) == (None, None)  # not split: every row
    _finish(cycle.run_id, model_version=CHALLENGER)
    _controller().tick()
    assert _state() == "evaluating" and records.last_cycle("bot").challenger == CHALLENGER
    for _ in range(3):
        _controller().tick()
    evals = [s for s in fakes.submitted if " eval-" in s["name"]]
    assert sorted(e["config"]["model"] for e in evals) == [CHALLENGER, CHAMPION]
    for job in records.last_cycle("bot").eval_jobs.values():
        _finish(job)
    _controller().tick()
    assert _state() == "canary_prepare"
    _controller().tick()  # loads the challenger beside the champion, at weight 0
    assert fakes.splits == [f"{CHAMPION}=100,{CHALLENGER}=0"]
    _controller().tick()
    assert _state() == "canary"
    assert _weights() == {CHAMPION: 0.75, CHALLENGER: 0.25}
    return cycle.id


def test_a_good_challenger_goes_from_trigger_to_promotion_exactly_once(fakes):
    _to_canary(fakes)
    _serve(CHAMPION, 60)
    _serve(CHALLENGER, 10)
    _controller().tick()
    assert _state() == "canary"  # fewer than min_requests: keep going
    _serve(CHALLENGER, 15)
    _controller().tick()
    assert _state() == "promoted"
    assert _weights() == {CHAMPION: 0.0, CHALLENGER: 1.0}
    assert _actions() == ["policy_applied", "triggered", "dataset", "train", "trained", "gate_passed", "canary_load",
                          "canary_started", "promote"]
    assert len([s for s in fakes.submitted if s["name"].endswith(" train")]) == 1
    _controller().tick()  # nothing more to do: no new cycle inside the cooldown of 1 s ... or a new one later
    assert records.last_cycle("bot").state in ("promoted", "collecting")


def test_a_worse_challenger_is_rolled_back_and_the_champion_gets_everything_again(fakes):
    _to_canary(fakes)
    _serve(CHAMPION, 30, bad=1)
    _serve(CHALLENGER, 8, bad=6)
    _controller().tick()
    assert _state() == "rolled_back"
    assert _weights() == {CHAMPION: 1.0, CHALLENGER: 0.0}
    decision = records.history("bot")[0]
    assert decision.action == "rollback" and "worse" in decision.reason
    assert records.last_cycle("bot").details["canary"]["challenger_bad"] == 6
    assert decision.details["challenger_bad"] == 6 and decision.details["bad_reasons"]["challenger"] == {
        "invalid_json": 6}


def test_a_verdict_recorded_before_a_kill_is_carried_out_once_after_the_restart(fakes):
    cycle_id = _to_canary(fakes)
    records.decide("bot", cycle_id, "rollback", "decided just before the kill", key="verdict")
    assert not records.decide("bot", cycle_id, "rollback", "a second time", key="verdict")  # lands once
    _controller().tick()
    assert _state() == "rolled_back" and _weights() == {CHAMPION: 1.0, CHALLENGER: 0.0}
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(LoopDecision).where(LoopDecision.action == "rollback")) == 1


def test_a_split_changed_by_hand_during_the_canary_wins(fakes):
    _to_canary(fakes)
    deployments.set_weights("bot", {CHAMPION: 0.5, CHALLENGER: 0.5})
    _serve(CHALLENGER, 10, bad=10)
    _controller().tick()
    assert _state() == "overridden"
    assert _weights() == {CHAMPION: 0.5, CHALLENGER: 0.5}  # left as the user set it


def test_a_paused_loop_decides_nothing_and_a_cancel_gives_the_traffic_back(fakes):
    _to_canary(fakes)
    records.set_paused("bot", True)
    _serve(CHALLENGER, 10, bad=10)
    _controller().tick()
    assert _state() == "canary"
    ctl.cancel("bot")
    assert _state() == "cancelled" and _weights() == {CHAMPION: 1.0, CHALLENGER: 0.0}
    with pytest.raises(OikyoError, match="no cycle running"):
        ctl.cancel("bot")


def test_a_failed_gate_a_failed_run_and_too_little_data_end_the_cycle(fakes):
    records.apply(parse(_policy()))
    fakes.dataset_rows = 3
    _controller().tick()
    _controller().tick()
    assert _state() == "skipped" and "fewer than the policy's min_examples 5" in records.history("bot")[0].reason
    fakes.dataset_rows = 40
    ctl.trigger_now("bot")  # by hand: no cooldown
    _controller().tick()
    _controller().tick()
    _finish(records.last_cycle("bot").run_id, state="failed")
    _controller().tick()
    assert _state() == "failed"
    ctl.trigger_now("bot")
    fakes.gate_passes = False
    for _ in range(2):
        _controller().tick()
    _finish(records.last_cycle("bot").run_id, model_version="mv-chall02")
    _controller().tick()  # trained: evaluating
    _controller().tick()  # the evaluations queued
    for job in records.last_cycle("bot").eval_jobs.values():
        _finish(job)
    _controller().tick()
    assert _state() == "gate_failed"
    assert _weights() == {CHAMPION: 1.0}  # a failed gate never reaches the deployment


def test_triggers(fakes):
    records.apply(parse(_policy(triggers={"new_examples": 100, "cooldown": "1h"})))
    policy = records.policy_of(records.get_record("bot"))
    assert ctl.due(policy) is None  # 50 usable examples, 100 needed
    fakes.usable = 120
    assert ctl.due(policy)[0] == "new_examples"
    ctl.start_cycle("bot", "new_examples", "test")
    records.update_cycle(records.last_cycle("bot").id, state="skipped")
    assert ctl.due(policy) is None  # within the cooldown

    later = utcnow() + timedelta(hours=2)
    drift = parse(_policy(triggers={"new_examples": None, "drift": True, "cooldown": "1h"}))
    assert ctl.due(drift, now=later) is None
    with db.session() as s:
        s.add(DeploymentEvent(deployment="bot", time=utcnow() + timedelta(minutes=90), kind="drift", source="drift",
                              title="input_oov ALARM"))
    assert ctl.due(drift, now=later) == ("drift", ctl.due(drift, now=later)[1])
    assert "input_oov" in ctl.due(drift, now=later)[1]

    scheduled = parse(_policy(triggers={"new_examples": None, "schedule": "*/30 * * * *", "cooldown": "1s"}))
    assert ctl.due(scheduled, now=later)[0] == "schedule"

    drop = parse(_policy(triggers={"new_examples": None, "metric_drop": {"bad_share": 0.5, "min_requests": 10},
                                   "cooldown": "1s"}))
    _serve(CHAMPION, 10, bad=2)
    assert ctl.due(drop, now=utcnow() + timedelta(seconds=5)) is None
    _serve(CHAMPION, 10, bad=10)
    fired = ctl.due(drop, now=utcnow() + timedelta(seconds=5))
    assert fired[0] == "metric_drop" and "60.0% of 20 answers" in fired[1]


def test_policy_problems_are_all_named():
    with pytest.raises(PolicyError) as error:
        parse({"deployment": "bot", "triggers": {"schedule": "every day"}, "train": {"config": {}},
               "gate": {"dataset": "x", "require": "maybe"}, "canary": {"share": 1.5}, "surprise": 1})
    text = str(error.value)
    for expected in ("triggers.schedule", "gate.require", "canary.share", "surprise"):
        assert expected in text, text
    with pytest.raises(PolicyError, match="at least one of schedule"):
        parse({"deployment": "bot", "train": {"config": {}}, "gate": {"dataset": "x"}})
    with pytest.raises(OikyoError, match="no deployment named 'nope'"):
        records.apply(parse(_policy(deployment="nope")))


def test_one_controller_at_a_time_and_a_dead_ones_lease_is_taken_at_once(fakes):
    import os
    import socket
    import subprocess
    import sys

    records.apply(parse(_policy()))
    here = socket.gethostname()
    assert records.claim("bot", f"{here}:{os.getpid()}", 60)
    assert not records.claim("bot", "other:1", 60)  # a live holder keeps it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    records.release("bot", f"{here}:{os.getpid()}")
    assert records.claim("bot", f"{here}:{dead.stdout.strip()}", 60)  # now held by a process that has exited
    assert records.claim("bot", f"{here}:{os.getpid()}", 60)  # this machine sees the holder is gone: taken at once
    records.release("bot", f"{here}:{os.getpid()}")
    assert records.claim("bot", "elsewhere:1", 60)
    assert not records.claim("bot", f"{here}:{os.getpid()}", 60)  # another machine's pid cannot be judged here
    with db.session() as s:
        from oikyo.store.models import LoopPolicy

        s.get(LoopPolicy, "bot").lease_until = utcnow() - timedelta(seconds=1)
    assert records.claim("bot", "newcomer:7", 60)  # an expired lease is free for anyone
