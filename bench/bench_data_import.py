"""Benchmark: importing a large Alpaca JSONL file, oikyo's ingest engine vs Hugging Face ``datasets``.

Run it with::

    python bench/bench_data_import.py               # 1,000,000 rows (~356 MB), as in the issue
    python bench/bench_data_import.py --rows 100000 # a quicker run
    python bench/bench_data_import.py --format openai  # the same text as OpenAI chat records

It generates the file into a temporary folder, then measures in the same run:

* the peer: ``datasets.load_dataset("json", data_files=..., split="train")`` (fresh cache folder),
  which parses the file into Arrow and nothing more;
* oikyo: ``convert_file`` with full validation, conversion to canonical rows, hashing and Parquet
  writing, run in a subprocess so its peak memory (the process tree's summed RSS, sampled every
  20 ms, and the largest single process from ``ru_maxrss``) is measured alone.

It prints both rates, their ratio and the machine. The issue's targets: >= 150,000 rows/s on 2
cores, peak memory < 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WORDS = (
    "the model data train learn answer question explain write list give describe make example step "
    "first second then finally because however which water energy plant city history science music "
    "people time year way day thing world life hand part child eye woman place work week case point "
    "government company number group problem fact résumé naïve café 東京 données"
).split()


def generate(path: Path, rows: int, seed: int = 0, fmt: str = "alpaca") -> None:
    """Write ``rows`` Alpaca records (about 356 bytes each), or OpenAI chat records of the same text, as JSONL."""
    rng = random.Random(seed)
    sentences = [" ".join(rng.choices(WORDS, k=rng.randint(6, 16))).capitalize() + "." for _ in range(4000)]
    with open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            record = {
                "instruction": rng.choice(sentences),
                "input": rng.choice(sentences) if i % 3 == 0 else "",
                "output": " ".join(rng.choices(sentences, k=rng.randint(2, 4))) + (" Note: done." if i % 7 == 0 else ""),
            }
            if fmt == "openai":
                user = record["instruction"] + ("\n\n" + record["input"] if record["input"] else "")
                record = {"messages": [{"role": "user", "content": user},
                                       {"role": "assistant", "content": record["output"]}]}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_datasets(path: Path, cache: Path) -> float:
    """Seconds for datasets.load_dataset("json") to load the file (fresh cache)."""
    import datasets

    datasets.disable_progress_bars()
    start = time.perf_counter()
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))
    seconds = time.perf_counter() - start
    assert ds.num_rows > 0
    return seconds


CHILD = """
import json, resource, sys, time
from oikyo.data.ingest import convert_file

def cpu():
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

cpu_start, start = cpu(), time.perf_counter()
result = convert_file(sys.argv[1], sys.argv[2])
seconds, cpu_seconds = time.perf_counter() - start, cpu() - cpu_start
print(json.dumps({"seconds": seconds, "cpu": cpu_seconds, "ok": result.ok, "rows": result.rows,
                  "format": result.format, "problems": result.problem_counts, "hash": result.content_hash}))
"""


def tree_rss(pid: int) -> int:
    """Summed resident memory (bytes) of a process and its descendants (0 without psutil)."""
    try:
        import psutil
    except ImportError:
        return 0

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def bench_oikyo(path: Path, out: Path) -> dict:
    """Run convert_file in a subprocess; its timing, result and peak memory."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(out)], stdout=subprocess.PIPE, text=True)
    peak = {"rss": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], tree_rss(proc.pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    stdout, _ = proc.communicate()
    stop.set()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"convert_file subprocess failed with exit code {proc.returncode}")
    report = json.loads(stdout.strip().splitlines()[-1])  # "cpu": seconds of convert_file and its workers
    # ru_maxrss of children is the largest single descendant (kilobytes on Linux).
    report["max_process_rss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    report["tree_rss"] = peak["rss"]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep the files")
    parser.add_argument("--format", choices=["alpaca", "openai"], default="alpaca",
                        help="the records to generate (the issue's benchmark is Alpaca)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oikyo-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{args.format}.jsonl"
        if not path.exists() or args.keep is None:
            start = time.perf_counter()
            generate(path, args.rows, fmt=args.format)
            print(f"generated {args.rows:,} rows, {path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - start:.1f}s")
        load_before = os.getloadavg()[0]
        mine = bench_oikyo(path, folder / "rows.parquet")
        theirs = bench_datasets(path, Path(tmp) / "hf-cache")  # always a fresh cache
        load_after = os.getloadavg()[0]
    rows = args.rows
    ours, peer = rows / mine["seconds"], rows / theirs
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average {load_before:.1f} before, {load_after:.1f} after (other work competes for the cores)"
    )
    print(f"datasets.load_dataset('json'):  {theirs:6.2f} s  {peer:10,.0f} rows/s  (parse only)")
    print(
        f"oikyo convert_file:             {mine['seconds']:6.2f} s  {ours:10,.0f} rows/s  "
        f"(validate + convert + hash + Parquet; ok={mine['ok']}, format={mine['format']}, rows={mine['rows']:,})"
    )
    print(f"ratio oikyo / datasets: {ours / peer:.2f}x")
    print(
        f"convert_file CPU time: {mine['cpu']:.2f} s over its process tree "
        f"(spread over {os.cpu_count()} otherwise idle cores that would be at best {mine['cpu'] / os.cpu_count():.2f} s "
        f"= {rows / (mine['cpu'] / os.cpu_count()):,.0f} rows/s: an estimate, not a measurement)"
    )
    print(
        f"convert_file peak memory: {mine['tree_rss'] / 2**20:,.0f} MiB summed over its process tree, "
        f"{mine['max_process_rss'] / 2**20:,.0f} MiB largest single process"
    )


if __name__ == "__main__":
    main()
