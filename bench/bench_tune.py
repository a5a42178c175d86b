"""Benchmark: a pruned hyperparameter study against the full grid, and against HF Trainer's search.

    python bench/bench_tune.py                 # 5 seeds: 24-29 minutes on a busy 2-core CPU
    python bench/bench_tune.py --threads 1     # what a shared 2-core machine should use
    python bench/bench_tune.py --quick         # smoke run: 8-config grid, 2 seeds, ~3 minutes

The question (issue: tuning): does a pruned study find, with at most one third of the grid's
training tokens, a validation loss within 2% of the best one the full grid finds? Everything is
measured in the same run:

- Model: a random Llama built from a config (2 layers, hidden 64, the bundled tokenizer, seed 0),
  fully fine-tuned (a random model's frozen embeddings leave LoRA almost nothing to learn: in a
  probe at lr 3e-3, batch 8, LoRA r8 reached a validation loss of 10.11 after 40 steps, full
  fine-tuning 3.70).
- Data: the bundled support-ticket task (src/oikyo/data/samples/support_tickets.jsonl, 600
  conversations: a customer message -> a triage JSON of category, priority and sentiment). The
  system instruction, the same in every row, is left out (it is 30% of the tokens and carries
  nothing). Imported into a throwaway workspace (``OIKYO_HOME`` in a temporary folder) and split by
  ``oikyo data split`` (10% validation, seed 0); every run of every peer trains on its train split
  and is validated on its validation split, in the stored order. Loss on the assistant reply only.
- Space, categorical: learning rate x 4, batch size x 2, optimizer steps x 2 (16 configurations;
  ``--quick``: 2 x 2 x 2). AdamW, cosine schedule without warmup, weight decay 0, clipping 1.0,
  float32, training seed 0 in every run; validation every ``--eval-every`` steps and at the end.
- Grid: every configuration trained to its full steps with oikyo's recipe (``run_training``
  in-process, the same config a trial gets); each one's best validation loss and its training
  tokens (non-padding tokens of the batches it trained on). The grid's best is the lowest of those
  best losses; its tokens are the sum.
- oikyo's study: ``oikyo tune``'s driver through its public API (``study.create_study`` with
  ``--budget <grid tokens / 3>-tokens``, ``--sampler tpe --pruner hyperband --seed <seed>``, then
  ``study.run_study``), each trial an ordinary queued training run, executed by one worker
  (``oikyo.jobs.worker.Worker``) in a thread of this process. The driver reports each run's
  validation losses to Optuna and cancels pruned runs; its budget is a cap (oikyo.tune.budget): a
  drawn trial starts only if its estimated tokens (steps x batch size x the tokens per row measured
  on earlier trials, x 1.05) fit what is left, else it is skipped and another drawn (10 skips in a
  row, or a budget left that does not fit the cheapest configuration, end the study); a trial still
  training when the budget is spent is stopped.
  Worker heartbeats and driver polls every 0.2 s (defaults 5 s and 1 s) so a pruned run stops within
  about a step, as it does on a real model whose steps take seconds. Study best = the lowest
  validation loss any of its runs reported (as for the grid: what keep_best checkpointing keeps);
  its tokens = every trial's runs' ``tokens`` metric, pruned ones included; its trials = those that
  trained (skipped draws are not counted). A drawn configuration that an earlier complete trial
  trained is not trained again: it takes that trial's result (counted as a repeat, not as a trial).
- Peer: Hugging Face ``Trainer.hyperparameter_search(backend="optuna")`` on the same model, the
  same rows (encoded by oikyo's SFT encoder), the same space (``hp_space`` returns learning_rate,
  per_device_train_batch_size and max_steps), the driver's own sampler and pruner objects
  (``study.make_sampler``/``make_pruner``, same seed and trial count, passed through to
  ``optuna.create_study``; the Trainer reports each evaluation to the trial and raises
  ``TrialPruned``) and the same budget rule with the same functions (``budget.fits`` on the draw in
  ``hp_space``, whose skip Optuna records as a failed trial; a callback on ``num_input_tokens_seen``,
  "non_padding", stops the trial training and the search once the budget is spent, and an
  evaluation after that stop is not counted, as the driver's cancelled run has none). Its evaluation is the same
  token-weighted validation loss as oikyo's (oikyo's ``target_logprobs``, overriding
  ``Trainer.evaluate``), so both peers' losses are one measure; its training keeps HF's defaults
  (random batches padded to their longest row, loss averaged per batch).

Seeds: ``--seeds`` studies per peer (sampler seeds 0..n-1); the grid runs once. Reported per seed and
as medians: grid best, study best and its ratio to the grid's, the study's tokens over the grid's,
and the same for HF's search. The goal is met when oikyo's median ratio is <= 1.02 and its median
tokens ratio <= 1/3. Tokens and losses, not time, so a busy machine does not change the figures
(float sums in another thread count may move the last digits).

"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "src" / "oikyo" / "data" / "samples" / "support_tickets.jsonl"
SPACE = {"lr": [1e-3, 3e-3, 1e-2, 3e-2], "batch_size": [4, 8], "steps": [20, 60]}
QUICK_SPACE = {"lr": [3e-3, 1e-2], "batch_size": [4, 8], "steps": [10, 20]}
GOAL_LOSS, GOAL_TOKENS = 1.02, 1 / 3
KEYS = {"lr": "train.lr", "batch_size": "train.batch_size", "steps": "train.max_steps"}  # Optuna's param names
N_TRIALS = 100  # more than any budget here allows: the token budget ends every study


# ----------------------------------------------------------------------------- data and model


def prepare(args) -> dict:
    """A throwaway workspace with the tiny model and the split dataset; the rows every run trains on."""
    work = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    os.environ["OIKYO_HOME"] = str(work / "home")  # the study's records, queue and runs: never the user's
    os.environ.pop("OIKYO_DATABASE_URL", None)
    from oikyo.data import split, versions
    from oikyo.models.bundled import ensure_bundled_tokenizer
    from oikyo.models.loading import load_tokenizer, tiny_model_dir
    from oikyo.train.data import TokenLimit, encode_sft_rows

    model_dir = tiny_model_dir(work / "tiny", ensure_bundled_tokenizer(), layers=2, hidden=64, seed=0)
    rows = [json.loads(line) for line in DATASET.read_text().splitlines() if line.strip()]
    # The system instruction is the same in every row: leave it out (30% of the tokens, no information).
    rows = [{"messages": [m for m in r["messages"] if m["role"] != "system"]} for r in rows]
    source = work / "support_tickets.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    versions.import_dataset(source, name="support-tickets")
    version, _ = split.split_dataset("support-tickets", validation=args.validation, test=0.0, seed=0)
    train, validation = list(versions.iter_rows(version, "train")), list(versions.iter_rows(version, "validation"))
    tokenizer = load_tokenizer(model_dir)
    encode = lambda r, split: encode_sft_rows(r, tokenizer, limit=TokenLimit(1024, 2048), split=split)  # noqa: E731
    encoded_train = encode(train, "train")
    return {"work": work, "model_dir": model_dir, "dataset": version.id, "train": train, "validation": validation,
            "encoded_train": encoded_train, "encoded_val": encode(validation, "validation"),
            "pad_id": tokenizer.pad_token_id}


def validation_loss(model, examples, pad_id: int, batch_size: int = 16) -> float:
    """Mean token loss over the labelled validation tokens: oikyo's SFT evaluation, for the HF peer."""
    import torch

    from oikyo.train import data
    from oikyo.train.runner import target_logprobs

    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for items in data.eval_plan([len(e) for e in examples], batch_size):
            logp, _ = target_logprobs(model, data.collate([examples[i] for i in items], pad_id))
            total -= logp.sum().item()
            count += logp.numel()
    model.train(was_training)
    return total / count


