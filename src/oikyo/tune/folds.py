"""Cross-validation folds of a split dataset version, for studies on small data (``oikyo tune --cv K``).

``make_folds("support", k=5, seed=0)`` returns k dataset versions. Fold i holds the parent's
train and validation rows only (the test split is never read: its rows are dropped inside the
Parquet batches, before they become Python rows), with the i-th part of them as its
``validation`` split and the other k-1 parts as its ``train`` split. Every train+validation row is
in exactly one fold's validation split.

Invariants, as for :func:`oikyo.data.split.split_dataset`:

- Leakage-free: rows that are exact or near duplicates of each other (the grouping of
  :func:`oikyo.data.split.group_rows`) form one group, and a group lands in one fold.
- Stratified: when rows have labels (classification labels, JSON labels, KTO's desirable flag)
  each label is spread evenly over the folds.
- Deterministic and immutable: fold versions are ordinary content-addressed dataset versions named
  ``<parent>.cv<k>-fold<i>`` with lineage ``{"operation": "cv_fold", "parent", "fold", "k", "seed",
  ...}``. The same parent, k and seed give the same ids; re-running stores nothing new.

Usage::

    from oikyo.tune.folds import make_folds
    for fold in make_folds("support", 5, seed=0):
        submit_training(None, dataset=fold.id)   # trains on fold.splits["train"], validates on the rest
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Iterator

from oikyo.data import versions
from oikyo.data.split import group_rows, groups_by_stratum
from oikyo.store import artifacts
from oikyo.store.models import DatasetVersion

POOL = ("train", "validation")  # the splits folds are built from; test stays out of model selection


def make_folds(dataset_ref: str, k: int, *, seed: int = 0) -> list[DatasetVersion]:
    """The k fold versions of ``dataset_ref`` (made once, found again on later calls); raises DataError."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise versions.DataError(f"cross-validation needs k of at least 2 folds (got {k!r})")
    parent = versions.resolve(dataset_ref)
    pooled = sum((parent.splits or {}).get(split, 0) for split in POOL)
    if not parent.splits or pooled == 0:
        raise versions.DataError(
            f"dataset {parent.name}@{parent.id} has no train/validation splits to fold; run "
            f"`oikyo data split {parent.name}` first and fold the split version")
    group_of, labels = group_rows(_pool_rows(parent), pooled)
    if len(group_of) != pooled:  # the recorded split counts must describe the file
        raise versions.DataError(f"dataset {parent.name}@{parent.id} records {pooled} train/validation rows "
                                 f"but its file holds {len(group_of)}")
    n_groups = len(set(group_of))
    if k > n_groups:
        raise versions.DataError(
            f"k={k} folds need at least {k} groups of distinct rows, but the train and validation rows of "
            f"{parent.name}@{parent.id} form {n_groups} (duplicates and near duplicates stay together); "
            f"use k of {n_groups} or fewer")
    stratified = any(label is not None for label in labels)
    fold_of = assign_folds(group_of, labels if stratified else [None] * len(labels), k, seed)
    lineage = {"operation": "cv_fold", "parent": parent.id, "k": k, "seed": seed, "stratified": stratified,
               "groups": n_groups, "source": (parent.lineage or {}).get("source")}
    return [_fold_version(parent, fold, group_of, fold_of, {**lineage, "fold": fold}) for fold in range(k)]


def _pool_rows(version: DatasetVersion) -> Iterator[dict]:
    """The version's train and validation rows in file order; test rows are filtered out in Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from oikyo.data.schema import compact_row

    parquet = pq.ParquetFile(versions.parquet_path(version))
    for batch in parquet.iter_batches(batch_size=4096):
        keep = pc.fill_null(pc.is_in(batch.column("split"), value_set=pa.array(POOL)), False)
        for row in batch.filter(keep).to_pylist():
            yield compact_row(row)


def assign_folds(group_of: list[int], strata: list[str | None], k: int, seed: int) -> dict[int, int]:
    """The fold of each group: per stratum, groups in seeded order (largest first) go to the fold
    holding the fewest rows of that stratum, ties to the fold with the fewest rows overall.

    Largest-first keeps folds even when some groups are big; every fold gets a group as long as there
    are at least k groups, because an empty fold always ties for fewest.
    """
    members, by_stratum = groups_by_stratum(group_of, strata)
    rng = random.Random(seed)
    totals = [0] * k
    fold_of: dict[int, int] = {}
    for stratum in sorted(by_stratum, key=lambda s: (s is None, str(s))):
        groups = by_stratum[stratum]
        rng.shuffle(groups)
        groups.sort(key=lambda g: -members[g])  # stable: equal sizes keep the seeded order
        in_stratum = [0] * k
        for g in groups:
            fold = min(range(k), key=lambda f: (in_stratum[f], totals[f], f))
            fold_of[g] = fold
            in_stratum[fold] += members[g]
            totals[fold] += members[g]
    return fold_of


def _fold_version(parent: DatasetVersion, fold: int, group_of: list[int], fold_of: dict[int, int],
                  lineage: dict) -> DatasetVersion:
    """Write (or find) the version of one fold: its groups as validation, the other folds' as train."""
    split_of = ["validation" if fold_of[g] == fold else "train" for g in group_of]

    def rows():
        for i, row in enumerate(_pool_rows(parent)):
            yield {**row, "split": split_of[i]}

    tmp = artifacts.temp_path(".parquet")
    try:
        count, content_hash = versions.write_parquet_rows(rows(), tmp)
        existing = versions.by_hash(content_hash)
        if existing is not None:
            return existing
        k = lineage["k"]
        name = f"{parent.name[:100 - len(f'.cv{k}-fold{fold}')]}.cv{k}-fold{fold}"
        return versions.store_version(tmp, content_hash, name=name, kind=parent.kind, fmt=parent.format,
                                      rows=count, lineage=lineage, parent_id=parent.id,
                                      splits=dict(Counter(split_of)))
    finally:
        tmp.unlink(missing_ok=True)
