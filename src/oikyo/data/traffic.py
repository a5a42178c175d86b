"""Dataset versions built from a deployment's production traffic and its users' feedback.

``oikyo data from-traffic DEPLOYMENT`` (:func:`from_traffic`) turns the chat requests a deployment
logged with their content (``oikyo deploy --log-requests``) into an immutable conversations dataset
version, keeping only the answers its users vouched for::

    version, report = from_traffic("support", since="7d")      # feedback=("positive", "corrected")
    report["rows"], report["dropped"], report["pii_replaced"]
    count_usable("support", since=last_retrain)                # how many new examples; stores nothing

The rules, in the order they apply. A request left out is counted under the first reason that
applies (``report["dropped"]``, every reason listed, zeros included): nothing is dropped silently.

1. ``not_chat`` (a text completion) and ``error_status`` (not answered with status 200).
2. Feedback, read with the rule monitoring uses (:mod:`oikyo.data.ratings`). An answer with a
   correction becomes a row whose answer is the correction, whatever its rating (``corrected``);
   an answer rated positive is kept as given (``positive``). ``unrated``, ``neutral`` and
   ``negative`` answers are left out, and so are the kinds ``feedback`` does not ask for
   (``not_selected``).
3. ``no_content``: recorded without its messages (the deployment did not log requests) or without
   its answer; ``invalid``: messages the importer's OpenAI format refuses.
4. Personal data (:mod:`oikyo.data.pii`) in the messages and answers is replaced by a typed
   placeholder (``[EMAIL]``, ``[PHONE]``, ``[IP_ADDRESS]``, ``[CREDIT_CARD]``, ``[SECRET]``),
   counted per type in ``report["pii_replaced"]`` (over the rows kept).
5. ``overlaps_eval``: the prompt overlaps an evaluation set by the quality report's leakage test
   (:mod:`oikyo.data.leakage`: the same normalized text, or half the word 8-grams of either side
   found in the other). Evaluation sets: every dataset version and split an evaluation was run on,
   every version registered as an evaluation set, and the validation/test splits of the training data.
6. ``duplicate_of_training``: an exact or near (MinHash, :mod:`oikyo.data.overlap`) duplicate of
   the training data of a model version the deployment serves or served in the range (the dataset
   version in its lineage, and in its parents'); ``duplicate_in_traffic``: of an earlier request kept.

The rows are stored by the versioning path every dataset takes (:func:`oikyo.data.versions.write_parquet_rows`
and :func:`~oikyo.data.versions.store_version`, as ``oikyo data split`` does), so the same traffic gives
the same version. Each row's ``metadata`` names its request and feedback; the version's lineage records
the deployment, the model versions, the time range, the counts and every request and feedback id used.

This module reads the gateway's records from the store (``served_requests``, ``feedback``) and never
imports :mod:`oikyo.serve`: the data stage sits below serving.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable

import numpy as np
from sqlalchemy import select

from oikyo.data import ratings, versions
from oikyo.data.formats.base import RowError
from oikyo.data.formats.openai import FORMAT as OPENAI_FORMAT
from oikyo.data.formats.openai import MESSAGE_KEYS
from oikyo.data.leakage import LEAK_SHARE, NGRAM
from oikyo.data.overlap import NearDuplicates, ngram_hashes, normalize, sorted_contains, text_hash, word_hashes
from oikyo.data.pii import PII_TYPES, find_pii
from oikyo.data.quality import NEAR_THRESHOLD, SHINGLE, leakage_text, overlap_text
from oikyo.data.versions import DataError
from oikyo.store import artifacts, db
from oikyo.store.models import DatasetVersion, Deployment, Evaluation, Feedback, ModelVersion, Run, ServedRequest, utcnow

FEEDBACK_KINDS = ("positive", "corrected")
REASONS = ("not_chat", "error_status", "unrated", "neutral", "negative", "not_selected", "no_content", "invalid",
           "overlaps_eval", "duplicate_of_training", "duplicate_in_traffic")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_CHUNK = 500  # request ids per IN (...) query


class NothingUsable(DataError):
    """No request of the range can become a row; ``report`` says why each was left out."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


