"""Stored evaluations made by hand for the API tests (evaluations, compare, leaderboard, ratings); not a test module.

Each evaluation gets per-example rows like the runner writes (key, question, prediction, scores and
sufficient statistics), so compare can pair and bootstrap them and rating sessions can pair answers.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluate"))

from evalhelpers import make_json_dataset  # noqa: E402,F401  (re-exported for the tests)

from oikyo.evaluate import records  # noqa: E402
from oikyo.store import db  # noqa: E402
from oikyo.store.models import Evaluation, ModelVersion, utcnow  # noqa: E402

KEYS = [f"key{i:02d}" for i in range(20)]


def add_model_version(mv_id: str, lr: float = 2e-4) -> str:
    with db.session() as s:
        s.add(ModelVersion(id=mv_id, run_id=None, base_model="base-model", kind="adapter", path="/nowhere",
                           lineage={"config": {"train": {"lr": lr}}}, created_at=utcnow()))
    return mv_id


def seed_evaluation(dataset, mv_id: str, correct: int, *, split: str = "test", keys: list[str] = KEYS) -> Evaluation:
    """Model version ``mv_id`` evaluated on ``keys``: the first ``correct`` answers are right (exact_match 1)."""
    rows = []
    for i, key in enumerate(keys):
        score = 1.0 if i < correct else 0.0
        rows.append({"index": i, "key": key, "question": f"Question {key}?", "reference": f"answer {key}",
                     "prediction": f"answer {key}" if score else f"{mv_id} guesses {key}",
                     "scores": {"exact_match": score}, "stats": {"exact_match": [score]}})
    ev = Evaluation(id=records.new_id(), group_id=f"g-{mv_id}-{split}", run_id=None, role="model", model_ref=mv_id,
                    model_version_id=mv_id, base_model="base-model", dataset_version_id=dataset.id, split=split,
                    rows=len(rows), metrics={"exact_match": correct / len(keys)},
                    metric_versions={"exact_match": "1"}, generation={"max_new_tokens": 8}, settings={},
                    forced_overlap=False, artifact=records.write_examples(rows), created_at=utcnow())
    records.save([ev])
    return ev
