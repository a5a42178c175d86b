"""Benchmark: does monitoring slow serving? One client load with logging, quality signals and drift off, then on.

    python bench/bench_monitoring.py                  # ~7 minutes on a 2-core laptop CPU
    python bench/bench_monitoring.py --threads 1 --repeats 6
    python bench/bench_monitoring.py --drift-args="--nice 0"   # embeddings at serving's priority
    python bench/bench_monitoring.py --kinds off,log,on        # also logging alone, without drift

Goal (issue 18): serving with monitoring on runs at >= 0.95x the tokens/s of serving with it off.

What runs, on the bundled SmolLM2-135M-Instruct (float32, one replica, ``--threads`` torch threads):

- The load: ``--clients`` threads with the official ``openai`` client, streaming, each sending
  ``--rounds`` chat requests after a small random delay (0-``--max-delay`` s), ``--tokens`` new
  tokens each (greedy, ``ignore_eos``), as in ``bench/bench_serve.py``. The prompts are support
  tickets: the triage system prompt and a customer message from
  :func:`oikyo.data.sample.generate_support_tickets` with seed 1 (the drift reference is the shipped
  sample, seed 0: the same kind of traffic; 21 of the first 276 messages also occur in it). The runs
  of one round send the same requests with the same delays; each round has tickets of its own (the
  drift worker keeps the embeddings of texts it has seen: repeated tickets would make checks cheap).
- off: a deployment with ``log_requests`` off, and no drift process running (see Setup).
- on: a deployment of the same model with ``log_requests`` on (each request and answer is stored,
  and its quality signals computed, in the router's request-log thread) and ``oikyo deployments
  drift NAME --reference support-tickets --window W --every S`` running beside it, so a drift check
  (input length, script, out-of-vocabulary share, the base model's embeddings by MMD, answer length,
  labels, quality signals) runs each time W new requests are logged: ``--rounds * --clients / W``
  checks per run (2 or 3 by default) when it gets the cores. By default the drift command embeds in a
  worker at nice 19 (``--nice``, :mod:`oikyo.monitor.embeddings`), so its checks use the cores that
  serving leaves idle and wait when it leaves none. The script counts the checks (``input_embedding``
  records) written while the measured load ran and those written once it was over, before the drift
  process is frozen (until fewer than W logged requests wait for a check), with the drift processes'
  CPU time during the load and their nice.
- Setup, not measured: each kind's deployment is started once and stays up (an idle one takes no CPU)
  and gets one warm-up request, then ``W`` short requests (4 tokens) so that the drift window is
  full; the drift process is started once, and the runs begin after its first check (loading the
  model, embedding the reference and calibrating happen once in a drift process's life, not per
  request). The reference's embeddings are computed first, in this process, into the scratch
  workspace's cache (where a drift process that ran before leaves them): a drift worker at nice 19
  on a machine busy with other work would wait minutes for the cores to embed them. Between "on"
  runs the drift command and its worker are frozen (SIGSTOP, after their pending checks): during
  the other runs they take no CPU at all, as if there were no drift process.
- log (with ``--kinds off,log,on``): logging and quality signals without the drift process, to tell
  the two costs apart.
- Runs alternate off, on, off, on, ... (``--repeats`` rounds of ``--kinds``), back to back, so slow
  drifts of the machine's speed (10-20% over minutes on the shared 2-core development machine) hit
  every kind alike. Reported: every run's tokens/s and latencies, the median tokens/s of each kind,
  the ratio of the medians on/off (the goal's figure) and each round's on/off, latency p50/p99 over
  all requests of each kind, the drift checks, the machine and its load average.

The drift checks alarm on ``output_length``: the prefill's 4-token answers and the measured 32-token
answers (``ignore_eos``) are unlike the reference's 20-token JSON answers. An alarm costs one event
row; the check's cost is the same.

Threads: ``--threads`` defaults to the number of cores, the thread count goals are judged at; on a
machine shared with other work, ``--threads 1`` measures less of the neighbours (see
``bench/bench_serve.py``). The drift process embeds with one torch thread whatever this setting.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench_serve import goal, machine, percentile, serve_clients, warm_up

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REFERENCE = "support-tickets"  # the dataset the drift checks compare traffic with
GOAL = 0.95
PREFILL_TOKENS = 4


def ticket_prompts(n: int) -> list[list[dict]]:
    """``n`` support-ticket conversations without their answers (seed 1; the reference is seed 0's sample)."""
    from oikyo.data.sample import generate_support_tickets

    return [record["messages"][:-1] for record in generate_support_tickets(n, seed=1)]


@contextmanager
def deployed(model: str, name: str, threads: int, batch: int, log_requests: bool):
    """A detached deployment (router + one replica) on a free port, logging requests or not; stopped on exit."""
    from oikyo.serve.gateway import deployments

    port = deployments._free_port()
    started = time.perf_counter()
    info = deployments.deploy(model, name=name, port=port, replicas=1, wait_s=900, log_requests=log_requests,
                              settings={"threads": threads, "max_batch_size": batch})
    print(f"  deployed {name} (log_requests={log_requests}) in {time.perf_counter() - started:.1f} s", flush=True)
    try:
        yield info["url"]
    finally:
        deployments.stop(name)


def prefill(url: str, key: str, model: str, prompts: list[list[dict]]) -> None:
    """Short requests, one after the other, so the drift window is full before the measured load."""
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key=key, max_retries=0, timeout=600)
    for messages in prompts:
        client.chat.completions.create(model=model, messages=messages, max_tokens=PREFILL_TOKENS, temperature=0,
                                       extra_body={"ignore_eos": True})