# ----------------------------------------------------------------------------- options


def parse_since(value: str | datetime | None, *, now: datetime | None = None) -> datetime | None:
    """``--since``: an ISO time (naive means UTC) or a duration back from ``now`` (``30m``, ``12h``, ``7d``, ``2w``)."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not value.strip():
        return None
    duration = _DURATION.match(value)
    if duration:
        return (now or utcnow()) - timedelta(**{_UNITS[duration[2]]: float(duration[1])})
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"--since takes an ISO time (2026-12-01, 2026-12-01T08:00Z) or a duration back from now "
                        f"(30m, 12h, 7d, 2w), not {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_feedback(values: str | Iterable[str] | None) -> tuple[str, ...]:
    """``--feedback``: ``positive`` and/or ``corrected``, repeated or comma-separated (None or empty: both)."""
    if values is None:
        return FEEDBACK_KINDS
    items = [values] if isinstance(values, str) else list(values)
    kinds: list[str] = []
    for item in items:
        for kind in (part.strip().lower() for part in item.split(",")):
            if kind and kind not in FEEDBACK_KINDS:
                raise DataError(f"--feedback takes {' and/or '.join(FEEDBACK_KINDS)}, not {kind!r}")
            if kind and kind not in kinds:
                kinds.append(kind)
    return tuple(kinds) or FEEDBACK_KINDS


def default_name(deployment: str) -> str:
    """``<deployment>-traffic``, made a valid dataset name."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", deployment).strip("-._") or "deployment"
    return f"{stem[:92]}-traffic"


# ----------------------------------------------------------------------------- the service API


def count_usable(deployment: str, since: str | datetime | None = None,
                 feedback: str | Iterable[str] | None = FEEDBACK_KINDS) -> int:
    """How many new examples :func:`from_traffic` would keep now; stores nothing.

    The same rules as :func:`from_traffic`. Cheap when there is little to keep: the requests' content
    is read only for answers with usable feedback, and the training and evaluation data only when
    some are left (then they are read once, as :func:`from_traffic` does)."""
    return _select(deployment, since, feedback).report["rows"]


def from_traffic(deployment: str, *, since: str | datetime | None = None,
                 feedback: str | Iterable[str] | None = FEEDBACK_KINDS,
                 name: str | None = None) -> tuple[DatasetVersion, dict]:
    """Store the usable requests of ``deployment`` since ``since`` as a dataset version: ``(version, report)``.

    ``report``: ``requests`` (in the range), ``rows``, ``kept`` per feedback kind, ``dropped`` per
    reason, ``pii_replaced`` per type, the model versions, training datasets and evaluation sets used,
    ``notes`` for the user, ``request_ids``/``feedback_ids`` of the rows, and ``version``/``existed``.
    Raises :class:`NothingUsable` (nothing stored) when no request can become a row.
    """
    name = versions.check_name(name or default_name(deployment))
    selection = _select(deployment, since, feedback)
    report = selection.report
    if not selection.kept:
        raise NothingUsable(nothing_usable_message(report), report)
    rows = [{**example.row, "metadata": json.dumps(example.metadata(deployment), sort_keys=True)}
            for example in selection.kept]
    tmp = artifacts.temp_path(".parquet")
    try:
        count, content_hash = versions.write_parquet_rows(iter(rows), tmp)
        version = versions.by_hash(content_hash)
        report["existed"] = version is not None
        if version is None:
            version = versions.store_version(tmp, content_hash, name=name, kind=OPENAI_FORMAT.kind,
                                             fmt=OPENAI_FORMAT.name, rows=count, lineage=_lineage(report))
    finally:
        tmp.unlink(missing_ok=True)
    report["version"] = version.id
    return version, report


