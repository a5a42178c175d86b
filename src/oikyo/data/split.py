"""Deterministic, leakage-free train/validation/test splits.

``split_dataset("support", validation=0.1, test=0.1, seed=0)`` makes a new immutable version whose
rows carry a ``split`` column; the parent version is untouched. The same seed always gives the same
split. Rows that are duplicates of each other (same normalized text, the same prompt with another
answer, or near duplicates by MinHash) form one group, and a group always lands in one split, so no example leaks from training
into evaluation through a copy. When rows have labels the split is stratified: each label keeps
roughly the same share in every split.

Two passes over the Parquet file: the first computes each row's group and label (a few integers
per row), the second writes the rows with their split, so memory stays small for large datasets.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter, defaultdict
from typing import Iterable

from oikyo.data import overlap, versions
from oikyo.data.leakage import LEAK_SHARE, NGRAM
from oikyo.data.quality import leakage_text, overlap_text
from oikyo.data.schema import ASSISTANT_ROLES
from oikyo.store import artifacts
from oikyo.store.models import DatasetVersion

_SPACE = re.compile(r"\s+")


def _norm_hash(text: str) -> int:
    normalized = _SPACE.sub(" ", text.lower()).strip()
    return int.from_bytes(hashlib.blake2b(normalized.encode(), digest_size=8).digest(), "little")


def _keys(row: dict) -> tuple[int, int | None]:
    """(hash of the whole example, hash of its prompt) after normalizing case and whitespace."""
    if "text" in row:
        return _norm_hash(row["text"]), None
    messages = row.get("messages") or []
    prompt = "\n".join(m["content"] for m in messages if m["role"] not in ASSISTANT_ROLES)
    answer = "\n".join(m["content"] for m in messages if m["role"] in ASSISTANT_ROLES)
    answer += "\n" + (row.get("chosen") or "") + "\n" + (row.get("rejected") or "")
    return _norm_hash(prompt + "\n\x00" + answer), (_norm_hash(prompt) if prompt.strip() else None)


class _Groups:
    """Union-find over row indices: rows that share a key end up in one group."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _group_rows(version: DatasetVersion) -> tuple[list[int], list[str | None]]:
    """Each row's group id and label, from one streaming pass over the version (see :func:`group_rows`)."""
    return group_rows(versions.iter_rows(version), version.rows)


def row_label(row: dict) -> str | None:
    """The stratum of a row: its label, or desirable/undesirable for KTO rows, else None."""
    # KTO rows stratify by their flag, so each split keeps the desirable/undesirable balance.
    flag = row.get("desirable")
    return row.get("label") if flag is None else ("desirable" if flag else "undesirable")


def group_rows(rows: Iterable[dict], n: int) -> tuple[list[int], list[str | None]]:
    """Each of ``n`` rows' group id (the smallest row index in its group) and label, from one pass.

    Rows join a group when they share a normalized text or prompt, when MinHash finds them near
    duplicates, or when one row's prompt holds half of another's word 8-grams: the measures the
    quality report uses, so it finds no duplicates straddling the splits this makes. Public for
    other leakage-free partitions (oikyo.tune.folds).
    """
    first_seen: dict[int, int] = {}
    labels: list[str | None] = []
    groups = _Groups(n)
    near = overlap.NearDuplicates()
    contained = overlap.Containment(LEAK_SHARE)
    for i, row in enumerate(rows):
        labels.append(row_label(row))
        for key in _keys(row):
            if key is None:
                continue
            j = first_seen.setdefault(key, i)
            if j != i:
                groups.union(i, j)
        near.add(i, overlap.word_hashes(overlap.normalize(overlap_text(row))))
        contained.add(i, overlap.ngram_hashes(overlap.word_hashes(overlap.normalize(leakage_text(row))), NGRAM))
    for earlier, later, *_ in (*zip(*near.pairs()), *zip(*contained.pairs())):
        groups.union(int(earlier), int(later))
    return [groups.find(i) for i in range(len(labels))], labels


