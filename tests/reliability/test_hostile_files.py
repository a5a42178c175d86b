"""Hostile files (issue 22): malformed dataset files are refused with a clear message, never a crash.

The corpus (:mod:`hostile_corpus`: broken JSON, wrong types, missing roles, BOM/CRLF/invalid UTF-8,
CSV/TSV, Parquet and gzip damage, gzip bombs, deep nesting, empty and huge files, over-long lines,
disguised plain text) goes through ``oikyo data import --json`` exactly as a user runs it. Each
refused file must exit 1 or 2 with no traceback, name the problem (and its line or record where it
has one), store no dataset version and leave no temporary file behind; each valid one (BOM, CRLF,
several gzip members) must import to the same content hash as its plain twin. Peak RSS is measured
per process and must stay under :data:`RSS_BOUND_MB`.

Short run (the suite): a fixed sample of ~40 files, most in one driver process
(:mod:`hostile_driver`), the gzip bomb and an over-limit line each in their own ``oikyo`` process.
Full run (``OIKYO_RELIABILITY_FULL=1``): all files, including the 1 GB single line and gzip bombs
that would expand to ~10 GiB; the big and adversarial ones (:data:`OWN_PROCESS`) each in their own
process, so their peak RSS is their own; the figures are printed (``-s``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from battery import FULL, size
from hostile_corpus import Case, corpus

DRIVER = Path(__file__).with_name("hostile_driver.py")
OWN_PROCESS = ("gzip", "huge", "long_line", "nesting")  # categories run one process per file in the full run
# Peak RSS allowed for one import process (and for each of its workers): the interpreter with pyarrow
# and the CLI (~150-220 MB measured), plus a few copies of one record at the 64 MiB limit (a 60 MiB
# record: ~400 MB measured).
RSS_BOUND_MB = 512


def _cli(case: Case, path: Path, workdir: Path) -> dict:
    """``oikyo data import --json`` in a process of its own, with its peak RSS: the larger of its own
    (VmHWM) and its largest worker's, else wait4's (which starts from this process's size at fork)."""
    env = {**os.environ, **(case.env or {})}
    out, err, peak = (workdir / f"{case.name}.{kind}" for kind in ("out", "err", "peak"))
    command = [sys.executable, str(DRIVER), "--cli", str(peak), "data", "import", str(path), "--json", "--no-report"]
    started = time.perf_counter()
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    from oikyo.data import versions

    return {"path": str(path), "rc": process.returncode, "stdout": out.read_text(), "stderr": err.read_text(),
            "crash": None, "versions": len(versions.list_versions()),
            "maxrss_kb": max(map(int, peak.read_text().split())) if peak.exists() else usage.ru_maxrss,
            "seconds": time.perf_counter() - started}


def _driver(cases: list[Case], folder: Path, workdir: Path) -> list[dict]:
    jobs, results = workdir / "jobs.json", workdir / "results.jsonl"
    jobs.write_text(json.dumps([{"path": str(folder / c.name), "env": c.env} for c in cases]))
    done = subprocess.run([sys.executable, str(DRIVER), str(jobs), str(results)], capture_output=True, text=True,
                          timeout=size(600, 3000))
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in results.read_text().splitlines()]


def _problems(result: dict) -> tuple[list[dict], dict, str]:
    """(problems, counts, all message text) of a refused import's output."""
    if result["rc"] == 2:  # a user error raised before validation: one plain message on stderr
        return [], {}, result["stderr"]
    answer = json.loads(result["stdout"])
    assert answer["ok"] is False, answer
    text = " ".join(f"{p['location']} {p['message']}" for p in answer["problems"])
    return answer["problems"], answer["problem_counts"], text


