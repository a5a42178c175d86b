"""Kills of the worker and the platform server (issue 22): no job lost, none run twice at once, none stuck.

Real processes on one workspace: ``oikyo ui`` and two ``oikyo worker`` processes (three at full size;
2 s leases, heartbeats every 0.25 s) over the fast fake training recipe, and real evaluation jobs on the
tiny model. Each round keeps 3 training runs queued and a training run and an evaluation running
(training runs are submitted through the server's REST API as jobs finish), SIGKILLs the server and
every worker at a random moment (seeded; the seed is printed, ``OIKYO_BATTERY_SEED`` replays it), starts
them again and checks the store (kill_platform.py): every submitted job is still there, a finished job
never changes or runs again, no two attempts of a job were alive at once, no job has more attempts than
its cap, and one lease after the restart no job is ``running`` under a dead worker. A long run (cap 2)
is killed until it fails with the cap's reason, and runs that fail for their own reasons (a learning
rate the recipe rejects, a recorded config that no longer validates, a deleted data file) fail once
with that reason and are never retried.

2 rounds on SQLite in the suite; 20 rounds, on SQLite and PostgreSQL, under ``scripts/reliability.sh``.
A quick test stages each broken promise in the store and checks that the checks report it.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, update

from oikyo.api.auth import load_or_create_token
from oikyo.data import versions
from oikyo.evaluate import jobs as eval_jobs
from oikyo.evaluate.runner import EvalSpec
from oikyo.jobs import queue, runs
from oikyo.store import db
from oikyo.store.models import Run, RunEvent

from battery import FULL, size
from kill_platform import Ledger, Platform, owner_pid, stuck, tally, violations

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "jobs"))
sys.path.insert(0, str(TESTS / "evaluate"))

import jobhelpers  # noqa: E402
from evalhelpers import make_json_dataset  # noqa: E402

ROUNDS = size(2, 20)
WORKERS = size(2, 3)  # 2: the busy run and evaluation hold both (the state); 3: queued runs finish too
LEASE_S, HEARTBEAT_S = 2.0, 0.25
SLACK_S = 1.5  # beyond one lease after the restart: a heartbeat or poll, and a loaded machine
QUEUED = 3  # training runs kept waiting
LONG_CAP = 2  # attempts of the long run (killed every round), so that two rounds reach the cap
FILL_TIMEOUT_S = size(15.0, 30.0)  # how long a round waits for the state it kills in
MAX_KILL_DELAY_S = 1.5
DETERMINISTIC = {"bad-lr": "the loss diverged at step 2", "bad-config": "bad config:", "bad-data": "missing dataset:"}


@pytest.fixture(params=["sqlite", *([pytest.param("postgres", marks=pytest.mark.postgres)] if FULL else [])])
def backend(request) -> str:
    """The store under test; PostgreSQL at full size only (the suite's budget holds one backend)."""
    if request.param == "postgres":
        request.getfixturevalue("postgres_url")
    return request.param


class Client:
    """Submits jobs through the server's REST API until the queue holds the state each round kills in."""

    def __init__(self, platform: Platform, ledger: Ledger, *, model_dir: Path, dataset, eval_model: Path, eval_data):
        self.platform, self.ledger = platform, ledger
        self.model_dir, self.dataset, self.eval_model, self.eval_data = model_dir, dataset, eval_model, eval_data

    def _post(self, path: str, body: dict, kind: str) -> str:
        try:
            answer = self.platform.api("POST", path, {**body, "start_worker": False})
        except httpx.TransportError:
            self.ledger.uncertain += 1  # cut off by the kill: the job may exist
            raise
        assert answer.status_code == 201, answer.text
        run_id = answer.json()["id"]
        self.ledger.kinds[run_id] = kind
        return run_id

    def train(self, kind: str = "train", *, steps: int = 20, lr: float = 2e-4, dataset=None) -> str:
        config = {"model": {"name": str(self.model_dir)}, "data": {"dataset": (dataset or self.dataset).id},
                  "train": {"max_steps": steps, "eval_every": 5, "lr": lr}, "checkpoint": {"save_every": 5}}
        return self._post("/runs", {"config": config, "name": kind}, kind)

    def evaluate(self) -> str:
        """Queue an evaluation of the tiny model (here, not through the server: the suite's budget spares the
        server loading a tokenizer after every restart; POST /evaluations calls the same function)."""
        spec = EvalSpec(model=str(self.eval_model), dataset=self.eval_data.id, split="test", baselines=False,
                        probe=False, max_new_tokens=8)
        run_id = eval_jobs.submit_evaluation(spec).id
        self.ledger.kinds[run_id] = "eval"
        return run_id

    def counts(self) -> dict[str, int]:
        """Waiting training runs, and unfinished and running (under a live worker) jobs of each sort."""
        alive = self.platform.live_pids()
        counts = {"queued": 0, "train": 0, "eval": 0, "long": 0, "running train": 0, "running eval": 0}
        for run in runs.list_runs(limit=10_000):
            kind = self.ledger.kinds.get(run.id, "train")
            if run.state in queue.FINISHED or kind not in ("train", "eval", "long"):
                continue
            counts[kind] += 1
            counts["queued"] += run.state == queue.QUEUED and kind == "train"
            if run.state == queue.RUNNING and owner_pid(run.lease_owner) in alive:
                counts[f"running {'eval' if kind == 'eval' else 'train'}"] += 1
        return counts

    def top_up(self) -> bool:
        """Submit what is missing; returns whether the round's state holds (3 queued, a run and an eval running)."""
        counts = self.counts()
        if not counts["long"]:
            self.long_run()
        if not counts["eval"]:
            self.evaluate()
        for _ in range(QUEUED - counts["queued"]):
            self.train()
        return counts["queued"] >= QUEUED and counts["running train"] >= 1 and counts["running eval"] >= 1

    def long_run(self) -> str:
        run_id = self.train("long", steps=100_000)
        with db.session() as s:
            s.execute(update(Run).where(Run.id == run_id).values(max_attempts=LONG_CAP))
        return run_id

    def fill_and_kill(self, rng: random.Random) -> bool:
        """Top up until the round's state holds (or the wait runs out), then kill everything at a random
        moment while still submitting; returns whether the state held."""
        deadline, held = time.monotonic() + FILL_TIMEOUT_S, False
        while not held and time.monotonic() < deadline:
            held = self.top_up()
            time.sleep(0 if held else 0.1)
        delay = rng.uniform(0, MAX_KILL_DELAY_S)
        killer = threading.Thread(target=lambda: (time.sleep(delay), self.platform.kill(rng)))
        killer.start()
        while killer.is_alive():
            try:
                self.top_up()
            except httpx.TransportError:
                break
            time.sleep(0.05)
        killer.join()
        return held


def deterministic_failures(client: Client, tmp_path: Path) -> None:
    """Queue runs that fail for their own reasons (before the workers start, so they are queued as intended)."""
    client.train("bad-lr", lr=0.9)  # the fake recipe rejects lr above FAKE_FAIL_LR_ABOVE at step 2
    run_id = client.train("bad-config")
    with db.session() as s:  # a recorded config that no longer validates (e.g. written by another version)
        config = s.get(Run, run_id).config
        broken = {**config, "train": {**config["train"], "lr": -1.0}}
        s.execute(update(Run).where(Run.id == run_id).values(config=broken))
    doomed = jobhelpers.make_dataset(tmp_path, "doomed", n=30)  # other rows than the main one (not deduplicated)
    client.train("bad-data", dataset=doomed)
    versions.parquet_path(doomed).unlink()


def final_checks(ledger: Ledger) -> list[str]:
    """Deterministic failures failed once with their reason; a long run reached its cap."""
    problems = []
    for run_id, kind in ledger.kinds.items():
        run, events = queue.get(run_id), runs.events(run_id)
        if kind in DETERMINISTIC:
            failed = [i for i, e in enumerate(events) if e.kind == "failed"]
            if run.state != "failed" or not (run.error or "").startswith(DETERMINISTIC[kind]):
                problems.append(f"{kind} run {run_id} is {run.state} ({run.error}), not failed for its own reason")
            elif len(failed) != 1 or any(e.kind == "claimed" for e in events[failed[0]:]):
                problems.append(f"{kind} run {run_id} was retried after it failed")
    capped = [queue.get(i) for i, kind in ledger.kinds.items() if kind == "long" and queue.get(i).state == "failed"]
    if not capped:
        problems.append("no long run reached its cap of attempts")
    for run in capped:
        if run.attempts != LONG_CAP or f"stopped responding {LONG_CAP} times" not in (run.error or ""):
            problems.append(f"long run {run.id} failed after {run.attempts} attempts: {run.error}")
    return problems


@pytest.mark.timeout(size(600, 3600))  # full size: 20 rounds, minutes on a loaded machine
def test_kills_of_the_worker_and_server_lose_no_job_and_run_none_twice(backend, tmp_path, monkeypatch, tiny_model_dir):
    seed = int(os.environ.get("OIKYO_BATTERY_SEED", time.time_ns() % 1_000_000))
    print(f"kill battery: seed {seed} (OIKYO_BATTERY_SEED={seed} replays it), {ROUNDS} rounds on {backend}")
    rng = random.Random(seed)
    jobhelpers.use_fake_recipe(monkeypatch)
    monkeypatch.setenv("FAKE_STEP_TIME", "0.05")
    monkeypatch.setenv("FAKE_FAIL_LR_ABOVE", "0.5")
    logs = tmp_path / "logs"
    logs.mkdir()
    platform = Platform(logs, load_or_create_token(), workers=WORKERS, lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S)
    ledger = Ledger()
    client = Client(platform, ledger, model_dir=jobhelpers.make_model_dir(tmp_path / "fake-model"),
                    dataset=jobhelpers.make_dataset(tmp_path), eval_model=tiny_model_dir,
                    eval_data=make_json_dataset(tmp_path, "items", 60))
    started = time.monotonic()
    problems, held = [], 0
    try:
        platform.start_server()
        deterministic_failures(client, tmp_path)
        client.top_up()
        platform.start_workers()
        print(f"started ({time.monotonic() - started:.1f}s)")
        for number in range(1, ROUNDS + 1):
            held += client.fill_and_kill(rng)
            platform.start_server()
            restarted = platform.start_workers()
            found = [f"round {number}: {p}" for p in violations(ledger, platform)]
            time.sleep(max(0.0, restarted + LEASE_S + SLACK_S - time.time()))
            found += [f"round {number}: {p}" for p in stuck(platform, restarted)]
            print(f"round {number} ({time.monotonic() - started:.1f}s): {tally(ledger)}; "
                  f"{'state held' if held else 'killed before the state held'}"
                  + "".join(f"\n  {p}" for p in found))
            problems += found
    finally:
        platform.kill(rng)
    problems += violations(ledger, platform) + final_checks(ledger)
    counts = tally(ledger)
    print(f"kill battery ({backend}, seed {seed}): {ROUNDS} rounds in {time.monotonic() - started:.0f}s, state held in "
          f"{held}; {counts['submitted']} jobs submitted, {counts['succeeded']} succeeded, {counts['failed']} failed, "
          f"{counts['retries']} retries, {ledger.uncertain} submissions cut off; {len(problems)} violations")
    assert not problems, "\n".join(problems)
    assert held >= 1, "no round reached the state it should kill in (3 queued, a run and an evaluation running)"


def test_the_checks_catch_a_lost_job_a_double_run_a_rerun_and_a_stuck_run(tmp_path, monkeypatch):
    """The battery's checks can fail: each broken promise, staged in the store, is reported."""
    platform, ledger = Platform(tmp_path, "token", workers=1, lease_s=0.1, heartbeat_s=0.05), Ledger()
    alive, dead = 4_000_001, 4_000_002  # pids in owner names; the first lives on, the second died a minute ago
    platform.lives = {alive: [[time.time() - 60, math.inf]], dead: [[time.time() - 90, time.time() - 60]]}
    monkeypatch.setattr(platform, "live_pids", lambda: {alive})

    def job(name: str) -> Run:
        run = queue.submit(name=name, config={}, config_hash="x", base_model="m", dataset_version_id=None, seed=0)
        ledger.kinds[run.id] = "train"
        return run

    twice, lost, rerun = job("twice"), job("lost"), job("rerun")
    assert queue.claim(f"host-{alive}-aaaaaa", 0.01).id == twice.id
    time.sleep(0.05)  # the live worker's lease lapses and a worker that is dead by now took the run over
    assert queue.claim(f"host-{dead}-bbbbbb", 30).id == twice.id
    Path(twice.run_dir).mkdir(parents=True)
    Path(twice.run_dir, "fake_steps.jsonl").write_text("".join(json.dumps({"step": i, "pid": pid}) + "\n"
                                                               for i, pid in enumerate((7, 8, 7))))
    with db.session() as s:
        s.execute(delete(RunEvent).where(RunEvent.run_id == lost.id))
        s.execute(delete(Run).where(Run.id == lost.id))
    owner = queue.claim(f"host-{alive}-cccccc", 30).lease_owner
    queue.complete(rerun.id, owner)
    with db.session() as s:
        queue.add_event(s, rerun.id, "claimed", f"claimed by host-{alive}-dddddd (attempt 2)")

    problems = "\n".join(violations(ledger, platform))
    assert f"train job {lost.id} was submitted and is gone" in problems
    assert f"{twice.id}: worker {dead} claimed it while worker {alive}" in problems
    assert f"{twice.id}: steps of processes [7, 8, 7] interleave" in problems
    assert f"{rerun.id} was claimed again after it succeeded" in problems
    assert [p.split()[0] for p in stuck(platform, time.time())] == [twice.id]