def nothing_usable_message(report: dict) -> str:
    """Why no request of the range could become a row, and what to do about it."""
    where = f"deployment {report['deployment']!r}" + (f" since {report['since']}" if report["since"] else "")
    if not report["requests"]:
        return f"nothing usable: {where} has no recorded requests; no dataset version was made"
    reasons = ", ".join(f"{n} {reason}" for reason, n in report["dropped"].items() if n)
    message = f"nothing usable in {report['requests']} request(s) of {where} ({reasons}); no dataset version was made"
    hints = list(report["notes"])
    dropped = report["dropped"]
    if dropped["unrated"] + dropped["neutral"] + dropped["negative"] + dropped["not_selected"]:
        hints.append("only answers rated positive or corrected (POST /v1/feedback with a rating or a "
                     "correction) become rows")
    return "; ".join([message, *hints])


# ----------------------------------------------------------------------------- selection


@dataclass
class _Example:
    """A request that may become a row."""

    request_id: str
    created_at: datetime
    kind: str  # "positive" | "corrected"
    feedback_ids: list[int]
    correction: str | None
    row: dict | None = None  # the canonical row, personal data replaced
    pii: Counter = field(default_factory=Counter)

    def metadata(self, deployment: str) -> dict:
        return {"source": "traffic", "deployment": deployment, "request_id": self.request_id,
                "feedback": self.kind, "feedback_ids": self.feedback_ids}


@dataclass
class _Response:
    """The feedback on one response: the latest rating, the latest correction, every feedback id."""

    rating: float | None = None
    correction: str | None = None
    ids: list[int] = field(default_factory=list)


@dataclass
class _Selection:
    report: dict
    kept: list[_Example]


def _select(deployment: str, since, feedback, until: datetime | None = None) -> _Selection:
    """Apply the rules of the module docstring to the requests of ``deployment`` in ``[since, until]``."""
    kinds = parse_feedback(feedback)
    until = until or utcnow()
    since_at = parse_since(since, now=until)
    counts: Counter[str] = Counter()
    with db.session() as s:
        record = s.get(Deployment, deployment)
        if record is None:
            raise DataError(f"no deployment named {deployment!r}; `oikyo deployments list` shows them")
        requests = s.execute(_in_range(select(ServedRequest.id, ServedRequest.endpoint, ServedRequest.status,
                                              ServedRequest.model, ServedRequest.created_at),
                                       deployment, since_at, until)
                             .order_by(ServedRequest.created_at, ServedRequest.id)).all()
        responses, stars = _feedback(s, deployment, until)
        candidates = []
        for request_id, endpoint, status, _, created_at in requests:
            if endpoint != "chat":
                counts["not_chat"] += 1
                continue
            if status != 200:
                counts["error_status"] += 1
                continue
            given = responses.get(request_id)
            kind = ratings.verdict(given.rating if given else None,
                                   corrected=bool(given and given.correction is not None), stars=stars)
            if kind not in FEEDBACK_KINDS:
                counts[kind] += 1
            elif kind not in kinds:
                counts["not_selected"] += 1
            else:
                candidates.append(_Example(request_id, created_at, kind, given.ids, given.correction))
        candidates = _with_rows(s, candidates, counts)
        served = _model_versions(s, {model for *_, model, _ in requests} | _variant_models(record))
        training = _training_versions(s, served)
        eval_sets = _eval_sets(s, training) if candidates else []
        logs_content = bool(record.log_requests)
    kept = _against_references(candidates, training, eval_sets, counts)
    pii = Counter()
    for example in kept:
        pii.update(example.pii)
    report = {
        "deployment": deployment, "logs_content": logs_content,
        "since": since_at.isoformat() if since_at else None, "until": until.isoformat(),
        "feedback": list(kinds), "requests": len(requests), "rows": len(kept),
        "kept": {kind: sum(e.kind == kind for e in kept) for kind in FEEDBACK_KINDS},
        "dropped": {reason: counts[reason] for reason in REASONS},
        "pii_replaced": {kind: pii[kind] for kind in PII_TYPES},
        "model_versions": served, "training_datasets": sorted(training),
        "eval_sets": [f"{vid}:{split}" if split else vid for vid, split in eval_sets],
        "first_request": kept[0].created_at.isoformat() if kept else None,
        "last_request": kept[-1].created_at.isoformat() if kept else None,
        "notes": _notes(deployment, logs_content, counts),
        "request_ids": [e.request_id for e in kept],
        "feedback_ids": sorted({i for e in kept for i in e.feedback_ids}),
    }
    return _Selection(report, kept)


