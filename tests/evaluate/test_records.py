"""Stored evaluations on SQLite and PostgreSQL: ids and prefixes, groups, the leaderboard's ranking rules."""

from __future__ import annotations

import pytest

from oikyo.errors import OikyoError
from oikyo.evaluate import records
from oikyo.store.models import Evaluation, utcnow

from evalhelpers import make_json_dataset


def _ev(dataset, role: str, metrics: dict, *, group: str, mv: str | None = None, base: str = "base-model",
        split: str = "test", forced: bool = False, k: int | None = None) -> Evaluation:
    settings = {"few_shot": {"k": k}} if k else {}
    return Evaluation(id=records.new_id(), group_id=group, run_id=None, role=role, model_ref=mv or base,
                      model_version_id=mv, base_model=base, dataset_version_id=dataset.id, split=split, rows=10,
                      metrics=metrics, metric_versions={m: "1" for m in metrics}, generation={}, settings=settings,
                      forced_overlap=forced, artifact=records.write_examples([{"key": "k", "index": 0}]),
                      created_at=utcnow())


def test_records_groups_and_leaderboard(backend, tmp_path):
    from oikyo.store import db
    from oikyo.store.models import ModelVersion

    dataset = make_json_dataset(tmp_path)
    with db.session() as s:
        for mv in ("mv-000000a1", "mv-000000a2"):
            s.add(ModelVersion(id=mv, run_id=None, base_model="base-model", kind="adapter", path="/x", lineage={},
                               created_at=utcnow()))
    old = _ev(dataset, "model", {"accuracy": 0.99, "loss": 0.1}, group="g0", mv="mv-000000a1")
    first = [_ev(dataset, "model", {"accuracy": 0.7, "loss": 0.5}, group="g1", mv="mv-000000a1", forced=True),
             _ev(dataset, "base", {"accuracy": 0.3, "loss": 2.0}, group="g1"),
             _ev(dataset, "few_shot", {"accuracy": 0.5}, group="g1", k=3)]
    second = [_ev(dataset, "model", {"accuracy": 0.8, "loss": 0.4}, group="g2", mv="mv-000000a2")]
    records.save([old])
    records.save(first)
    records.save(second)

    assert [e.role for e in records.group(records.get(first[2].id))] == ["model", "base", "few_shot"]
    assert records.get(first[0].id[:6]).id == first[0].id
    board = records.leaderboard(dataset.name)
    assert board["metric"] == "accuracy" and board["higher_is_better"]
    # The newest evaluation of each system counts: mv-...a1's 0.99 was replaced by its forced 0.7.
    assert [(r["system"], r["value"]) for r in board["rows"]] == [
        ("mv-000000a2", 0.8), ("mv-000000a1", 0.7), ("base-model (3-shot)", 0.5), ("base-model", 0.3)]
    assert board["rows"][1]["forced_overlap"] is True
    by_loss = records.leaderboard(dataset.id, metric="loss")
    assert [r["value"] for r in by_loss["rows"]] == [0.4, 0.5, 2.0]  # lower first; few-shot has no loss
    with pytest.raises(OikyoError, match="no evaluation on this dataset has the metric"):
        records.leaderboard(dataset.id, metric="bleu")
    with pytest.raises(OikyoError, match="no evaluations on"):
        records.leaderboard(dataset.id, split="validation")
