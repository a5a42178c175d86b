"""The dataset quality report: what a user should know about a dataset before training on it.

    report = build_report(versions.iter_rows(version), version.kind,
                          count_tokens=lambda s: len(tokenizer(s).input_ids))
    render_report(report, Console())      # tables, a length histogram and warnings in yellow
    json.dumps(report)                    # the same findings for ``--json`` and the store

One streaming pass over canonical rows (:mod:`oikyo.data.schema`) fills every section; memory
holds only per-measure state (a length and a hash per row, MinHash signatures, n-gram hashes of
train rows), so 100,000 rows take seconds. The sections of the report:

- ``rows``, ``tokenizer``, ``token_unit``, ``tokens``, ``lengths`` and ``histograms``: per *role*
  (system/user/assistant/tool_call/tool, plus chosen/rejected for preference data, text for text
  data, tools for tool definitions) and per whole *example*
  (for preference data, the prompt plus the longer of chosen/rejected: the longest sequence the
  trainer sees). Role lengths count each example's length for that role, over the examples that
  have the role. Histogram bins are powers of two (:data:`BIN_LABELS`). Every length is in one
  unit, ``token_unit`` (why: ``token_unit_reason``): ``"tokens"`` of the given tokenizer; else
  ``"characters"`` when any text of the dataset is written without spaces (see
  :func:`written_without_spaces`: Chinese, Japanese, Thai ..., where a whitespace "word" is a whole
  sentence), else ``"whitespace words"``. One unit for the whole dataset keeps every row and role
  comparable; ``texts_without_spaces`` counts the texts that decided it.
- ``duplicates``: exact (lowercased, whitespace-collapsed text of the whole example) and near
  (MinHash LSH over word 5-grams, Jaccard >= 0.8; exact duplicates are not counted again).
  Near duplicates and leakage leave out system prompts and tool definitions: one system prompt
  shared by every row would otherwise make every pair of short rows look alike.
- ``answers``: empty or very short answers (see :data:`ANSWER_RULE`).
- ``turns``: turns per example, share of each role, system prompts, conversations that do not
  end with (or lack) an assistant turn. None for text data.
- ``labels``: class balance, when rows carry a ``label``; else None.
- ``pii``: possible personal data and secrets (:mod:`oikyo.data.pii`), redacted.
- ``leakage``: held-out splits against train, and each evaluation set against the dataset
  (:mod:`oikyo.data.leakage`), compared on the prompt side (:func:`leakage_text`).
- ``warnings``: plain-English findings to act on; ``seconds``: how long the report took.
"""

from __future__ import annotations

import re
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from oikyo.data.leakage import LEAK_SHARE, NGRAM, EvalLeakage, SplitLeakage
from oikyo.data.overlap import (
    MAX_EXAMPLES,
    NO_SPACE_RANGES,
    ExactDuplicates,
    NearDuplicates,
    ngram_hashes,
    normalize,
    text_hash,
    word_hashes,
)
from oikyo.data.pii import PII_TYPES, find_pii, redact
from oikyo.data.quality_render import render_report
from oikyo.data.quality_warnings import warnings_for
from oikyo.data.schema import KINDS, ROLES

__all__ = ["build_report", "render_report", "BIN_LABELS", "REPORT_VERSION"]

REPORT_VERSION = 1
# Token-length bins: 0, 1, 2-3, 4-7, ..., 8192-16383, 16384+ (index = n.bit_length(), capped).
BIN_LABELS = ["0", "1"] + [f"{2**k}-{2 ** (k + 1) - 1}" for k in range(1, 14)] + ["16384+"]
SHORT_ANSWER_CHARS = 3
ANSWER_RULE = (
    "An answer is empty when it is blank after stripping whitespace, and short when it has fewer "
    f"than {SHORT_ANSWER_CHARS} characters. Checked: every assistant turn (conversations; rows "
    "with a label are only checked for empty answers, since class names are legitimately short), "
    "chosen and rejected (preference), the text (text)."
)
_NO_SPACE_CHARS = re.compile(f"[{NO_SPACE_RANGES}]")  # see oikyo.data.overlap
# A text is written without spaces when this share of its non-whitespace characters is in those
# scripts (a Chinese name quoted in an English sentence does not make the sentence Chinese).
NO_SPACE_SHARE = 0.25
NEAR_THRESHOLD = 0.8
SHINGLE = 5
PROGRESS_EVERY = 1000
_EXTRA_SERIES = ("chosen", "rejected", "text", "tools")
# Series that are not turns of their own (reasoning belongs to the assistant turn after it).
_NOT_TURNS = ("reasoning",)


