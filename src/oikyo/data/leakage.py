"""Leakage checks: held-out rows that also occur in train, and evaluation examples in the dataset.

An example *leaks* when its normalized text equals a text on the other side (``exact``), or when
at least :data:`LEAK_SHARE` of its word :data:`NGRAM`-grams occur anywhere on the other side
(``ngram``: the overlap measure most contamination studies use). The side being checked is the
one a score is reported on: validation/test rows are checked against train rows, and each
evaluation set's examples are checked against all the dataset's rows.

Both classes take rows one at a time from the report's single pass (see
:mod:`oikyo.data.quality`); rows arrive in any order, so train n-grams are kept as a sorted hash
array (:class:`~oikyo.data.overlap.HashSet`) and held-out rows' n-grams until the end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

import numpy as np

from oikyo.data.overlap import (
    MAX_EXAMPLES,
    HashSet,
    ngram_hashes,
    normalize,
    sorted_contains,
    text_hash,
    word_hashes,
)

NGRAM = 8
LEAK_SHARE = 0.5


def _new_entry(rows: int = 0) -> dict:
    return {"rows": rows, "exact": 0, "ngram": 0, "leaked": 0, "share": 0.0, "examples": []}


def _count(entry: dict, exact: bool, share: float, example: dict) -> None:
    if not (exact or share >= LEAK_SHARE):
        return
    entry["exact" if exact else "ngram"] += 1
    entry["leaked"] += 1
    if len(entry["examples"]) < MAX_EXAMPLES:
        entry["examples"].append(example)


class SplitLeakage:
    """Validation/test rows that also occur in the train split."""

    def __init__(self) -> None:
        self.rows_by_split: Counter[str] = Counter()
        self._train_exact: dict[int, int] = {}  # text hash -> first train row
        self._train_grams = HashSet()
        self._held: list[tuple[int, str, int, np.ndarray]] = []

    def add(self, index: int, split: str | None, h: int, grams: np.ndarray) -> None:
        if split is None:
            return
        self.rows_by_split[split] += 1
        if split == "train":
            self._train_exact.setdefault(h, index)
            self._train_grams.add(grams)
        else:
            self._held.append((index, split, h, np.unique(grams)))  # share counts distinct n-grams

    def result(self) -> dict | None:
        """None when no row has a split; else per held-out split: rows, exact, ngram, leaked."""
        if not self.rows_by_split:
            return None
        checked: dict[str, dict] = {}
        has_train = bool(self.rows_by_split.get("train"))
        for index, split, h, grams in self._held:
            entry = checked.setdefault(split, _new_entry())
            entry["rows"] += 1
            if not has_train:
                continue
            train_row = self._train_exact.get(h)
            share = float(self._train_grams.contains(grams).mean()) if grams.size else 0.0
            example = {"row": index, "train_row": train_row, "share": round(share, 3)}
            _count(entry, train_row is not None, share, example)
        for entry in checked.values():
            entry["share"] = round(entry["leaked"] / entry["rows"], 4) if entry["rows"] else 0.0
        return {"rows_by_split": dict(sorted(self.rows_by_split.items())), "checked": checked}


class EvalLeakage:
    """The examples of one evaluation set that occur in the dataset being reported on.

    The evaluation set is read whole when the object is made (such sets are small): its exact
    hashes, and each example's n-grams as positions into one sorted array of distinct n-grams.
    Each dataset row then marks the n-grams it contains with its index (the first row to hit
    an n-gram wins), so the dataset's own n-grams are never stored.
    """

    def __init__(self, name: str, rows: Iterable[dict], text_of: Callable[[dict], str]) -> None:
        self.name = name
        self._hashes: list[int] = []  # text hash of each eval example
        grams: list[np.ndarray] = []
        for row in rows:
            norm = normalize(text_of(row))
            self._hashes.append(text_hash(norm))
            grams.append(np.unique(ngram_hashes(word_hashes(norm), NGRAM)))
        self._hash_set = set(self._hashes)
        self.size = len(grams)
        self._unique = np.unique(np.concatenate(grams)) if grams else np.zeros(0, np.uint64)
        self._positions = [np.searchsorted(self._unique, g) for g in grams]
        self._first_hit = np.full(self._unique.size, -1, dtype=np.int64)  # n-gram -> dataset row
        self._exact_hits: dict[int, int] = {}  # eval text hash -> first dataset row with that text
        self.rows_matching = 0

    def add(self, index: int, h: int, grams: np.ndarray) -> None:
        if h in self._hash_set:
            self.rows_matching += 1
            self._exact_hits.setdefault(h, index)
        if grams.size == 0:
            return
        hit = sorted_contains(self._unique, grams)
        if hit.any():
            pos = np.searchsorted(self._unique, grams[hit])
            pos = pos[self._first_hit[pos] < 0]
            self._first_hit[pos] = index

    def result(self) -> dict:
        """rows (eval examples), exact, ngram, leaked, share, examples and rows_matching."""
        entry = _new_entry(self.size)
        for j, positions in enumerate(self._positions):
            hits = self._first_hit[positions]
            found = hits[hits >= 0]
            share = found.size / hits.size if hits.size else 0.0
            row = self._exact_hits.get(self._hashes[j])
            exact = row is not None
            if not exact and found.size:
                row = Counter(found.tolist()).most_common(1)[0][0]
            example = {"eval_row": j, "row": row, "share": round(share, 3)}
            _count(entry, exact, share, example)
        entry["share"] = round(entry["leaked"] / self.size, 4) if self.size else 0.0
        # Dataset rows equal to some eval example (the reverse direction, exact only).
        entry["rows_matching"] = self.rows_matching
        return entry
