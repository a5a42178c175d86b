"""Benchmark: the continuous-learning loop's canary and its whole cycle, on the bundled model (issue 19).

    python bench/bench_loop.py --scenario setup                    # once: data, adapters A and B (cached)
    python bench/bench_loop.py --scenario regression --trials 20   # worse challenger: rolled back?
    python bench/bench_loop.py --scenario better --trials 20 --share 0.5 --min-requests 30   # promoted?
    python bench/bench_loop.py --scenario e2e --e2e-name loop-e2e4 --e2e-lr 3e-5   # drift -> ... -> promotion

The figures in BENCHMARKS.md came from these commands (about 4, 13 and 7 minutes on the shared 2-core
machine, after a setup of about 6 minutes). An e2e run needs a deployment name of its own (its
traffic and drift alarm stay in the store); with the quickstart's lr 1e-4 the retrain came out
slightly worse on the gate's set and the cycle ended ``gate_failed``, with its reason recorded.

Goals (issue 19), on a CPU with the bundled SmolLM2-135M-Instruct, offline:

- regression: a worse challenger is rolled back in every trial; it answers a median of at most 50
  requests before the rollback; the rollback comes at most 60 s after the canary starts.
- better: a better challenger is promoted in at least 19 of 20 trials.
- e2e: planted drift -> drift alarm -> dataset from traffic and feedback -> retrain -> gate -> canary ->
  promotion, by the controller, in at most 20 minutes, every step recorded (``oikyo loop history``).

Setup (cached in the bench workspace ``bench/out/loop/``, whose ``home/`` is ``OIKYO_HOME``; reused by
later runs): the support-ticket sample is imported and split (seed 0); model version **A** is an
adapter trained with the quickstart's settings (``oikyo.quickstart.TRAIN_OVERRIDES``); model version
**B** is a copy of A with a regression injected: its LoRA B matrices scaled by a factor (the smallest of
``REGRESSION_SCALES`` whose greedy answers are mostly flagged: invalid JSON, schema mismatch,
degenerate or empty), registered with A's dataset in its lineage so the router's quality signals judge
it against the same JSON schema. The script prints both versions' flagged rates (in this process, then
through the deployment).

Trials (regression, better): one deployment of the bundled base with A and B as variants
(``log_requests``), started once (or found running) and reused by every trial. Per trial a loop cycle
is written straight into state ``canary_prepare`` (champion and challenger given), the controller
(:class:`oikyo.loop.controller.Controller`, ``canary_poll_s`` 1) ticks in a thread, and ``--clients``
threads send support tickets of the test split to the deployment's name (greedy, ``--max-tokens``)
until the cycle ends. Recorded per trial: the outcome, the challenger's answered requests between the
canary's start and the verdict's record time (ServedRequest rows of its variant), the seconds from the
canary's start to the verdict, and both arms' flagged rates in that window. The clients here are a
small loop of their own rather than ``bench_serve.serve_clients``: that one sends ``ignore_eos``
(every answer exactly ``--tokens`` long), which would turn every JSON answer into invalid JSON, and
it sends a fixed number of requests where the trials need load until the cycle ends.

e2e: a second deployment (A alone, ``log_requests``) and a policy with ``triggers: {drift: true}``,
a short training config (A continued, replay 0.3), a gate on the validation split (limit 40,
not_worse with a margin) and a canary (share 0.3). Stable traffic (test-split tickets), then drifted
traffic (tickets of another seed in a new style: forwarded e-mails with a long footer), a drift
check (``oikyo.monitor.drift.check``, as ``oikyo deployments drift``) that records the alarm,
feedback through ``POST /v1/feedback`` (positive ratings for right answers, corrections with the
reference answer for the rest), then ``Controller().run`` from the alarm to the verdict, with load
sent while the canary runs. Every step is timed; ``oikyo loop history`` is printed at the end.

Results go to ``bench/out/loop/<scenario>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench_serve import machine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORK = Path(__file__).resolve().parent / "out" / "loop"
STATE = WORK / "setup.json"
DEPLOYMENT = "loop-bench"
E2E_DEPLOYMENT = "loop-e2e"
REGRESSION_SCALES = (4.0, 8.0, 16.0, 32.0, 64.0)
BAD_ENOUGH = 0.8  # B must have at least this share of flagged answers
FOOTER = ("\n\n-- \nSent from my phone. This e-mail and any attachments are confidential and intended solely for "
          "the addressee. If you received it in error, please notify the sender and delete it. Ticket forwarded "
          "automatically by the legacy mail gateway (ref. {ref}).")


def say(message: str) -> None:
    print(message, flush=True)


def use_workspace() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    os.environ["OIKYO_HOME"] = str(WORK / "home")
    os.environ.pop("OIKYO_DATABASE_URL", None)


def load_state() -> dict:
    return json.loads(STATE.read_text()) if STATE.exists() else {}


def save_state(state: dict) -> None:
    STATE.write_text(json.dumps(state, indent=1))


# ----------------------------------------------------------------------------- setup


def tickets(dataset_id: str, split: str) -> list[dict]:
    """Rows of a split: {"messages": the conversation without its answer, "answer": the reference}."""
    from oikyo.data import versions

    out = []
    for row in versions.iter_rows(versions.resolve(dataset_id), split=split):
        messages = row["messages"]
        out.append({"messages": messages[:-1], "answer": messages[-1]["content"]})
    return out


def flagged(texts: list[str], schema, truncated: list[bool] | None = None) -> list[list[str]]:
    from oikyo.monitor import quality

    truncated = truncated or [False] * len(texts)
    return [quality.flags(quality.check(t, schema=schema, truncated=cut)) for t, cut in zip(texts, truncated)]


def generate_local(model_dir: Path, adapter: Path, prompts: list[list[dict]], max_tokens: int) -> list[str]:
    """Greedy answers of base + adapter in this process (peft), batched and left-padded."""
    import torch
    from peft import PeftModel

    from oikyo.models.chat_template import encode_prompt
    from oikyo.models.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = PeftModel.from_pretrained(load_model(model_dir), str(adapter)).eval()
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    width = max(len(i) for i in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, width - len(seq):] = torch.tensor(seq)
        mask[row, width - len(seq):] = 1
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=pad)
    return [tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]


def inject_regression(source: Path, target: Path, scale: float) -> None:
    """A copy of adapter ``source`` at ``target`` whose LoRA B matrices are multiplied by ``scale``."""
    from safetensors.torch import load_file, save_file

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    weights_file = target / "adapter_model.safetensors"
    tensors = load_file(str(weights_file))
    changed = 0
    for key, tensor in tensors.items():
        if "lora_B" in key:
            tensors[key] = (tensor * scale).contiguous()
            changed += 1
    if not changed:
        raise RuntimeError(f"no lora_B tensors in {weights_file}")
    save_file(tensors, str(weights_file), metadata={"format": "pt"})
    (target / "injected_regression.json").write_text(json.dumps({"source": str(source), "lora_B_scale": scale}))


def setup(args) -> dict:
    """Dataset, split, adapter A (trained) and B (A with an injected regression); cached in setup.json."""
    from oikyo.data import sample, versions
    from oikyo.data.split import split_dataset
    from oikyo.models.bundled import ensure_bundled_model
    from oikyo.models.catalog import BUNDLED_NAME, token_counter

    state = load_state()
    model_dir = ensure_bundled_model(log=say)
    state["model_dir"] = str(model_dir)
    if "split" not in state:
        counter = token_counter(BUNDLED_NAME, log=say)
        outcome = versions.import_dataset(sample.sample_path(), name="support-tickets", length_fn=counter,
                                          max_tokens=counter.context_length, min_rows=50)
        split, _ = split_dataset(outcome.version.id, validation=0.1, test=0.1, seed=0)
        state.update(dataset=outcome.version.id, split=split.id, splits=split.splits)
        save_state(state)
        say(f"setup: dataset {outcome.version.id}, split {split.id} {split.splits}")
    if "A" not in state:
        state["A"], state["train_s"] = train_a(state["split"])
        save_state(state)
    if "B" not in state:
        state.update(make_b(state, args))
        save_state(state)
    say(f"setup: A {state['A']} (trained in {state['train_s']:.0f} s), B {state['B']} "
        f"(A's lora_B x {state['B_scale']:g}); local flagged rates A {state['A_bad_local']:.0%}, "
        f"B {state['B_bad_local']:.0%}")
    return state


def train_a(split_id: str) -> tuple[str, float]:
    from oikyo.jobs import autostart, model_versions, runs, training
    from oikyo.models.catalog import BUNDLED_NAME
    from oikyo.quickstart import TRAIN_OVERRIDES

    started = time.perf_counter()
    run = training.submit_training(None, TRAIN_OVERRIDES, dataset=split_id, model=BUNDLED_NAME, name="bench-loop A")
    autostart.ensure_worker()
    say(f"setup: training A (run {run.id}, {' '.join(TRAIN_OVERRIDES)})")
    last = 0.0
    while (run := runs.resolve(run.id)).state in ("queued", "running"):
        if time.monotonic() - last > 20:
            last = time.monotonic()
            progress = runs.progress(run.id)
            say(f"  {run.state}: step {progress.step}/{progress.total_steps or '?'}")
        time.sleep(2)
    if run.state != "succeeded":
        raise RuntimeError(f"training A ended {run.state}: {run.error}")
    [version] = model_versions.list_versions(run_id=run.id)[:1]
    return version.id, time.perf_counter() - started


def make_b(state: dict, args) -> dict:
    """Scale A's LoRA B matrices until most greedy answers are flagged; register the copy as B."""
    import secrets

    from oikyo.jobs import model_versions
    from oikyo.monitor.quality import expected_schema
    from oikyo.store import db
    from oikyo.store.models import ModelVersion, utcnow

    a = model_versions.get(state["A"])
    schema = expected_schema(a.id)
    rows = tickets(state["split"], "validation")[:16]
    prompts = [r["messages"] for r in rows]
    model_dir = Path(state["model_dir"])
    a_bad = flagged(generate_local(model_dir, Path(a.path), prompts, args.max_tokens), schema)
    a_rate = sum(bool(f) for f in a_bad) / len(a_bad)
    say(f"setup: A answers flagged locally: {a_rate:.0%} ({len(a_bad)} validation tickets)")
    target = WORK / "adapters" / "B"
    for scale in REGRESSION_SCALES:
        inject_regression(Path(a.path), target, scale)
        texts = generate_local(model_dir, target, prompts, args.max_tokens)
        b_bad = flagged(texts, schema)
        rate = sum(bool(f) for f in b_bad) / len(b_bad)
        say(f"setup: B = A's lora_B x {scale:g}: flagged {rate:.0%}; e.g. {texts[0][:80]!r}")
        if rate >= BAD_ENOUGH:
            break
    else:
        raise RuntimeError("no scale made B bad enough")
    version_id = f"mv-{secrets.token_hex(4)}"
    lineage = {**(a.lineage or {}), "injected_regression": {"from": a.id, "lora_B_scale": scale}}
    lineage.pop("run_id", None)
    with db.session() as s:
        s.add(ModelVersion(id=version_id, run_id=None, base_model=a.base_model, kind=a.kind,
                           path=str(target.resolve()), lineage=lineage, created_at=utcnow()))
    return {"B": version_id, "B_scale": scale, "A_bad_local": a_rate, "B_bad_local": rate}


