"""The platform under fire, for test_worker_kills.py (not a test module).

:class:`Platform` runs ``oikyo ui`` and a few ``oikyo worker`` processes on the test's workspace, SIGKILLs
them all at once and starts them again, remembering when each worker process lived. :class:`Ledger` is
what the client knows: the jobs it submitted (and of which sort) and the finished states it has seen.
:func:`violations` compares the store (runs and their events) with both and lists every broken promise
of the queue: a submitted job gone, a finished job changed or claimed again, two attempts of one job
alive at once (from the claim events and the workers' lifetimes, and for training runs from the pids
in the fake recipe's ``fake_steps.jsonl``), more attempts than ``max_attempts``. :func:`stuck` lists the
jobs still ``running`` under a worker that is dead.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import select

from oikyo.jobs import queue
from oikyo.store import db
from oikyo.store.models import Run, RunEvent, Worker

OWNER_IN_MESSAGE = re.compile(r"claimed by (\S+) \(attempt")
ENDS_ATTEMPT = ("released", queue.SUCCEEDED, queue.FAILED, queue.CANCELLED)


def owner_pid(owner: str | None) -> int | None:
    """The pid in a lease owner's name (``host-pid-suffix``, see :func:`oikyo.jobs.queue.new_owner`)."""
    try:
        return int(owner.rsplit("-", 2)[1])
    except (AttributeError, IndexError, ValueError):
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Platform:
    """The platform server and ``workers`` worker processes of the current workspace (``OIKYO_HOME``)."""

    def __init__(self, folder: Path, token: str, *, workers: int, lease_s: float, heartbeat_s: float):
        self.folder, self.token, self.count = folder, token, workers
        self.lease_s, self.heartbeat_s = lease_s, heartbeat_s
        self.port = free_port()
        self.server: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.lives: dict[int, list[list[float]]] = {}  # pid -> [[started, killed or inf], ...]
        self.generation = 0

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        with open(self.folder / f"{name}-{self.generation}.log", "ab") as log:
            return subprocess.Popen([sys.executable, "-m", "oikyo.cli.main", *args], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))

    def start_server(self, timeout: float = 90.0) -> None:
        self.server = self._spawn("server", "ui", "--host", "127.0.0.1", "--port", str(self.port), "--no-loop")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise AssertionError(f"the server exited with {self.server.returncode}; see {self.folder}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the server did not answer within {timeout:.0f}s")

    def start_workers(self, timeout: float = 90.0) -> float:
        """Start the workers; returns when each has recorded itself in the store (the restart is complete)."""
        self.workers = [self._spawn(f"worker{i}", "worker", "--lease", str(self.lease_s), "--heartbeat",
                                    str(self.heartbeat_s), "--poll", "0.1") for i in range(self.count)]
        for process in self.workers:
            self.lives.setdefault(process.pid, []).append([time.time(), math.inf])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p for p in self.workers if p.poll() is not None]
            if dead:
                raise AssertionError(f"worker {dead[0].pid} exited with {dead[0].returncode}; see {self.folder}")
            with db.session() as s:
                seen = set(s.scalars(select(Worker.pid).where(Worker.state != "stopped",
                                                              Worker.pid.in_(self.live_pids()))))
            if seen == self.live_pids():
                return time.time()
            time.sleep(0.1)
        raise AssertionError(f"the workers did not report within {timeout:.0f}s")

    def kill(self, rng) -> None:
        """SIGKILL the server and every worker, in a random order."""
        processes = [p for p in (self.server, *self.workers) if p is not None]
        rng.shuffle(processes)
        for process in processes:
            process.send_signal(signal.SIGKILL)
            if process in self.workers:
                self.lives[process.pid][-1][1] = time.time()
        for process in processes:
            process.wait(timeout=30)
        self.server, self.workers = None, []
        self.generation += 1

    def live_pids(self) -> set[int]:
        return {p.pid for p in self.workers if p.poll() is None}

    def died_at(self, pid: int, moment: float) -> float:
        """When the life of worker ``pid`` that covers ``moment`` ended (inf: still alive or unknown)."""
        for started, killed in self.lives.get(pid, []):
            if started - 1.0 <= moment <= killed:
                return killed
        return math.inf

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        return httpx.request(method, f"{self.url}/api/v1{path}", json=body, timeout=60,
                             headers={"Authorization": f"Bearer {self.token}"})


@dataclass
class Ledger:
    """What the client knows: the jobs it submitted (id -> sort) and the finished states it has seen."""

    kinds: dict[str, str] = field(default_factory=dict)
    finished: dict[str, str] = field(default_factory=dict)
    uncertain: int = 0  # submissions whose answer a kill cut off (the job may or may not exist)