# ----------------------------------------------------------------------------- oikyo runs


def base_overrides(args) -> list[str]:
    """The config every run shares (grid runs and study trials alike); the space sets the rest."""
    return ["method.finetune=full", "train.scheduler=cosine", "train.warmup_steps=0", "train.weight_decay=0.0",
            "train.max_grad_norm=1.0", "train.seed=0", "train.dtype=float32", f"train.num_threads={args.threads}",
            f"train.eval_every={args.eval_every}", "data.train_split=train", "data.eval_split=validation",
            "checkpoint.save_every=null", "checkpoint.keep_best=0"]


def oikyo_run(args, prep: dict, params: dict) -> dict:
    """One grid run: oikyo's recipe in-process on the split's rows, with the config a trial of ``params`` gets."""
    from oikyo.train.config import load_config
    from oikyo.train.runner import run_training

    config = load_config(None, [*base_overrides(args), f"train.lr={params['lr']}",
                                f"train.batch_size={params['batch_size']}", f"train.max_steps={params['steps']}"])
    evals = []

    def on_metrics(step: int, metrics: dict) -> None:
        if "eval_loss" in metrics:
            evals.append(metrics["eval_loss"])

    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=prep["work"]))
    result = run_training(
        config, run_dir=run_dir, model_dir=prep["model_dir"], train_rows=lambda: prep["train"],
        eval_rows=lambda: prep["validation"], on_metrics=on_metrics,
        should_stop=lambda: False, log=lambda message: None,
    )
    shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints of a 3M-parameter model: not needed
    return {"params": params, "status": result.status, "steps": result.steps, "tokens": result.tokens,
            "best": min(evals, default=math.inf), "evals": len(evals)}