# ----------------------------------------------------------------------------- deployment and load


def api_key(state: dict) -> str:
    from oikyo.serve.gateway import keys

    if "key" not in state:
        _, state["key"] = keys.create("bench-loop")
        save_state(state)
    return state["key"]


def ensure_deployed(name: str, split: str, threads: int, batch: int) -> str:
    """The deployment's URL, starting it (with ``split``) unless it runs already."""
    from oikyo.serve.gateway import deployments

    try:
        record = deployments.get(name)
    except Exception:  # noqa: BLE001 - no such deployment yet
        record = None
    if record is not None and deployments.status(record) == "running":
        say(f"deployment {name} already running at {deployments.url(record)}")
        return deployments.url(record)
    started = time.perf_counter()
    info = deployments.deploy(None if record is not None else split.split("=")[0], name=name, split=split,
                              port=deployments._free_port(), replicas=1, log_requests=True, wait_s=900,
                              settings={"threads": threads, "max_batch_size": batch})
    say(f"deployed {name} ({split}) in {time.perf_counter() - started:.1f} s at {info['url']}")
    return info["url"]


class Load:
    """``clients`` threads sending chat requests (cycling through ``rows``) to ``model`` until stopped.

    Each answer is kept (response id, text, the row's reference answer) for feedback."""

    def __init__(self, url: str, key: str, model: str, rows: list[dict], clients: int, max_tokens: int, seed: int):
        from openai import OpenAI

        self.client = OpenAI(base_url=url, api_key=key, max_retries=0, timeout=300)
        self.model, self.rows, self.clients, self.max_tokens = model, rows, clients, max_tokens
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[dict] = []
        self.errors: list[str] = []
        self.next = self.rng.randrange(len(rows))
        self.threads: list[threading.Thread] = []

    def _take(self) -> dict:
        with self.lock:
            row = self.rows[self.next % len(self.rows)]
            self.next += 1
            return row

    def _client(self) -> None:
        while not self.stop.is_set():
            row = self._take()
            try:
                response = self.client.chat.completions.create(model=self.model, messages=row["messages"],
                                                               max_tokens=self.max_tokens, temperature=0)
            except Exception as error:  # noqa: BLE001 - counted and shown, not hidden
                with self.lock:
                    self.errors.append(f"{error.__class__.__name__}: {error}")
                time.sleep(0.5)
                continue
            with self.lock:
                self.answers.append({"id": response.id, "model": response.model,
                                     "text": response.choices[0].message.content or "", "row": row})

    def start(self) -> "Load":
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for t in self.threads:
            t.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def run_for(self, count: int) -> None:
        """Send until ``count`` answers have come back, then stop."""
        self.start()
        while len(self.answers) < count and not (self.errors and len(self.errors) > 20):
            time.sleep(0.2)
        self.finish()


