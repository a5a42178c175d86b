"""Benchmark: dashboard pages against the 300 ms goal, on a store with 1,000 runs and 1,000,000 metric points.

    python bench/bench_ui.py                 # 1,000 runs, 1,000,000 metric points, 5 timings per page
    python bench/bench_ui.py --small         # 50 runs, 20,000 points: checks the script works (seconds)
    python bench/bench_ui.py --home /tmp/ui-bench --keep    # reuse (or keep) the seeded workspace

Seeds a fresh workspace (``OIKYO_HOME`` in a temporary folder, SQLite in WAL mode, as a user's laptop
has it) with bulk inserts: a few dataset versions (imported and split through the data stage), N
training runs spread over every state, their metric points (loss, lr and tokens/s per step, eval_loss
every 10 steps), a model version for every succeeded run, evaluations of some of them, deployment
records and API keys. Then each page is requested through an in-process client (the ASGI app, no
network) with a logged-in session: once to warm up, then ``--repeats`` times; the table shows the
median and the maximum server time per page against the goal. The API calls the pages make from the
browser (chart data, rows, traffic stats) are timed the same way in a second table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

GOAL_MS = 300.0
STATES = ["succeeded"] * 6 + ["failed", "cancelled", "running", "queued"]


def seed_datasets(tmp: Path, count: int = 3) -> list:
    """Small chat datasets imported and split through the data stage (the versions pages read)."""
    from oikyo.data import split, versions

    found = []
    for d in range(count):
        path = tmp / f"support-{d}.jsonl"
        rows = [{"messages": [{"role": "user", "content": f"Ticket {d}-{i}: my order {i} is late."},
                              {"role": "assistant", "content": f"Sorry about order {i}; it ships today."}]}
                for i in range(400)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        versions.import_dataset(path, name=f"support-{d}")
        version, _ = split.split_dataset(f"support-{d}", validation=0.1, test=0.1, seed=0)
        found.append(version)
    return found


def seed_runs(datasets: list, runs: int, points: int, home: Path) -> list[str]:
    """``runs`` runs and ``points`` metric rows in bulk (a few large INSERT batches); returns the run ids."""
    from sqlalchemy import insert

    from oikyo.store import db
    from oikyo.store.models import Metric, ModelVersion, Run

    rng = random.Random(0)
    now = datetime.now(timezone.utc)
    per_run = max(4, points // runs)
    steps = max(1, per_run * 10 // 31)  # 3 values per step + eval_loss every 10 steps = 3.1 rows per step
    run_rows, mv_rows, ids = [], [], []
    for i in range(runs):
        run_id = f"run-{i:08x}"
        state = STATES[i % len(STATES)]
        dataset = datasets[i % len(datasets)]
        created = now - timedelta(minutes=5 * (runs - i))
        config = {"model": {"name": "smollm2-135m-instruct"}, "data": {"dataset": dataset.id},
                  "train": {"lr": rng.choice([1e-4, 2e-4, 5e-4]), "max_steps": steps, "seed": i % 5}}
        run_rows.append({"id": run_id, "name": f"sweep-{i}", "state": state, "kind": "train", "config": config,
                         "config_hash": secrets.token_hex(32), "dataset_version_id": dataset.id,
                         "base_model": "smollm2-135m-instruct", "seed": i % 5, "attempts": 1, "max_attempts": 3,
                         "run_dir": str(home / "runs" / run_id), "cancel_requested": False, "resume_count": 0,
                         "created_at": created, "started_at": created + timedelta(seconds=5),
                         "finished_at": created + timedelta(minutes=4) if state in ("succeeded", "failed", "cancelled") else None})
        if state == "succeeded":
            mv_rows.append({"id": f"mv-{i:08x}", "run_id": run_id, "base_model": "smollm2-135m-instruct",
                            "kind": "adapter", "path": str(home / "runs" / run_id / "output"),
                            "lineage": {"run_id": run_id, "dataset_version": dataset.id, "config": config},
                            "created_at": created + timedelta(minutes=4)})
        ids.append(run_id)
    engine = db.engine()
    with engine.begin() as connection:
        connection.execute(insert(Run.__table__), run_rows)
        connection.execute(insert(ModelVersion.__table__), mv_rows)
    written, batch = 0, []
    with engine.begin() as connection:
        for i, run_id in enumerate(ids):
            moment = now - timedelta(minutes=5 * (runs - i))
            quota = min(per_run, points - written)
            step = 0
            while quota > 0:
                step += 1
                loss = 2.0 * math.exp(-3 * step / steps) + 0.3 + 0.02 * rng.random()
                for name, value in (("loss", loss), ("lr", 2e-4 * (1 - step / steps)), ("tokens_per_s", 180.0),
                                    ("eval_loss", loss + 0.1)):
                    if quota <= 0 or (name == "eval_loss" and step % 10):
                        continue
                    batch.append({"run_id": run_id, "step": step, "name": name, "value": value,
                                  "time": moment + timedelta(seconds=step)})
                    quota -= 1
                    written += 1
            if len(batch) >= 100_000:
                connection.execute(insert(Metric.__table__), batch)
                batch = []
        if batch:
            connection.execute(insert(Metric.__table__), batch)
    return ids


def seed_rest(datasets: list, run_ids: list[str]) -> None:
    """Evaluations of a few model versions, deployment records and API keys (what the other pages list)."""
    from oikyo.evaluate import records
    from oikyo.serve.gateway import keys
    from oikyo.store import db
    from oikyo.store.models import Deployment, Evaluation, ModelVersion, utcnow

    with db.session() as s:
        versions = list(s.query(ModelVersion).order_by(ModelVersion.created_at.desc()).limit(20))
    rows = [{"index": i, "key": f"k{i}", "question": f"Q{i}", "reference": "yes", "prediction": "yes" if i % 3 else "no",
             "scores": {"exact_match": float(i % 3 > 0)}, "stats": {"exact_match": [float(i % 3 > 0)]}} for i in range(50)]
    artifact = records.write_examples(rows)
    evaluations = [Evaluation(id=records.new_id(), group_id=f"g-{mv.id}", run_id=None, role="model", model_ref=mv.id,
                              model_version_id=mv.id, base_model=mv.base_model, dataset_version_id=datasets[0].id,
                              split="test", rows=50, metrics={"exact_match": 0.5 + 0.01 * n},
                              metric_versions={"exact_match": "1"}, generation={}, settings={}, forced_overlap=False,
                              artifact=artifact, created_at=utcnow()) for n, mv in enumerate(versions)]
    records.save(evaluations)
    with db.session() as s:
        for n, mv in enumerate(versions[:5]):
            s.add(Deployment(name=f"bot-{n}", model=mv.id, variants=[{"label": mv.id, "model": mv.id, "weight": 100.0}],
                             host="127.0.0.1", port=8100 + n, state="stopped", settings={}, created_at=utcnow()))
    for n in range(10):
        keys.create(f"app-{n}")


def timed(client, path: str, repeats: int) -> tuple[float, float, int]:
    """(median ms, max ms, status) of ``repeats`` requests after one warm-up request."""
    client.get(path)
    times, status = [], 0
    for _ in range(repeats):
        began = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - began) * 1000)
        status = response.status_code
    return statistics.median(times), max(times), status


def table(title: str, rows: list[tuple[str, float, float, int]]) -> bool:
    width = max(len(row[0]) for row in rows)
    print(f"\n{title}")
    print(f"{'path':<{width}} {'median ms':>10} {'max ms':>8} {'status':>6}  vs {GOAL_MS:.0f} ms goal")
    ok = True
    for path, median, worst, status in rows:
        within = worst <= GOAL_MS and status < 400
        ok &= within
        print(f"{path:<{width}} {median:>10.1f} {worst:>8.1f} {status:>6}  "
              f"{median / GOAL_MS:>5.2f}x of goal  {'ok' if within else 'SLOW' if status < 400 else 'ERROR'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="50 runs and 20,000 points (a quick check)")
    parser.add_argument("--home", type=Path, default=None, help="workspace to seed (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the seeded workspace")
    args = parser.parse_args(argv)
    if args.small:
        args.runs, args.points = 50, 20_000
    home = args.home or Path(tempfile.mkdtemp(prefix="oikyo-bench-ui-"))
    seeded = (home / "oikyo.db").exists()
    os.environ["OIKYO_HOME"] = str(home)
    os.environ.pop("OIKYO_DATABASE_URL", None)

    from fastapi.testclient import TestClient

    from oikyo import workspace
    from oikyo.api.app import create_app
    from oikyo.data import versions as dataset_versions
    from oikyo.jobs import runs as run_api
    from oikyo.store import db

    try:
        if seeded:
            print(f"reusing the seeded workspace {home}")
            datasets = dataset_versions.list_versions(limit=3)
            run_ids = [r.id for r in run_api.list_runs(limit=args.runs)]
        else:
            began = time.perf_counter()
            datasets = seed_datasets(workspace.subdir("tmp"))
            run_ids = seed_runs(datasets, args.runs, args.points, home)
            seed_rest(datasets, run_ids)
            print(f"seeded {home}: {args.runs:,} runs, {args.points:,} metric points "
                  f"in {time.perf_counter() - began:.1f} s")
        with db.session() as s:
            from sqlalchemy import func, select

            from oikyo.store.models import Metric

            print(f"store: {s.scalar(select(func.count()).select_from(Metric)):,} metric rows, "
                  f"{sum(run_api.count_by_state().values()):,} runs; SQLite at {home / 'oikyo.db'}")

        client = TestClient(create_app("bench-token"))
        client.post("/api/v1/login", json={"token": "bench-token"})
        busiest = run_ids[len(run_ids) // 2]
        succeeded = [r.id for r in run_api.list_runs(state="succeeded", limit=2)]
        pages = ["/", "/datasets", f"/datasets/{datasets[0].id}", "/runs", "/runs?page=10", "/runs?state=succeeded",
                 f"/runs/{busiest}", f"/compare?a={succeeded[0]}&b={succeeded[-1]}", "/rate", "/models",
                 "/deployments", "/login"]
        api = [f"/api/v1/runs/{busiest}/metrics?names=loss,eval_loss,lr,tokens_per_s",
               f"/api/v1/datasets/{datasets[0].id}/rows?offset=0&limit=20",
               f"/api/v1/datasets/{datasets[0].id}/report", "/api/v1/deployments/bot-0/stats",
               "/api/v1/runs?limit=50"]
        pages_ok = table("Dashboard pages (server time, in-process client)",
                         [(p, *timed(client, p, args.repeats)) for p in pages])
        table("API calls the pages make from the browser", [(p, *timed(client, p, args.repeats)) for p in api])
        print(f"\nevery page within {GOAL_MS:.0f} ms: {'yes' if pages_ok else 'NO'}")
        return 0 if pages_ok else 1
    finally:
        db.reset_engine()
        if not args.keep and args.home is None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