def _load() -> tuple[dict[str, Run], dict[str, list[RunEvent]]]:
    with db.session() as s:
        runs = {r.id: r for r in s.scalars(select(Run))}
        events: dict[str, list[RunEvent]] = {}
        for event in s.scalars(select(RunEvent).order_by(RunEvent.id)):
            events.setdefault(event.run_id, []).append(event)
    return runs, events


def _history(run: Run, events: list[RunEvent], platform: Platform) -> list[str]:
    """Overlapping attempts and claims after the end, from the run's events."""
    problems, holder, ended = [], None, None
    for event in events:
        moment = queue.aware(event.time).timestamp()
        if event.kind == "claimed":
            found = OWNER_IN_MESSAGE.search(event.message)
            pid = owner_pid(found.group(1)) if found else None
            if ended:
                problems.append(f"{run.id} was claimed again after it {ended}: {event.message}")
            if holder is not None and platform.died_at(*holder) > moment:
                problems.append(f"{run.id}: worker {pid} claimed it while worker {holder[0]} (attempt since "
                                f"{holder[1]:.2f}) was still alive: {event.message}")
            holder = (pid, moment) if pid is not None else None
        elif event.kind in ENDS_ATTEMPT:
            holder = None
            ended = event.kind if event.kind in queue.FINISHED else ended
    return problems


def _steps(run: Run) -> list[str]:
    """Interleaved steps of two processes in the fake recipe's step file: two attempts trained at once."""
    path = Path(run.run_dir) / "fake_steps.jsonl"
    if not path.is_file():
        return []
    blocks: list[int] = []
    for line in path.read_text().splitlines():
        if line.strip():
            pid = json.loads(line)["pid"]
            if not blocks or blocks[-1] != pid:
                blocks.append(pid)
    repeated = sorted({pid for pid in blocks if blocks.count(pid) > 1})
    return [f"{run.id}: steps of processes {blocks} interleave (pids {repeated} trained it twice)"] if repeated else []


def violations(ledger: Ledger, platform: Platform) -> list[str]:
    """Every broken promise of the queue in the store now (see the module docstring)."""
    runs, events = _load()
    problems = []
    unknown = sorted(set(runs) - set(ledger.kinds))
    if len(unknown) > ledger.uncertain:
        problems.append(f"jobs nobody submitted: {unknown} ({ledger.uncertain} submissions were cut off)")
    for run_id in unknown:  # a submission whose answer the kill cut off: the job exists, so track it
        ledger.kinds[run_id] = "train"
    ledger.uncertain -= min(len(unknown), ledger.uncertain)
    for run_id, kind in ledger.kinds.items():
        run = runs.get(run_id)
        if run is None or run.state not in queue.STATES:
            problems.append(f"{kind} job {run_id} was submitted and is {'gone' if run is None else run.state}")
            continue
        seen = ledger.finished.get(run_id)
        if seen and run.state != seen:
            problems.append(f"{run_id} {seen} and is now {run.state}")
        elif run.state in queue.FINISHED:
            ledger.finished[run_id] = run.state
        claims = sum(1 for e in events.get(run_id, []) if e.kind == "claimed")
        if run.attempts > run.max_attempts or claims > run.max_attempts:
            problems.append(f"{run_id}: {claims} claims, attempts {run.attempts}, over its cap of {run.max_attempts}")
        problems += _history(run, events.get(run_id, []), platform)
        problems += _steps(run)
    return problems


def stuck(platform: Platform, since: float) -> list[str]:
    """Jobs still ``running`` under a dead worker ``since`` seconds after the restart."""
    alive = platform.live_pids()
    with db.session() as s:
        running = list(s.scalars(select(Run).where(Run.state == queue.RUNNING)))
    return [f"{r.id} still running under dead worker {r.lease_owner} {time.time() - since:.1f}s after the restart"
            for r in running if owner_pid(r.lease_owner) not in alive]


def tally(ledger: Ledger) -> dict[str, int]:
    """Jobs submitted, finished (by state) and retried (claims after the first), for the report."""
    runs, events = _load()
    counts = {"submitted": len(ledger.kinds), "retries": 0, **{state: 0 for state in queue.STATES}}
    for run_id in ledger.kinds:
        counts[runs[run_id].state] += 1
        counts["retries"] += max(0, sum(1 for e in events.get(run_id, []) if e.kind == "claimed") - 1)
    return counts
