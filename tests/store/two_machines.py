"""One "machine" of tests/store/test_s3_store.py, run as its own process: ``python two_machines.py ROLE ARGS_JSON``.

The environment gives it its own workspace (OIKYO_HOME) and the shared PostgreSQL database and S3
store; it prints one JSON line with what it made or saw.

- ``train``: imports and splits a dataset, trains a tiny adapter through the job system (queue + worker).
- ``evaluate``: evaluates that model version through the job system, then deploys it and asks it a
  question with the official openai client, with nothing of the first machine's workspace.
- ``train-killed``: queues a longer run and trains it until a checkpoint has reached the shared store,
  then dies with SIGKILL (its lease still held), as a machine that is lost.
- ``resume``: lets the dead machine's lease expire and trains that run to the end from the uploaded
  checkpoint, in a workspace that never held the run's folder.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

TRAIN = ("train.num_threads=1", "train.max_steps=3", "train.batch_size=4", "data.max_length=64",
         "checkpoint.save_every=3", "train.eval_every=3", "checkpoint.keep_best=1", "train.lr=1e-2")


def _dataset(tmp: str, name: str):
    from oikyo.data import split, versions

    rows = [{"messages": [{"role": "user", "content": f"Name thing {i}."},
                          {"role": "assistant", "content": f"alpha {i % 3}"}]} for i in range(30)]
    path = Path(tmp) / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    versions.import_dataset(path, name=name)
    dataset, _ = split.split_dataset(name, validation=0.2, test=0.2, seed=0)
    return dataset


def train(args: dict) -> dict:
    from oikyo.jobs import model_versions, queue, training
    from oikyo.jobs.worker import Worker

    dataset = _dataset(args["tmp"], "items")
    run = training.submit_training(None, list(TRAIN), dataset=dataset.id, model=args["base"])
    Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.1).run(once=True)
    done = queue.get(run.id)
    assert done.state == "succeeded", done.error
    [mv] = model_versions.list_versions(run_id=run.id)
    return {"dataset": dataset.id, "artifact": dataset.artifact, "run": run.id, "model_version": mv.id,
            "path": mv.path, "manifest": mv.lineage.get("manifest")}


def evaluate(args: dict) -> dict:
    from oikyo.data import versions
    from oikyo.evaluate import jobs, records
    from oikyo.evaluate.runner import EvalSpec
    from oikyo.jobs import model_versions, queue
    from oikyo.jobs.worker import Worker
    from oikyo.serve.gateway import deployments, keys, served_models
    from openai import OpenAI

    mv = model_versions.get(args["model_version"])
    assert not Path(mv.path).exists(), "the first machine's workspace must be out of reach"
    job = jobs.submit_evaluation(EvalSpec(model=mv.id, max_new_tokens=4, baselines=False, probe=False))
    Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.1).run(once=True)
    done = queue.get(job.id)
    assert done.state == "succeeded", done.error
    [evaluation] = records.list_evaluations(group_id=job.id, limit=None)
    examples = records.read_examples(evaluation)  # the per-example outputs, a blob in the shared store
    spec = served_models.resolve(mv.id)
    info = deployments.deploy(mv.id, name="second", port=args["port"], wait_s=240)
    try:
        _, secret = keys.create("second")
        client = OpenAI(base_url=info["url"], api_key=secret, max_retries=0, timeout=120)
        answer = client.chat.completions.create(model=mv.id, max_tokens=4, temperature=0,
                                                messages=[{"role": "user", "content": "Name thing 3."}])
    finally:
        deployments.stop("second", timeout_s=30)
    return {"served_model": answer.model, "served_tokens": answer.usage.completion_tokens,
            "evaluation": evaluation.id, "metrics": evaluation.metrics, "eval_artifact": evaluation.artifact,
            "examples": len(examples), "predictions": [e.get("prediction") for e in examples][:3],
            "adapter_dir": spec.adapter_dir, "load_dir": spec.load_dir,
            "dataset_file": str(versions.parquet_path(versions.resolve(args["dataset"])))}


LONG_STEPS = 120  # room for 100 steps between the first uploaded checkpoint (step 20) and the kill
LONG = ("train.num_threads=1", f"train.max_steps={LONG_STEPS}", "train.batch_size=4", "data.max_length=64",
        "checkpoint.save_every=20", "train.eval_every=1000", "train.lr=1e-3")


def train_killed(args: dict) -> dict:
    """Train until a checkpoint is in the shared store, then die with the lease held (a lost machine)."""
    from oikyo.jobs import checkpoints, queue, training
    from oikyo.jobs.worker import Worker

    dataset = _dataset(args["tmp"], "longer")
    run = training.submit_training(None, list(LONG), dataset=dataset.id, model=args["base"])
    threading.Thread(target=Worker(lease_s=3, heartbeat_s=0.5, poll_s=0.1).run, kwargs={"once": True},
                     daemon=True).start()
    deadline = time.monotonic() + 300
    while not [c for c in checkpoints.list_checkpoints(run.id) if c.manifest]:
        assert time.monotonic() < deadline, "no checkpoint reached the shared store"
        assert queue.get(run.id).state in ("queued", "running"), queue.get(run.id).error
        time.sleep(0.1)
    uploaded = max(c.step for c in checkpoints.list_checkpoints(run.id) if c.manifest)
    print("RESULT " + json.dumps({"run": run.id, "run_dir": queue.get(run.id).run_dir, "uploaded": uploaded,
                                   "steps": LONG_STEPS}),
          flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def resume(args: dict) -> dict:
    from oikyo.jobs import checkpoints, queue, runs
    from oikyo.jobs.execution import run_folder
    from oikyo.jobs.worker import Worker

    run = queue.get(args["run"])
    assert run.state == "running" and not Path(run.run_dir).exists(), "the first machine's folder must be gone"
    time.sleep(4)  # the dead machine's 3 s lease runs out (its last heartbeat was just before the kill)
    Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.1).run(once=True)
    done = queue.get(run.id)
    assert done.state == "succeeded", done.error
    folder = run_folder(done)
    log = (folder / "train.log").read_text()
    return {"folder": str(folder), "log": log, "attempts": done.attempts,
            "loss_steps": [step for step, _ in runs.metric_series(run.id, ["loss"])["loss"]],
            "checkpoints": [(c.step, c.manifest) for c in checkpoints.list_checkpoints(run.id)]}


if __name__ == "__main__":
    role, payload = sys.argv[1], json.loads(sys.argv[2])
    result = {"train": train, "evaluate": evaluate, "train-killed": train_killed,
              "resume": resume}[role](payload)
    print("RESULT " + json.dumps(result, default=str))
