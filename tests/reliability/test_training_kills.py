"""Kills during training (issue 22): a real run, SIGKILLed again and again, ends as if never interrupted.

A LoRA run of a tiny random model goes through the job system: real worker processes (``python -m
oikyo.jobs.worker``), the real recipe, the workspace's SQLite store. The test SIGKILLs the worker holding
the run at random points drawn from a printed seed (``OIKYO_KILL_SEED`` replays one):

- ``loading``: a random moment after the attempt starts (loading the model, resuming, first steps);
- ``training``: a random moment after a random step 2 to 4 steps past the resume point was stored and
  a newer checkpoint completed (the first kill is of this kind, so every later attempt resumes);
- ``checkpoint:<stage>``: while a checkpoint is half written, paused by the writer's test hook
  (``OIKYO_TEST_CHECKPOINT_PAUSE``, :mod:`oikyo.train.checkpoints`): after the weights, after the
  optimizer state, or after the rename into ``step-N`` but before ``COMPLETE``.

A spare worker, started before each kill, takes the run over once the short lease expires; after the
last kill a worker in the test's own process (torch already imported) finishes the run. At the end:
the exported weights equal those of an uninterrupted run with the same seed, tensor by tensor
(torch.equal); each attempt resumed from the newest checkpoint that had its completion marker when
the previous attempt died (never a half-written one); every step's metrics are stored once, with the
uninterrupted run's exact values; ``resume_count`` equals the number of attempts that resumed.

Size: 3 kills (1 inside a checkpoint write) in the suite; 12 (4 inside checkpoint writes, every stage)
under ``scripts/reliability.sh``.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import update

from battery import size

from oikyo.jobs import metrics, queue, runs
from oikyo.jobs.worker import Worker
from oikyo.store import db
from oikyo.store.models import Run

KILLS = size(3, 12)
CHECKPOINT_KILLS = size(1, 4)
STAGES = ("weights", "optimizer", "renamed")
LEASE_S, HEARTBEAT_S = 3.0, 0.3
COMPARED = ("loss", "lr", "grad_norm", "eval_loss")
# Workers import the heavy libraries before polling, so a spare takes a run over as soon as the lease lapses.
WORKER = ("import torch, transformers, peft, runpy; "
          "runpy.run_module('oikyo.jobs.worker', run_name='__main__', alter_sys=True)")


def _settings(max_steps: int) -> list[str]:
    # 40 rows, 32 for training: 8 batches of 4 per epoch; dropout on, so the RNG state must resume too.
    return [f"train.max_steps={max_steps}", "train.batch_size=4", "data.max_length=64", "train.eval_every=4",
            "checkpoint.save_every=2", "checkpoint.keep_best=1", "lora.dropout=0.2", "train.seed=7",
            "train.lr=5e-3", "train.num_threads=1"]


def _dataset(tmp_path: Path):
    from oikyo.data import split, versions

    rows = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]} for i in range(40)]
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    versions.import_dataset(path, name="sums")
    version, _ = split.split_dataset("sums", validation=0.2, test=0.0, seed=0)
    return version


def _plan(rng: random.Random) -> list[str]:
    """The kinds of the kills in order; the first lands in training, after a checkpoint, so later attempts resume."""
    first = rng.randrange(len(STAGES))  # the stages in turn from a random one: all of them from 3 kills on
    inside = [f"checkpoint:{STAGES[(first + i) % len(STAGES)]}" for i in range(CHECKPOINT_KILLS)]
    rest = [rng.choice(("loading", "training", "training")) for _ in range(KILLS - CHECKPOINT_KILLS - 1)]
    plan = inside + rest
    rng.shuffle(plan)
    return ["training", *plan]


class Workers:
    """Worker processes started by the test (each with its own log and checkpoint-hook file)."""

    def __init__(self, folder: Path):
        self.folder, self.procs = folder, []

    def start(self, kind: str) -> subprocess.Popen:
        index = len(self.procs)
        env = {k: v for k, v in os.environ.items() if k != "OIKYO_RECIPE"}
        hook = self.folder / f"hook-{index}.txt"
        if kind.startswith("checkpoint:"):
            env["OIKYO_TEST_CHECKPOINT_PAUSE"] = f"{kind.split(':', 1)[1]}:{hook}"
        with open(self.folder / f"worker-{index}.log", "wb") as out:
            proc = subprocess.Popen([sys.executable, "-c", WORKER, "--lease", str(LEASE_S), "--heartbeat",
                                     str(HEARTBEAT_S), "--poll", "0.1", "--idle-exit", "300"],
                                    stdout=out, stderr=subprocess.STDOUT, env=env)
        proc.hook, proc.kind = hook, kind
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def _wait(predicate, what: str, timeout: float, seed: int):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (seed {seed})")


def _holder_pid(run_id: str) -> int | None:
    run = queue.get(run_id)
    if run.state != queue.RUNNING or not run.lease_owner:
        return None
    return int(run.lease_owner.rsplit("-", 2)[1])  # owner: host-pid-suffix


def _attempts(run: Run) -> list[tuple[str, str]]:
    """train.log cut into the attempts: (the worker's owner name, the lines written in that attempt)."""
    path = Path(run.run_dir) / "train.log"
    parts = re.split(r"^\S+ \S+ worker (\S+) starts attempt .*$", path.read_text() if path.exists() else "",
                     flags=re.M)
    return list(zip(parts[1::2], parts[2::2]))


def _stored_step(run_id: str) -> int:
    return max((step for step, _ in metrics.latest(run_id).values()), default=0)


def _folders(run: Run) -> tuple[list[int], list[str]]:
    """Steps of the complete checkpoints on disk (``step-N`` with its COMPLETE marker; read here, not with
    oikyo's own helpers, so the check does not share their mistakes), and the names of unfinished folders."""
    root = Path(run.run_dir) / "checkpoints"
    folders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    complete = sorted(int(p.name[5:]) for p in folders
                      if re.fullmatch(r"step-\d+", p.name) and (p / "COMPLETE").is_file())
    unfinished = sorted(p.name for p in folders if not (p / "COMPLETE").is_file())
    return complete, unfinished


def _kill_during(proc: subprocess.Popen, run: Run, rng: random.Random, seed: int) -> dict:
    """Wait until the attempt of ``proc`` (holding the run) reaches its kill point, SIGKILL it; returns what
    was seen."""
    owner = queue.get(run.id).lease_owner

    def begun():  # the attempt counted its resume, dropped the lost attempt's later metrics, started the recipe
        mine = [text for who, text in _attempts(run) if who == owner]
        return mine and ("complete checkpoint found" in mine[-1] or "config_hash" in mine[-1]) and mine[-1]

    found = re.findall(r"complete checkpoint found at step (\d+)", _wait(begun, f"{owner} to begin", 60, seed))
    resume_from = int(found[0]) if found else 0
    if proc.kind == "loading":  # a random moment while it loads the model, resumes, takes its first steps
        time.sleep(rng.uniform(0.0, 1.0))
    elif proc.kind == "training":  # a random moment after a random step past the resume point
        target = resume_from + rng.randint(2, 4)
        _wait(lambda: _stored_step(run.id) >= target and _folders(run)[0][-1:] > [resume_from],
              f"step {target} and a new checkpoint", 120, seed)
        time.sleep(rng.uniform(0.0, 0.2))
    else:  # the writer's test hook announces the pause, half-way through a checkpoint
        _wait(lambda: proc.hook.exists() and proc.hook.read_text().endswith("\n"), "a paused checkpoint write",
              120, seed)
    assert queue.get(run.id).state == queue.RUNNING, f"the run ended before kill {proc.kind} (seed {seed})"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    complete, unfinished = _folders(run)
    seen = {"kind": proc.kind, "owner": owner, "stored_step": _stored_step(run.id), "complete": complete,
            "unfinished": unfinished}
    if proc.kind.startswith("checkpoint:"):
        stage, folder = proc.hook.read_text().split()[0:2]
        seen["half_written"] = Path(folder).name
        assert Path(folder).name in unfinished, (seed, seen)  # really killed inside the write
        if stage == "renamed":  # the dangerous one: a step-N folder without its marker
            assert re.fullmatch(r"step-\d+", Path(folder).name), (seed, seen)
    return seen


def _weights(output: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(output.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    assert tensors, f"no weights in {output}"
    return tensors


def test_sigkills_during_training_resume_bit_identical(tiny_model_dir, tmp_path, monkeypatch):
    from oikyo.jobs import training

    seed = int(os.environ.get("OIKYO_KILL_SEED") or random.SystemRandom().randrange(10**6))
    rng = random.Random(seed)
    plan = _plan(rng)
    print(f"\nkills during training: seed {seed} (OIKYO_KILL_SEED={seed} replays it), plan {plan}")
    monkeypatch.delenv("OIKYO_RECIPE", raising=False)
    max_steps = 6 * KILLS + 4  # a kill lands at most a few steps past its resume point: the run outlives them all
    dataset = _dataset(tmp_path)
    settings = _settings(max_steps)
    began = time.monotonic()

    reference = training.submit_training(None, settings, dataset=dataset.id, model=str(tiny_model_dir))
    Worker(lease_s=30, heartbeat_s=1, poll_s=0.1).run(once=True)
    assert queue.get(reference.id).state == "succeeded", queue.get(reference.id).error
    reference_s = time.monotonic() - began

    run = training.submit_training(None, settings, dataset=dataset.id, model=str(tiny_model_dir))
    with db.session() as s:  # every kill is one claim: allow them all (the default gives up after 3)
        s.execute(update(Run).where(Run.id == run.id).values(max_attempts=KILLS + 5))
    workers = Workers(tmp_path)
    seen = []
    try:
        current = workers.start(plan[0])
        for index, kind in enumerate(plan):
            _wait(lambda: _holder_pid(run.id) == current.pid, f"worker {index} to claim the run", 120, seed)
            spare = workers.start(plan[index + 1]) if index + 1 < len(plan) else None
            seen.append(_kill_during(current, run, rng, seed))
            seen[-1]["at_s"] = round(time.monotonic() - began, 1)
            current = spare
        last = Worker(lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S, poll_s=0.1)
        _wait(last.run_one, "the last worker to claim the run", 120, seed)  # once the lease lapses
        done = queue.get(run.id)
    finally:
        workers.stop_all()
    elapsed = time.monotonic() - began
    assert done.state == "succeeded", (seed, done.error)

    # 1. Each attempt after a kill resumed from the newest checkpoint that was complete when the killed one
    # died. An attempt may also end by itself: under heavy load a worker can miss its heartbeats and lose
    # its lease (it then stops, and a worker takes the run over); such hand-overs are counted, not checked.
    attempts = _attempts(done)
    last_of = {who: index for index, (who, _) in enumerate(attempts)}
    killed = {last_of[s["owner"]]: s for s in seen}
    assert len(killed) == KILLS, (seed, [who for who, _ in attempts], seen)
    lapses, resumes = len(attempts) - 1 - KILLS, 0
    for index, (_, log) in enumerate(attempts[1:], start=1):
        found = re.findall(r"complete checkpoint found at step (\d+)", log)
        before = killed.get(index - 1)
        if before is None:
            resumes += bool(found)
            continue
        complete = before["complete"]
        resumes += bool(complete)
        assert found == ([str(complete[-1])] if complete else []), (seed, index, before, log)
        resumed = re.findall(r"Resumed from (step-\d+)", log)
        if resumed:  # the attempt got that far before its own kill
            assert resumed == [f"step-{complete[-1]:06d}"], (seed, index, before, resumed)
        half = before.get("half_written", "")
        if half.startswith("step-") and resumed:
            assert f"Removed an incomplete checkpoint: {half}" in log, (seed, index, log)

    # 2. The resume count: the attempts that continued from a complete checkpoint.
    assert done.resume_count == resumes, (seed, done.resume_count, resumes)

    # 3. Bit-identical final weights.
    expected, got = _weights(Path(reference.run_dir) / "output"), _weights(Path(done.run_dir) / "output")
    assert expected.keys() == got.keys()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]} (seed {seed})"

    # 4. Each step's metrics stored once, equal to the uninterrupted run's.
    rows = [(r["step"], r["name"]) for r in metrics.rows(done.id)]
    assert len(rows) == len(set(rows)), f"duplicated metric rows (seed {seed})"
    want, have = runs.metric_series(reference.id, list(COMPARED)), runs.metric_series(done.id, list(COMPARED))
    assert [s for s, _ in have["loss"]] == list(range(1, max_steps + 1)), seed
    assert have == want, f"the stored metrics differ from the uninterrupted run's (seed {seed})"

    inside = sum(1 for s in seen if s["kind"].startswith("checkpoint:"))
    print(f"kills during training: seed {seed}, {KILLS} kills ({inside} inside checkpoint writes), "
          f"{resumes} resumes, {lapses} leases lost under load, {max_steps} steps, "
          f"bit-identical weights ({len(expected)} tensors), "
          f"{elapsed:.1f}s in all, {reference_s:.1f}s of them for the uninterrupted run")
    for index, s in enumerate(seen):
        print(f"  kill {index + 1}: {s}")