def _in_range(query, deployment: str, since: datetime | None, until: datetime):
    query = query.where(ServedRequest.deployment == deployment, ServedRequest.created_at <= until)
    return query.where(ServedRequest.created_at >= since) if since is not None else query


def _feedback(s, deployment: str, until: datetime) -> tuple[dict[str, _Response], bool]:
    """The feedback on each response (the latest rating and correction win, as monitoring keeps the
    latest), and whether the deployment rates with stars (:func:`oikyo.data.ratings.uses_stars`)."""
    responses: dict[str, _Response] = {}
    highest = None
    query = (select(Feedback.id, Feedback.response_id, Feedback.rating, Feedback.correction)
             .where(Feedback.deployment == deployment, Feedback.created_at <= until).order_by(Feedback.id))
    for feedback_id, response_id, rating, correction in s.execute(query):
        given = responses.setdefault(response_id, _Response())
        given.ids.append(feedback_id)
        if rating is not None:
            given.rating = rating
            highest = rating if highest is None else max(highest, rating)
        if correction is not None:
            given.correction = correction
    return responses, ratings.uses_stars(highest)


def _with_rows(s, candidates: list[_Example], counts: Counter) -> list[_Example]:
    """The candidates whose request and answer convert to a canonical row (personal data replaced)."""
    content: dict[str, tuple] = {}
    ids = [c.request_id for c in candidates]
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        query = select(ServedRequest.id, ServedRequest.request, ServedRequest.response).where(ServedRequest.id.in_(chunk))
        content.update((rid, (request, response)) for rid, request, response in s.execute(query))
    usable = []
    for example in candidates:
        request, response = content.get(example.request_id, (None, None))
        answer = example.correction if example.kind == "corrected" else response
        messages = (request or {}).get("messages") if isinstance(request, dict) else None
        if not messages or answer is None:
            counts["no_content"] += 1
            continue
        try:
            row = _row(messages, answer, (request.get("params") or {}).get("tools"))
        except RowError:
            counts["invalid"] += 1
            continue
        example.row, example.pii = scrub_row(row)
        usable.append(example)
    return usable


def _row(messages: list, answer: str, tools) -> dict:
    """The request's messages and the answer as a canonical row, by the import's OpenAI format.

    Clients send keys the importer does not know (``refusal: null``, ``annotations`` ...): only the
    keys it reads are kept, as the router does before it builds a prompt."""
    if not isinstance(messages, list):
        raise RowError("wrong_type", "messages", "messages must be a list")
    cleaned = []
    for message in messages:
        if isinstance(message, dict):
            message = {k: v for k, v in message.items() if k in MESSAGE_KEYS and v is not None}
            if "content" not in message and not message.get("tool_calls"):
                message["content"] = ""
        cleaned.append(message)
    record = {"messages": [*cleaned, {"role": "assistant", "content": answer}]}
    if tools:
        record["tools"] = tools
    return OPENAI_FORMAT.convert(record)


def scrub(text: str) -> tuple[str, Counter]:
    """``text`` with each piece of personal data found replaced by ``[TYPE]``; the replacements per type."""
    found: Counter[str] = Counter()
    # Longest first, so a match inside a longer one (a phone inside a card number) is not cut apart.
    for kind, match in sorted(set(find_pii(text)), key=lambda km: (-len(km[1]), km)):
        n = text.count(match)
        if n:
            text = text.replace(match, f"[{kind.upper()}]")
            found[kind] += n
    return text, found


def scrub_row(row: dict) -> tuple[dict, Counter]:
    """A conversations row with personal data replaced in every message's content and reasoning."""
    found: Counter[str] = Counter()
    messages = []
    for message in row["messages"]:
        message = dict(message)
        for key in ("content", "reasoning"):
            if message.get(key):
                message[key], replaced = scrub(message[key])
                found.update(replaced)
        messages.append(message)
    return {**row, "messages": messages}, found


