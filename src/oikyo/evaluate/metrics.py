"""The metric registry: a plain dict from name to metric, used by the built-ins and by user metrics alike.

A metric turns a system's outputs on an evaluation split into one value, a score per example (shown
next to each example, and used to find the examples where two systems differ most) and per-example
*sufficient statistics*: numbers whose column sums give the metric back through ``aggregate``. The
statistics are what make paired bootstrap confidence intervals exact for every metric, including
corpus-level ones (BLEU, macro-F1, perplexity): a resample is a weighted sum of rows.

A user metric is a plain function of one prediction and its reference, registered with a decorator;
its value is the mean of its scores::

    from oikyo.evaluate.metrics import metric

    @metric("starts_with_yes", version="1")
    def starts_with_yes(prediction: str, reference: str) -> float:
        return float(prediction.strip().lower().startswith("yes"))

Make the module importable by the worker and name it with ``--metrics-module my_metrics`` (or in
``OIKYO_METRIC_MODULES``, comma-separated); then ``oikyo eval ... --metric starts_with_yes``.

Built-in metrics (``METRICS``): ``loss`` and ``perplexity`` (teacher-forced, assistant tokens only),
``exact_match``, ``normalized_exact_match``, ``token_f1`` (SQuAD-style), ``accuracy`` and
``macro_f1`` (small label sets, scikit-learn), ``bleu`` (sacrebleu), ``rouge1`` / ``rouge2`` /
``rougeL`` (rouge-score), ``json_valid``, ``json_field_accuracy`` and ``json_exact_match``
(JSON-object answers). :func:`auto_metrics` picks the ones that fit the references.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from oikyo.errors import OikyoError
from oikyo.evaluate.json_answers import parse_json

MODULES_ENV = "OIKYO_METRIC_MODULES"
MAX_LABELS = 20  # answers from at most this many distinct references count as a label set


class MetricError(OikyoError):
    """An unknown metric, or a metric module that cannot be imported."""


@dataclass
class Scored:
    """A metric's result on one system: the value, a score per example, and the statistics behind them.

    ``stats`` has shape (examples, d); ``aggregate(stats.sum(0), n)`` equals ``value``.
    """

    value: float
    scores: list[float | None]
    stats: np.ndarray


def mean_aggregate(summed: np.ndarray, n: int) -> np.ndarray:
    """The mean of one score per example. summed: (..., 1) -> (...)."""
    return summed[..., 0] / max(n, 1)


def ratio_aggregate(summed: np.ndarray, n: int) -> np.ndarray:
    """Column 0 over column 1 (micro averages: matched fields / fields, nll / tokens). (..., 2) -> (...)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(summed[..., 1] > 0, summed[..., 0] / np.maximum(summed[..., 1], 1e-300), np.nan)


@dataclass(frozen=True)
class Metric:
    """One registered metric.

    ``input``: "text" (the function sees predictions and references) or "nll" (per-example summed
    negative log-likelihood and token counts from the teacher-forced pass). ``corpus``: the function
    takes every example at once and returns :class:`Scored`; otherwise it scores one example and the
    value is the mean. ``applies``: whether :func:`auto_metrics` selects it for an answer profile.
    """

    name: str
    fn: Callable
    version: str
    higher_is_better: bool = True
    input: str = "text"
    corpus: bool = False
    aggregate: Callable[[np.ndarray, int], np.ndarray] = mean_aggregate
    applies: Callable[[AnswerProfile], bool] | None = None
    description: str = ""

    def score(self, predictions: list[str], references: list[str]) -> Scored:
        """Run the metric on a system's text outputs."""
        if self.corpus:
            return self.fn(predictions, references)
        scores = [float(self.fn(p, r)) for p, r in zip(predictions, references)]
        stats = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
        return Scored(value=float(mean_aggregate(stats.sum(0), len(scores))), scores=scores, stats=stats)


METRICS: dict[str, Metric] = {}


