"""Records for the browser tests, written straight to the store (not a test module).

``finished_run`` stores a succeeded run with a loss curve and its model version, as a worker would
have left them; ``evaluate`` stores an evaluation of a model version with per-example answers and
exact_match scores, as ``oikyo eval`` would have (the shape :mod:`oikyo.evaluate.compare` and
:mod:`oikyo.evaluate.human` read).
"""

from __future__ import annotations

import math
import secrets
from datetime import timedelta
from pathlib import Path

from oikyo.evaluate import records
from oikyo.store import db
from oikyo.store.models import Evaluation, Metric, ModelVersion, Run, utcnow


def finished_run(dataset, base_model: str, *, name: str, lr: float, steps: int = 60, decay: float = 3.0,
                 run_dir: Path) -> tuple[Run, ModelVersion]:
    """A succeeded run on ``dataset`` with loss (every step) and eval_loss (every 10) and its adapter version."""
    run_id, mv_id = f"run-{secrets.token_hex(4)}", f"mv-{secrets.token_hex(4)}"
    config = {"model": {"name": base_model}, "data": {"dataset": dataset.id, "train_split": "train"},
              "method": {"name": "sft", "finetune": "lora"}, "train": {"lr": lr, "max_steps": steps, "seed": 0}}
    started = utcnow() - timedelta(minutes=5)
    folder = run_dir / run_id
    (folder / "output").mkdir(parents=True)
    run = Run(id=run_id, name=name, state="succeeded", kind="train", config=config, config_hash=secrets.token_hex(32),
              dataset_version_id=dataset.id, base_model=base_model, seed=0, run_dir=str(folder),
              created_at=started, started_at=started, finished_at=started + timedelta(minutes=3))
    mv = ModelVersion(id=mv_id, run_id=run_id, base_model=base_model, kind="adapter", path=str(folder / "output"),
                      lineage={"run_id": run_id, "dataset_version": dataset.id, "dataset_hash": dataset.content_hash,
                               "config": config, "base_model": base_model}, created_at=started + timedelta(minutes=3))
    points = []
    for step in range(1, steps + 1):
        points.append(Metric(run_id=run_id, step=step, name="loss", value=2.0 * math.exp(-decay * step / steps) + 0.1))
        points.append(Metric(run_id=run_id, step=step, name="lr", value=lr * (1 - step / steps)))
        if step % 10 == 0:
            points.append(Metric(run_id=run_id, step=step, name="eval_loss", value=2.1 * math.exp(-decay * step / steps) + 0.2))
    with db.session() as s:
        s.add(run)
        s.flush()
        s.add(mv)
        s.add_all(points)
    return run, mv


def evaluate(dataset, mv: ModelVersion, answers: list[str], references: list[str], *, split: str = "test") -> Evaluation:
    """A stored evaluation of ``mv`` on ``dataset``: one answer per reference, scored by exact match."""
    rows = []
    for i, (answer, reference) in enumerate(zip(answers, references)):
        score = float(answer.strip() == reference.strip())
        rows.append({"index": i, "key": f"key{i:03d}", "question": f"Question {i}: what is {i} plus {i}?",
                     "reference": reference, "prediction": answer, "scores": {"exact_match": score},
                     "stats": {"exact_match": [score]}})
    value = sum(r["scores"]["exact_match"] for r in rows) / len(rows)
    ev = Evaluation(id=records.new_id(), group_id=f"g-{secrets.token_hex(4)}", run_id=None, role="model",
                    model_ref=mv.id, model_version_id=mv.id, base_model=mv.base_model, dataset_version_id=dataset.id,
                    split=split, rows=len(rows), metrics={"exact_match": value}, metric_versions={"exact_match": "1"},
                    generation={"max_new_tokens": 16}, settings={}, forced_overlap=False,
                    artifact=records.write_examples(rows), created_at=utcnow())
    records.save([ev])
    return ev


def two_evaluated_runs(dataset, base_model: str, run_dir: Path, n: int = 12):
    """Two finished runs (lr 2e-4 and 1e-3) whose model versions were evaluated on the same ``n`` prompts:
    A is right on 10 of 12 answers, B on 4."""
    references = [str(2 * i) for i in range(n)]
    run_a, mv_a = finished_run(dataset, base_model, name="lora-lr2e-4", lr=2e-4, run_dir=run_dir)
    run_b, mv_b = finished_run(dataset, base_model, name="lora-lr1e-3", lr=1e-3, decay=1.5, run_dir=run_dir)
    evaluate(dataset, mv_a, [r if i % 6 else "no idea" for i, r in enumerate(references)], references)
    evaluate(dataset, mv_b, [r if i % 3 == 0 else f"{r}0" for i, r in enumerate(references)], references)
    return (run_a, mv_a), (run_b, mv_b)