def check_through_deployment(url: str, key: str, state: dict, rows: list[dict], max_tokens: int) -> dict:
    """Flagged rate of A and B through the deployment (requests naming each model; greedy)."""
    from openai import OpenAI

    from oikyo.monitor.quality import expected_schema

    client = OpenAI(base_url=url, api_key=key, max_retries=0, timeout=300)
    schema = expected_schema(state["A"])
    rates = {}
    for role in ("A", "B"):
        texts, cut = [], []
        for row in rows:
            r = client.chat.completions.create(model=state[role], messages=row["messages"], max_tokens=max_tokens,
                                               temperature=0)
            texts.append(r.choices[0].message.content or "")
            cut.append(r.choices[0].finish_reason == "length")
        bad = flagged(texts, schema, cut)
        rates[role] = sum(bool(f) for f in bad) / len(bad)
        say(f"through the deployment: {role} {state[role]} flagged {rates[role]:.0%} of {len(rows)} test tickets; "
            f"e.g. {texts[0][:70]!r}")
    return rates


# ----------------------------------------------------------------------------- trials


def bench_policy(deployment: str, state: dict, args, **overrides) -> "object":
    from oikyo.loop import policy as loop_policy

    data = {
        "deployment": deployment,
        # A trigger is required; this one never fires during the bench (cycles are opened by hand).
        "triggers": {"schedule": "0 0 1 1 *", "cooldown": "1h"},
        "train": {"config": {}},
        "gate": {"dataset": state["split"], "split": "validation", "limit": 40},
        "canary": {"share": args.share, "min_requests": args.min_requests, "max_duration": args.max_duration},
        "rollback": {"alpha": 0.05},
    }
    for key, value in overrides.items():
        data[key] = value
    return loop_policy.parse(data)