def _targets(n: int, validation: float, test: float) -> dict[str, int]:
    counts = {"test": round(n * test), "validation": round(n * validation)}
    # A requested split never ends up empty on a small dataset (as long as train keeps rows).
    for split, share in (("test", test), ("validation", validation)):
        if share > 0 and counts[split] == 0 and n - sum(counts.values()) > 1:
            counts[split] = 1
    return counts


def groups_by_stratum(group_of: list[int], strata: list[str | None]) -> tuple[Counter, dict[str | None, list[int]]]:
    """(rows per group, the groups of each stratum in id order); a group's stratum is its first row's label."""
    members: Counter = Counter(group_of)
    group_stratum: dict[int, str | None] = {}
    for g, label in zip(group_of, strata):
        group_stratum.setdefault(g, label)
    by_stratum: dict[str | None, list[int]] = defaultdict(list)
    for g in sorted(members):
        by_stratum[group_stratum[g]].append(g)
    return members, by_stratum


def _assign(group_of: list[int], strata: list[str | None], validation: float, test: float,
            seed: int) -> dict[int, str]:
    """Split of each group: groups shuffled by seed, then test and validation filled to their share."""
    members, by_stratum = groups_by_stratum(group_of, strata)
    rng = random.Random(seed)
    assignment: dict[int, str] = {}
    for stratum in sorted(by_stratum, key=lambda s: (s is None, str(s))):
        stratum_groups = by_stratum[stratum]
        rng.shuffle(stratum_groups)
        size = sum(members[g] for g in stratum_groups)
        targets = _targets(size, validation, test)
        filled = {"test": 0, "validation": 0}
        for g in stratum_groups:
            split = "train"
            for candidate in ("test", "validation"):
                if filled[candidate] + members[g] <= targets[candidate] or filled[candidate] == 0 < targets[candidate]:
                    split = candidate
                    break
            if split != "train":
                filled[split] += members[g]
            assignment[g] = split
    return assignment


def split_dataset(ref: str, *, validation: float = 0.1, test: float = 0.1, seed: int = 0,
                  stratify: str = "auto") -> tuple[DatasetVersion, bool]:
    """Make (or find) the split version of ``ref``; returns (version, existed)."""
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise versions.DataError("--validation and --test must be fractions in [0, 1) that sum to less than 1")
    if stratify not in ("auto", "yes", "no"):
        raise versions.DataError("--stratify must be auto, yes or no")
    parent = versions.resolve(ref)
    if parent.rows < 3:
        raise versions.DataError(f"{parent.name}@{parent.id} has {parent.rows} rows; a split needs at least 3")
    group_of, labels = _group_rows(parent)
    has_labels = any(label is not None for label in labels)
    if stratify == "yes" and not has_labels:
        raise versions.DataError("--stratify yes needs labelled (classification) rows; this dataset has none")
    stratified = has_labels and stratify != "no"
    assignment = _assign(group_of, labels if stratified else [None] * len(labels), validation, test, seed)

    def rows_with_split():
        for i, row in enumerate(versions.iter_rows(parent)):
            yield {**row, "split": assignment[group_of[i]]}

    tmp = artifacts.temp_path(".parquet")
    try:
        count, content_hash = versions.write_parquet_rows(rows_with_split(), tmp)
        existing = versions.by_hash(content_hash)
        if existing is not None:
            return existing, True
        splits = dict(Counter(assignment[g] for g in group_of))
        lineage = {"operation": "split", "parent": parent.id, "seed": seed, "validation": validation,
                   "test": test, "stratified": stratified, "groups": len(set(group_of)),
                   "source": parent.lineage.get("source")}
        version = versions.store_version(tmp, content_hash, name=parent.name, kind=parent.kind, fmt=parent.format,
                                  rows=count, lineage=lineage, parent_id=parent.id, splits=splits,
                                  eval_set=parent.is_eval_set)
        return version, False
    finally:
        tmp.unlink(missing_ok=True)