def configurations(space: dict) -> list[dict]:
    import itertools

    return [dict(zip(space, values)) for values in itertools.product(*space.values())]


def run_grid(args, prep: dict, space: dict) -> dict:
    """Every configuration to its full steps."""
    runs = []
    for params in configurations(space):
        runs.append(oikyo_run(args, prep, params))
        r = runs[-1]
        print(f"  grid {params}: best {r['best']:.4f}, {r['tokens']} tokens", flush=True)
    best = min(runs, key=lambda r: r["best"])
    return {"runs": runs, "best": best["best"], "best_params": best["params"], "tokens": sum(r["tokens"] for r in runs)}


def searched_space(space: dict):
    """The bench's space as oikyo's Space (categorical params named by their config keys)."""
    from oikyo.tune.space import Space

    return Space.from_dict({"params": {KEYS[k]: {"type": "categorical", "choices": v} for k, v in space.items()}})


def oikyo_study(args, prep: dict, space: dict, seed: int, budget: int) -> dict:
    """``oikyo tune``'s driver (study.create_study + run_study) with one in-process worker thread."""
    import threading

    from oikyo.jobs import metrics
    from oikyo.jobs.worker import Worker
    from oikyo.tune import study

    searched = searched_space(space)
    record = study.create_study(None, base_overrides(args), dataset=prep["dataset"], model=str(prep["model_dir"]),
                                space=searched, objectives=["val_loss"], n_trials=N_TRIALS, budget=f"{budget}-tokens",
                                sampler="tpe", pruner="hyperband", seed=seed, name=f"bench-seed{seed}")
    # Heartbeats and polls every 0.2 s: a pruned run stops within about one step, as on a real model whose
    # steps take seconds (the defaults, 5 s and 1 s, are tens of this tiny model's steps).
    worker = Worker(lease_s=60, heartbeat_s=0.2, poll_s=0.1)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        study.run_study(record.id, log=lambda line: None, poll_s=0.2)
    finally:
        worker.stop()
        thread.join(timeout=60)
    trials = study.trials(record.id)
    run_ids = [run_id for trial in trials for run_id in trial["run_ids"]]
    losses = [v for run_id in run_ids for _, v in metrics.series(run_id, ["eval_loss"]).get("eval_loss", [])]
    complete = [t for t in trials if t["values"]]
    best_trial = min(complete, key=lambda t: t["values"]["val_loss"])["params"] if complete else None
    trained = [t for t in trials if t["run_ids"]]
    return {"best": min(losses, default=math.inf), "tokens": sum(t["tokens"] for t in trials), "trials": len(trained),
            "pruned": sum(t["state"] == "pruned" for t in trials), "skipped": len(trials) - len(trained),
            "repeats": sum(t.get("duplicate_of") is not None for t in trials), "best_trial": best_trial}


# ----------------------------------------------------------------------------- the HF peer