# ----------------------------------------------------------------------------- the drift process


def cache_reference_embeddings(model_dir: str, window: int) -> float:
    """Embed the drift reference once here, at this process's priority, into the workspace's cache (where a
    drift process that ran before would have left it); returns the seconds it took."""
    from oikyo.monitor import drift
    from oikyo.monitor.embeddings import Embedder

    started = time.perf_counter()
    settings = drift.DriftSettings(window=window)
    reference = drift.load_reference(drift.reference_version(model_dir, REFERENCE), settings.reference_rows,
                                     settings.seed)
    drift.Checker(reference, settings, embedder=Embedder(model_dir), quality=drift.quality_function())
    return time.perf_counter() - started


def embedding_checks(name: str) -> int:
    """Drift checks recorded for ``name`` so far: one ``input_embedding`` row per check and variant."""
    from oikyo.monitor.drift_records import history

    return len(history(name, detector="input_embedding", limit=100000))


class DriftProcess:
    """``oikyo deployments drift NAME --every S`` in the background, its output in a file."""

    def __init__(self, name: str, window: int, every: float, extra: list[str], log_path: Path):
        command = [str(Path(sys.executable).with_name("oikyo")), "deployments", "drift", name, "--reference",
                   REFERENCE, "--window", str(window), "--every", f"{every:g}", *extra]
        self.log_path = log_path
        self.log = open(log_path, "w")
        env = {**os.environ, "COLUMNS": "200"}
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.command = shlex.join(command)

    def processes(self) -> list:
        """The drift command and its children (the embedding worker, unless --nice 0)."""
        import psutil

        main = psutil.Process(self.proc.pid)
        return [main, *main.children(recursive=True)]

    def cpu_s(self) -> float:
        import psutil

        total = 0.0
        for p in self.processes():
            try:
                times = p.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    def nice(self) -> list[int]:
        """The priorities of the drift command and its children."""
        import psutil

        out = []
        for p in self.processes():
            try:
                out.append(p.nice())
            except psutil.Error:
                pass
        return out

    def catch_up(self, name: str, window: int, logged_at_least: int, timeout_s: float) -> float | None:
        """Seconds until every request is logged (``logged_at_least``) and fewer than ``window`` of them wait
        for a check (None: not within ``timeout_s``)."""
        from oikyo.monitor import drift

        start = time.perf_counter()
        while logged(name)["with_content"] < logged_at_least:  # the router writes its log every 0.5 s
            if time.perf_counter() - start > timeout_s:
                return None
            time.sleep(0.2)
        variants = drift.logged_variants(name)
        while any(drift.due(name, v, window) for v in variants):
            if time.perf_counter() - start > timeout_s or self.proc.poll() is not None:
                return None
            time.sleep(0.5)
        return time.perf_counter() - start

    def wait_for_check(self, name: str, before: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while embedding_checks(name) <= before:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the drift process exited ({self.proc.returncode}):\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no drift check after {timeout_s:.0f} s:\n{self.output()[-3000:]}")
            time.sleep(0.5)

    def pause(self) -> None:
        """Freeze the drift command and its worker (SIGSTOP): no CPU at all, as if there were no drift process."""
        for p in self.processes():
            p.suspend()

    def resume(self) -> None:
        for p in self.processes():
            p.resume()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.resume()
            self.proc.send_signal(signal.SIGINT)  # the CLI's Ctrl-C: it stops between checks
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")


# ----------------------------------------------------------------------------- one run


def measure(kind: str, index: int, args: argparse.Namespace, url: str, key: str, prompts: list,
            drift: DriftProcess) -> dict:
    """One measured load against the ``kind`` deployment; for "on", with the drift process let run."""
    on = kind == "on"
    name = f"bench-monitoring-{kind}"
    load = {"clients": args.clients, "tokens": args.tokens, "rounds": args.rounds, "max_delay": args.max_delay}
    if on:
        drift.resume()
        checks_before, cpu_before, logged_before = embedding_checks(name), drift.cpu_s(), logged(name)["with_content"]
    try:
        result = serve_clients(url, key, [name], seed=1000 * index, prompts=prompts, **load)
        if on:
            result["drift_checks"] = embedding_checks(name) - checks_before
            result["drift_cpu_s"] = drift.cpu_s() - cpu_before
            result["drift_nice"] = drift.nice()
            # Checks that waited for the cores (a yielding drift process) run once the load is over.
            result["drift_catch_up_s"] = drift.catch_up(name, args.window, logged_before + result["requests"],
                                                        timeout_s=300)
            result["drift_checks_after"] = embedding_checks(name) - checks_before - result["drift_checks"]
    finally:
        if on:
            drift.pause()
    result.update(kind=kind, index=index)
    if kind != "off":
        result["logged"] = logged(name)
    return result


def logged(name: str) -> dict:
    """How many of the deployment's requests were stored with their content, and with quality signals."""
    from sqlalchemy import func, select

    from oikyo.store import db
    from oikyo.store.models import ServedRequest

    with db.session() as s:
        where = (ServedRequest.deployment == name, ServedRequest.request.is_not(None))
        total = s.scalar(select(func.count()).select_from(ServedRequest).where(*where))
        scored = s.scalar(select(func.count()).select_from(ServedRequest).where(*where,
                                                                                  ServedRequest.quality.is_not(None)))
    return {"with_content": int(total or 0), "with_quality": int(scored or 0)}


def print_run(r: dict) -> None:
    print(f"  {r['kind']:>3} #{r['index']}: {r['tokens_per_s']:.1f} tokens/s ({r['tokens']} tokens, {r['requests']} "
          f"requests, {r['errors']} errors, {r['seconds']:.2f} s); latency p50 {r['latency_p50_s']:.2f} s, "
          f"p99 {r['latency_p99_s']:.2f} s; time to first token p50 {r['ttft_p50_s']:.3f} s, "
          f"p99 {r['ttft_p99_s']:.3f} s", flush=True)
    if r["errors"]:
        print(f"        errors: {r['error_examples']}")
    if r["kind"] == "log":
        print(f"        logged requests so far: {r['logged']['with_content']} ({r['logged']['with_quality']} with "
              "quality signals)", flush=True)
    if r["kind"] == "on":
        share = r["drift_cpu_s"] / r["seconds"]
        caught = (f"{r['drift_checks_after']} more after it, caught up {r['drift_catch_up_s']:.1f} s after the load"
                  if r["drift_catch_up_s"] is not None else f"{r['drift_checks_after']} more after it, NOT caught up")
        print(f"        drift: {r['drift_checks']} checks with embeddings during the run ({caught}); drift processes' "
              f"CPU during the run {r['drift_cpu_s']:.1f} s ({share:.0%} of one core), embedding at nice "
              f"{max(r['drift_nice'] or [0])}; "
              f"logged requests so far: {r['logged']['with_content']} ({r['logged']['with_quality']} with quality "
              "signals)", flush=True)


# ----------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8, help="Requests per client in each measured run (8 x 8 "
                        "clients: two drift windows of 20 fill and are checked while the load runs).")
    parser.add_argument("--max-delay", type=float, default=0.5, help="Random delay before each request (s).")
    parser.add_argument("--batch", type=int, default=16, help="The replica's max batch size.")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch CPU threads of the replica (default: every core, see the docstring).")
    parser.add_argument("--repeats", type=int, default=4, help="Rounds of runs, one of each --kinds per round.")
    parser.add_argument("--kinds", default="off,on", help="Runs of each round, in order: off, on, and log (request "
                        "logging and quality signals without the drift process, to tell the two costs apart).")
    parser.add_argument("--window", type=int, default=20, help="The drift check's --window (at least 10).")
    parser.add_argument("--every", type=float, default=1.0, help="The drift process's --every (s, at least 1): "
                        "often, so that a check starts soon after each window fills.")
    parser.add_argument("--drift-args", default="", help="More flags for `oikyo deployments drift`.")
    parser.add_argument("--model-dir", default=None, help="Default: the bundled model (converted once).")
    parser.add_argument("--json", default=None, help="Also write every figure to this JSON file.")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    # Records of this run (deployments, keys, the reference dataset, logged requests, drift checks)
    # go to a scratch workspace, removed at the end; the bundled model is converted once into the
    # usual workspace.
    scratch = Path(tempfile.mkdtemp(prefix="bench-monitoring-"))
    try:
        results = run(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def run(args: argparse.Namespace, scratch: Path) -> dict:
    from oikyo.models.bundled import ensure_bundled_model

    model_dir = str(Path(args.model_dir) if args.model_dir else ensure_bundled_model(log=print))
    os.environ["OIKYO_HOME"] = str(scratch)
    os.environ.pop("OIKYO_DATABASE_URL", None)
    results: dict = {"machine": machine(args.threads), "settings": vars(args), "model_dir": model_dir,
                     "load_average_at_start": os.getloadavg()}
    print("machine:", json.dumps(results["machine"]), flush=True)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    print(f"model: {model_dir}; {args.clients} clients x {args.rounds} rounds x {args.tokens} new tokens per run; "
          f"support-ticket prompts; drift --window {args.window} --every {args.every:g} {args.drift_args}".rstrip(),
          flush=True)

    from oikyo.data import versions
    from oikyo.data.sample import sample_path
    from oikyo.serve.gateway import keys

    version = versions.import_dataset(sample_path(), name=REFERENCE).version
    print(f"reference: {version.name}@{version.id} ({sample_path().name})", flush=True)
    print(f"reference embeddings cached in {cache_reference_embeddings(model_dir, args.window):.1f} s", flush=True)
    _, key = keys.create("bench")
    measured = args.clients * args.rounds
    # Each round sends tickets of its own (the same to every kind): the drift worker remembers the
    # embeddings of texts it has seen, so repeating a round's tickets would make later checks cheap.
    prompts_all = ticket_prompts(args.window + measured * args.repeats)
    warm = prompts_all[:args.window]
    rounds = [prompts_all[args.window + i * measured:args.window + (i + 1) * measured] for i in range(args.repeats)]

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not {"off", "on"} <= set(kinds) or not set(kinds) <= {"off", "log", "on"}:
        raise SystemExit("--kinds: off and on, and optionally log")
    runs: list[dict] = []
    with ExitStack() as stack:
        # Every kind's deployment stays up for the whole benchmark (an idle deployment takes no CPU), so
        # that runs of different kinds follow each other closely: this machine's speed drifts by 10-20%
        # over minutes, which a fresh start per run spread over more time.
        urls = {kind: stack.enter_context(deployed(model_dir, f"bench-monitoring-{kind}", args.threads, args.batch,
                                                   log_requests=kind != "off")) for kind in kinds}
        drift = DriftProcess("bench-monitoring-on", args.window, args.every, shlex.split(args.drift_args),
                             scratch / "drift.log")
        stack.callback(drift.stop)
        before = embedding_checks("bench-monitoring-on")
        for kind, url in urls.items():
            warm_up(url, key, [f"bench-monitoring-{kind}"])
            prefill(url, key, f"bench-monitoring-{kind}", warm)
        waited = time.perf_counter()
        drift.wait_for_check("bench-monitoring-on", before, timeout_s=900)
        print(f"  the drift process recorded its first check after {time.perf_counter() - waited:.1f} s more "
              "(loading the model, calibrating; not measured)", flush=True)
        drift.catch_up("bench-monitoring-on", args.window, 0, timeout_s=300)
        drift.pause()
        for index in range(args.repeats):
            for kind in kinds:
                r = measure(kind, index, args, urls[kind], key, rounds[index], drift)
                print_run(r)
                runs.append(r)
        output = drift.output()
        drift_command = drift.command

    summary = {}
    for kind in kinds:
        mine = [r for r in runs if r["kind"] == kind]
        latencies = [x for r in mine for x in r["latencies"]]
        ttfts = [x for r in mine for x in r["ttfts"]]
        summary[kind] = {"tokens_per_s": [r["tokens_per_s"] for r in mine],
                         "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in mine),
                         "latency_p50_s": percentile(latencies, 50), "latency_p99_s": percentile(latencies, 99),
                         "ttft_p50_s": percentile(ttfts, 50), "ttft_p99_s": percentile(ttfts, 99),
                         "requests": len(latencies), "errors": sum(r["errors"] for r in mine)}
    on_runs = [r for r in runs if r["kind"] == "on"]
    summary["on"]["drift_checks"] = sum(r["drift_checks"] for r in on_runs)
    summary["on"]["drift_cpu_s"] = sum(r["drift_cpu_s"] for r in on_runs)
    summary["on"]["drift_checks_after"] = sum(r["drift_checks_after"] for r in on_runs)
    ratio = summary["on"]["median_tokens_per_s"] / summary["off"]["median_tokens_per_s"]
    # Each round's on/off: the machine's speed drifts between rounds, less within one.
    pairs = [on["tokens_per_s"] / off["tokens_per_s"] for on, off in
             zip([r for r in runs if r["kind"] == "on"], [r for r in runs if r["kind"] == "off"])]
    results["round_ratios"] = pairs
    for r in runs:
        r.pop("latencies"), r.pop("ttfts")
    results.update(runs=runs, summary=summary, ratio=ratio, load_average_at_end=os.getloadavg())

    # What the drift command printed: one verdict line per check, and the table rows of its alarms.
    verdicts = [line.strip() for line in output.splitlines() if " in " in line and "requests (" in line]
    alarms = sorted({" ".join(line.replace("│", " ").replace("|", " ").split())
                     for line in output.splitlines() if "ALARM" in line})
    results["drift"] = {"command": drift_command, "reports_printed": len(verdicts), "alarm_rows": alarms,
                        "checks_recorded": embedding_checks("bench-monitoring-on")}
    print(f"drift: `{drift_command}` printed {len(verdicts)} reports ({results['drift']['checks_recorded']} checks "
          "recorded in all, the first one before the measured runs included); the last:")
    print(f"  {verdicts[-1] if verdicts else '(none)'}")
    for row in alarms[-4:]:
        print(f"  alarm: {row}")
    print(f"load average at end: {os.getloadavg()}")
    print("summary (median tokens/s over runs; latencies over every request of that kind):")
    labels = {"off": "monitoring off", "log": "logging only  ", "on": "monitoring on "}
    for kind in kinds:
        s, label = summary[kind], labels[kind]
        per_run = ", ".join(f"{x:.1f}" for x in s["tokens_per_s"])
        print(f"  {label}: {s['median_tokens_per_s']:.1f} tokens/s (runs: {per_run}); latency p50 "
              f"{s['latency_p50_s']:.2f} s, p99 {s['latency_p99_s']:.2f} s; time to first token p50 "
              f"{s['ttft_p50_s']:.3f} s, p99 {s['ttft_p99_s']:.3f} s; {s['requests']} requests, {s['errors']} errors")
    print(f"  drift checks with embeddings during the 'on' runs: {summary['on']['drift_checks']} (drift processes' "
          f"CPU during them {summary['on']['drift_cpu_s']:.1f} s in all); checks right after them: "
          f"{summary['on']['drift_checks_after']}")
    if "log" in summary:
        results["ratio_log"] = summary["log"]["median_tokens_per_s"] / summary["off"]["median_tokens_per_s"]
        print(f"  logging only / off: {results['ratio_log']:.2f}x (no goal: what logging and quality signals cost)")
    print(f"  on / off in each round: {', '.join(f'{x:.2f}' for x in pairs)} (median {statistics.median(pairs):.2f})")
    print("  " + goal("monitoring on / off", ratio, GOAL))
    if summary["on"]["drift_checks"] == 0:
        print("  note: no drift check completed while the measured load ran (they waited for idle cores); "
              "the checks right after it are counted above")
    return results


if __name__ == "__main__":
    sys.exit(main())