def open_canary_cycle(deployment: str, champion: str, challenger: str, reason: str) -> str:
    from oikyo.loop import records
    from oikyo.store import db
    from oikyo.store.models import LoopCycle, utcnow

    cycle_id = records.new_cycle_id()
    now = utcnow()
    with db.session() as s:
        s.add(LoopCycle(id=cycle_id, deployment=deployment, state="canary_prepare", trigger="bench", reason=reason,
                        champion=champion, challenger=challenger, created_at=now, updated_at=now))
    records.decide(deployment, cycle_id, "triggered", f"bench: {reason}", key="triggered",
                   details={"trigger": "bench", "champion": champion, "challenger": challenger})
    return cycle_id


def window_counts(deployment: str, start, end, schema_models: dict[str, str]) -> dict:
    """Per arm (role -> model): answered requests and flagged ones between ``start`` and ``end``."""
    from sqlalchemy import select

    from oikyo.loop.canary import QUALITY_FLAGS
    from oikyo.store import db
    from oikyo.store.models import ServedRequest

    with db.session() as s:
        rows = list(s.execute(select(ServedRequest.variant, ServedRequest.model, ServedRequest.status,
                                     ServedRequest.quality)
                              .where(ServedRequest.deployment == deployment, ServedRequest.created_at >= start,
                                     ServedRequest.created_at <= end)))
    out = {}
    for role, model in schema_models.items():
        mine = [(status, quality or {}) for variant, m, status, quality in rows if model in (variant, m)]
        bad = sum(status >= 500 or any((q or {}).get(f) for f in QUALITY_FLAGS) for status, q in mine)
        out[role] = {"requests": len(mine), "bad": bad, "bad_rate": bad / len(mine) if mine else None}
    return out