def metric(name: str | None = None, *, version: str = "1", higher_is_better: bool = True, corpus: bool = False,
           input: str = "text", aggregate: Callable | None = None, applies: Callable | None = None,
           description: str = ""):
    """Register a metric function under ``name`` (default: the function's name)."""

    def register(fn: Callable) -> Callable:
        key = name or fn.__name__
        METRICS[key] = Metric(name=key, fn=fn, version=str(version), higher_is_better=higher_is_better,
                              input=input, corpus=corpus, aggregate=aggregate or mean_aggregate, applies=applies,
                              description=description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return register


def get(name: str) -> Metric:
    if name not in METRICS:
        raise MetricError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))} "
                          f"(user metrics: pass their module with --metrics-module)")
    return METRICS[name]


def load_modules(modules: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Import the modules that register user metrics (plus those in ``OIKYO_METRIC_MODULES``)."""
    names = [m.strip() for m in [*modules, *os.environ.get(MODULES_ENV, "").split(",")] if m and m.strip()]
    for module in names:
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - any import failure is the user's module
            raise MetricError(f"cannot import metrics module {module!r}: {error}") from None
    return names


# ----------------------------------------------------------------------------- normalization


def normalize_label(text: str) -> str:
    """NFKC, casefold, punctuation dropped, spaces squeezed: ``" Positive. "`` -> ``"positive"``, ``"A)"`` -> ``"a"``."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch).startswith("P") or ch in string.punctuation else ch
                   for ch in text)
    return " ".join(text.split())


def normalize_answer(text: str) -> str:
    """SQuAD normalization, Unicode-aware: :func:`normalize_label`, then English articles dropped."""
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", normalize_label(text)).split())


def flatten(obj, prefix: str = "") -> dict:
    """Leaf values of nested JSON objects by dotted key (lists are leaf values, compared whole)."""
    if isinstance(obj, dict) and obj:
        leaves = {}
        for key, value in obj.items():
            leaves.update(flatten(value, f"{prefix}{key}."))
        return leaves
    return {prefix[:-1]: obj}


# ----------------------------------------------------------------------------- answer profile


@dataclass
class AnswerProfile:
    """What the references look like: decides which metrics apply automatically."""

    rows: int
    label_set: list[str] | None = None  # the normalized labels, when answers come from a small set
    json_objects: bool = False  # every reference is a JSON object
    labels: list[str | None] = field(default_factory=list)


def profile(references: list[str], labels: list[str | None] | None = None) -> AnswerProfile:
    """Detect a label set (the rows' ``label`` column, or at most 20 distinct answers, each used at least
    twice on average) and JSON-object answers."""
    n = len(references)
    json_objects = n > 0 and all(isinstance(parse_json(r), dict) for r in references)
    distinct = sorted({normalize_label(r) for r in references})
    labelled = labels is not None and n > 0 and all(label is not None for label in labels)
    small = n >= 2 and len(distinct) <= min(MAX_LABELS, n // 2)
    label_set = distinct if (labelled or small) and not json_objects else None
    return AnswerProfile(rows=n, label_set=label_set, json_objects=json_objects, labels=list(labels or []))


def auto_metrics(prof: AnswerProfile, *, teacher_forced: bool = True) -> list[str]:
    """The metrics that fit these references: always loss/perplexity and the match metrics, then the
    label, JSON or free-text family, then user metrics whose ``applies`` says yes."""
    names = ["loss", "perplexity"] if teacher_forced else []
    names += ["exact_match", "normalized_exact_match", "token_f1"]
    if prof.label_set is not None:
        names += ["accuracy", "macro_f1"]
    elif prof.json_objects:
        names += ["json_valid", "json_field_accuracy", "json_exact_match"]
    else:
        names += ["bleu", "rouge1", "rouge2", "rougeL"]
    builtin = set(names) | set(BUILTINS)
    names += [m.name for m in METRICS.values() if m.name not in builtin and m.applies and m.applies(prof)]
    return names


# ----------------------------------------------------------------------------- loss and perplexity


def _nll_scored(nll: list[float], tokens: list[int], transform: Callable[[float], float]) -> Scored:
    stats = np.column_stack([np.asarray(nll, dtype=np.float64), np.asarray(tokens, dtype=np.float64)])
    scores = [transform(a / t) if t else None for a, t in zip(nll, tokens)]
    total = stats.sum(0)
    value = transform(total[0] / total[1]) if total[1] else float("nan")
    return Scored(value=float(value), scores=scores, stats=stats)


def _ppl_aggregate(summed: np.ndarray, n: int) -> np.ndarray:
    return np.exp(ratio_aggregate(summed, n))


@metric("loss", version="1", higher_is_better=False, input="nll", corpus=True, aggregate=ratio_aggregate,
        description="Mean negative log-likelihood per assistant token (teacher-forced)")
def loss(nll: list[float], tokens: list[int]) -> Scored:
    return _nll_scored(nll, tokens, lambda x: x)


@metric("perplexity", version="1", higher_is_better=False, input="nll", corpus=True, aggregate=_ppl_aggregate,
        description="exp(loss): perplexity of the reference answers, assistant tokens only")
def perplexity(nll: list[float], tokens: list[int]) -> Scored:
    return _nll_scored(nll, tokens, math.exp)


# ----------------------------------------------------------------------------- text matches


@metric("exact_match", version="1", description="The answer equals the reference (surrounding whitespace ignored)")
def exact_match(prediction: str, reference: str) -> float:
    return float(prediction.strip() == reference.strip())


@metric("normalized_exact_match", version="1",
        description="Equal after SQuAD normalization (case, punctuation, articles, spaces)")
def normalized_exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


@metric("token_f1", version="1", description="SQuAD token F1 between normalized answer and reference")
def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)  # both empty: a match; one empty: nothing in common
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


