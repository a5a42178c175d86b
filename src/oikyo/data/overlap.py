"""Exact duplicates, near duplicates and n-gram overlap (leakage) between texts, in one pass.

The dataset quality report (:mod:`oikyo.data.quality`) feeds every row through these classes as
it streams. Each keeps only what its measure needs: an 8-byte hash per distinct row (exact
duplicates), a 128-value MinHash signature per row (near duplicates: datasketch MinHash, LSH
banding over the signature matrix), and arrays of 64-bit word n-gram hashes (leakage)::

    norm = normalize(text)
    words = word_hashes(norm)                      # one uint64 per word
    dupes.add(index, text_hash(norm))
    near.add(index, words)                         # word 5-gram shingles, Jaccard >= 0.8
    near.result()                                  # after the last row

Hashes are deterministic (CRC-32 per word, a fixed polynomial per n-gram, BLAKE2b per text), so
the same data always gives the same report, in any process.

A "word" is a run of word characters, except in scripts written without spaces between words
(Chinese, Japanese, Thai ...: :data:`NO_SPACE_RANGES`), where each character is a word of its own;
otherwise a whole Chinese sentence would be one word, and texts that differ by one character would
share no n-gram at all.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from array import array

import numpy as np
from datasketch import MinHash, MinHashLSH

# Scripts written without spaces between words (Unicode blocks): Han (CJK ideographs and their
# extensions), Japanese kana, Bopomofo, CJK and fullwidth punctuation, Thai, Lao, Tibetan, Myanmar,
# Khmer, Tai Le/Tham, New Tai Lue, Balinese, Javanese, Yi. Hangul is not here: Korean puts spaces
# between words.
NO_SPACE_RANGES = (
    "\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u1950-\u19ff\u1a20-\u1aaf\u1b00-\u1b7f"
    "\u3001-\u303f\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua000-\ua4cf"
    "\ua980-\ua9ff\uaa60-\uaa7f\uf900-\ufaff\uff01-\uff65\uff66-\uff9f\U00020000-\U0003134f"
)
# One word character of those scripts, or a run of other word characters.
_WORD = re.compile(f"(?=\\w)[{NO_SPACE_RANGES}]|[^\\W{NO_SPACE_RANGES}]+")
_ASCII_WORD = re.compile(r"\w+")  # _WORD on ASCII text, ~1.4x faster
_EMPTY = np.zeros(0, dtype=np.uint64)
_PRIME = np.uint64(1099511628211)  # FNV-64 prime: spreads word order into the n-gram hash
MAX_EXAMPLES = 5  # example indices kept per finding: enough to look at, small in JSON


def normalize(text: str) -> str:
    """Lowercase with runs of whitespace collapsed to one space: the text compared for duplicates."""
    return " ".join(text.lower().split())


def text_hash(normalized: str) -> int:
    """A stable 64-bit hash of a whole (normalized) text."""
    return int.from_bytes(hashlib.blake2b(normalized.encode(), digest_size=8).digest(), "little")


def word_hashes(normalized: str) -> np.ndarray:
    """One uint64 per word (``\\w+``, so punctuation does not split near duplicates apart)."""
    words = (_ASCII_WORD if normalized.isascii() else _WORD).findall(normalized)  # the same words for ASCII
    return np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words))


def ngram_hashes(words: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every run of ``n`` consecutive words; ``(len(words) - n + 1,)``.

    A text shorter than ``n`` words gives one hash of all its words, so short texts still
    compare (they then match only a text with exactly the same words).
    """
    if words.size == 0:
        return _EMPTY
    n = min(n, words.size)
    m = words.size - n + 1
    h = np.zeros(m, dtype=np.uint64)
    for k in range(n):
        h = h * _PRIME + words[k : k + m]  # uint64 arithmetic wraps, as a hash should
    return _fmix64(h)


def _fmix64(h: np.ndarray) -> np.ndarray:
    # MurmurHash3's finalizer: nearby inputs land far apart, so the low/high bits are all usable.
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


