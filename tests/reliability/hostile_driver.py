"""Run ``oikyo data import --json FILE`` for many files in one process, through the CLI's own entry point.

Used by test_hostile_files.py to keep the short run within its time budget (one interpreter start for
many files instead of one each). For each file it calls :func:`oikyo.cli.main.main` (what the
``oikyo`` console script calls) with the file's extra environment, and records the exit code, the
output, any exception that escaped (a crash: its traceback), the stored versions after it, and the
peak RSS so far of the process (VmHWM: ``ru_maxrss`` of a child starts at its parent's size at fork)
and of its largest import worker::

    python hostile_driver.py jobs.json results.jsonl     # jobs: [{"path": ..., "env": {...}}, ...]
    python hostile_driver.py --cli peak.txt data import FILE --json   # one `oikyo` run; peak RSS in kB of
                                                                        # it and of its largest worker process
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import resource
import sys
import time
import traceback


def peak_rss_kb() -> int:
    """This process's peak resident set size (VmHWM) in kB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_one(path: str, env: dict) -> dict:
    from oikyo.cli.main import main
    from oikyo.data import versions

    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    stdout, stderr = io.StringIO(), io.StringIO()
    crash, code, started = None, 0, time.perf_counter()
    sys.argv = ["oikyo", "data", "import", path, "--json", "--no-report"]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 - what escapes main() is exactly what the test looks for
        crash, code = traceback.format_exc(), 1
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {
        "path": path, "rc": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "crash": crash,
        "versions": len(versions.list_versions()), "seconds": time.perf_counter() - started,
        "maxrss_kb": max(peak_rss_kb(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
    }


def main(jobs_file: str, results_file: str) -> None:
    with open(jobs_file) as f:
        jobs = json.load(f)
    with open(results_file, "w") as out:
        for job in jobs:
            out.write(json.dumps(run_one(job["path"], job.get("env") or {})) + "\n")
            out.flush()


def cli(peak_file: str, args: list[str]) -> None:
    """``oikyo ARGS`` exactly as the console script runs it, writing the peak RSS to ``peak_file`` at exit."""
    from oikyo.cli.main import main as oikyo

    def record() -> None:
        # Import workers (a process pool for files over 5 MB) are waited for: RUSAGE_CHILDREN has the largest.
        workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        with open(peak_file, "w") as f:
            f.write(f"{peak_rss_kb()} {workers}")

    atexit.register(record)
    sys.argv = ["oikyo", *args]
    oikyo()


if __name__ == "__main__":
    if sys.argv[1] == "--cli":
        cli(sys.argv[2], sys.argv[3:])
    else:
        main(sys.argv[1], sys.argv[2])
