"""Cheap quality signals of every answer a deployment gives, computed off the request's path.

Each successful answer gets a small dict of signals, stored with the request
(``ServedRequest.quality``) and counted as Prometheus metrics per model version and variant::

    check("I'm sorry, but I can't help with that.", completion_tokens=11)
    # {"chars": 38, "tokens": 11, "empty": False, "degenerate": False, "degenerate_rule": None,
    #  "refusal": True, "json_valid": None, "schema_match": None, "missing_keys": [],
    #  "invalid_json": False, "schema_mismatch": False}

    schema = expected_schema("mv-1a2b")   # from its training data (lineage), None for prose models
    check('{"category": "billing"}', schema=schema)["missing_keys"]   # ["priority", "sentiment"]
    summary("support-bot", window_s=3600)  # {variant: {"checked": .., "refusal_share": .., ...}}

The signals (docs/monitoring.md, "Quality signals"):

- ``chars`` and ``tokens`` (the completion tokens the engine reported, None when unknown).
- ``empty``: nothing but whitespace. An empty answer is flagged ``empty``, not ``degenerate``.
- ``degenerate`` / ``degenerate_rule``: :func:`oikyo.evaluate.degeneration.judge` (the forgetting
  probe's rules: character runs, repeated lines or phrases, not language, glued words). Only the
  rule's name is stored, never its detail: the detail quotes the answer, which is kept only when
  the deployment logs requests.
- ``refusal``: the answer opens with a refusal-like phrase from ``refusals.txt`` beside this module.
- ``json_valid``: the answer parses as a JSON object (a Markdown code fence around it is allowed).
  None (not applicable) unless the model version was trained on JSON answers or the answer itself
  starts like JSON: prose answers of a chat model are not "invalid JSON".
- ``schema_match`` / ``missing_keys`` / ``extra_keys`` / ``wrong_types``: only where the model
  version's training answers are JSON objects (:func:`expected_schema`): the answer has every
  required key, no key the training answers never had, and the value types seen in training.
- ``invalid_json`` / ``schema_mismatch``: booleans (``json_valid is False``, ``schema_match is
  False``), so each of :data:`FLAGS` is a boolean key of the stored record.
- ``feedback`` / ``negative_feedback`` (and ``corrected``): added later, when the answer is rated or
  corrected (:func:`note_feedback`; a correction without a rating counts as negative feedback).

In the gateway, :class:`RequestQuality` is a :class:`~oikyo.serve.gateway.request_log.RequestRecorder`
hook: it runs in the recorder's background thread on each batch of records, just before they are
written, so no request waits on it. It checks the answer text the router saw even when the
deployment does not log requests (the text stays in memory until the batch is written, then only
the signals are kept).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from oikyo.evaluate import degeneration
from oikyo.evaluate.json_answers import parse_json
from oikyo.serve.gateway.metrics import QUALITY_SIGNALS

log = logging.getLogger(__name__)

REFUSALS_FILE = Path(__file__).with_name("refusals.txt")
REFUSAL_HEAD = 200  # refusals open the answer: only its first characters are searched
FLAGS = QUALITY_SIGNALS  # the signal label of oikyo_quality_flags_total
SCHEMA_SAMPLE = 500  # training answers read to derive a schema
STRUCTURED_SHARE = 0.9  # this share of training answers must be JSON objects for the model to "answer in JSON"
# An answer that starts like JSON (bare or in a ```json fence) is judged as JSON even from a prose model.
_LOOKS_LIKE_JSON = re.compile(r"\s*(?:```(?:json)?\s*)?[\[{]", re.IGNORECASE)
MAX_EXTRA_KEYS = 10  # extra keys named in a record (the model invents them; the record stays small)
REQUIRED_SHARE = 0.95  # a key in this share of the training objects is required; rarer ones are optional


# ----------------------------------------------------------------------------- signals of one answer


@lru_cache(maxsize=1)
def refusal_pattern() -> re.Pattern:
    """One case-insensitive regex of the phrases in ``refusals.txt``, each as whole words."""
    phrases = [line.strip() for line in REFUSALS_FILE.read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    alternatives = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def is_refusal(text: str) -> bool:
    """Does the answer open with a refusal-like phrase (curly apostrophes read as straight ones)?"""
    head = text.lstrip()[:REFUSAL_HEAD].replace("\u2019", "'").replace("\u2018", "'")
    return refusal_pattern().search(head) is not None


def json_type(value) -> str:
    """The JSON type name of a parsed value: object, array, string, number, boolean or null."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "null"