class ExactDuplicates:
    """Counts rows whose normalized text equals an earlier row's."""

    def __init__(self) -> None:
        self.first: dict[int, int] = {}  # text hash -> index of the first row with that text
        self.count = 0
        self.examples: list[list[int]] = []

    def add(self, index: int, h: int) -> bool:
        """Record row ``index``; True when it duplicates an earlier row."""
        first = self.first.setdefault(h, index)
        if first == index:
            return False
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append([first, index])
        return True


def _identity(value: int) -> int:
    return value


class NearDuplicates:
    """Counts rows whose word-shingle set is nearly the same as an earlier row's.

    Each row gets a datasketch MinHash signature over its word ``shingle``-grams. Candidate pairs
    come from LSH banding with datasketch's choice of bands for ``threshold`` (``b`` bands of
    ``r`` values: rows agreeing on a whole band are candidates); a candidate counts when the
    signatures agree on at least ``threshold`` of their values (the Jaccard estimate).

    The banding runs once in :meth:`result` over all signatures as one numpy matrix, rather than
    through ``MinHashLSH.insert``: its per-band Python sets cost ~2 KB a row (200 MB at 100,000
    rows), the matrix 4 bytes per permutation. Within a band bucket each row is compared with the
    ``neighbours`` rows just before it, so a bucket of thousands of look-alikes stays linear.
    """

    _CHUNK = 4096

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, shingle: int = 5,
                 neighbours: int = 8) -> None:
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle = shingle
        self.neighbours = neighbours
        # Candidates are checked against the signatures afterwards, so weigh missed pairs 9x more
        # than false candidates: at 128 permutations that is 14 bands of 9, finding 87% of pairs
        # at Jaccard 0.8 and 97% at 0.85 (equal weights: 40% and 69%).
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
        self.bands, self.band_size = lsh.b, lsh.r
        # Drawing the permutations is the slow part of MinHash(); draw them once and share them.
        self._perms = MinHash(num_perm=num_perm, seed=1).permutations
        self._chunks: list[np.ndarray] = []  # (CHUNK, num_perm) uint32 signatures, filled in order
        self._rows = array("q")  # the row index of each signature

    def add(self, index: int, words: np.ndarray) -> None:
        """Record row ``index`` (``words`` from :func:`word_hashes`)."""
        shingles = ngram_hashes(words, self.shingle)
        if shingles.size == 0:
            return
        m = MinHash(self.num_perm, hashfunc=_identity, permutations=self._perms, scheme="affine32")
        # The scheme hashes 32-bit values: keep the (well mixed) high half of each shingle hash.
        m.update_batch((shingles >> np.uint64(32)).tolist())
        slot = len(self._rows) % self._CHUNK
        if slot == 0:
            self._chunks.append(np.empty((self._CHUNK, self.num_perm), dtype=np.uint32))
        self._chunks[-1][slot] = m.hashvalues
        self._rows.append(index)

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every row nearly duplicating an earlier one: (earlier rows, later rows, similarity)."""
        n = len(self._rows)
        sigs = np.concatenate(self._chunks)[:n] if n else np.zeros((0, self.num_perm), np.uint32)
        best = np.zeros(n)
        partner = np.full(n, -1, dtype=np.int64)
        for band in range(self.bands):
            keys = _band_keys(sigs[:, band * self.band_size : (band + 1) * self.band_size])
            order = np.argsort(keys, kind="stable")  # stable: earlier rows first within a bucket
            keys = keys[order]
            for d in range(1, self.neighbours + 1):
                same = keys[d:] == keys[:-d]
                later, earlier = order[d:][same], order[:-d][same]
                similarity = np.count_nonzero(sigs[later] == sigs[earlier], axis=1) / self.num_perm
                better = similarity > best[later]
                best[later[better]] = similarity[better]
                partner[later[better]] = earlier[better]
        found = np.flatnonzero(best >= self.threshold)
        rows = np.frombuffer(self._rows, dtype=np.int64) if n else np.zeros(0, np.int64)
        return rows[partner[found]], rows[found], best[found]

    def result(self) -> dict:
        """count (rows nearly duplicating an earlier row) and examples ``[earlier, later, similarity]``."""
        earlier, later, similarity = self.pairs()
        examples = [[int(e), int(l), round(float(s), 3)]
                    for e, l, s in zip(earlier[:MAX_EXAMPLES], later[:MAX_EXAMPLES], similarity[:MAX_EXAMPLES])]
        return {"count": int(later.size), "examples": examples}


def _band_keys(band: np.ndarray) -> np.ndarray:
    """One uint64 per row from a ``(rows, r)`` slice of signatures (equal bands, equal keys)."""
    h = np.zeros(band.shape[0], dtype=np.uint64)
    for col in band.T:
        h = (h ^ col.astype(np.uint64)) * _PRIME
    return h


class HashSet:
    """A growing set of uint64 hashes, kept as sorted arrays (far smaller than a Python set)."""

    _COMPACT_AT = 4_000_000  # pending hashes before merging (about 32 MB)

    def __init__(self) -> None:
        self._sorted = _EMPTY
        self._pending: list[np.ndarray] = []
        self._pending_size = 0

    def add(self, hashes: np.ndarray) -> None:
        self._pending.append(hashes)
        self._pending_size += hashes.size
        if self._pending_size >= self._COMPACT_AT:
            self._compact()

    def _compact(self) -> None:
        if self._pending:
            # Sort in place and drop repeats: np.unique would hold two more copies at its peak.
            merged = np.concatenate([self._sorted, *self._pending])
            self._pending, self._pending_size = [], 0
            merged.sort()
            keep = np.empty(merged.size, dtype=bool)
            keep[:1] = True
            np.not_equal(merged[1:], merged[:-1], out=keep[1:])
            self._sorted = merged[keep]

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """A boolean array: which of ``hashes`` are in the set."""
        self._compact()
        return sorted_contains(self._sorted, hashes)


def sorted_contains(sorted_hashes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Membership of ``hashes`` in the sorted array ``sorted_hashes`` (one binary search each)."""
    if sorted_hashes.size == 0 or hashes.size == 0:
        return np.zeros(hashes.size, dtype=bool)
    pos = np.searchsorted(sorted_hashes, hashes)
    pos[pos == sorted_hashes.size] = 0
    return sorted_hashes[pos] == hashes


