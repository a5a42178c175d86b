"""One "machine" of tests/store/test_s3_store.py, run as its own process: ``python two_machines.py ROLE ARGS_JSON``.

The environment gives it its own workspace (OIKYO_HOME) and the shared PostgreSQL database and S3
store; it prints one JSON line with what it made or saw.

- ``train``: imports and splits a dataset, trains a tiny adapter through the job system (queue + worker).
- ``evaluate``: evaluates that model version through the job system and loads it as the gateway would,
  with nothing of the first machine's workspace.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TRAIN = ("train.num_threads=1", "train.max_steps=3", "train.batch_size=4", "data.max_length=64",
         "checkpoint.save_every=3", "train.eval_every=3", "checkpoint.keep_best=1", "train.lr=1e-2")


def train(args: dict) -> dict:
    from oikyo.data import split, versions
    from oikyo.jobs import model_versions, queue, training
    from oikyo.jobs.worker import Worker

    rows = [{"messages": [{"role": "user", "content": f"Name thing {i}."},
                          {"role": "assistant", "content": f"alpha {i % 3}"}]} for i in range(30)]
    path = Path(args["tmp"]) / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    versions.import_dataset(path, name="items")
    dataset, _ = split.split_dataset("items", validation=0.2, test=0.2, seed=0)
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
    from oikyo.serve.gateway import served_models

    mv = model_versions.get(args["model_version"])
    assert not Path(mv.path).exists(), "the first machine's workspace must be out of reach"
    job = jobs.submit_evaluation(EvalSpec(model=mv.id, max_new_tokens=4, baselines=False, probe=False))
    Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.1).run(once=True)
    done = queue.get(job.id)
    assert done.state == "succeeded", done.error
    [evaluation] = records.list_evaluations(group_id=job.id, limit=None)
    examples = records.read_examples(evaluation)  # the per-example outputs, a blob in the shared store
    spec = served_models.resolve(mv.id)
    return {"evaluation": evaluation.id, "metrics": evaluation.metrics, "eval_artifact": evaluation.artifact,
            "examples": len(examples), "predictions": [e.get("prediction") for e in examples][:3],
            "adapter_dir": spec.adapter_dir, "load_dir": spec.load_dir,
            "dataset_file": str(versions.parquet_path(versions.resolve(args["dataset"])))}


if __name__ == "__main__":
    role, payload = sys.argv[1], json.loads(sys.argv[2])
    result = {"train": train, "evaluate": evaluate}[role](payload)
    print("RESULT " + json.dumps(result, default=str))