def _notes(deployment: str, logs_content: bool, counts: Counter) -> list[str]:
    notes = []
    if not logs_content:
        notes.append(f"deployment {deployment!r} does not log request content now: only requests recorded while "
                     "it did can become rows (start it with --log-requests)")
    if counts["no_content"]:
        notes.append(f"{counts['no_content']} rated or corrected request(s) were recorded without their content "
                     "(the deployment was not logging requests then)")
    return notes


# ----------------------------------------------------------------------------- what the models saw


def _variant_models(record: Deployment) -> set[str]:
    return {record.model, *(v.get("model") for v in record.variants or [] if v.get("model"))}


def _model_versions(s, models: Iterable[str]) -> list[str]:
    """The model versions among ``models`` (the rest are base models, with no training data of ours)."""
    names = sorted(m for m in models if m)
    if not names:
        return []
    return sorted(s.scalars(select(ModelVersion.id).where(ModelVersion.id.in_(names))))


def _training_versions(s, model_versions: Iterable[str]) -> dict[str, DatasetVersion]:
    """The dataset versions the model versions were trained on, theirs and their parents' (a model
    version trained from another one, or merged from an adapter), by id."""
    found: dict[str, DatasetVersion] = {}
    todo, seen = list(model_versions), set()
    while todo:
        mv = s.get(ModelVersion, todo.pop())
        if mv is None or mv.id in seen:
            continue
        seen.add(mv.id)
        lineage = mv.lineage or {}
        version_id = lineage.get("dataset_version")
        if version_id is None and mv.run_id:
            run = s.get(Run, mv.run_id)
            version_id = run.dataset_version_id if run else None
        version = s.get(DatasetVersion, version_id) if version_id else None
        if version is not None:
            found[version.id] = version
        todo += [lineage[key] for key in ("base_model_version", "parent_model_version") if lineage.get(key)]
        if str(mv.base_model).startswith("mv-"):
            todo.append(mv.base_model)
    return found


def _eval_sets(s, training: dict[str, DatasetVersion]) -> list[tuple[str, str | None]]:
    """(dataset version id, split or None) of every evaluation set: what evaluations ran on, the
    registered evaluation sets, and the held-out splits of the training data."""
    found = set(s.execute(select(Evaluation.dataset_version_id, Evaluation.split).distinct()).all())
    found |= {(vid, None) for vid in s.scalars(select(DatasetVersion.id).where(DatasetVersion.is_eval_set.is_(True)))}
    for version in training.values():
        found |= {(version.id, split) for split in ("validation", "test") if (version.splits or {}).get(split)}
    return sorted(found, key=lambda pair: (pair[0], pair[1] or ""))


def _rows_of(version_id: str, split: str | None) -> Iterable[dict]:
    with db.session() as s:
        version = s.get(DatasetVersion, version_id)
    if version is None:
        return []
    if split is not None and not (version.splits or {}).get(split):
        return []  # a split the version does not have holds no rows
    return versions.iter_rows(version, split=split)


