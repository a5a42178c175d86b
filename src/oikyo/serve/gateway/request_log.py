"""What a deployment served: one row per request, feedback on responses (ratings and corrections), and export.

Every answered request is recorded (deployment, variant, model, status, latency, time to first
token, token counts): the A/B report and traffic views need them. The request's messages and the
response text are recorded only when the deployment logs requests (``--log-requests``, opt-in).
The router records through a :class:`RequestRecorder`, which writes in batches from a background
thread so no request waits on the database. Hooks run in that thread on each batch just before it is
written (the quality signals of :mod:`oikyo.monitor.quality` fill ``record.quality`` there)::

    recorder = RequestRecorder()
    recorder.add(RequestRecord(id="chatcmpl-..", deployment="bot", ...))
    record_feedback("bot", "chatcmpl-..", rating=1, comment="great")
    record_feedback("bot", "chatcmpl-..", correction="The ideal answer.")  # trained on by `oikyo data from-traffic`
    export_logged_requests("bot", "traffic.jsonl")    # OpenAI chat JSONL; `oikyo data import` reads it
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from sqlalchemy import select

from oikyo.errors import OikyoError
from oikyo.store import db
from oikyo.store.models import Feedback, ServedRequest, utcnow

log = logging.getLogger(__name__)


@dataclass
class RequestRecord:
    """One answered request, as the router saw it."""

    id: str
    deployment: str
    variant: str | None
    model: str
    endpoint: str  # "chat" | "completions"
    status: int
    latency_s: float
    stream: bool = False
    error: str | None = None
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    request: dict | None = None  # only with --log-requests
    response: str | None = None  # only with --log-requests
    quality: dict | None = None  # quality signals of the answer, filled by a recorder hook
    created_at: datetime = field(default_factory=utcnow)
    # The answer's text in memory for the hooks, even without --log-requests; never written.
    text: str | None = field(default=None, repr=False)


class RequestRecorder:
    """Writes :class:`RequestRecord` rows in batches from a background thread (every ``every_s``)."""

    def __init__(self, every_s: float = 0.5):
        self.every_s = every_s
        self._pending: list[RequestRecord] = []
        self._lock = threading.Lock()  # guards _pending
        self._write_lock = threading.Lock()  # one writer at a time
        self._wake = threading.Event()
        self._closed = False
        self._hooks: list[Callable[[list[RequestRecord]], None]] = []
        self._thread = threading.Thread(target=self._run, name="oikyo-request-log", daemon=True)
        self._thread.start()

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._pending.append(record)

    def add_hook(self, hook: Callable[[list[RequestRecord]], None]) -> None:
        """Call ``hook(batch)`` on each batch before it is written, in the writer thread (off the request path)."""
        self._hooks.append(hook)

    def flush(self) -> None:
        """Write everything recorded so far, now (in the calling thread)."""
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            for hook in self._hooks:
                try:
                    hook(batch)
                except Exception:  # a hook must never cost the records
                    log.exception("request-log hook %r failed on %d records", hook, len(batch))
            try:
                with db.session() as s:
                    s.add_all([ServedRequest(**_stored(r)) for r in batch])
            except Exception:  # the log must never take serving down; say so loudly instead
                log.exception("could not record %d served requests", len(batch))

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.every_s)
            self.flush()


def _stored(record: RequestRecord) -> dict:
    fields = asdict(record)
    fields.pop("text")
    return fields


class UnknownResponse(OikyoError):
    """Feedback names a response this deployment did not give (or that was never recorded)."""


def record_feedback(deployment: str, response_id: str, rating: float | None = None, comment: str | None = None, *,
                    correction: str | None = None) -> Feedback:
    """Store feedback on a response this deployment gave; the response's variant comes from its record.

    ``rating`` (-1..1 thumbs or 1..5 stars) and ``correction`` (the ideal answer, which
    ``oikyo data from-traffic`` trains on instead of the response) are each optional, but one of them
    must be given. Raises :class:`UnknownResponse` for a response id the deployment never answered,
    and :class:`~oikyo.errors.OikyoError` for bad feedback.
    """
    if rating is None and correction is None:
        raise OikyoError("give a rating, a correction (the ideal answer) or both")
    if rating is not None and not -1.0 <= rating <= 5.0:
        raise OikyoError("rating must be in -1..1 (thumbs) or 1..5 (stars)")
    if correction is not None and not correction.strip():
        raise OikyoError("the correction is empty: give the ideal answer, or leave the correction out")
    with db.session() as s:
        served = s.get(ServedRequest, response_id)
        if served is None or served.deployment != deployment:
            raise UnknownResponse(f"no response {response_id!r} from deployment {deployment!r}")
        feedback = Feedback(deployment=deployment, response_id=response_id, variant=served.variant,
                            rating=None if rating is None else float(rating), comment=comment,
                            correction=correction, created_at=utcnow())
        s.add(feedback)
    return feedback


def request_rows(deployment: str) -> list[dict]:
    """Every recorded request of a deployment (without content): variant, status, latency, ttft, tokens."""
    query = (select(ServedRequest.id, ServedRequest.variant, ServedRequest.model, ServedRequest.status,
                    ServedRequest.latency_s, ServedRequest.ttft_s, ServedRequest.completion_tokens)
             .where(ServedRequest.deployment == deployment).order_by(ServedRequest.created_at))
    with db.session() as s:
        return [row._asdict() for row in s.execute(query)]


def feedback_rows(deployment: str) -> list[dict]:
    """The ratings of a deployment's responses, oldest first (corrections given without a rating are left out)."""
    query = (select(Feedback.response_id, Feedback.variant, Feedback.rating, Feedback.comment)
             .where(Feedback.deployment == deployment, Feedback.rating.is_not(None)).order_by(Feedback.id))
    with db.session() as s:
        return [row._asdict() for row in s.execute(query)]


def logged_requests(deployment: str, limit: int | None = None) -> list[ServedRequest]:
    """Requests recorded with their content (``--log-requests``), oldest first."""
    query = (select(ServedRequest).where(ServedRequest.deployment == deployment, ServedRequest.request.is_not(None))
             .order_by(ServedRequest.created_at))
    if limit:
        query = query.limit(limit)
    with db.session() as s:
        return list(s.scalars(query))


def export_logged_requests(deployment: str, path: str | Path, *, min_rating: float | None = None) -> int:
    """Write the deployment's logged, successful chat requests as OpenAI chat JSONL; returns the rows written.

    Each line is ``{"messages": [...request messages, {"role": "assistant", "content": response}]}``,
    which ``oikyo data import`` reads as the openai format. ``min_rating`` keeps only responses whose
    feedback averages at least that (responses without feedback are then left out).
    """
    ratings: dict[str, list[float]] = {}
    if min_rating is not None:
        for row in feedback_rows(deployment):
            ratings.setdefault(row["response_id"], []).append(row["rating"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        for row in logged_requests(deployment):
            if row.endpoint != "chat" or row.status != 200 or row.response is None:
                continue
            messages = (row.request or {}).get("messages")
            if not messages:
                continue
            if min_rating is not None:
                got = ratings.get(row.id)
                if not got or sum(got) / len(got) < min_rating:
                    continue
            conversation = [*messages, {"role": "assistant", "content": row.response}]
            out.write(json.dumps({"messages": conversation}, ensure_ascii=False) + "\n")
            written += 1
    return written
