"""Benchmark: how fast oikyo's drift detectors see planted drift, and how often they cry wolf.

    python bench/bench_drift.py                          # 100 seeded runs of each scenario (~30 min, 2 cores)
    python bench/bench_drift.py --runs 10 --no-evidently # a quick look
    python bench/bench_drift.py --live http://127.0.0.1:8000/v1 --key KEY --deployment NAME --requests 400

A traffic simulator. Each run (one seed) streams requests: stable traffic drawn from the
reference's population, then, after a change point, planted drift. Two scenarios (the issue's):

- ``topic``: the support-ticket sample shipped with oikyo (src/oikyo/data/samples/, the quickstart's
  task). One of its five categories (billing, technical, account, shipping, refund; a different one
  each run) is held out: the reference and the stable traffic are the other four; after the change,
  30% of requests are tickets of the held-out category, a topic the model was never trained on.
- ``length``: Alpaca instructions with their answers (LLaMA-Factory's alpaca_en_demo.json, in
  ../shared/datasets; ``--length-dataset``). After the change, every answer is 1.5x longer in
  tokens (the answer, then the first tokens of another answer), inputs unchanged.

The rows of a scenario stand for the population of requests. Each run takes a random half of them
as the reference (the deployed model's training data, what a deployment's drift check loads through
lineage; the detectors split it again into a comparison half and a calibration half), and stable
traffic is drawn from the whole population with replacement, as the issue asks ("stable traffic
drawn from the reference"): so most live requests are rows the reference never saw, as in
production. The change point is 2,000 requests plus a random offset (so it
does not line up with the checks); 1,000 requests follow it.

oikyo checks the stream as ``oikyo deployments drift NAME --every`` does: a window of the newest
``--window`` requests every ``--stride`` requests, with :class:`oikyo.monitor.drift.Checker` (the
same class, detectors and calibration; embeddings on the bundled model's hidden states), its
thresholds calibrated to one false alarm per ``--false-alarm-every`` requests. Figures:

- detection delay: requests from the change point to the first check that raises an alarm (no
  alarm within the 1,000 requests after the change counts as a miss; the median is over all runs,
  misses as infinite);
- false alarms: alarms at checks whose window holds only stable traffic, per 10,000 stable
  requests checked (checks x stride).

Peer: Evidently's text drift check (a TF-IDF domain classifier; drift at ROC AUC > 0.55, the
issue's figure; ``--evidently-percentile`` adds its percentile variant, its default for references
under 1,000 rows, at about 2 s a window), on the same windows against the same reference rows, inputs for the
topic scenario and answers for the length scenario. It runs in its own virtual environment
(Evidently needs pandas < 3; ``--evidently-python``, created on first use with pip) through
bench/evidently_worker.py.

How the traffic is fed: the 100 runs replay the simulated requests straight into the detectors
(about 600,000 requests: far more than the bundled model can answer on a laptop CPU in a bench's
time). ``--live URL`` instead sends one run's requests, bounded by ``--requests`` and
``--max-seconds``, to a running deployment's OpenAI-compatible API (127.0.0.1 only; it refuses any
other host; the deployment must log requests), then runs the deployment's own drift check
(:func:`oikyo.monitor.drift.check`) on what the router logged, and prints the findings: the whole
path, with the model's real answers. Live, the reference is the deployment's own (its training data
holds every ticket category), so the planted topic is general-assistant requests (oikyo's replay
prompts) instead of a held-out category: support tickets, then 30% of the second half of the
requests (at most ``--after``) switch, and the check's window is that second half (at most
``--window``).

Goals (issue 18): median detection delay <= 300 requests, at most 1 false alarm per 10,000 stable
requests. Embeddings take about 0.1 s per distinct input on one thread; each distinct text is
embedded once per bench (the simulator draws from a finite pool of rows).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
TICKETS = ROOT / "src" / "oikyo" / "data" / "samples" / "support_tickets.jsonl"
ALPACA = ROOT.parent / "shared" / "datasets" / "alpaca_en_demo.json"
GENERAL = ROOT / "src" / "oikyo" / "data" / "replay" / "general.jsonl"
EVIDENTLY_VENV = ROOT / "bench" / "out" / "evidently-venv"
SCENARIOS = ("topic", "length")
TOPIC_SHARE = 0.3
LENGTH_FACTOR = 1.5
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


# ----------------------------------------------------------------------------- data


def ticket_items() -> list:
    """The support tickets as drift items, each labelled with its category (from its JSON answer)."""
    from oikyo.monitor import descriptors as d

    items = []
    for line in TICKETS.read_text().splitlines():
        item = d.item_from_row(json.loads(line))
        item.label = json.loads(item.output)["category"]
        items.append(item)
    return items


def alpaca_items(path: Path) -> list:
    """Instruction (+ input) -> answer items from an Alpaca JSON file, or oikyo's replay set when it is absent."""
    from oikyo.monitor import descriptors as d

    if not path.is_file():
        print(f"  {path} not found: the length scenario uses {GENERAL.name} (216 rows) instead", flush=True)
        rows = [json.loads(line) for line in GENERAL.read_text().splitlines()[1:]]
        return [it for it in (d.item_from_row(r) for r in rows) if it is not None and it.output]
    items = []
    for row in json.loads(path.read_text()):
        prompt = row["instruction"] + (("\n" + row["input"]) if row.get("input") else "")
        if prompt.strip() and row.get("output", "").strip():
            items.append(d.Item(input=prompt, output=row["output"]))
    return items