def build_report(
    rows: Iterable[dict],
    kind: str,
    *,
    count_tokens: Callable[[str], int] | None = None,
    eval_sets: dict[str, Iterable[dict]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """The quality report of ``rows`` (canonical rows of ``kind``, optionally with ``split``).

    ``count_tokens`` counts the tokens of one string with the chosen model's tokenizer (give the
    callable a ``name`` attribute to have it recorded as ``tokenizer``); without it the report says
    ``"tokenizer": None`` and lengths are characters when any text is written without spaces,
    else whitespace-separated words (``token_unit`` and ``token_unit_reason`` say which and why).
    ``eval_sets`` maps a registered evaluation set's name to its rows, checked for leakage into
    this dataset. ``progress`` is called with the number of rows read so far, every 1,000 rows and
    once at the end. The result is a plain, JSON-serializable dict.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}: expected one of {', '.join(KINDS)}")
    started = time.perf_counter()
    evals = [EvalLeakage(name, ev_rows, leakage_text) for name, ev_rows in (eval_sets or {}).items()]
    scan = _Scan(kind, count_tokens, evals)
    for index, row in enumerate(rows):
        scan.add(index, row)
        if progress is not None and (index + 1) % PROGRESS_EVERY == 0:
            progress(index + 1)
    if progress is not None:
        progress(scan.rows)
    report = scan.report()
    report["tokenizer"] = None if count_tokens is None else _tokenizer_name(count_tokens)
    report["token_unit_reason"] = _unit_reason(report)
    report["warnings"] = warnings_for(report)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


def _tokenizer_name(count_tokens: Callable[[str], int]) -> str:
    """The name to record for a token counter: its ``name``, or its owner's (``counter.text`` of a
    :class:`oikyo.models.chat_template.TokenCounter`: the tokenizer's folder), else "custom"."""
    owner = getattr(count_tokens, "__self__", None)
    for holder in (count_tokens, owner):
        if getattr(holder, "name", None):
            return str(holder.name)
    folder = getattr(owner, "tokenizer_dir", None)
    return Path(folder).name if folder else "custom"


def _unit_reason(report: dict) -> str:
    """Why the lengths are in ``report["token_unit"]``, in plain English."""
    if report["token_unit"] == "tokens":
        return f"counted by the tokenizer {report['tokenizer']}"
    seen = report["texts_without_spaces"]
    if report["token_unit"] == "characters":
        return (f"no tokenizer given, and {seen['count']:,} of {seen['of']:,} texts are written without spaces "
                "(Chinese, Japanese, Thai ...), where whitespace words would count whole sentences")
    return "no tokenizer given, and no text is written without spaces"


def _parts(row: dict) -> list[tuple[str, str]]:
    """(role, content) of every text in a row: its messages, then chosen/rejected/text/tools."""
    parts = []
    for m in row.get("messages") or []:
        if m.get("reasoning"):  # a reasoning trace is text the model learns to write: its own series
            parts.append(("reasoning", m["reasoning"]))
        parts.append((m.get("role") or "?", m.get("content") or ""))
    # An empty chosen/rejected/text is a finding (an empty answer); an empty tools field is not.
    parts.extend((key, row[key]) for key in _EXTRA_SERIES if row.get(key) is not None)
    if parts and parts[-1] == ("tools", ""):
        parts.pop()
    return parts


def overlap_text(row: dict) -> str:
    """The text compared for near duplicates and leakage: everything but system prompts and tools."""
    return "\n".join(c for r, c in _parts(row) if r not in ("system", "tools"))


def leakage_text(row: dict) -> str:
    """The text compared for leakage: what the model is given (user and tool turns), not its answers.

    A test question seen in training is leakage whatever the answer; answers drawn from a small set
    (labels, short JSON) repeat across every split by design and would flag everything. Plain text
    rows, and rows with no prompt turns, compare all of their text.
    """
    prompt = "\n".join(m.get("content") or "" for m in row.get("messages") or []
                       if m.get("role") in ("user", "tool"))
    return prompt if prompt.strip() else overlap_text(row)


def _count_words(text: str) -> int:
    return len(text.split())


def written_without_spaces(text: str) -> bool:
    """Whether ``text`` is mostly in scripts that put no spaces between words (Chinese, Japanese, Thai ...).

    True when at least :data:`NO_SPACE_SHARE` of its non-whitespace characters are in those scripts
    (:data:`_NO_SPACE_CHARS`); counting whitespace-separated words there counts sentences.
    """
    if text.isascii():
        return False
    dense = len(text) - len(_NO_SPACE_CHARS.sub("", text))
    return dense > 0 and dense >= NO_SPACE_SHARE * sum(map(len, text.split()))


class _Lengths:
    """Token lengths of one series: total, histogram, and every value (4 bytes) for percentiles."""

    def __init__(self) -> None:
        self.values = array("I")
        self.hist = [0] * len(BIN_LABELS)
        self.total = 0

    def add(self, n: int) -> None:
        self.values.append(n)
        self.hist[min(n.bit_length(), len(BIN_LABELS) - 1)] += 1
        self.total += n

    def summary(self) -> dict:
        if not self.values:
            return {"count": 0, "total": 0, "mean": 0.0, "median": 0.0, "p95": 0.0, "max": 0}
        v = np.frombuffer(self.values, dtype=np.uint32)
        return {
            "count": int(v.size),
            "total": self.total,
            "mean": round(float(v.mean()), 1),
            "median": float(np.median(v)),
            "p95": round(float(np.percentile(v, 95)), 1),
            "max": int(v.max()),
        }


class _Measure:
    """The lengths of every series in one unit: whole examples and each role."""

    def __init__(self, count: Callable[[str], int]) -> None:
        self.count = count
        self.example = _Lengths()
        self.roles: dict[str, _Lengths] = {}

    def add(self, parts: list[tuple[str, str]], kind: str) -> None:
        per_role: Counter[str] = Counter()
        for role, content in parts:
            per_role[role] += self.count(content)
        for role, n in per_role.items():
            self.roles.setdefault(role, _Lengths()).add(n)
        if kind == "preference":
            # The trainer sees prompt + chosen and prompt + rejected: the longer one is the length.
            answer = max(per_role.pop("chosen", 0), per_role.pop("rejected", 0))
            per_role["chosen"] = answer
        self.example.add(sum(per_role.values()))


class _Scan:
    """Every measure's running state; :meth:`add` takes one row, :meth:`report` builds the dict."""

    def __init__(self, kind: str, count_tokens: Callable[[str], int] | None, evals: list[EvalLeakage]):
        self.kind = kind
        # Without a tokenizer both words and characters are measured (4 bytes a value each): which
        # one the report gives is only known once every text has been seen.
        if count_tokens is not None:
            self.measures = {"tokens": _Measure(count_tokens)}
        else:
            self.measures = {"whitespace words": _Measure(_count_words), "characters": _Measure(len)}
        self.texts = 0  # texts seen (message contents, answers, documents; not tool definitions)
        self.texts_without_spaces = 0
        self.rows = 0
        self.answers = {"empty": 0, "short": 0, "identical_pairs": 0, "examples": {"empty": [], "short": []}}
        self.turns = _Turns(kind)
        self.labels: Counter[str] = Counter()
        self.unlabeled = 0
        self.pii = _Pii()
        self.exact = ExactDuplicates()
        self.near = NearDuplicates(threshold=NEAR_THRESHOLD, shingle=SHINGLE)
        self.splits = SplitLeakage()
        self.evals = evals

    def add(self, index: int, row: dict) -> None:
        self.rows += 1
        parts = _parts(row)
        for measure in self.measures.values():
            measure.add(parts, self.kind)
        for role, content in parts:
            if role != "tools":
                self.texts += 1
                self.texts_without_spaces += written_without_spaces(content)
        self._check_answers(index, parts, row)
        if self.kind != "text":
            self.turns.add(index, parts)
        if row.get("label") is not None:
            self.labels[str(row["label"])] += 1
        elif row.get("desirable") is not None:  # KTO data: the balance of desirable and undesirable answers
            self.labels["desirable" if row["desirable"] else "undesirable"] += 1
        else:
            self.unlabeled += 1
        self.pii.add(index, "\n".join(c for _, c in parts))
        duplicate = self.exact.add(index, text_hash(normalize("\n".join(c for r, c in parts if r != "tools"))))
        norm = normalize("\n".join(c for r, c in parts if r not in ("system", "tools")))  # overlap_text
        words = word_hashes(norm)
        if not duplicate:  # an exact copy is counted once, as exact; the row it copies is indexed
            self.near.add(index, words)
        split = row.get("split")
        if split is None and not self.evals:
            return
        prompt = normalize(leakage_text(row))
        h, grams = text_hash(prompt), ngram_hashes(word_hashes(prompt), NGRAM)
        self.splits.add(index, split, h, grams)
        for ev in self.evals:
            ev.add(index, h, grams)

    def _check_answers(self, index: int, parts: list[tuple[str, str]], row: dict) -> None:
        if self.kind in ("conversations", "unpaired_preference"):
            answers = [c for r, c in parts if r == "assistant"]
        elif self.kind == "preference":
            answers = [row.get("chosen") or "", row.get("rejected") or ""]
            if normalize(answers[0]) == normalize(answers[1]):
                self.answers["identical_pairs"] += 1
        else:
            answers = [row.get("text") or ""]
        lengths = [len(a.strip()) for a in answers]
        if any(n == 0 for n in lengths):
            problem = "empty"
        elif row.get("label") is None and any(n < SHORT_ANSWER_CHARS for n in lengths):
            problem = "short"
        else:
            return
        self.answers[problem] += 1
        if len(self.answers["examples"][problem]) < MAX_EXAMPLES:
            self.answers["examples"][problem].append(index)

    def report(self) -> dict:
        if "tokens" in self.measures:
            unit = "tokens"
        else:
            unit = "characters" if self.texts_without_spaces else "whitespace words"
        measure = self.measures[unit]
        roles = measure.roles
        order = [r for r in (*ROLES, *_NOT_TURNS, *_EXTRA_SERIES) if r in roles]
        order += sorted(set(roles) - set(order))
        return {
            "version": REPORT_VERSION,
            "kind": self.kind,
            "rows": self.rows,
            "tokenizer": None,
            "token_unit": unit,
            "texts_without_spaces": {"count": self.texts_without_spaces, "of": self.texts},
            "tokens": {"total": sum(s.total for s in roles.values()),
                       "by_role": {r: roles[r].total for r in order}},
            "lengths": {"example": measure.example.summary(),
                        "by_role": {r: roles[r].summary() for r in order}},
            "histograms": {"bins": BIN_LABELS, "example": measure.example.hist,
                           "by_role": {r: roles[r].hist for r in order}},
            "duplicates": self._duplicates(),
            "answers": {"rule": ANSWER_RULE, **self.answers},
            "turns": self.turns.result() if self.kind != "text" else None,
            "labels": _label_balance(self.labels, self.unlabeled),
            "pii": self.pii.result(),
            "leakage": {"ngram": NGRAM, "min_share": LEAK_SHARE, "splits": self.splits.result(),
                        "eval_sets": {ev.name: ev.result() for ev in self.evals}},
        }

    def _duplicates(self) -> dict:
        n = max(self.rows, 1)
        near = self.near.result()
        return {
            "exact": {"count": self.exact.count, "share": round(self.exact.count / n, 4),
                      "examples": self.exact.examples},
            "near": {"count": near["count"], "share": round(near["count"] / n, 4),
                     "threshold": NEAR_THRESHOLD, "shingle_words": SHINGLE, "examples": near["examples"]},
        }


class _Turns:
    """Turn counts, role shares, system prompts and how conversations end."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.turns: Counter[int] = Counter()
        self.messages: Counter[str] = Counter()
        self.with_system = 0
        self.system_prompts: set[int] = set()
        self.no_user = 0
        self.no_assistant = 0
        self.bad_ending = 0  # conversations: not ending on an assistant turn; preference: prompt not ending on user
        self.bad_ending_examples: list[int] = []

    def add(self, index: int, parts: list[tuple[str, str]]) -> None:
        roles = [r for r, _ in parts if r in ROLES]
        self.turns[len(roles)] += 1
        self.messages.update(roles)
        systems = [c for r, c in parts if r == "system"]
        if systems:
            self.with_system += 1
            self.system_prompts.add(text_hash(systems[0]))
        self.no_user += "user" not in roles
        if self.kind in ("conversations", "unpaired_preference"):
            self.no_assistant += not any(r in ("assistant", "tool_call") for r in roles)
            bad = not roles or roles[-1] not in ("assistant", "tool_call")
        else:
            bad = not roles or roles[-1] != "user"
        if bad:
            self.bad_ending += 1
            if len(self.bad_ending_examples) < MAX_EXAMPLES:
                self.bad_ending_examples.append(index)

    def result(self) -> dict:
        total = max(sum(self.messages.values()), 1)
        return {
            "per_example": {str(k): v for k, v in sorted(self.turns.items())},
            "messages_by_role": dict(self.messages.most_common()),
            "role_shares": {r: round(n / total, 4) for r, n in self.messages.most_common()},
            "with_system": self.with_system,
            "distinct_system_prompts": len(self.system_prompts),
            "no_user": self.no_user,
            "no_assistant": self.no_assistant,
            "bad_ending": self.bad_ending,
            "bad_ending_rule": ("does not end with an assistant turn"
                                if self.kind in ("conversations", "unpaired_preference")
                                else "prompt does not end with a user turn"),
            "bad_ending_examples": self.bad_ending_examples,
        }


def _label_balance(labels: Counter[str], unlabeled: int, shown: int = 100) -> dict | None:
    """Counts and shares per label; flags one class, or a rarest class under 5% of labeled rows."""
    if not labels:
        return None
    total = sum(labels.values())
    ranked = labels.most_common()
    rarest, rarest_n = ranked[-1]
    return {
        "classes": len(labels),
        "counts": dict(ranked[:shown]),
        "shares": {k: round(v / total, 4) for k, v in ranked[:shown]},
        "rarest": {"label": rarest, "count": rarest_n, "share": round(rarest_n / total, 4)},
        "single_class": len(labels) == 1,
        "imbalanced": len(labels) > 1 and rarest_n / total < 0.05,
        "unlabeled": unlabeled,
    }


class _Pii:
    """Matches and rows per PII type, with a few redacted examples."""

    def __init__(self) -> None:
        self.matches: Counter[str] = Counter()
        self.rows: Counter[str] = Counter()
        self.examples: dict[str, list[dict]] = {t: [] for t in PII_TYPES}
        self.rows_with_pii = 0

    def add(self, index: int, text: str) -> None:
        found = set()
        for kind, match in find_pii(text):
            self.matches[kind] += 1
            if kind not in found:
                found.add(kind)
                self.rows[kind] += 1
                if len(self.examples[kind]) < MAX_EXAMPLES:
                    self.examples[kind].append({"row": index, "match": redact(match)})
        self.rows_with_pii += bool(found)

    def result(self) -> dict:
        return {
            "rows_with_pii": self.rows_with_pii,
            "by_type": {t: {"matches": self.matches[t], "rows": self.rows[t], "examples": self.examples[t]}
                        for t in PII_TYPES},
        }