@dataclass
class Schema:
    """The JSON answers a model version was trained to give: keys (required, optional) and value types."""

    required: list[str]
    optional: list[str] = field(default_factory=list)
    types: dict[str, list[str]] = field(default_factory=dict)  # key -> JSON type names seen in training
    source: str | None = None  # the dataset version it was read from
    answers: int = 0  # training answers read

    def to_dict(self) -> dict:
        return asdict(self)

    def compare(self, obj: dict) -> dict:
        """``missing_keys``, ``extra_keys`` and ``wrong_types`` of a parsed answer, and ``schema_match``."""
        allowed = set(self.required) | set(self.optional)
        missing = [k for k in self.required if k not in obj]
        extra = sorted(k for k in obj if k not in allowed)[:MAX_EXTRA_KEYS]
        wrong = [k for k in self.required + self.optional
                 if k in obj and self.types.get(k) and json_type(obj[k]) not in self.types[k]]
        return {"schema_match": not (missing or extra or wrong), "missing_keys": missing, "extra_keys": extra,
                "wrong_types": wrong}


def check(text: str, *, completion_tokens: int | None = None, schema: Schema | None = None,
          truncated: bool = False) -> dict:
    """The quality signals of one answer (see the module docstring); ``truncated``: it hit the token limit."""
    empty = not text.strip()
    verdict = degeneration.OK if empty else degeneration.judge(text, truncated=truncated)
    signals = {"chars": len(text), "tokens": completion_tokens, "empty": empty, "degenerate": verdict.degenerate,
               "degenerate_rule": verdict.rule, "refusal": not empty and is_refusal(text),
               "json_valid": None, "schema_match": None, "missing_keys": []}
    if schema is not None or _LOOKS_LIKE_JSON.match(text):
        parsed = parse_json(text) if not empty else None
        signals["json_valid"] = isinstance(parsed, dict)
        if schema is not None:
            if isinstance(parsed, dict):
                signals.update(schema.compare(parsed))
            else:
                signals.update(schema_match=False, missing_keys=list(schema.required), extra_keys=[], wrong_types=[])
    # Every flag is a boolean key too, so readers of stored signals need no rules.
    signals["invalid_json"] = signals["json_valid"] is False
    signals["schema_mismatch"] = signals["schema_match"] is False
    if truncated:
        signals["truncated"] = True
    return signals


def flags(signals: dict) -> list[str]:
    """The :data:`FLAGS` an answer's signals raise (the ``signal`` label of oikyo_quality_flags_total)."""
    return [name for name in FLAGS if signals.get(name)]


# ----------------------------------------------------------------------------- schema from training data


def training_answers(rows: Iterable[dict], kind: str) -> Iterable[str]:
    """The assistant targets of a dataset version's rows: assistant turns, or the chosen answer."""
    for row in rows:
        if kind == "preference":
            if row.get("chosen") is not None:
                yield row["chosen"]
            continue
        if kind == "unpaired_preference" and not row.get("desirable", True):
            continue
        for message in row.get("messages") or []:
            if message.get("role") == "assistant" and message.get("content") is not None:
                yield message["content"]