def lengthen(answer: str, other: str, tokenizer, factor: float) -> str:
    """``answer`` followed by the first tokens of ``other``, ``factor`` times as many tokens in all."""
    have = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    extra = max(1, math.ceil(have * (factor - 1)))
    ids = tokenizer(other, add_special_tokens=False)["input_ids"]
    while len(ids) < extra:  # a short other answer is repeated
        ids = ids + ids
    return answer + " " + tokenizer.decode(ids[:extra]).strip()


# ----------------------------------------------------------------------------- one run


@dataclass
class Stream:
    """One run's requests in order, and where the change is."""

    items: list
    change: int  # index of the first drifted request
    reference: list  # the reference rows (the Checker's input)


def make_stream(scenario: str, pool_items: list, seed: int, stable: int, after: int, stride: int,
                tokenizer) -> Stream:
    from oikyo.monitor import descriptors as d

    rng = np.random.default_rng(seed)
    held = []
    rows = list(pool_items)
    if scenario == "topic":
        categories = sorted({it.label for it in rows})
        gone = categories[seed % len(categories)]
        held = [it for it in rows if it.label == gone]
        rows = [it for it in rows if it.label != gone]
    # The rows stand for the population; the deployed model was trained on a random half of them
    # (the reference), and traffic is drawn from the whole population.
    reference = [rows[i] for i in rng.permutation(len(rows))[:len(rows) // 2]]
    pool = rows
    change = stable + int(rng.integers(0, stride))
    out = [pool[i] for i in rng.integers(0, len(pool), change)]
    for _ in range(after):
        if scenario == "topic":
            source = held if rng.random() < TOPIC_SHARE else pool
            out.append(source[int(rng.integers(0, len(source)))])
        else:
            base, other = pool[int(rng.integers(0, len(pool)))], pool[int(rng.integers(0, len(pool)))]
            out.append(d.Item(input=base.input, output=lengthen(base.output, other.output, tokenizer, LENGTH_FACTOR)))
    # Items are shared between requests; quality signals are set once per distinct answer below.
    return Stream(items=out, change=change, reference=[d.Item(input=it.input, output=it.output) for it in reference])


@dataclass
class Outcome:
    detector_delay: int | None = None  # requests from the change to the first alarm after it
    detectors_first: list = field(default_factory=list)  # which detectors alarmed at that check
    false_alarms: int = 0
    stable_checks: int = 0
    evidently: dict = field(default_factory=dict)  # variant -> {"delay": .., "false_alarms": ..}
    alarm_counts: dict = field(default_factory=dict)  # detector -> false alarms


def checks(length: int, window: int, stride: int) -> list[int]:
    """Request counts at which a check runs: every ``stride`` once ``window`` requests came in."""
    return list(range(window, length + 1, stride))


def run_one(scenario: str, stream: Stream, seed: int, args, embedder, quality_cache: dict,
            evidently) -> Outcome:
    from oikyo.monitor import quality
    from oikyo.monitor.drift import Checker, DriftSettings, Reference, quality_function

    settings = DriftSettings(window=args.window, stride=args.stride, false_alarm_every=args.false_alarm_every,
                             reference_rows=max(40, len(stream.reference)), seed=seed)
    reference = Reference(name=f"{scenario}-{seed}", version_id="bench", items=stream.reference)
    checker = Checker(reference, settings, embedder=embedder, quality=quality_function())
    schema = quality.schema_from_answers([it.output for it in stream.reference])
    schema_key = repr(schema)
    for it in stream.items:
        key = (schema_key, it.output)
        if key not in quality_cache:
            quality_cache[key] = quality.check(it.output, schema=schema)
    outcome = Outcome()
    compared = checker.reference.items[:len(checker.reference.items) // 2]  # the half windows are compared with
    side = "input" if scenario == "topic" else "output"
    if evidently is not None:
        evidently.reference([getattr(it, side) for it in compared])
    variants = ("abs", "perc") if evidently is not None and evidently.percentile else ("abs",)
    ev_delay = {v: None for v in variants}
    ev_false = {v: 0 for v in variants}
    for t in checks(len(stream.items), args.window, args.stride):
        window_items = stream.items[t - args.window:t]
        live = [type(it)(input=it.input, output=it.output, quality=quality_cache[(schema_key, it.output)])
                for it in window_items]
        stable_window = t <= stream.change
        if stable_window or outcome.detector_delay is None:
            findings = checker.check(live)
            alarms = [f.detector for f in findings if f.alarm]
            if stable_window:
                outcome.stable_checks += 1
                if alarms:
                    outcome.false_alarms += 1
                    for name in alarms:
                        outcome.alarm_counts[name] = outcome.alarm_counts.get(name, 0) + 1
            elif alarms:
                outcome.detector_delay = t - stream.change
                outcome.detectors_first = alarms
        if evidently is not None and (stable_window or any(ev_delay[v] is None for v in variants)):
            verdict = evidently.check([getattr(it, side) for it in window_items])
            for v in variants:
                if verdict.get(f"drift_{v}"):
                    if stable_window:
                        ev_false[v] += 1
                    elif ev_delay[v] is None:
                        ev_delay[v] = t - stream.change
    outcome.evidently = {v: {"delay": ev_delay[v], "false_alarms": ev_false[v]} for v in variants}
    return outcome


# ----------------------------------------------------------------------------- Evidently


class Evidently:
    """bench/evidently_worker.py in Evidently's own virtual environment."""

    def _ask(self, message: dict) -> dict:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the Evidently worker stopped; see its error above")
        return json.loads(line)

    def reference(self, texts: list[str]) -> None:
        self._ask({"reference": texts})

    def __init__(self, python: str, percentile: bool = False):
        self.percentile = percentile
        self.errors = 0
        self.process = subprocess.Popen([python, str(ROOT / "bench" / "evidently_worker.py")], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1)

    def check(self, texts: list[str]) -> dict:
        reply = self._ask({"current": texts, "percentile": self.percentile})
        if "error" in reply:  # counted and reported; the window counts as no drift
            self.errors += 1
            return {"drift_abs": False, "drift_perc": False}
        return reply

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def evidently_python(path: str | None) -> str:
    """An interpreter with Evidently: ``path``, or a virtual environment made under bench/out on first use."""
    if path:
        return path
    python = EVIDENTLY_VENV / "bin" / "python"
    if not python.exists():
        print(f"  creating {EVIDENTLY_VENV} with Evidently (pip, once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "evidently", "pandas<3"], check=True)
    version = subprocess.run([str(python), "-c", "import evidently; print(evidently.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    print(f"  Evidently {version} ({python})", flush=True)
    return str(python)


# ----------------------------------------------------------------------------- figures


def median_delay(delays: list[int | None]) -> float:
    """The median over all runs, a miss counting as infinite."""
    return float(statistics.median([math.inf if x is None else x for x in delays]))


def summarize(name: str, delays: list, false_alarms: int, stable_requests: int, goal_delay: int,
              goal_rate: float) -> dict:
    detected = [x for x in delays if x is not None]
    rate = 10000 * false_alarms / max(1, stable_requests)
    med = median_delay(delays)
    q = np.percentile(detected, [25, 75]).tolist() if detected else [math.nan, math.nan]
    verdict = ("MET" if med <= goal_delay and rate <= goal_rate else "NOT MET")
    print(f"  {name}: median delay {med:.0f} requests (quartiles of detected {q[0]:.0f}-{q[1]:.0f}; "
          f"{len(detected)}/{len(delays)} runs detected within the drift phase); {false_alarms} false alarms in "
          f"{stable_requests} stable requests = {rate:.2f} per 10,000 -> {verdict}", flush=True)
    return {"median_delay": med, "detected": len(detected), "runs": len(delays), "delay_quartiles": q,
            "false_alarms": false_alarms, "stable_requests": stable_requests, "false_alarms_per_10k": rate,
            "goal_met": verdict == "MET"}


def machine() -> dict:
    import torch

    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return {"cpu": names[0] if names else platform.processor(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "load_average": os.getloadavg()}


def simulate(args) -> dict:
    from oikyo.models.bundled import ensure_bundled_model
    from oikyo.monitor.embeddings import Embedder

    model_dir = Path(args.model_dir) if args.model_dir else ensure_bundled_model(log=print)
    embedder = Embedder(model_dir)
    print(f"machine: {machine()}", flush=True)
    print(f"settings: window {args.window}, stride {args.stride}, one false alarm per {args.false_alarm_every:.0f} "
          f"requests; {args.runs} runs per scenario, change after {args.stable}+U(0,{args.stride}) stable "
          f"requests, {args.after} drifted requests", flush=True)
    evidently = None if args.no_evidently else Evidently(evidently_python(args.evidently_python),
                                                         percentile=args.evidently_percentile)
    sources = {"topic": ticket_items, "length": lambda: alpaca_items(Path(args.length_dataset))}
    results = {"machine": machine(), "settings": vars(args).copy(), "scenarios": {}}
    try:
        for scenario in args.scenarios:
            items = sources[scenario]()
            started = time.perf_counter()
            quality_cache: dict = {}
            outcomes = []
            if evidently is not None:
                evidently.errors = 0
            print(f"\n{scenario}: {len(items)} rows", flush=True)
            for run in range(args.runs):
                seed = args.seed + run
                stream = make_stream(scenario, items, seed, args.stable, args.after, args.stride, embedder.tokenizer)
                outcome = run_one(scenario, stream, seed, args, embedder, quality_cache, evidently)
                outcomes.append((stream, outcome))
                ev = outcome.evidently.get("abs", {})
                print(f"  run {run + 1:3d}/{args.runs} seed {seed}: oikyo delay {outcome.detector_delay} "
                      f"({','.join(outcome.detectors_first) or '-'}), {outcome.false_alarms} false alarms in "
                      f"{outcome.stable_checks} checks"
                      + (f"; Evidently delay {ev.get('delay')}, {ev.get('false_alarms')} false alarms"
                         if evidently else "")
                      + f"  [{time.perf_counter() - started:.0f} s]", flush=True)
            stable_requests = sum(o.stable_checks for _, o in outcomes) * args.stride
            print(f"\n{scenario} ({args.runs} runs, {time.perf_counter() - started:.0f} s):", flush=True)
            block = {"oikyo": summarize("oikyo", [o.detector_delay for _, o in outcomes],
                                        sum(o.false_alarms for _, o in outcomes), stable_requests, 300, 1.0)}
            firsts: dict = {}
            for _, o in outcomes:
                for name in o.detectors_first:
                    firsts[name] = firsts.get(name, 0) + 1
            false_by: dict = {}
            for _, o in outcomes:
                for name, n in o.alarm_counts.items():
                    false_by[name] = false_by.get(name, 0) + n
            block["oikyo"]["first_alarm_detectors"] = firsts
            block["oikyo"]["false_alarms_by_detector"] = false_by
            print(f"    detectors at the first alarm after the change: {firsts}; false alarms by detector: "
                  f"{false_by or 'none'}", flush=True)
            if evidently is not None:
                print(f"    Evidently errors (windows counted as no drift): {evidently.errors}", flush=True)
                for variant, label in (("abs", "Evidently, ROC AUC > 0.55"),
                                       ("perc", "Evidently, AUC > random classifiers' 95th percentile")):
                    if variant not in outcomes[0][1].evidently:
                        continue
                    block[f"evidently_{variant}"] = summarize(
                        label, [o.evidently[variant]["delay"] for _, o in outcomes],
                        sum(o.evidently[variant]["false_alarms"] for _, o in outcomes), stable_requests, 300, 1.0)
            results["scenarios"][scenario] = block
    finally:
        if evidently is not None:
            evidently.close()
    return results


# ----------------------------------------------------------------------------- live mode


def require_local(url: str) -> None:
    host = urlparse(url).hostname
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"--live sends traffic only to this machine (127.0.0.1); {url!r} names {host!r}")


def live_stream(requests: int, after: int, seed: int) -> Stream:
    """Support tickets (every category), then 30% general-assistant requests (oikyo's replay prompts).

    Live, the reference is the deployment's own (its model's training data, or ``--reference``),
    which holds every ticket category: the planted topic is one outside the tickets altogether."""
    from oikyo.monitor import descriptors as d

    rng = np.random.default_rng(seed)
    tickets = ticket_items()
    general = [it for it in (d.item_from_row(json.loads(line)) for line in GENERAL.read_text().splitlines()[1:])
               if it is not None]
    change = max(0, requests - after)
    out = [tickets[int(i)] for i in rng.integers(0, len(tickets), change)]
    for _ in range(requests - change):
        source = general if rng.random() < TOPIC_SHARE else tickets
        out.append(source[int(rng.integers(0, len(source)))])
    return Stream(items=out, change=change, reference=[])


def live(args) -> dict:
    """One run's requests sent to a local deployment, then its own drift check on what it logged."""
    from openai import OpenAI

    from oikyo.monitor import drift

    require_local(args.live)
    stream = live_stream(args.requests, min(args.after, args.requests // 2), args.seed)
    system = json.loads(TICKETS.read_text().splitlines()[0])["messages"][0]["content"]
    client = OpenAI(base_url=args.live, api_key=args.key or "none", max_retries=0, timeout=120)
    started, sent, failed = time.perf_counter(), 0, 0
    for it in stream.items:
        if time.perf_counter() - started > args.max_seconds:
            print(f"  stopped after {args.max_seconds:.0f} s (--max-seconds)", flush=True)
            break
        try:
            client.chat.completions.create(model=args.model, max_tokens=40, temperature=0,
                                           messages=[{"role": "system", "content": system},
                                                     {"role": "user", "content": it.input}])
        except Exception as error:  # noqa: BLE001 - counted and reported
            failed += 1
            print(f"  request failed: {error.__class__.__name__}: {error}", flush=True)
        sent += 1
        if sent % 50 == 0:
            print(f"  {sent} requests sent ({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"{sent} requests sent, {failed} failed; change point at request {stream.change}", flush=True)
    # The newest window holds only requests after the change.
    window = max(10, min(args.window, sent - stream.change))
    settings = drift.DriftSettings(window=window, false_alarm_every=args.false_alarm_every)
    report = drift.check(args.deployment, settings=settings, reference=args.reference)
    for variant in report.variants:
        print(f"variant {variant.variant}: {variant.skipped or ''}")
        for f in variant.findings:
            print(f"  {f.detector:16s} score {f.score:6.2f} {'ALARM' if f.alarm else 'ok   '} {f.what}")
    return {"sent": sent, "failed": failed, "change": stream.change, "report": report.to_dict()}


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100, help="Seeded runs per scenario.")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--seed", type=int, default=0, help="Seed of the first run (run i uses seed + i).")
    parser.add_argument("--stable", type=int, default=2000, help="Stable requests before the change (plus U(0, stride)).")
    parser.add_argument("--after", type=int, default=1000, help="Drifted requests after the change.")
    parser.add_argument("--window", type=int, default=200, help="Requests per check (as oikyo deployments drift --window).")
    parser.add_argument("--stride", type=int, default=100, help="Requests between two checks.")
    parser.add_argument("--false-alarm-every", type=float, default=10000, help="Stated requests between false alarms.")
    parser.add_argument("--length-dataset", default=str(ALPACA), help="Alpaca JSON file for the length scenario.")
    parser.add_argument("--model-dir", default=None, help="Model whose hidden states embed inputs (default: bundled).")
    parser.add_argument("--no-evidently", action="store_true", help="Skip the Evidently peer.")
    parser.add_argument("--evidently-python", default=None, help="Interpreter with Evidently installed.")
    parser.add_argument("--evidently-percentile", action="store_true", help="Also run Evidently's percentile "
                        "variant (AUC against 1,000 random classifiers; about 2 s a window).")
    parser.add_argument("--json", default=None, help="Also write every figure to this JSON file.")
    live_group = parser.add_argument_group("live mode")
    live_group.add_argument("--live", default=None, metavar="URL", help="Send one run to this local deployment's "
                            "OpenAI-compatible API (http://127.0.0.1:PORT/v1) instead of replaying.")
    live_group.add_argument("--key", default=None, help="The deployment's API key.")
    live_group.add_argument("--deployment", default=None, help="The deployment's name (for its drift check).")
    live_group.add_argument("--model", default="default", help="Model name to ask for.")
    live_group.add_argument("--reference", default=None, help="Reference dataset for a base-model deployment.")
    live_group.add_argument("--requests", type=int, default=400, help="At most this many requests.")
    live_group.add_argument("--max-seconds", type=float, default=1800, help="Stop sending after this long.")
    args = parser.parse_args(argv)
    if args.live and not args.deployment:
        parser.error("--live needs --deployment NAME (whose drift check reads what the router logged)")
    if args.window < 10 or args.stride < 1 or args.runs < 1:
        parser.error("--window must be >= 10, --stride and --runs >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.live:
        results = live(args)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-drift-") as home:
            # Reference embeddings are cached per reference sample: a scratch workspace keeps the
            # user's clean. The bundled model is still converted once into the usual workspace.
            from oikyo.models.bundled import ensure_bundled_model

            if not args.model_dir:
                args.model_dir = str(ensure_bundled_model(log=print))
            os.environ["OIKYO_HOME"] = home
            results = simulate(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