class Containment:
    """Pairs (earlier row, later row) where the earlier row holds ``min_share`` of the later row's n-grams.

    The split uses it to keep template siblings (texts that differ in a name or a number) in one
    split, so the report's leakage check, which asks the same question of held-out rows against
    train, finds nothing in a fresh split. Memory is 12 bytes per n-gram (hash + row); all the work
    is one sort, in numpy.
    """

    def __init__(self, min_share: float = 0.5) -> None:
        self.min_share = min_share
        self._grams: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._sizes: dict[int, int] = {}

    def add(self, index: int, grams: np.ndarray) -> None:
        grams = np.unique(grams)
        if grams.size:
            self._grams.append(grams)
            self._rows.append(np.full(grams.size, index, dtype=np.int64))
            self._sizes[index] = grams.size

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._grams:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        grams, rows = np.concatenate(self._grams), np.concatenate(self._rows)
        order = np.lexsort((rows, grams))  # by n-gram, then row: each n-gram's first row leads
        grams, rows = grams[order], rows[order]
        starts = np.r_[True, grams[1:] != grams[:-1]]
        owner = rows[np.flatnonzero(starts)[np.cumsum(starts) - 1]]  # first row holding each n-gram
        later, earlier = rows[owner < rows], owner[owner < rows]
        if later.size == 0:
            return later, earlier
        # Count shared n-grams per (later, earlier) pair; keep pairs covering min_share of the later row.
        keys, counts = np.unique(np.stack([later, earlier], axis=1), axis=0, return_counts=True)
        sizes = np.array([self._sizes[int(r)] for r in keys[:, 0]])
        keep = counts >= self.min_share * sizes
        return keys[keep, 1], keys[keep, 0]