def run_trial(number: int, scenario: str, state: dict, url: str, key: str, rows: list[dict], args) -> dict:
    from oikyo.loop import records
    from oikyo.loop.controller import Controller
    from oikyo.serve.gateway import deployments

    champion, challenger = (state["A"], state["B"]) if scenario == "regression" else (state["B"], state["A"])
    deployments.set_weights(DEPLOYMENT, {champion: 1.0, challenger: 0.0})
    time.sleep(1.5)  # the router applies new weights within about a second
    load = Load(url, key, DEPLOYMENT, rows, args.clients, args.max_tokens, seed=number).start()
    time.sleep(1.0)  # load flowing before the canary starts
    cycle_id = open_canary_cycle(DEPLOYMENT, champion, challenger, f"{scenario} trial {number}")
    stop = threading.Event()
    controller = Controller(owner=f"bench-loop-{os.getpid()}", poll_s=1.0, canary_poll_s=1.0, trigger_every_s=1e9,
                            start_workers=False)
    thread = threading.Thread(target=controller.run, args=(stop,), daemon=True)
    wall = time.perf_counter()
    thread.start()
    limit = 60.0 + records.policy_of(records.get_record(DEPLOYMENT)).canary.max_duration_s
    while records.get_cycle(cycle_id).state in records.OPEN_STATES and time.perf_counter() - wall < limit:
        time.sleep(0.25)
    stop.set()
    thread.join()
    load.finish()
    cycle = records.get_cycle(cycle_id)
    verdict = next((d for d in records.history(DEPLOYMENT, limit=20)
                    if d.cycle_id == cycle_id and d.action in ("promote", "rollback")), None)
    started = records.aware(cycle.canary_started_at)
    result = {"trial": number, "cycle": cycle_id, "outcome": cycle.state, "client_errors": len(load.errors)}
    if verdict is not None and started is not None:
        decided = records.aware(verdict.time)
        counts = window_counts(DEPLOYMENT, started, decided, {"champion": champion, "challenger": challenger})
        result.update(seconds=(decided - started).total_seconds(), reason=verdict.reason,
                      challenger_requests=counts["challenger"]["requests"],
                      challenger_bad_rate=counts["challenger"]["bad_rate"],
                      champion_requests=counts["champion"]["requests"],
                      champion_bad_rate=counts["champion"]["bad_rate"],
                      judged_challenger_requests=(verdict.details or {}).get("challenger_requests"))
    say(f"  trial {number:2d}: {result['outcome']:<12} challenger answers {result.get('challenger_requests', '-'):>4} "
        f"in {result.get('seconds', float('nan')):6.1f} s; champion bad rate "
        f"{fmt_rate(result.get('champion_bad_rate'))}, challenger bad rate {fmt_rate(result.get('challenger_bad_rate'))}"
        f"{'; client errors ' + str(len(load.errors)) if load.errors else ''}")
    return result