def schema_from_answers(answers: Iterable[str], source: str | None = None) -> Schema | None:
    """The :class:`Schema` of training answers when at least :data:`STRUCTURED_SHARE` are JSON objects."""
    objects, total = [], 0
    for answer in answers:
        total += 1
        parsed = parse_json(answer)
        if isinstance(parsed, dict):
            objects.append(parsed)
        if total >= SCHEMA_SAMPLE:
            break
    if not objects or len(objects) < STRUCTURED_SHARE * total:
        return None
    counts = Counter(key for obj in objects for key in obj)
    types: dict[str, set[str]] = {}
    for obj in objects:
        for key, value in obj.items():
            types.setdefault(key, set()).add(json_type(value))
    keys = sorted(counts, key=lambda k: (-counts[k], k))
    required = [k for k in keys if counts[k] >= REQUIRED_SHARE * len(objects)]
    optional = [k for k in keys if k not in required]
    # A key that is sometimes null in training may be null in answers too.
    return Schema(required=required, optional=optional, types={k: sorted(v) for k, v in types.items()},
                  source=source, answers=total)


def schema_for_dataset(version) -> Schema | None:
    """The schema of a dataset version's assistant targets (None when they are not JSON objects)."""
    from oikyo.data import versions

    if version.kind == "text":
        return None
    return schema_from_answers(training_answers(versions.iter_rows(version), version.kind), source=version.id)


def training_dataset(model: str):
    """The dataset version a model version was trained on (its lineage, else its run's), or None."""
    from oikyo.store import db
    from oikyo.store.models import DatasetVersion, ModelVersion, Run

    with db.session() as s:
        mv = s.get(ModelVersion, model)
        if mv is None:
            return None  # a base model, or a name that is not a model version: no training answers to read
        dataset_id = (mv.lineage or {}).get("dataset_version")
        if not dataset_id and mv.run_id:
            run = s.get(Run, mv.run_id)
            dataset_id = run.dataset_version_id if run else None
        return s.get(DatasetVersion, dataset_id) if dataset_id else None


def expected_schema(model: str) -> Schema | None:
    """The JSON answers model version ``model`` was trained to give, or None (prose, base model, unknown)."""
    version = training_dataset(model)
    return schema_for_dataset(version) if version is not None else None


# ----------------------------------------------------------------------------- the gateway hook


class RequestQuality:
    """A RequestRecorder hook: fills ``record.quality`` of each successful answer and counts its flags.

    Runs in the recorder's writer thread. Schemas are derived once per model, then cached for the
    router's life (model versions and dataset versions are immutable)."""

    def __init__(self, metrics=None, schema_for=expected_schema):
        self.metrics = metrics
        self.schema_for = schema_for
        self._schemas: dict[str, Schema | None] = {}
        self._lock = threading.Lock()

    def schema(self, model: str) -> Schema | None:
        with self._lock:
            if model in self._schemas:
                return self._schemas[model]
        try:
            found = self.schema_for(model)
        except Exception:  # a broken lineage must not stop the checks; the next batch tries again
            log.exception("could not derive the answer schema of %s", model)
            return None
        with self._lock:
            self._schemas[model] = found
        return found

    def __call__(self, batch: list) -> None:
        for record in batch:
            text = record.response if record.response is not None else getattr(record, "text", None)
            if record.status != 200 or text is None:
                continue
            record.quality = check(text, completion_tokens=record.completion_tokens, schema=self.schema(record.model),
                                   truncated=_hit_limit(record))
            if self.metrics is not None:
                self.metrics.observe_quality(model=record.model, variant=record.variant, flags=flags(record.quality))


def _hit_limit(record) -> bool:
    """Generation stopped at ``max_tokens`` (known only when the request is logged with its params)."""
    params = (record.request or {}).get("params") or {}
    limit = params.get("max_tokens") or params.get("max_completion_tokens")
    return bool(limit and record.completion_tokens and record.completion_tokens >= limit)


# ----------------------------------------------------------------------------- feedback


