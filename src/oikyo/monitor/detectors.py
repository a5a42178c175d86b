"""The drift detectors: each turns a window of live items into one number, and says what moved.

Every detector is built from the reference's two halves (``ref``: what windows are compared with;
``pool``: where null windows are drawn from, see :mod:`oikyo.monitor.calibration`) and offers:

- ``null_raw(windows)``: its raw value on bootstrap windows of pool indices (B, W) -> (B,);
- ``raw(items)``: its raw value on a live window, plus what :meth:`describe` needs;
- ``describe(items, info)``: a short sentence of what moved and the most distinctive inputs;
- ``center_draws(rng, pool_size, draws)``: for centred statistics, bootstrap estimates of the value
  expected without drift (:func:`oikyo.monitor.calibration.calibrate`'s ``center_draws``).

The detectors (``name``: statistic, calibration kind):

- ``input_length``: mean log token (or character) count of the inputs minus the reference's; two-sided.
- ``input_script``: total variation between the window's and the reference's shares of scripts and
  languages (:func:`~oikyo.monitor.descriptors.script_of`); floored for categories never seen.
- ``input_oov``: mean share of an input's words missing from the reference's vocabulary; one-sided.
- ``input_embedding``: MMD² on the base model's hidden states (:mod:`oikyo.monitor.embeddings`).
- ``output_length``: as ``input_length``, on the answers.
- ``output_quality``: the largest rise of a quality signal's rate (degenerate, refusal, empty, ...)
  over the reference answers'; one-sided, floored.
- ``output_labels``: total variation between the labels the answers give and the reference labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from oikyo.monitor import descriptors as d
from oikyo.monitor.calibration import center_windows, unseen_floor

EXAMPLES = 3
EXAMPLE_CHARS = 160


def _example(item: d.Item, why: str) -> dict:
    text = item.input if len(item.input) <= EXAMPLE_CHARS else item.input[:EXAMPLE_CHARS] + "…"
    return {"id": item.id, "input": text, "why": why}


@dataclass
class Detector:
    """Base: a name, a calibration kind and a floor; subclasses define the statistic."""

    name: str = ""
    kind: str = "two_sided"
    ref_rows: int = 0

    def floor(self, window: int, alpha: float) -> float:
        return 0.0

    def null_raw(self, windows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def center_draws(self, rng: np.random.Generator, pool_size: int, draws: int) -> np.ndarray | None:
        """Bootstrap estimates of a centred statistic's expected value, one per null draw (None for
        positive statistics): here its value on resamples of the whole calibration pool."""
        if self.kind == "positive":
            return None
        return self.null_raw(center_windows(rng, pool_size, draws))

    def raw(self, items: list[d.Item]) -> tuple[float, dict]:
        raise NotImplementedError

    def describe(self, items: list[d.Item], info: dict) -> tuple[str, list[dict]]:
        raise NotImplementedError


# ----------------------------------------------------------------------------- mean differences


@dataclass
class LengthDetector(Detector):
    """Mean log length (tokens when a counter is given, else characters) of inputs or answers.

    A length needs no comparison half: the expected mean is estimated from every reference row
    (``ref`` and ``pool``), which halves the variance of that estimate against ``pool`` alone, and
    the null windows are the pool's values centred on their own mean (no drift: the same population).
    ``center_values`` (every row's value minus that mean) lets the calibration draw the estimate's
    error (:func:`oikyo.monitor.calibration.calibrate`)."""

    side: str = "input"  # input | output
    count: Callable[[list[str]], list[int]] | None = None
    unit: str = "characters"
    ref_mean: float = 0.0
    pool_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    center_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ref_median: float = 0.0

    @classmethod
    def build(cls, side: str, ref: list[d.Item], pool: list[d.Item], count=None) -> LengthDetector:
        det = cls(name=f"{side}_length", kind="two_sided", side=side, count=count,
                  unit="tokens" if count else "characters", ref_rows=len(ref) + len(pool))
        lengths = det._lengths(ref + pool)
        values = np.log1p(lengths)
        det.ref_mean = float(values.mean())
        det.ref_median = float(np.median(lengths))
        pool_values = values[len(ref):]
        det.pool_values = pool_values - pool_values.mean()
        det.center_values = values - det.ref_mean
        return det

    def _texts(self, items: list[d.Item]) -> list[str]:
        return [(it.input if self.side == "input" else it.output) or "" for it in items]

    def _lengths(self, items: list[d.Item]) -> np.ndarray:
        texts = self._texts(items)
        return np.array(self.count(texts) if self.count else [len(t) for t in texts], dtype=np.float64)

    def null_raw(self, windows: np.ndarray) -> np.ndarray:
        return self.pool_values[windows].mean(1)

    def center_draws(self, rng: np.random.Generator, pool_size: int, draws: int) -> np.ndarray:
        # estimated from every reference row, not the calibration pool alone
        return self.center_values[center_windows(rng, len(self.center_values), draws)].mean(1)

    def raw(self, items: list[d.Item]) -> tuple[float, dict]:
        lengths = self._lengths(items)
        return float(np.log1p(lengths).mean()) - self.ref_mean, {"lengths": lengths}

    def describe(self, items, info) -> tuple[str, list[dict]]:
        lengths = info["lengths"]
        ratio = math.exp(float(np.log1p(lengths).mean()) - self.ref_mean)  # geometric-mean ratio
        noun = "inputs" if self.side == "input" else "answers"
        way = f"{ratio:.2f}x longer" if ratio >= 1 else f"{1 / ratio:.2f}x shorter"
        what = (f"{noun} {way} (median {np.median(lengths):.0f} vs {self.ref_median:.0f} {self.unit} "
                "in the reference)")
        order = np.argsort(-lengths if ratio >= 1 else lengths)[:EXAMPLES]
        return what, [_example(items[i], f"{lengths[i]:.0f} {self.unit}") for i in order]


@dataclass
class OovDetector(Detector):
    """Mean share of an input's words that the reference's inputs never use."""

    vocabulary: set = field(default_factory=set)
    pool_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pool_words: int = 0

    @classmethod
    def build(cls, ref: list[d.Item], pool: list[d.Item]) -> OovDetector:
        vocabulary = {w for it in ref for w in d.words(it.input)}
        det = cls(name="input_oov", kind="one_sided", vocabulary=vocabulary, ref_rows=len(ref))
        det.pool_values = np.array([d.oov_share(d.words(it.input), vocabulary) for it in pool])
        det.pool_words = sum(len(d.words(it.input)) for it in pool)
        return det

    def floor(self, window: int, alpha: float) -> float:
        # A reference whose own held-out half uses no unseen word still leaves the rate of unseen words
        # unknown up to 3 per pool's worth of words: as for categories, a window needs more than that.
        words_per_input = max(1.0, self.pool_words / max(1, len(self.pool_values)))
        return unseen_floor(window, len(self.pool_values), alpha) / words_per_input

    def null_raw(self, windows: np.ndarray) -> np.ndarray:
        return self.pool_values[windows].mean(1)

    def raw(self, items):
        shares = np.array([d.oov_share(d.words(it.input), self.vocabulary) for it in items])
        return float(shares.mean()), {"shares": shares}

    def describe(self, items, info):
        shares = info["shares"]
        what = (f"{shares.mean():.0%} of input words unseen in the reference "
                f"(vs {self.pool_values.mean():.0%} for reference-like traffic)")
        examples = []
        for i in np.argsort(-shares)[:EXAMPLES]:
            unseen = [w for w in d.words(items[i].input) if w not in self.vocabulary][:5]
            examples.append(_example(items[i], f"{shares[i]:.0%} unseen words: {', '.join(unseen)}"))
        return what, examples


# ----------------------------------------------------------------------------- shares of categories


@dataclass
class CategoryDetector(Detector):
    """Total variation between category shares: scripts/languages of inputs, or labels of answers."""

    categorize: Callable[[d.Item], str] | None = None
    categories: list = field(default_factory=list)
    ref_shares: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pool_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    noun: str = "script share"

    @classmethod
    def build(cls, name: str, ref: list[d.Item], pool: list[d.Item], categorize, ref_categorize=None,
              noun: str = "script share") -> CategoryDetector:
        ref_categorize = ref_categorize or categorize
        ref_cats = [ref_categorize(it) for it in ref]
        pool_cats = [ref_categorize(it) for it in pool]
        categories = sorted(set(ref_cats) | set(pool_cats))
        det = cls(name=name, kind="positive", categorize=categorize, categories=categories, noun=noun,
                  ref_rows=len(ref))
        det.ref_shares = det._shares(ref_cats)
        det.pool_codes = np.array([categories.index(c) for c in pool_cats], dtype=int)
        return det

    def _shares(self, cats: list[str]) -> np.ndarray:
        counts = np.array([cats.count(c) for c in self.categories], dtype=np.float64)
        return counts / max(1, len(cats))

    def floor(self, window: int, alpha: float) -> float:
        return unseen_floor(window, self.ref_rows, alpha)

    def null_raw(self, windows: np.ndarray) -> np.ndarray:
        k = len(self.categories)
        counts = np.stack([(self.pool_codes[windows] == c).sum(1) for c in range(k)], axis=1)  # (B, k)
        return 0.5 * np.abs(counts / windows.shape[1] - self.ref_shares).sum(1)

    def raw(self, items):
        cats = [self.categorize(it) for it in items]
        for c in cats:  # categories the reference never had count fully against it
            if c not in self.categories:
                self.categories.append(c)
                self.ref_shares = np.append(self.ref_shares, 0.0)
        shares = self._shares(cats)
        return float(0.5 * np.abs(shares - self.ref_shares).sum()), {"cats": cats, "shares": shares}

    def describe(self, items, info):
        moved = info["shares"] - self.ref_shares
        top = int(np.argmax(np.abs(moved)))
        name = self.categories[top]
        what = f"{self.noun}: {info['shares'][top]:.0%} {name} vs {self.ref_shares[top]:.0%} in the reference"
        rising = [i for i, c in enumerate(info["cats"]) if c == name] if moved[top] > 0 else []
        return what, [_example(items[i], name) for i in rising[:EXAMPLES]]


# ----------------------------------------------------------------------------- quality signals


@dataclass
class QualityDetector(Detector):
    """The largest rise of a quality signal's rate in the answers over the reference answers' rate."""

    signals: list = field(default_factory=list)
    flags_of: Callable[[dict], list[str]] | None = None
    ref_rates: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pool_flags: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @classmethod
    def build(cls, ref: list[d.Item], pool: list[d.Item], signals: list[str], flags_of) -> QualityDetector:
        det = cls(name="output_quality", kind="positive", signals=list(signals), flags_of=flags_of,
                  ref_rows=len(ref))
        det.ref_rates = det._flags(ref).mean(0)
        det.pool_flags = det._flags(pool)
        return det

    def _flags(self, items: list[d.Item]) -> np.ndarray:
        raised = [set(self.flags_of(it.quality)) if it.quality else set() for it in items]
        return np.array([[s in r for s in self.signals] for r in raised],
                        dtype=np.float64).reshape(len(items), len(self.signals))

    def floor(self, window: int, alpha: float) -> float:
        return unseen_floor(window, self.ref_rows, alpha)

    def null_raw(self, windows):
        rates = np.stack([self.pool_flags[windows, j].mean(1) for j in range(len(self.signals))], axis=1)
        return (rates - self.ref_rates).max(1)

    def raw(self, items):
        flags = self._flags(items)
        rates = flags.mean(0)
        return float((rates - self.ref_rates).max()), {"flags": flags, "rates": rates}

    def describe(self, items, info):
        j = int(np.argmax(info["rates"] - self.ref_rates))
        signal = self.signals[j]
        what = f"{info['rates'][j]:.0%} of answers flagged {signal} vs {self.ref_rates[j]:.0%} in the reference"
        flagged = np.nonzero(info["flags"][:, j])[0][:EXAMPLES]
        return what, [_example(items[i], f"answer flagged {signal}") for i in flagged]


# ----------------------------------------------------------------------------- embeddings


@dataclass
class EmbeddingDetector(Detector):
    """MMD² between the window's input embeddings and the reference's."""

    embed: Callable[[list[str]], np.ndarray] | None = None
    mmd: object = None

    @classmethod
    def build(cls, ref: list[d.Item], pool: list[d.Item], embed, embed_reference) -> EmbeddingDetector:
        from oikyo.monitor.embeddings import MMD

        vectors = embed_reference([it.input for it in ref + pool])
        det = cls(name="input_embedding", kind="positive", embed=embed, ref_rows=len(ref))
        det.mmd = MMD(vectors[:len(ref)], vectors[len(ref):])
        return det

    def null_raw(self, windows):
        return self.mmd.null_raw(windows)

    def raw(self, items):
        value, witness = self.mmd.raw(self.embed([it.input for it in items]))
        return value, {"witness": witness, "value": value}

    def describe(self, items, info):
        witness = info["witness"]
        what = (f"input embeddings (MMD² {info['value']:.3g}): the examples are the inputs most unlike "
                "the reference")
        order = np.argsort(-witness)[:EXAMPLES]
        return what, [_example(items[i], f"witness {witness[i]:+.3f}") for i in order]
