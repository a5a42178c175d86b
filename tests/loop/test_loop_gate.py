"""The loop's gate on stored evaluations: the challenger against the champion by a paired bootstrap CI of
the gate metric (better / not_worse with a margin), and the forgetting bound."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluate"))

from evalhelpers import make_json_dataset  # noqa: E402

from oikyo.evaluate import records  # noqa: E402
from oikyo.loop.controller import gate  # noqa: E402
from oikyo.loop.policy import parse  # noqa: E402
from oikyo.store.models import Evaluation, utcnow  # noqa: E402

KEYS = [f"key{i:02d}" for i in range(40)]


def _evaluation(dataset, job: str, correct: set[int], forgetting: float | None = None) -> None:
    rows = [{"index": i, "key": key, "question": f"Q {key}?", "reference": "a", "prediction": "a" if i in correct else "b",
             "scores": {"exact_match": float(i in correct)}, "stats": {"exact_match": [float(i in correct)]}}
            for i, key in enumerate(KEYS)]
    records.save([Evaluation(id=records.new_id(), group_id=job, run_id=None, role="model", model_ref=job,
                             model_version_id=None, base_model="base", dataset_version_id=dataset.id, split="validation",
                             rows=len(rows), metrics={"exact_match": len(correct) / len(KEYS)},
                             metric_versions={"exact_match": "1"}, generation={}, settings={},
                             forgetting=None if forgetting is None else {"forgetting": forgetting},
                             forced_overlap=False, artifact=records.write_examples(rows), created_at=utcnow())])


def _policy(**gate_changes):
    return parse({"deployment": "bot", "triggers": {"drift": True}, "train": {"config": {}},
                  "gate": {"dataset": "items", "metric": "exact_match", **gate_changes}})


def test_the_gate_compares_with_the_champion_and_checks_forgetting(tmp_path):
    dataset = make_json_dataset(tmp_path)
    _evaluation(dataset, "champion", set(range(20)))                          # 0.50
    _evaluation(dataset, "better", set(range(36)), forgetting=0.01)           # 0.90: clearly better
    _evaluation(dataset, "same", set(range(1, 21)), forgetting=0.01)          # 0.50: one example differs each way
    _evaluation(dataset, "worse", set(range(8)), forgetting=0.01)             # 0.20
    _evaluation(dataset, "forgetful", set(range(36)), forgetting=0.3)

    outcome = gate(_policy(require="better"), "better", "champion")
    assert outcome["passed"], outcome
    assert outcome["gain"] == 0.4 and outcome["gain_low"] > 0 and outcome["paired_examples"] == 40
    assert "forgetting 0.01" in outcome["reason"]

    same = gate(_policy(require="better"), "same", "champion")
    assert not same["passed"] and "not significantly better" in same["reason"]
    assert gate(_policy(require="not_worse", margin=0.1), "same", "champion")["passed"]

    worse = gate(_policy(require="not_worse", margin=0.02), "worse", "champion")
    assert not worse["passed"] and "possibly worse" in worse["reason"]

    forgetful = gate(_policy(require="better", forgetting_max=0.05), "forgetful", "champion")
    assert not forgetful["passed"] and "forgetting 0.3 above 0.05" in forgetful["reason"]
    assert gate(_policy(require="better", forgetting_max=None), "forgetful", "champion")["passed"]

    missing = gate(_policy(), "no-such-job", "champion")
    assert not missing["passed"] and "left no record" in missing["reason"]