class _EvalIndex:
    """The prompts of the evaluation sets, for the leakage test of :mod:`oikyo.data.leakage` row by row.

    A prompt leaks when its normalized text equals an evaluation prompt, when at least
    :data:`LEAK_SHARE` of its distinct word n-grams are evaluation n-grams, or when it holds at
    least that share of one evaluation example's n-grams (an evaluation question inside a longer
    request). The n-grams are kept sorted with the example each came from: ``(grams,)`` sized arrays.
    """

    def __init__(self, prompts: Iterable[str]):
        self.hashes: set[int] = set()
        grams = []
        for prompt in prompts:
            norm = normalize(prompt)
            self.hashes.add(text_hash(norm))
            example = np.unique(ngram_hashes(word_hashes(norm), NGRAM))
            if example.size:
                grams.append(example)
        self.sizes = np.array([g.size for g in grams], dtype=np.int64)
        every = np.concatenate(grams) if grams else np.zeros(0, np.uint64)
        order = np.argsort(every, kind="stable")
        self.grams = every[order]  # (n-grams of all examples,) sorted
        self.owners = np.repeat(np.arange(len(grams)), self.sizes)[order]  # the example of each n-gram
        self.distinct = np.unique(every)

    def leaks(self, prompt: str) -> bool:
        norm = normalize(prompt)
        if text_hash(norm) in self.hashes:
            return True
        grams = np.unique(ngram_hashes(word_hashes(norm), NGRAM))
        if grams.size == 0 or self.grams.size == 0:
            return False
        if sorted_contains(self.distinct, grams).mean() >= LEAK_SHARE:
            return True
        left = np.searchsorted(self.grams, grams, "left")
        lengths = np.searchsorted(self.grams, grams, "right") - left
        total = int(lengths.sum())
        if total == 0:
            return False
        # Every position in self.grams equal to one of the prompt's n-grams: left[j] .. left[j] + lengths[j].
        positions = np.arange(total) + np.repeat(left - (np.cumsum(lengths) - lengths), lengths)
        hits = np.bincount(self.owners[positions], minlength=self.sizes.size)
        return bool((hits >= LEAK_SHARE * self.sizes).any())


def _against_references(candidates: list[_Example], training: dict[str, DatasetVersion],
                        eval_sets: list[tuple[str, str | None]], counts: Counter) -> list[_Example]:
    """The candidates that overlap no evaluation set and duplicate neither the training data nor an
    earlier candidate (candidates come oldest first, so the first of a set of duplicates is kept)."""
    if not candidates:
        return []
    if eval_sets:
        index = _EvalIndex(leakage_text(row) for vid, split in eval_sets for row in _rows_of(vid, split))
        clean = [c for c in candidates if not index.leaks(leakage_text(c.row))]
        counts["overlaps_eval"] += len(candidates) - len(clean)
        candidates = clean
    # Near duplicates come from one MinHash index over the training rows (0 .. n - 1), then the candidates.
    near = NearDuplicates(threshold=NEAR_THRESHOLD, shingle=SHINGLE)
    trained: set[int] = set()
    n = 0
    for version in training.values():
        split = "train" if (version.splits or {}).get("train") else None
        for row in versions.iter_rows(version, split=split):
            norm = normalize(overlap_text(row))
            h = text_hash(norm)
            if h not in trained:  # an exact copy adds nothing to the near-duplicate index
                trained.add(h)
                near.add(n, word_hashes(norm))
                n += 1
    seen: set[int] = set()
    pending: list[_Example] = []
    for example in candidates:
        norm = normalize(overlap_text(example.row))
        h = text_hash(norm)
        if h in trained:
            counts["duplicate_of_training"] += 1
        elif h in seen:
            counts["duplicate_in_traffic"] += 1
        else:
            seen.add(h)
            near.add(n + len(pending), word_hashes(norm))
            pending.append(example)
    earlier, later, _ = near.pairs()
    partner = {int(l): int(e) for e, l in zip(earlier, later) if l >= n}
    kept = []
    for j, example in enumerate(pending):
        match = partner.get(n + j)
        if match is None:
            kept.append(example)
        else:
            counts["duplicate_of_training" if match < n else "duplicate_in_traffic"] += 1
    return kept


def _lineage(report: dict) -> dict:
    """What the version records about where it came from (the report without the per-run fields)."""
    return {
        "operation": "from_traffic",
        "deployment": report["deployment"],
        "model_versions": report["model_versions"],
        "time_range": {"since": report["since"], "until": report["until"], "first_request": report["first_request"],
                       "last_request": report["last_request"]},
        "feedback": report["feedback"],
        "requests": report["requests"],
        "kept": report["kept"],
        "dropped": report["dropped"],
        "pii_replaced": report["pii_replaced"],
        "training_datasets": report["training_datasets"],
        "eval_sets": report["eval_sets"],
        "request_ids": report["request_ids"],
        "feedback_ids": report["feedback_ids"],
    }