# ----------------------------------------------------------------------------- label sets


def _label_of(text: str, labels: list[str]) -> str:
    normalized = normalize_label(text)
    return normalized if normalized in labels else "\x00other"


def _label_stats(predictions: list[str], references: list[str]) -> tuple[list[str], list[str], list[str]]:
    labels = sorted({normalize_label(r) for r in references})
    return labels, [_label_of(p, labels) for p in predictions], [normalize_label(r) for r in references]


@metric("accuracy", version="1", corpus=True,
        description="Share of answers equal to the reference label (case and punctuation ignored); scikit-learn")
def accuracy(predictions: list[str], references: list[str]) -> Scored:
    from sklearn.metrics import accuracy_score

    _, pred, ref = _label_stats(predictions, references)
    scores = [float(p == r) for p, r in zip(pred, ref)]
    value = float(accuracy_score(ref, pred)) if ref else float("nan")
    return Scored(value=value, scores=scores, stats=np.asarray(scores, dtype=np.float64).reshape(-1, 1))


def _macro_f1_aggregate(summed: np.ndarray, n: int) -> np.ndarray:
    """Per-label (tp, fp, fn) sums -> mean over labels of 2tp / (2tp + fp + fn). (..., 3L) -> (...)."""
    tp, fp, fn = (summed.reshape(*summed.shape[:-1], -1, 3)[..., k] for k in range(3))
    denominator = 2 * tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-300), 0.0)
    return f1.mean(axis=-1)


@metric("macro_f1", version="1", corpus=True, aggregate=_macro_f1_aggregate,
        description="F1 per reference label, averaged (answers outside the label set count as wrong); scikit-learn")
def macro_f1(predictions: list[str], references: list[str]) -> Scored:
    from sklearn.metrics import f1_score

    labels, pred, ref = _label_stats(predictions, references)
    index = {label: k for k, label in enumerate(labels)}
    stats = np.zeros((len(ref), 3 * len(labels)))
    for i, (p, r) in enumerate(zip(pred, ref)):
        if p == r:
            stats[i, 3 * index[r]] = 1  # true positive of r
        else:
            stats[i, 3 * index[r] + 2] = 1  # false negative of r
            if p in index:
                stats[i, 3 * index[p] + 1] = 1  # false positive of p
    scores = [float(p == r) for p, r in zip(pred, ref)]
    value = float(f1_score(ref, pred, labels=labels, average="macro", zero_division=0)) if ref else float("nan")
    return Scored(value=value, scores=scores, stats=stats)


# ----------------------------------------------------------------------------- BLEU and ROUGE