def hf_study(args, prep: dict, space: dict, seed: int, budget: int) -> dict:
    """HF Trainer.hyperparameter_search (Optuna backend) over the same space, pruner and budget."""
    import optuna
    import torch
    from datasets import Dataset
    from transformers import (AutoModelForCausalLM, DataCollatorForSeq2Seq, PrinterCallback, Trainer,
                              TrainerCallback, TrainingArguments)

    from oikyo.models.loading import load_tokenizer
    from oikyo.tune import budget as budgets
    from oikyo.tune import study
    from oikyo.tune.driver import SKIP_LIMIT

    ledger = {"spent": 0, "rows": 0, "best": math.inf, "trials": 0, "skipped": 0, "skips": 0, "stopped": False}
    cap = budgets.parse_budget(f"{budget}-tokens")

    class DoesNotFit(Exception):
        """A drawn trial whose estimated tokens do not fit what is left (Optuna records it as failed)."""

    class SharedEvaluation(Trainer):
        """HF's Trainer with oikyo's token-weighted validation loss, so both peers report one measure."""

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            loss = validation_loss(self.model, prep["encoded_val"], prep["pad_id"])
            if not ledger["stopped"]:  # the driver's run stopped at the budget has no later evaluation
                ledger["best"] = min(ledger["best"], loss)
            metrics = {f"{metric_key_prefix}_loss": loss}
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=metrics)
            return metrics

    class TokenBudget(TrainerCallback):
        """Counts every trial's trained tokens and rows; once the budget is spent the trial training stops
        and no further trial starts (the driver's rule: budget.reached)."""

        def on_train_begin(self, train_args, state, control, **kwargs):
            ledger["trials"] += 1
            self.seen = 0
            self.rows = train_args.per_device_train_batch_size * train_args.gradient_accumulation_steps

        def on_step_end(self, _args, state, control, **kwargs):
            ledger["spent"] += state.num_input_tokens_seen - self.seen
            ledger["rows"] += self.rows
            self.seen = state.num_input_tokens_seen
            if budgets.reached(cap, ledger["spent"]):
                ledger["stopped"] = True
                control.should_training_stop = True
                trainer._trial.study.stop()

    cheapest = budgets.cheapest_rows(searched_space(space), {"train": {"grad_accum": 1}})

    def hp_space(trial) -> dict:
        """The draw, skipped (as the driver does) when its estimated tokens do not fit what is left; once
        not even the space's cheapest configuration fits, the search stops (the driver draws nothing then)."""
        rate = budgets.per_row([(ledger["spent"], ledger["rows"])])
        if rate is not None and not budgets.fits(cap, spent=ledger["spent"], running=[], cost=cheapest * rate):
            trial.study.stop()
            raise DoesNotFit("not even the cheapest configuration fits")  # not counted as a skipped draw
        drawn = {k: trial.suggest_categorical(KEYS[k], v) for k, v in space.items()}
        cost = drawn["steps"] * drawn["batch_size"] * rate if rate is not None else None
        if not budgets.fits(cap, spent=ledger["spent"], running=[], cost=cost):
            ledger["skipped"] += 1
            ledger["skips"] += 1
            if ledger["skips"] >= SKIP_LIMIT or budgets.reached(cap, ledger["spent"]):
                trial.study.stop()
            raise DoesNotFit(f"{cost:.0f} tokens do not fit {budget - ledger['spent']} left")
        ledger["skips"] = 0
        return {names[k]: value for k, value in drawn.items()}

    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(prep["model_dir"])

    def pack(encoded) -> Dataset:
        return Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in encoded])

    training_args = TrainingArguments(
        output_dir=str(prep["work"] / f"hf-{seed}"), learning_rate=1e-3, per_device_train_batch_size=8, max_steps=20,
        lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=0,
        eval_strategy="steps", eval_steps=args.eval_every, save_strategy="no", logging_strategy="no",
        report_to="none", use_cpu=True, disable_tqdm=True, include_num_input_tokens_seen="non_padding",
    )
    trainer = SharedEvaluation(
        model_init=lambda: AutoModelForCausalLM.from_pretrained(prep["model_dir"], dtype=torch.float32),
        args=training_args, train_dataset=pack(prep["encoded_train"]), eval_dataset=pack(prep["encoded_val"]),
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        callbacks=[TokenBudget()],
    )
    trainer.remove_callback(PrinterCallback)  # its end-of-training line per trial would drown the report
    names = {"lr": "learning_rate", "batch_size": "per_device_train_batch_size", "steps": "max_steps"}  # HF's words
    # The driver's own sampler and pruner, built by the same functions with the same seed and trial count.
    sampler, pruner = study.make_sampler("tpe", seed, N_TRIALS), study.make_pruner("hyperband", N_TRIALS)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # not a traceback per skipped draw (the driver says nothing)
    best_run = trainer.hyperparameter_search(
        hp_space=hp_space, compute_objective=lambda metrics: metrics["eval_loss"], n_trials=N_TRIALS,
        direction="minimize", backend="optuna", sampler=sampler, pruner=pruner, catch=(DoesNotFit,),
    )
    return {"best": ledger["best"], "tokens": ledger["spent"], "trials": ledger["trials"],
            "skipped": ledger["skipped"], "objective_best": best_run.objective, "best_params": best_run.hyperparameters}


# ----------------------------------------------------------------------------- report


def machine(threads: int) -> str:
    import optuna
    import torch
    import transformers

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    extensions = [name for name in ("avx2", "avx512f", "amx_tile") if name in flags]
    return (f"{cpu} ({', '.join(extensions) or 'no avx2'}), {os.cpu_count()} logical CPUs, {threads} threads, "
            f"torch {torch.__version__}, transformers {transformers.__version__}, optuna {optuna.__version__}, "
            f"Python {platform.python_version()}")