def is_negative(rating: float, *, stars: bool) -> bool:
    """A thumbs-down (< 0 on the -1..1 scale) or one or two stars (on the 1..5 scale): the rule of
    :mod:`oikyo.data.ratings`, which also decides which answers become training data."""
    from oikyo.data import ratings

    return ratings.is_negative(rating, stars=stars)


def note_feedback(deployment: str, response_id: str, rating: float | None, *, corrected: bool = False) -> bool:
    """Add a rating to the served request's quality record; returns whether it is negative.

    The deployment's scale is read from its ratings: stars once any rating above 1 was given, else
    thumbs (a lone 1 is a thumbs-up until a star rating shows the deployment uses stars).
    ``corrected``: the feedback holds a correction (the ideal answer). A correction without a rating
    counts as negative feedback on the answer it corrects (``feedback`` is then None); with a rating,
    the rating decides. The rule is :mod:`oikyo.data.ratings`, shared with ``oikyo data from-traffic``."""
    from sqlalchemy import func, select

    from oikyo.data import ratings
    from oikyo.store import db
    from oikyo.store.models import Feedback, ServedRequest

    with db.session() as s:
        highest = s.scalar(select(func.max(Feedback.rating)).where(Feedback.deployment == deployment))
        known = [r for r in (highest, rating) if r is not None]
        stars = ratings.uses_stars(max(known) if known else None)
        negative = ratings.feedback_is_negative(rating, corrected=corrected, stars=stars)
        served = s.get(ServedRequest, response_id)
        if served is not None and served.deployment == deployment:
            # A new dict, not an in-place change: the JSON column only notices reassignment.
            noted = {"feedback": rating, "negative_feedback": negative}
            if corrected:
                noted["corrected"] = True
            served.quality = {**(served.quality or {}), **noted}
    return negative


# ----------------------------------------------------------------------------- summary for others


def summary(deployment: str, window_s: float = 3600.0, *, now: datetime | None = None) -> dict[str, dict]:
    """Quality of a deployment's checked answers over the last ``window_s`` seconds, per variant.

    ``{variant: {"checked", "degenerate_share", "refusal_share", "empty_share", "invalid_json_share",
    "schema_mismatch_share", "mean_chars", "rated", "negative_feedback_share"}}``. Shares are of the
    checked answers (as the Prometheus flags are of oikyo_quality_checked_total), except
    ``negative_feedback_share``: of the rated ones (None without ratings). The variant is the
    request's variant label, or its model when it named one directly."""
    from sqlalchemy import select

    from oikyo.store import db
    from oikyo.store.models import ServedRequest

    until = now or datetime.now(timezone.utc)
    since = until - timedelta(seconds=window_s)
    query = (select(ServedRequest.variant, ServedRequest.model, ServedRequest.quality)
             .where(ServedRequest.deployment == deployment, ServedRequest.created_at >= since,
                    ServedRequest.created_at <= until, ServedRequest.status == 200))
    totals: dict[str, Counter] = {}
    with db.session() as s:
        for variant, model, quality in s.execute(query):
            if not quality or "chars" not in quality:
                continue
            counts = totals.setdefault(variant or model, Counter())
            counts["checked"] += 1
            counts["chars"] += quality["chars"]
            for flag in flags(quality):
                counts[flag] += 1
            if "feedback" in quality:
                counts["rated"] += 1
                counts["negative"] += bool(quality.get("negative_feedback"))
    return {variant: _shares(c) for variant, c in sorted(totals.items(), key=lambda kv: str(kv[0]))}


def _shares(counts: Counter) -> dict:
    checked = counts["checked"]
    out = {"checked": checked}
    for flag in FLAGS:
        out[f"{flag}_share"] = counts[flag] / checked
    out["mean_chars"] = counts["chars"] / checked
    out["rated"] = counts["rated"]
    out["negative_feedback_share"] = counts["negative"] / counts["rated"] if counts["rated"] else None
    return out
