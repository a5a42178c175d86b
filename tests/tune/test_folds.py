"""Cross-validation folds: every train+validation row validated exactly once, duplicates kept together,
labels balanced, the test split never read, the same ids on every run."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from sqlalchemy import func, select

from oikyo.data import versions
from oikyo.data.split import split_dataset
from oikyo.store import db
from oikyo.store.models import DatasetVersion
from oikyo.tune.folds import make_folds

SENTINEL = "SENTINEL-TEST-ROW"


def _import(tmp_path: Path, records: list[dict], name: str) -> DatasetVersion:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return versions.import_dataset(path, name=name).version


def _labelled(tmp_path: Path, name: str = "tickets") -> DatasetVersion:
    """A split classification set: labels a (40), b (20), c (10) plus 8 exact copies, and a test split
    whose rows all carry the sentinel word."""
    records, i = [], 0
    for label, n in (("a", 40), ("b", 20), ("c", 10)):
        for _ in range(n):
            records.append({"text": f"ticket {i} about topic {i * 7} and item {i * 13}", "label": label,
                            "split": "train" if i % 5 else "validation"})
            i += 1
    records += [dict(records[j], split="train") for j in range(0, 40, 5)]  # copies of validation rows
    records += [{"text": f"{SENTINEL} {j} secret words {j * 11}", "label": "a", "split": "test"} for j in range(6)]
    return _import(tmp_path, records, name)


def _text(row: dict) -> str:
    return row.get("text") or row["messages"][0]["content"]


def _count_versions() -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(DatasetVersion))


def test_every_train_and_validation_row_is_validated_exactly_once_and_test_never(tmp_path):
    parent = _labelled(tmp_path)
    assert parent.splits == {"train": 64, "validation": 14, "test": 6}
    folds = make_folds(parent.id, 4, seed=0)
    assert len(folds) == 4

    pool = Counter(_text(r) for split in ("train", "validation") for r in versions.iter_rows(parent, split=split))
    validated: Counter = Counter()
    for i, fold in enumerate(folds):
        rows = list(versions.iter_rows(fold))
        assert fold.rows == len(rows) == 78 and set(fold.splits) == {"train", "validation"}
        assert Counter(r["split"] for r in rows) == Counter(fold.splits)
        assert Counter(_text(r) for r in rows) == pool  # the same rows, only their split differs
        assert not any(SENTINEL in _text(r) for r in rows)
        validated.update(_text(r) for r in rows if r["split"] == "validation")
        assert fold.parent_id == parent.id
        expected = {"operation": "cv_fold", "parent": parent.id, "fold": i, "k": 4, "seed": 0, "stratified": True}
        assert fold.lineage.items() >= expected.items()
        assert fold.name == f"tickets.cv4-fold{i}" and fold.kind == parent.kind
    assert validated == pool


def test_folds_do_not_read_the_test_split(tmp_path, monkeypatch):
    parent = _labelled(tmp_path)
    from oikyo.data import schema

    seen = []
    real = schema.compact_row
    monkeypatch.setattr(schema, "compact_row", lambda row: seen.append(row.get("split")) or real(row))
    monkeypatch.setattr(versions, "iter_rows", None)  # no unfiltered row reader may be used
    make_folds(parent.id, 3)
    assert seen and set(seen) == {"train", "validation"}


def test_duplicates_stay_in_one_fold_and_labels_are_balanced(tmp_path):
    parent = _labelled(tmp_path)
    folds = make_folds(parent.id, 5, seed=2)
    # duplicates: in every fold a text is either all train or all validation
    for fold in folds:
        splits_of = defaultdict(set)
        for row in versions.iter_rows(fold):
            splits_of[_text(row)].add(row["split"])
        assert all(len(s) == 1 for s in splits_of.values())
    # strata: each label's validation rows are spread within one or two rows of even over the folds
    totals = Counter(r["label"] for r in versions.iter_rows(folds[0]))
    for fold in folds:
        labels = Counter(r["label"] for r in versions.iter_rows(fold, split="validation"))
        for label, total in totals.items():
            assert abs(labels[label] - total / 5) <= 2, (fold.name, label, labels)
        assert abs(fold.splits["validation"] - 78 / 5) <= 3


def test_prompt_duplicates_with_other_answers_stay_in_one_fold(tmp_path):
    records = [{"prompt": f"question number {i % 6} please", "completion": f"answer {i}"} for i in range(30)]
    version = _import(tmp_path, records, "qa")
    split, _ = split_dataset(version.id, validation=0.2, test=0.0, seed=0)
    folds = make_folds(split.id, 3)
    for fold in folds:
        splits_of = defaultdict(set)
        for row in versions.iter_rows(fold):
            splits_of[_text(row)].add(row["split"])
        assert len(splits_of) == 6 and all(len(s) == 1 for s in splits_of.values())
    with pytest.raises(versions.DataError, match="k=7 folds need at least 7 groups.*form 6"):
        make_folds(split.id, 7)


def test_the_same_ids_on_every_run_and_nothing_stored_twice(tmp_path):
    parent = _labelled(tmp_path)
    first = make_folds("tickets", 3, seed=1)
    stored = _count_versions()
    again = make_folds(parent.id, 3, seed=1)
    assert [f.id for f in again] == [f.id for f in first]
    assert _count_versions() == stored == 1 + 3
    other_seed = make_folds(parent.id, 3, seed=2)
    assert [f.id for f in other_seed] != [f.id for f in first]
    # the folds' names do not shadow the parent: its name still means the parent
    assert versions.resolve("tickets").id == parent.id


def test_clear_errors(tmp_path):
    parent = _labelled(tmp_path)
    with pytest.raises(versions.DataError, match="at least 2 folds"):
        make_folds(parent.id, 1)
    with pytest.raises(versions.DataError, match="no dataset version matches 'nope'"):
        make_folds("nope", 3)
    unsplit = _import(tmp_path, [{"text": f"plain row {i}"} for i in range(10)], "plain")
    with pytest.raises(versions.DataError, match=r"no train/validation splits.*`oikyo data split plain` first"):
        make_folds(unsplit.id, 3)
    with pytest.raises(versions.DataError, match="k=100 folds need at least 100 groups"):
        make_folds(parent.id, 100)
