"""One writer process of the SQLite contention check (test_sqlite_contention.py): real store writes, counted.

Run as ``python contention_writer.py INDEX THREADS SECONDS OUT_JSON`` in the workspace named by
``OIKYO_HOME``. It opens the database, touches ``OUT_JSON.ready`` and waits for a file ``go`` beside
``OUT_JSON`` (so that every process starts together, however long its imports took); then each
thread for ``SECONDS`` cycles through what the platform writes: submitting runs; a worker's claim,
heartbeats, live metrics and completion; API keys created and verified (the verification updates the
key's last use); worker liveness (read, then update); dataset imports, some of one shared file
imported by every writer at once. It records every write it saw succeed and every exception, and
dumps them to ``OUT_JSON`` for the test to compare with the rows in the database.

``INDEX`` 0 also holds long write transactions (``OIKYO_CONTENTION_HOLD_S`` each, default 1.5 s): a busy writer that the others
must wait for (busy_timeout), not fail on.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

LONG_HOLD_S = float(os.environ.get("OIKYO_CONTENTION_HOLD_S", "1.5"))
METRIC_ROWS = 12  # rows one claimed run reports before it completes (two flushes of 6)
SHARED_ROWS = [{"messages": [{"role": "user", "content": "shared question"},
                             {"role": "assistant", "content": "shared answer"}]}]


class Tally:
    """What one process wrote (ids and counts) and every error it met."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops: Counter = Counter()
        self.errors: list[str] = []
        self.runs: list[str] = []
        self.finished: dict[str, str] = {}
        self.claims = 0
        self.metric_rows = 0
        self.keys: list[str] = []
        self.workers: list[str] = []
        self.datasets: set[str] = set()
        self.long_holds = 0
        self.latencies: list[float] = []  # seconds per successful step
        self.statements = 0
        self.slowest_statement = 0.0  # seconds
        self.slowest_sql = ""
        self.slow_statements: list[float] = []  # seconds of each statement over 1 s

    def error(self, kind: str, error: BaseException) -> None:
        text = f"{kind}: {error.__class__.__name__}: {error}".splitlines()[0][:400]
        with self.lock:
            self.errors.append(text)
            if len(self.errors) <= 3:
                traceback.print_exc()


def _submit(tally: Tally, tag: str) -> None:
    from oikyo.jobs import queue

    run = queue.submit(name=f"contention-{tag}", config={"writer": tag}, config_hash="0" * 16,
                       base_model="none", dataset_version_id=None, seed=0)
    with tally.lock:
        tally.runs.append(run.id)