def summarize(grid: dict, studies: list[dict], peers: list[dict]) -> dict:
    """Per-seed ratios against the grid, and their medians."""
    rows = []
    for seed, (ours, theirs) in enumerate(zip(studies, peers)):
        rows.append({"seed": seed, "oikyo_best": ours["best"], "oikyo_loss_ratio": ours["best"] / grid["best"],
                     "oikyo_tokens_ratio": ours["tokens"] / grid["tokens"], "oikyo_trials": ours["trials"],
                     "oikyo_pruned": ours["pruned"], "hf_best": theirs["best"],
                     "hf_loss_ratio": theirs["best"] / grid["best"],
                     "hf_tokens_ratio": theirs["tokens"] / grid["tokens"],
                     "hf_trials": theirs["trials"]})
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0] if key != "seed"}
    met = median["oikyo_loss_ratio"] <= GOAL_LOSS and median["oikyo_tokens_ratio"] <= GOAL_TOKENS
    return {"per_seed": rows, "median": median, "goal_met": met}


def print_table(grid: dict, summary: dict) -> None:
    print(f"\ngrid: {len(grid['runs'])} configurations, best validation loss {grid['best']:.4f} "
          f"({grid['best_params']}), {grid['tokens']} training tokens")
    print(f"{'seed':>6}{'oikyo best':>12}{'/grid':>8}{'tokens':>8}{'trials':>8}{'pruned':>8}"
          f"{'HF best':>10}{'/grid':>8}{'tokens':>8}{'trials':>8}")
    for r in [*summary["per_seed"], {"seed": "median", **summary["median"]}]:
        count = lambda key: f"{r[key]:>8.0f}" if isinstance(r["seed"], int) else f"{r[key]:>8.1f}"  # noqa: E731
        print(f"{r['seed']:>6}{r['oikyo_best']:>12.4f}{r['oikyo_loss_ratio']:>8.4f}{r['oikyo_tokens_ratio']:>8.3f}"
              f"{count('oikyo_trials')}{count('oikyo_pruned')}{r['hf_best']:>10.4f}{r['hf_loss_ratio']:>8.4f}"
              f"{r['hf_tokens_ratio']:>8.3f}{count('hf_trials')}")
    m = summary["median"]
    print(f"goal (median best within {GOAL_LOSS - 1:.0%} of the grid's with <= 1/3 of its tokens): "
          f"{'met' if summary['goal_met'] else 'NOT met'} (loss ratio {m['oikyo_loss_ratio']:.4f}, "
          f"tokens ratio {m['oikyo_tokens_ratio']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="studies per peer (sampler seeds 0..n-1)")
    parser.add_argument("--validation", type=float, default=0.1, help="share of the rows held out for validation")
    parser.add_argument("--eval-every", type=int, default=10, help="optimizer steps between validations")
    parser.add_argument("--threads", type=int, default=None, help="default: all physical cores")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8-config grid, 2 seeds, 5-step evaluations")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    if args.threads is None:
        from oikyo.train.hardware import physical_cores

        args.threads = physical_cores()
    space = QUICK_SPACE if args.quick else SPACE
    if args.quick:
        args.seeds, args.eval_every = min(args.seeds, 2), 5
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    info = machine(args.threads)
    print(f"{info}; load average {load_before:.1f}", flush=True)
    prep = prepare(args)
    print(f"{len(prep['train'])} training rows, {len(prep['validation'])} validation rows; space {space}", flush=True)
    grid = run_grid(args, prep, space)
    budget = int(grid["tokens"] * GOAL_TOKENS)
    studies, peers = [], []
    for seed in range(args.seeds):
        studies.append(oikyo_study(args, prep, space, seed, budget))
        print(f"  seed {seed} oikyo: {studies[-1]}", flush=True)
        peers.append(hf_study(args, prep, space, seed, budget))
        print(f"  seed {seed} HF: {peers[-1]}", flush=True)
    summary = summarize(grid, studies, peers)
    print_table(grid, summary)
    minutes = (time.perf_counter() - started) / 60
    print(f"{minutes:.1f} minutes; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    shutil.rmtree(prep["work"], ignore_errors=True)
    if args.json:
        report = {"machine": info, "date": time.strftime("%Y-%m-%d"), "space": space, "budget_tokens": budget,
                  "grid": grid, "oikyo": studies, "hf": peers, **summary, "minutes": minutes,
                  "load_average": [load_before, os.getloadavg()[0]]}
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