def fmt_rate(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def trials(args, state: dict) -> dict:
    from oikyo.loop import records
    from oikyo.serve.gateway import deployments

    key = api_key(state)
    url = ensure_deployed(DEPLOYMENT, f"{state['A']}=100,{state['B']}=0", args.threads, args.batch)
    rows = tickets(state["split"], "test")
    if "deploy_rates" not in state:
        state["deploy_rates"] = check_through_deployment(url, key, state, rows[:12], args.max_tokens)
        save_state(state)
    open_cycle = records.open_cycle(DEPLOYMENT)
    if open_cycle is not None:  # an interrupted earlier run
        records.update_cycle(open_cycle.id, state="cancelled")
    policy = bench_policy(DEPLOYMENT, state, args)
    records.apply(policy)
    say(f"{args.scenario}: {args.trials} trials; canary share {args.share}, min_requests {args.min_requests}, "
        f"max_duration {args.max_duration}; {args.clients} clients, max_tokens {args.max_tokens}; "
        f"load average {os.getloadavg()}")
    results = []
    for number in range(1, args.trials + 1):
        results.append(run_trial(number, args.scenario, state, url, key, rows, args))
    deployments.set_weights(DEPLOYMENT, {state["A"]: 1.0, state["B"]: 0.0})
    return summarize(args, results)


def summarize(args, results: list[dict]) -> dict:
    expected = "rolled_back" if args.scenario == "regression" else "promoted"
    hits = sum(r["outcome"] == expected for r in results)
    decided = [r for r in results if "seconds" in r]
    requests = [r["challenger_requests"] for r in decided]
    seconds = [r["seconds"] for r in decided]
    champion_bad = [r["champion_bad_rate"] for r in decided if r.get("champion_bad_rate") is not None]
    summary = {"scenario": args.scenario, "trials": len(results), "expected": expected, "hits": hits,
               "challenger_requests_median": statistics.median(requests) if requests else None,
               "challenger_requests_max": max(requests) if requests else None,
               "seconds_median": statistics.median(seconds) if seconds else None,
               "seconds_max": max(seconds) if seconds else None,
               "champion_bad_rate_median": statistics.median(champion_bad) if champion_bad else None}
    say("")
    say(f"{'trial':>5} {'outcome':<12} {'chall. req':>10} {'seconds':>8} {'champ. bad':>10} {'chall. bad':>10}")
    for r in results:
        say(f"{r['trial']:>5} {r['outcome']:<12} {r.get('challenger_requests', '-'):>10} "
            f"{r.get('seconds', float('nan')):>8.1f} {fmt_rate(r.get('champion_bad_rate')):>10} "
            f"{fmt_rate(r.get('challenger_bad_rate')):>10}")
    verb = "rolled back" if expected == "rolled_back" else "promoted"
    say(f"summary ({args.scenario}): {verb} {hits}/{len(results)}; challenger requests before the verdict median "
        f"{summary['challenger_requests_median']}, max {summary['challenger_requests_max']}; seconds from canary "
        f"start to the verdict median {fmt_s(summary['seconds_median'])}, max {fmt_s(summary['seconds_max'])}; "
        f"champion bad rate median {fmt_rate(summary['champion_bad_rate_median'])}")
    if args.scenario == "regression":
        goals = {"rolled back every time": hits == len(results),
                 "median challenger requests <= 50": (summary["challenger_requests_median"] or 1e9) <= 50,
                 "rollback <= 60 s after the canary starts": (summary["seconds_max"] or 1e9) <= 60}
    else:
        goals = {f"promoted in >= {0.95 * len(results):g} of {len(results)}": hits >= 0.95 * len(results)}
    for name, met in goals.items():
        say(f"  goal: {name} -> {'MET' if met else 'NOT MET'}")
    return {"summary": summary, "goals": goals, "trials": results}


def fmt_s(value) -> str:
    return "-" if value is None else f"{value:.1f} s"


# ----------------------------------------------------------------------------- e2e


def nested(overrides: list[str], **more) -> dict:
    """``["train.lr=0.0001", ...]`` (YAML values) as the config mapping ``{"train": {"lr": 0.0001}}``."""
    import yaml

    config: dict = {}
    for item in [*overrides, *(f"{k}={v}" for k, v in more.items())]:
        dotted, value = item.split("=", 1)
        group, key = dotted.split(".", 1)
        config.setdefault(group, {})[key] = yaml.safe_load(value)
    return config


def drifted_tickets(n: int, seed: int) -> list[dict]:
    """Support tickets of another seed in a new style: forwarded e-mails with a long footer (known labels)."""
    from oikyo.data.sample import generate_support_tickets

    out = []
    for i, record in enumerate(generate_support_tickets(n, seed=seed)):
        system, user, answer = record["messages"]
        text = f"Fwd: customer ticket #{seed}{i:04d}\n\n{user['content']}" + FOOTER.format(ref=f"LMG-{seed}-{i}")
        out.append({"messages": [system, {"role": "user", "content": text}], "answer": answer["content"]})
    return out


def give_feedback(url: str, key: str, answers: list[dict]) -> dict:
    """POST /v1/feedback: a positive rating for a right answer, the reference as a correction otherwise."""
    import httpx

    counts = {"positive": 0, "corrected": 0, "failed": 0}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        for answer in answers:
            try:
                right = json.loads(answer["text"]) == json.loads(answer["row"]["answer"])
            except ValueError:
                right = False
            body = {"response_id": answer["id"], **({"rating": 1} if right else
                                                   {"correction": answer["row"]["answer"]})}
            response = client.post("feedback", json=body)  # url ends with /v1
            counts["failed" if response.status_code >= 400 else "positive" if right else "corrected"] += 1
            if response.status_code >= 400 and counts["failed"] == 1:
                say(f"  feedback refused: {response.status_code} {response.text[:200]}")
    return counts


def e2e(args, state: dict) -> dict:
    from sqlalchemy import select

    from oikyo.loop import records
    from oikyo.loop.controller import Controller
    from oikyo.monitor import drift
    from oikyo.quickstart import TRAIN_OVERRIDES
    from oikyo.serve.gateway import deployments
    from oikyo.store import db
    from oikyo.store.models import DeploymentEvent

    key = api_key(state)
    name = args.e2e_name
    try:  # the trials' deployment would only compete for the cores
        deployments.stop(DEPLOYMENT)
    except Exception:  # noqa: BLE001 - not deployed
        pass
    marks: dict[str, float] = {}
    t0 = time.perf_counter()

    def mark(name: str) -> None:
        marks[name] = time.perf_counter() - t0
        say(f"[{marks[name]:7.1f} s] {name}")

    url = ensure_deployed(name, f"{state['A']}=100", args.threads, args.batch)
    mark("deployed (A alone, log_requests)")
    train_config = nested([o for o in TRAIN_OVERRIDES if not o.startswith(("train.max_steps", "train.warmup_steps",
                                                                           "train.eval_every",
                                                                           "checkpoint.save_every"))],
                          **{"train.max_steps": args.e2e_steps, "train.warmup_steps": 2,
                             "train.eval_every": args.e2e_steps, "checkpoint.save_every": args.e2e_steps,
                             "data.eval_split": "null", "data.train_split": "null",
                             "data.max_length": 320, "train.lr": args.e2e_lr})  # the drifted e-mails are longer than 160 tokens
    policy = bench_policy(name, state, args,
                          triggers={"drift": True, "cooldown": "1m"},
                          data={"feedback": ["positive", "corrected"], "min_examples": 20},
                          train={"config": train_config, "start": "continue", "replay": 0.3},
                          gate={"dataset": state["split"], "split": "validation", "limit": 40,
                                "metric": "json_field_accuracy", "require": "not_worse", "margin": args.gate_margin,
                                "forgetting_max": None},
                          canary={"share": 0.3, "min_requests": args.e2e_min_requests, "max_duration": "10m"})
    records.apply(policy)
    mark("policy applied (triggers: drift)")
    stop = threading.Event()
    controller = Controller(owner=f"bench-loop-e2e-{os.getpid()}", poll_s=1.0, canary_poll_s=1.0,
                            trigger_every_s=2.0, log=lambda m: say(f"  controller: {m}"))
    thread = threading.Thread(target=controller.run, args=(stop,), daemon=True)
    thread.start()

    settings = drift.DriftSettings(window=args.drift_window, embeddings=False, reference_rows=400)
    stable_rows = tickets(state["split"], "test")
    stable = Load(url, key, name, stable_rows, args.clients, args.max_tokens, seed=100)
    stable.run_for(args.drift_window)
    stable_feedback = give_feedback(url, key, stable.answers)
    mark(f"stable traffic: {len(stable.answers)} test-split tickets answered; feedback {stable_feedback}")
    report = drift.check(name, settings=settings)
    stable_alarm = any(v.alarm for v in report.variants)
    mark(f"drift check on stable traffic: alarm {stable_alarm}")
    drifted_rows = drifted_tickets(args.drift_window * 3, seed=7)
    drifted = Load(url, key, name, drifted_rows[: args.drift_window + 20], args.clients, args.max_tokens,
                   seed=101)
    drifted.run_for(args.drift_window + 8)
    drifted_feedback = give_feedback(url, key, drifted.answers)
    mark(f"drifted traffic: {len(drifted.answers)} forwarded-e-mail tickets answered; feedback {drifted_feedback}")
    report = drift.check(name, settings=settings)
    alarms = [f"{f.detector} ({f.what})" for v in report.variants for f in v.findings if f.alarm]
    mark(f"drift check on drifted traffic: alarm {bool(alarms)}: {'; '.join(alarms)[:300]}")
    if not alarms:
        say("no drift alarm: the controller has nothing to act on")

    cycle = None
    load = None
    limit = t0 + args.e2e_limit
    seen_states: list[str] = []
    while time.perf_counter() < limit:
        cycle = records.last_cycle(name)
        if cycle is not None:
            if not seen_states or seen_states[-1] != cycle.state:
                seen_states.append(cycle.state)
                mark(f"cycle {cycle.id}: {cycle.state}")
            if cycle.state == "canary" and load is None:
                record = deployments.get(name)
                canary_rows = drifted_rows[args.drift_window + 20:] + stable_rows
                load = Load(deployments.url(record), key, name, canary_rows, args.clients, args.max_tokens,
                            seed=102).start()
            if cycle.state not in records.OPEN_STATES:
                break
        time.sleep(1.0)
    if load is not None:
        load.finish()
    stop.set()
    thread.join()
    total = time.perf_counter() - t0
    decisions = list(reversed(records.history(name, limit=50)))
    alarm_time = None
    with db.session() as s:
        event = s.scalar(select(DeploymentEvent).where(DeploymentEvent.deployment == name,
                                                        DeploymentEvent.kind == "drift")
                         .order_by(DeploymentEvent.time))
        if event is not None:
            alarm_time = records.aware(event.time)
    steps = []
    for d in decisions:
        since_alarm = (records.aware(d.time) - alarm_time).total_seconds() if alarm_time else None
        steps.append({"time": records.aware(d.time).isoformat(), "since_alarm_s": since_alarm, "action": d.action,
                      "reason": d.reason})
    say("")
    say("decisions (seconds after the drift alarm):")
    for step in steps:
        at = "-" if step["since_alarm_s"] is None else f"{step['since_alarm_s']:7.1f}"
        say(f"  {at:>7}  {step['action']:<15} {step['reason'][:160]}")
    final = cycle.state if cycle is not None else "no cycle"
    verdict_s = next((s["since_alarm_s"] for s in steps if s["action"] in ("promote", "rollback")), None)
    say(f"e2e: final state {final}; the whole run {total:.0f} s ({total / 60:.1f} min); from the drift alarm to the "
        f"verdict {fmt_s(verdict_s)}; goal <= 20 min from the planted drift to promotion -> "
        f"{'MET' if final == 'promoted' and total <= 1200 else 'NOT MET'}")
    say("")
    say("$ oikyo loop history " + name)
    history = subprocess.run([str(Path(sys.executable).parent / "oikyo"), "loop", "history", name],
                             capture_output=True, text=True, env=os.environ.copy())
    say(history.stdout + history.stderr)
    return {"e2e": {"final": final, "total_s": total, "verdict_after_alarm_s": verdict_s, "marks": marks,
                    "states": seen_states, "decisions": steps, "stable_alarm": stable_alarm, "alarms": alarms,
                    "stable_feedback": stable_feedback, "drifted_feedback": drifted_feedback,
                    "canary_client_errors": len(load.errors) if load else None,
                    "cycle": records.describe_cycle(cycle) if cycle is not None else None}}


# ----------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=("setup", "regression", "better", "e2e"), default="regression")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=32, help="Per answer (the JSON answers take ~20).")
    parser.add_argument("--share", type=float, default=0.2, help="The canary's share (trials).")
    parser.add_argument("--min-requests", type=int, default=50, help="Challenger answers before a promotion (trials).")
    parser.add_argument("--max-duration", default="5m", help="The canary's maximum duration (trials).")
    parser.add_argument("--threads", type=int, default=1, help="The replica's torch threads (1: robust on a shared machine, see bench_serve.py).")
    parser.add_argument("--batch", type=int, default=16, help="The replica's max batch size.")
    parser.add_argument("--stop", action="store_true", help="Stop the bench deployments at the end.")
    parser.add_argument("--e2e-name", default=E2E_DEPLOYMENT, help="e2e: the deployment's name (a fresh one per run).")
    parser.add_argument("--e2e-steps", type=int, default=12, help="e2e: training steps of the retrain.")
    parser.add_argument("--e2e-lr", type=float, default=1e-4, help="e2e: the retrain's learning rate.")
    parser.add_argument("--e2e-min-requests", type=int, default=30, help="e2e: the canary's min_requests.")
    parser.add_argument("--gate-margin", type=float, default=0.1, help="e2e: the gate's not_worse margin.")
    parser.add_argument("--drift-window", type=int, default=40, help="e2e: requests per drift check.")
    parser.add_argument("--e2e-limit", type=float, default=1500, help="e2e: give up after this many seconds.")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    use_workspace()
    state = setup(args)
    info = {"machine": machine(args.threads), "settings": vars(args), "setup": state,
            "load_average_start": os.getloadavg()}
    say("machine: " + json.dumps(info["machine"]))
    if args.scenario in ("regression", "better"):
        info.update(trials(args, state))
    elif args.scenario == "e2e":
        info.update(e2e(args, state))
    info["load_average_end"] = os.getloadavg()
    if args.scenario != "setup":
        (WORK / f"{args.scenario}.json").write_text(json.dumps(info, indent=1, default=str))
        say(f"results: {WORK / f'{args.scenario}.json'}")
    if args.stop:
        from oikyo.serve.gateway import deployments

        for name in (DEPLOYMENT, args.e2e_name):
            try:
                deployments.stop(name)
            except Exception:  # noqa: BLE001 - not deployed
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