def _work_one_run(tally: Tally, tag: str, cycle: int) -> None:
    """A worker's writes for one run: claim, heartbeat, metrics in two flushes, heartbeat, finish."""
    from oikyo.jobs import queue
    from oikyo.jobs.metrics import MetricsWriter

    owner = queue.new_owner()
    run = queue.claim(owner, lease_s=600)
    if run is None:
        return
    with tally.lock:
        tally.claims += 1
    queue.heartbeat(run.id, owner, 600)
    problems: list[str] = []
    writer = MetricsWriter(run.id, warn=problems.append, flush_rows=METRIC_ROWS // 2, flush_seconds=3600)
    for step in range(METRIC_ROWS // 2):
        writer.add(step, {"loss": 1.0 / (step + 1), "lr": 1e-4})
    writer.flush()
    if problems or writer._rows:  # the writer keeps rows it could not write; none may be left
        raise RuntimeError(f"metrics not written: {problems or len(writer._rows)}")
    queue.heartbeat(run.id, owner, 600)
    if cycle % 2:
        queue.complete(run.id, owner)
        state = queue.SUCCEEDED
    else:
        queue.fail(run.id, owner, f"failed on purpose by {tag}")
        state = queue.FAILED
    with tally.lock:
        tally.metric_rows += METRIC_ROWS
        tally.finished[run.id] = state


def _key(tally: Tally, tag: str) -> None:
    from oikyo.serve.gateway import keys

    record, secret = keys.create(f"contention-{tag}")
    with tally.lock:
        tally.keys.append(record.id)
    found = keys.verify(secret)  # reads the key, then records its last use: a read followed by a write
    if found is None or found.id != record.id:
        raise RuntimeError(f"key {record.id} does not verify")


def _worker_seen(tally: Tally, owner: str, cycle: int) -> None:
    from oikyo.jobs import queue

    queue.worker_seen(owner, "busy" if cycle % 2 else "idle")  # get, then insert or update in one session
    with tally.lock:
        if owner not in tally.workers:
            tally.workers.append(owner)


def _dataset(tally: Tally, folder: Path, tag: str, cycle: int) -> None:
    from oikyo.data import versions

    if cycle % 3 == 0:
        rows = SHARED_ROWS  # every writer imports this same content, often at the same moment
    else:
        rows = [{"messages": [{"role": "user", "content": f"question {tag} {cycle}"},
                              {"role": "assistant", "content": f"answer {tag} {cycle}"}]}]
    path = folder / f"{tag}-{cycle}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    outcome = versions.import_dataset(path, name=f"contention-{tag}")
    with tally.lock:
        tally.datasets.add(outcome.version.id)


def _long_holder(tally: Tally, stop_at: float) -> None:
    """Hold the write lock for LONG_HOLD_S at a time (a long transaction), then leave it as long."""
    from oikyo.jobs import queue

    owner = queue.new_owner() + "-long"
    while time.time() < stop_at - LONG_HOLD_S:
        try:
            from oikyo.store import db
            from oikyo.store.models import Worker, utcnow

            with db.session() as s:
                now = utcnow()
                s.merge(Worker(id=owner, hostname="long", pid=os.getpid(), state="busy", current_run_id=None,
                               started_at=now, last_seen_at=now))
                s.flush()  # the INSERT takes the write lock, held until the commit below
                time.sleep(LONG_HOLD_S)
            with tally.lock:
                tally.long_holds += 1
                if owner not in tally.workers:
                    tally.workers.append(owner)
        except Exception as error:  # noqa: BLE001 - counted, reported by the test
            tally.error("long transaction", error)
        time.sleep(LONG_HOLD_S)  # the lock is held half of the time


def _thread(tally: Tally, index: int, thread: int, stop_at: float, folder: Path) -> None:
    from oikyo.jobs import queue

    tag = f"w{index}t{thread}"
    owner = queue.new_owner()
    steps = [("submit", lambda c: _submit(tally, tag)),
             ("run", lambda c: _work_one_run(tally, tag, c)),
             ("submit", lambda c: _submit(tally, tag)),
             ("key", lambda c: _key(tally, tag)),
             ("worker", lambda c: _worker_seen(tally, owner, c)),
             ("dataset", lambda c: _dataset(tally, folder, tag, c))]
    cycle = 0
    while time.time() < stop_at:
        for kind, step in steps:
            if time.time() >= stop_at:
                break
            begun = time.monotonic()
            try:
                step(cycle)
            except Exception as error:  # noqa: BLE001 - every failure is what this check counts
                tally.error(kind, error)
            else:
                with tally.lock:
                    tally.ops[kind] += 1
                    tally.latencies.append(round(time.monotonic() - begun, 4))
        cycle += 1


def _time_statements(engine, tally: Tally) -> None:
    """Keep the longest single statement (a write waits for the lock inside one: how close to busy_timeout)."""
    from sqlalchemy import event

    @event.listens_for(engine, "before_cursor_execute")
    def _before(connection, *_):
        connection.info["began"] = time.monotonic()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(connection, _cursor, statement, *_):
        took = time.monotonic() - connection.info.pop("began", time.monotonic())
        with tally.lock:
            tally.statements += 1
            if took > 1.0:
                tally.slow_statements.append(round(took, 2))
            if took > tally.slowest_statement:
                tally.slowest_statement, tally.slowest_sql = took, " ".join(statement.split())[:60]


def main(index: int, threads: int, seconds: float, out: Path) -> None:
    from oikyo.store import db

    tally = Tally()
    folder = out.parent / f"files-{index}"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        engine = db.engine()  # every process opens (and, on a new workspace, migrates) the database at once
    except Exception as error:  # noqa: BLE001
        tally.error("open", error)
    else:
        _time_statements(engine, tally)
    from oikyo.data import versions  # noqa: F401 - imported before the start, like the other modules
    from oikyo.jobs import metrics, queue  # noqa: F401
    from oikyo.serve.gateway import keys  # noqa: F401

    Path(f"{out}.ready").touch()
    go = out.parent / "go"
    while not go.exists():
        time.sleep(0.02)
    stop_at = time.time() + seconds
    workers = [threading.Thread(target=_thread, args=(tally, index, t, stop_at, folder)) for t in range(threads)]
    if index == 0:
        workers.append(threading.Thread(target=_long_holder, args=(tally, stop_at)))
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    out.write_text(json.dumps({
        "ops": dict(tally.ops), "errors": tally.errors, "runs": tally.runs, "finished": tally.finished,
        "claims": tally.claims, "metric_rows": tally.metric_rows, "keys": tally.keys, "workers": tally.workers,
        "datasets": sorted(tally.datasets), "long_holds": tally.long_holds,
        "latencies": tally.latencies, "statements": tally.statements,
        "slowest_statement": tally.slowest_statement, "slowest_sql": tally.slowest_sql,
        "slow_statements": tally.slow_statements}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4]))