def check(case: Case, result: dict, before: int) -> tuple[str, str | None]:
    """Assert what the import of ``case`` must do; returns (outcome, content hash or None)."""
    assert result["crash"] is None, f"{case.name}: crashed\n{result['crash']}"
    for stream in ("stdout", "stderr"):
        assert "Traceback" not in result[stream], f"{case.name}: traceback on {stream}\n{result[stream][-3000:]}"
    assert result["maxrss_kb"] / 1024 < RSS_BOUND_MB, f"{case.name}: peak RSS {result['maxrss_kb'] / 1024:.0f} MB"
    if case.expect == "import":
        assert result["rc"] == 0, f"{case.name}: exit {result['rc']}\n{result['stdout']}\n{result['stderr']}"
        version = json.loads(result["stdout"])["version"]
        assert case.rows is None or version["rows"] == case.rows, (case.name, version["rows"])
        return "imported", version["content_hash"]
    assert result["rc"] in (1, 2), f"{case.name}: exit {result['rc']}\n{result['stdout']}\n{result['stderr']}"
    assert result["versions"] == before, f"{case.name}: a dataset version was stored"
    problems, counts, text = _problems(result)
    assert text.strip(), f"{case.name}: refused without a message"
    assert all(p["message"] and p["error"] for p in problems), problems
    if case.where:
        assert case.where in text, f"{case.name}: {case.where!r} not named in: {text[:1500]}"
    if case.error:
        assert case.error in counts, f"{case.name}: expected {case.error}, got {counts}: {text[:1500]}"
    return "refused", None


def _leftovers(home: Path) -> list[str]:
    """Temporary or partial files an import left in the workspace."""
    found = [p for p in (home / "tmp").rglob("*") if p.is_file()] if (home / "tmp").is_dir() else []
    found += list(home.rglob("*.partial"))
    return [str(p) for p in found]


@pytest.mark.timeout(size(600, 3600))  # full size: ~260 files, a 1 GB line, ~10 GiB bombs
def test_hostile_files(tmp_path, workspace):
    folder, workdir = tmp_path / "corpus", tmp_path / "work"
    workdir.mkdir()
    started = time.perf_counter()
    cases = corpus(folder, full=FULL)
    made = time.perf_counter() - started
    own = [c for c in cases if c.isolated or (FULL and c.category in OWN_PROCESS)]
    batch = [c for c in cases if c not in own]
    results = dict(zip((c.name for c in batch), _driver(batch, folder, workdir))) if batch else {}

    outcomes, hashes, rss, seconds, before = defaultdict(Counter), {}, {}, {}, 0
    for case in batch:  # the driver ran them in this order; each sees the versions stored before it
        outcome, hashes[case.name] = check(case, results[case.name], before)
        before = results[case.name]["versions"]
        outcomes[case.category][outcome] += 1
        rss[case.name] = results[case.name]["maxrss_kb"] / 1024
        seconds[case.name] = results[case.name]["seconds"]
    for case in own:
        result = _cli(case, folder / case.name, workdir)
        outcome, hashes[case.name] = check(case, result, before)
        before = result["versions"]
        outcomes[case.category][outcome] += 1
        rss[case.name] = result["maxrss_kb"] / 1024
        seconds[case.name] = result["seconds"]
        (folder / case.name).unlink(missing_ok=True)  # the full run's big files go as soon as they are done
    for case in cases:
        if case.twin:
            assert hashes[case.name] == hashes[case.twin], f"{case.name} did not import the same rows as {case.twin}"
    assert not _leftovers(workspace), _leftovers(workspace)

    print(f"\nhostile files: {len(cases)} ({'full' if FULL else 'short'} run), corpus written in {made:.1f} s, "
          f"all checked in {time.perf_counter() - started:.1f} s")
    for category, counts in sorted(outcomes.items()):
        print(f"  {category:12} {sum(counts.values()):4}  {dict(counts)}")
    if batch:
        print(f"  peak RSS of the driver process ({len(batch)} files): {max(rss[c.name] for c in batch):.0f} MB")
    if own:
        worst = max((c.name for c in own), key=rss.get)
        print(f"  peak RSS, one process per file: max {rss[worst]:.0f} MB ({worst}); bound {RSS_BOUND_MB} MB")
        for name in sorted(c.name for c in own if "bomb" in c.name or c.category in ("long_line", "huge")):
            print(f"    {name}: {rss[name]:.0f} MB, {seconds[name]:.1f} s")
    slowest = sorted(seconds, key=seconds.get, reverse=True)[:5]
    print("  slowest: " + ", ".join(f"{name} {seconds[name]:.1f} s" for name in slowest))