def _bleu_aggregate(summed: np.ndarray, n: int) -> np.ndarray:
    from sacrebleu.metrics import BLEU

    bleu = BLEU()
    flat = summed.reshape(-1, summed.shape[-1])
    values = [bleu._compute_score_from_stats([int(round(x)) for x in row]).score for row in flat]
    return np.asarray(values).reshape(summed.shape[:-1])


@metric("bleu", version="sacrebleu-2/13a/exp", corpus=True, aggregate=_bleu_aggregate,
        description="Corpus BLEU (sacrebleu defaults: 13a tokenizer, exp smoothing), 0-100")
def bleu(predictions: list[str], references: list[str]) -> Scored:
    from sacrebleu.metrics import BLEU

    scorer = BLEU()
    # One row per example: [hyp_len, ref_len, correct 1-4, total 1-4] (sacrebleu's own statistics).
    stats = np.asarray(scorer._extract_corpus_statistics(predictions, [references]), dtype=np.float64)
    stats = stats.reshape(len(predictions), -1)
    sentence = BLEU(effective_order=True)
    scores = [sentence.sentence_score(p, [r]).score for p, r in zip(predictions, references)]
    value = float(scorer.corpus_score(predictions, [references]).score) if predictions else float("nan")
    return Scored(value=value, scores=scores, stats=stats)


class _UnicodeWords:
    """rouge-score tokenizer that keeps non-ASCII words (its default drops them): lowercase ``\\w+`` runs."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold())


def _rouge(kind: str) -> Callable[[str, str], float]:
    scorers: dict = {}

    def score(prediction: str, reference: str) -> float:
        if "s" not in scorers:
            from rouge_score import rouge_scorer

            scorers["s"] = rouge_scorer.RougeScorer([kind], tokenizer=_UnicodeWords())
        if not prediction.strip() and not reference.strip():
            return 1.0
        return float(scorers["s"].score(reference, prediction)[kind].fmeasure)

    return score


for _kind in ("rouge1", "rouge2", "rougeL"):
    metric(_kind, version="rouge-score-0.1/unicode-words",
           description=f"{_kind.upper()} F-measure (rouge-score, Unicode word tokens, no stemming), mean per example")(
        _rouge(_kind))


# ----------------------------------------------------------------------------- JSON answers


@metric("json_valid", version="1", description="The answer parses as a JSON object (a code fence around it is allowed)")
def json_valid(prediction: str, reference: str) -> float:
    return float(isinstance(parse_json(prediction), dict))


def _field_counts(prediction: str, reference: str) -> tuple[float, float]:
    ref = parse_json(reference)
    if not isinstance(ref, dict):
        return 0.0, 0.0  # not a structured reference: no fields to score
    want = flatten(ref)
    got = parse_json(prediction)
    have = flatten(got) if isinstance(got, dict) else {}
    matched = sum(1 for key, value in want.items() if key in have and have[key] == value)
    return float(matched), float(len(want))


@metric("json_field_accuracy", version="1", corpus=True, aggregate=ratio_aggregate,
        description="Share of the reference's leaf fields (dotted keys) the answer reproduces exactly, over all rows")
def json_field_accuracy(predictions: list[str], references: list[str]) -> Scored:
    counts = [_field_counts(p, r) for p, r in zip(predictions, references)]
    stats = np.asarray(counts, dtype=np.float64).reshape(-1, 2)
    scores = [m / t if t else None for m, t in counts]
    value = float(ratio_aggregate(stats.sum(0), len(counts))) if counts else float("nan")
    return Scored(value=value, scores=scores, stats=stats)


@metric("json_exact_match", version="1", description="The answer parses to the same JSON value as the reference")
def json_exact_match(prediction: str, reference: str) -> float:
    ref = parse_json(reference)
    return float(ref is not None and parse_json(prediction) == ref)


BUILTINS = tuple(METRICS)  # every metric registered above; anything added later is a user metric


def versions(names: list[str]) -> dict[str, str]:
    """The version string of each named metric (stored with every evaluation)."""
    return {name: get(name).version for name in names}
