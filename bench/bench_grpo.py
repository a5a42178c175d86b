"""Benchmark: a GRPO step of oikyo against TRL's GRPOTrainer, same model, group size, prompts and lengths.

    python bench/bench_grpo.py                  # ~10 minutes on an idle 2-core CPU
    python bench/bench_grpo.py --steps 1        # quicker (one measured step after the warm-up step)
    python bench/bench_grpo.py --forms-only     # only the generator forms (prefill once or each; packed or not)

What runs (each peer in its own subprocess, one after the other, so peak memory is its own):

- Model: the bundled SmolLM2-135M-Instruct (float32, CPU), LoRA r=16, alpha=32, dropout 0 on all
  linear layers. ``--dtype bfloat16`` trains both peers under bf16 autocast (oikyo ``train.dtype=bfloat16``,
  its frozen base stored in bf16; TRL ``bf16=True``), on a CPU with native bf16 only; oikyo's generator
  stays float32 (bf16 weights change its greedy output within a few tokens), TRL generates under its autocast.
- Prompts: the bundled support-ticket task (src/oikyo/data/samples/support_tickets.jsonl; system
  instruction + customer message, ~90 prompt tokens), the same rows for both peers in the same
  seeded order, each rendered by the model's chat template.
- Both: G = ``--group`` completions per prompt (TRL's default 8), ``--prompts`` prompts per optimizer
  step (TRL: per_device_train_batch_size = prompts x G), at most ``--max-new`` completion tokens,
  sampled at temperature 1.0, top_p 1.0; rewards json_valid + json_field_match + length_penalty
  (oikyo's functions, wrapped for TRL; the length term, with a target longer than any completion,
  gives every group some spread, so oikyo's skipping of groups with equal rewards does not apply and
  both peers train on every completion: the report prints the share skipped, which should be 0);
  beta 0 (no reference model, TRL's default); one policy update per generation batch (TRL's
  num_iterations=1); Dr. GRPO loss aggregation (TRL loss_type="dr_grpo"); AdamW lr 1e-5, constant;
  gradient clipping 1.0; the machine's physical cores as threads.
- TRL keeps its other defaults: generation with ``model.generate`` (no vLLM on a CPU),
  gradient_checkpointing=True. oikyo uses its defaults: groups sampled by its serving engine,
  the prompt run once per group in the training forward, no gradient checkpointing.

Each peer runs ``--steps`` + 1 optimizer steps; the first is a warm-up and is not counted.
Reported per peer: optimizer steps per minute (wall time between the end of the warm-up step and the
end of the last step, everything included), generated tokens per second (completion tokens over the
time spent generating them: oikyo's ``generation_s`` metric, TRL's generation method timed), the
mean completion length and the mean reward; then the ratios oikyo / TRL.

``--forms`` (on by default) also times oikyo's generator in three forms on one generation batch of
the same shape: packed base weights plus the policy's adapter with each prompt prefilled once per
group (what the recipe uses for LoRA), the same with every request prefilled, and the engine
unpacked; and the adapter hand-over that follows every optimizer step.
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
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear", "task_type": "CAUSAL_LM"}
LR = 1e-5
# length_penalty's target in characters: longer than any completion of --max-new 64 tokens, so the term is
# never floored at -1 and every group's rewards spread (no group is skipped for having nothing to learn).
LENGTH = {"target": 600}


# ----------------------------------------------------------------------------- data


def prompt_rows(args) -> list[dict]:
    """Support-ticket rows (system + user + reference answer), the same seeded order for both peers."""
    from oikyo.data import sample

    rows = [json.loads(line) for line in sample.sample_path().read_text().splitlines() if line.strip()]
    random.Random(args.seed).shuffle(rows)
    return rows[: args.prompts * (args.steps + 1)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ----------------------------------------------------------------------------- peers


def run_oikyo(args, rows: list[dict]) -> dict:
    from oikyo.train.config import load_config
    from oikyo.train.runner import run_training

    config = load_config(None, [
        "method.name=grpo",
        f"grpo.rewards=[{{name: json_valid}}, {{name: json_field_match}}, {{name: length_penalty, args: {LENGTH}}}]",
        f"grpo.num_generations={args.group}", f"grpo.max_new_tokens={args.max_new}", "grpo.temperature=1.0",
        "grpo.top_p=1.0", "grpo.beta=0.0", f"train.batch_size={args.prompts}", f"train.max_steps={args.steps + 1}",
        f"train.lr={LR}", "train.scheduler=constant", "train.warmup_steps=0", f"train.seed={args.seed}",
        f"train.num_threads={args.threads}", "train.eval_every=null", "data.eval_split=null",
        "checkpoint.save_every=null", f"train.dtype={args.dtype}", "train.group_by_length=false",
    ])
    ends, steps = [], []

    def on_metrics(step: int, metrics: dict) -> None:
        ends.append(time.perf_counter())
        steps.append(metrics)

    run_training(config, run_dir=Path(tempfile.mkdtemp(prefix="bench-grpo-oikyo-")), model_dir=Path(args.model_dir),
                 train_rows=lambda: rows, eval_rows=None, on_metrics=on_metrics, should_stop=lambda: False,
                 log=lambda message: None)
    measured = steps[1:]
    generated = sum(m["generated_tokens_per_s"] * m["generation_s"] for m in measured)
    return {
        "peer": "oikyo", "steps": len(measured), "seconds": ends[-1] - ends[0],
        "generation_seconds": sum(m["generation_s"] for m in measured), "generated_tokens": round(generated),
        "completion_length": sum(m["completion_length"] for m in measured) / len(measured),
        "reward": sum(m["reward"] for m in measured) / len(measured), "peak_rss_mb": peak_rss_mb(),
        "zero_std_groups": sum(m["zero_std_groups"] for m in steps) / len(steps),  # groups skipped: must be 0
    }


def run_trl(args, rows: list[dict]) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import TrainerCallback, set_seed
    from trl import GRPOConfig, GRPOTrainer

    from oikyo.models.loading import load_model, load_tokenizer
    from oikyo.train import rewards

    def json_valid(prompts, completions, reference, **kwargs):
        return [rewards.json_valid(c[0]["content"], r, p) for p, c, r in zip(prompts, completions, reference)]

    def json_field_match(prompts, completions, reference, **kwargs):
        return [rewards.json_field_match(c[0]["content"], r, p) for p, c, r in zip(prompts, completions, reference)]

    def length_penalty(prompts, completions, reference, **kwargs):
        return [rewards.length_penalty(c[0]["content"], r, p, **LENGTH)
                for p, c, r in zip(prompts, completions, reference)]

    ends: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, _args, state, control, **kwargs):
            ends.append(time.perf_counter())

    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    tokenizer = load_tokenizer(args.model_dir)
    model = get_peft_model(load_model(args.model_dir).train(), LoraConfig(**LORA))
    dataset = Dataset.from_list([{"prompt": r["messages"][:-1], "reference": r["messages"][-1]["content"]}
                                 for r in rows])
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-grpo-trl-"), per_device_train_batch_size=args.prompts * args.group,
        gradient_accumulation_steps=1, num_generations=args.group, max_completion_length=args.max_new,
        temperature=1.0, top_p=1.0, beta=0.0, num_iterations=1, loss_type="dr_grpo", learning_rate=LR,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, max_steps=args.steps + 1,
        bf16=args.dtype == "bfloat16",
        fp16=False, seed=args.seed, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        disable_tqdm=True, shuffle_dataset=False,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[json_valid, json_field_match, length_penalty], args=config,
                          train_dataset=dataset, processing_class=tokenizer, callbacks=[StepTimes()])
    timed = {"seconds": [], "tokens": []}
    generate = trainer._generate_single_turn

    def timed_generate(*a, **kw):  # wraps the trainer's own generation call, on this instance only
        start = time.perf_counter()
        completion_ids, logprobs = generate(*a, **kw)
        timed["seconds"].append(time.perf_counter() - start)
        timed["tokens"].append(sum(len(c) for c in completion_ids))
        return completion_ids, logprobs

    trainer._generate_single_turn = timed_generate
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h][1:]
    return {
        "peer": "trl", "steps": len(ends) - 1, "seconds": ends[-1] - ends[0],
        "generation_seconds": sum(timed["seconds"][1:]), "generated_tokens": sum(timed["tokens"][1:]),
        "completion_length": sum(h["completions/mean_length"] for h in logs) / max(len(logs), 1),
        "reward": sum(h["reward"] for h in logs) / max(len(logs), 1), "peak_rss_mb": peak_rss_mb(),
        "gradient_checkpointing": config.gradient_checkpointing, "generation_calls": len(timed["seconds"]),
    }


def run_forms(args, rows: list[dict]) -> dict:
    """oikyo's generator in three forms: packed base weights + adapter with each prompt prefilled once (the
    recipe's form), the same with each request prefilled (the plain serving engine), and unpacked weights
    (what generating on the live model's plain weights costs); and the adapter hand-over.

    Both generators are built first, then timed in alternation (``--form-rounds`` rounds, the best of
    each kept), so a change in the machine's load does not favour the one timed second.
    """
    import torch

    from oikyo.models.chat_template import encode_prompt
    from oikyo.serve.engine.core import GenerationEngine
    from oikyo.train.config import load_config
    from oikyo.train.grpo import PolicyGenerator, group_engine, request_seed
    from oikyo.train.runner import build_model, lora_kwargs

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    policy = build_model(Path(args.model_dir), "lora", torch.float32, "cpu", lora_kwargs(load_config(None, [])), False)
    with torch.no_grad():  # a trained-looking adapter (peft starts with B = 0)
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    batch = args.prompts * args.group
    generators = {}
    for name, engine in (
        ("packed, prefill once", None),  # the recipe's form
        ("packed, prefill each", lambda: GenerationEngine(args.model_dir, max_batch_size=batch)),
        ("unpacked, prefill once", lambda: group_engine(args.model_dir, max_batch_size=batch, packed_weights=False)),
    ):
        generator = PolicyGenerator(Path(args.model_dir), device="cpu", max_batch_size=batch, lora=True)
        if engine is not None:  # the same bridge (adapter hand-over) on another engine
            generator.engine = engine()
        generators[name] = generator
    prompts = [encode_prompt(generator.tokenizer, r["messages"][:-1]) for r in rows[: args.prompts]]
    ids = [p for p in prompts for _ in range(args.group)]
    best: dict[str, dict] = {}
    for step in range(args.form_rounds + 1):  # round 0 warms each up and is not counted
        seeds = [request_seed(args.seed, step, i, 0) for i in range(len(ids))]
        for name, generator in generators.items():
            start = time.perf_counter()
            generator.sync(policy, step)
            sync = time.perf_counter() - start
            start = time.perf_counter()
            out = generator.generate(ids, seeds, max_new_tokens=args.max_new, temperature=1.0, top_p=1.0)
            seconds = time.perf_counter() - start
            tokens = sum(r.completion_tokens for r in out)
            if step == 0:
                continue
            row = {"linear_products": generator.engine.linear_products, "seconds": seconds, "tokens": tokens,
                   "tokens_per_s": tokens / seconds, "sync_seconds": sync}
            if name not in best or row["tokens_per_s"] > best[name]["tokens_per_s"]:
                best[name] = {**row, "sync_seconds": min(sync, best.get(name, row)["sync_seconds"])}
    for generator in generators.values():
        generator.close()
    return {"peer": "forms", "forms": best}


def child(args) -> None:
    rows = json.loads(Path(args.data).read_text())
    result = {"oikyo": run_oikyo, "trl": run_trl, "forms": run_forms}[args.peer](args, rows)
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- parent


def spawn(args, peer: str, data_path: Path) -> dict:
    command = [sys.executable, __file__, "--peer", peer, "--data", str(data_path), "--model-dir", str(args.model_dir),
               "--group", str(args.group), "--prompts", str(args.prompts), "--max-new", str(args.max_new),
               "--steps", str(args.steps), "--threads", str(args.threads), "--seed", str(args.seed),
               "--form-rounds", str(args.form_rounds), "--dtype", args.dtype]
    started = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True)
    if process.returncode != 0:
        raise SystemExit(f"{peer} failed:\n{process.stderr[-4000:]}")
    line = next(x for x in reversed(process.stdout.splitlines()) if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["process_seconds"] = time.perf_counter() - started
    print(f"{peer}: done in {result['process_seconds']:.0f} s", flush=True)
    return result


def machine(threads: int) -> str:
    import torch
    import transformers
    import trl

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_generate import machine as cpu_name  # the CPU's model name, as the other benchmarks print it

    return (f"{cpu_name()['cpu']}, {threads} threads, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, trl {trl.__version__}, Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per optimizer step")
    parser.add_argument("--max-new", type=int, default=64, help="longest completion in tokens")
    parser.add_argument("--steps", type=int, default=2, help="measured optimizer steps (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=None, help="default: physical cores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="training precision of both peers: bfloat16 is autocast (oikyo train.dtype=bfloat16, TRL "
                        "bf16=True), only on a CPU with native bf16; oikyo's generator stays float32")
    parser.add_argument("--model-dir", default=None, help="default: the bundled model (converted once)")
    parser.add_argument("--peers", default="oikyo,trl", help="which peers to run (the ratios need both)")
    parser.add_argument("--forms", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the generator's packed and unpacked forms")
    parser.add_argument("--forms-only", action="store_true")
    parser.add_argument("--form-rounds", type=int, default=2, help="timed rounds of each generator form (best kept)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--peer", choices=["oikyo", "trl", "forms"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads is None:
        from oikyo.train.hardware import physical_cores

        args.threads = physical_cores()
    if args.peer:
        return child(args)
    if args.model_dir is None:
        from oikyo.models.bundled import ensure_bundled_model

        args.model_dir = str(ensure_bundled_model(log=print))
    rows = prompt_rows(args)
    data_path = Path(tempfile.mkdtemp(prefix="bench-grpo-")) / "rows.json"
    data_path.write_text(json.dumps(rows))
    load_before = os.getloadavg()[0]
    peers = [] if args.forms_only else args.peers.split(",")
    results = [spawn(args, peer, data_path) for peer in peers]
    forms = spawn(args, "forms", data_path)["forms"] if (args.forms or args.forms_only) else None
    report(args, results, forms, load_before)


def report(args, results: list[dict], forms: dict | None, load_before: float) -> None:
    summary = {"machine": machine(args.threads), "load_average_1min": {"before": load_before,
               "after": os.getloadavg()[0]}, "group": args.group, "prompts_per_step": args.prompts, "dtype": args.dtype,
               "max_new_tokens": args.max_new, "measured_steps": args.steps, "results": results, "forms": forms}
    print(f"\nGRPO step, SmolLM2-135M {args.dtype} training CPU, LoRA r16, support-ticket prompts, {args.prompts} prompts x "
          f"G={args.group}, <= {args.max_new} new tokens, {args.steps} measured steps; {summary['machine']}")
    print(f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    if results:
        print(f"{'peer':8}{'steps':>6}{'sec':>8}{'steps/min':>10}{'gen s':>8}{'gen tok':>8}{'gen tok/s':>10}"
              f"{'compl len':>10}{'reward':>8}{'peak MB':>9}")
        for r in results:
            r["steps_per_minute"] = 60 * r["steps"] / r["seconds"]
            r["generated_tokens_per_s"] = r["generated_tokens"] / r["generation_seconds"]
            print(f"{r['peer']:8}{r['steps']:>6}{r['seconds']:>8.1f}{r['steps_per_minute']:>10.3f}"
                  f"{r['generation_seconds']:>8.1f}{r['generated_tokens']:>8}{r['generated_tokens_per_s']:>10.1f}"
                  f"{r['completion_length']:>10.1f}{r['reward']:>8.3f}{r['peak_rss_mb']:>9.0f}")
    if len(results) == 2:
        ours, theirs = results
        print(f"oikyo: share of groups left out of training for equal rewards {ours['zero_std_groups']:.3f} "
              "(0: both peers trained on every completion)")
        summary["steps_ratio"] = ours["steps_per_minute"] / theirs["steps_per_minute"]
        summary["generation_ratio"] = ours["generated_tokens_per_s"] / theirs["generated_tokens_per_s"]
        print(f"oikyo / TRL: optimizer steps per minute {summary['steps_ratio']:.2f}x, generated tokens per second "
              f"{summary['generation_ratio']:.2f}x")
    if forms:
        print(f"oikyo's generator, one generation batch of the same shape (best of {args.form_rounds}, alternated):")
        for name, f in forms.items():
            print(f"  {name:24} ({f['linear_products']}): {f['seconds']:.2f} s, {f['tokens']} tokens, "
                  f"{f['tokens_per_s']:.1f} tok/s; adapter hand-over {1000 * f['sync_seconds']:.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
