"""Drift detection on a deployment's live traffic, against the data its model was trained on.

A drift check takes, for each variant of a deployment, the last ``W`` logged requests (the
window: requests recorded with their content, ``--log-requests``) and asks whether they still
look like the reference: by default the training split of the dataset version the variant's model
version was trained on (lineage: model version -> run -> dataset version), or a dataset version the
user names. Detectors (:mod:`oikyo.monitor.detectors`) look at the inputs (length, script and
language share, out-of-vocabulary share, the base model's own embeddings by MMD) and at the
answers (length, quality signals, labels for classification tasks).

Thresholds are not constants: each detector's is calibrated on the reference itself so that false
alarms come at most once every ``F`` requests (``--false-alarm-every``), with Bonferroni over the
detectors; the maths is in :mod:`oikyo.monitor.calibration`. A detector's ``score`` is its
statistic over its threshold: above 1 is an alarm.

Where it runs: in its own process, never in the request's path. The router only logs requests
(batched, off the hot path); ``oikyo deployments drift NAME`` reads them from the store, loads the
served base model once for embeddings (reference embeddings are cached on disk per model and
reference sample), checks, and writes one :class:`~oikyo.store.models.DriftCheck` row per
detector and variant. With ``DriftSettings(nice=N)`` (the command's ``--nice``, 19 by default) the
embeddings are computed in a worker process at that low priority, in a session of its own, so that
checks use the cores serving leaves idle and wait while it keeps them busy (the reasons and a
measurement are in :mod:`oikyo.monitor.embeddings`). ``--every SECONDS`` keeps the process (and the
model) alive and checks each variant again whenever ``stride`` new requests have come in, so checks
per request stay ``1/stride`` as the calibration assumes. An alarm is also recorded as a deployment event
(:func:`oikyo.monitor.events.record`), and the router's ``/metrics`` exports the latest scores as
``oikyo_drift_score{deployment,variant,detector}`` (read from the store, see
:mod:`oikyo.monitor.drift_records`), so Prometheus alert rules cover drift too::

    from oikyo.monitor import drift
    report = drift.check("support-bot", settings=drift.DriftSettings(window=200, false_alarm_every=10000))
    for variant in report.variants:
        for f in variant.findings:
            print(variant.variant, f.detector, f.score, f.alarm, f.what)
    drift.watch("support-bot", every=300)                 # forever, or iterations=N
    drift.watch("support-bot", every=300, settings=drift.DriftSettings(nice=19))  # embeddings yield the CPU
    drift.history("support-bot", detector="input_embedding", limit=50)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from oikyo.errors import OikyoError
from oikyo.monitor import descriptors as d
from oikyo.monitor import detectors as det
from oikyo.monitor.calibration import Calibrated, bootstrap_windows, calibrate, draws_for, per_check_alpha
from oikyo.monitor.drift_records import describe as describe_check
from oikyo.monitor.drift_records import history  # noqa: F401  (part of this module's API)
from oikyo.store import db
from oikyo.store.models import DriftCheck, ServedRequest, utcnow

log = logging.getLogger(__name__)
MIN_REFERENCE = 40  # rows: fewer cannot be split into a comparison and a calibration half
EVENT_EXAMPLES = 3


class DriftError(OikyoError):
    """A drift check cannot run: no logged traffic, no reference, too little of either."""


class DriftSettings(BaseModel):
    """How a drift check looks at traffic and how often it may cry wolf."""

    window: int = Field(200, ge=10, description="Logged requests per variant in one check (the newest ones).")
    stride: int | None = Field(None, ge=1, description="Requests between two checks of a variant in periodic mode "
                                                         "(default: the window, so windows do not overlap).")
    false_alarm_every: float = Field(10000, gt=0, description="Expected requests between two false alarms; "
                                                                "every threshold is calibrated from it.")
    reference_rows: int = Field(1000, ge=MIN_REFERENCE, description="Reference rows sampled (half to compare "
                                                                      "with, half to calibrate thresholds on).")
    embeddings: bool = Field(True, description="Run the embedding detector (loads the served base model).")
    nice: int = Field(0, ge=0, le=19, description="Embed in a worker process at this lower CPU priority, in a "
                                                  "session of its own, so serving on the same machine gets the "
                                                  "cores first (0: embed in this process at its priority).")
    seed: int = Field(0, description="Seed of the reference sample, its split and the bootstrap draws.")

    @property
    def every_requests(self) -> int:
        return self.stride or self.window


@dataclass
class Reference:
    """The rows live traffic is compared with: a sample of a dataset version (its train split when split)."""

    name: str  # name@id, and the split
    version_id: str
    items: list[d.Item]


@dataclass
class Finding:
    """One detector's verdict on one window."""

    detector: str
    raw: float
    statistic: float
    threshold: float
    score: float
    alarm: bool
    what: str
    examples: list[dict]
    calibration: dict


@dataclass
class VariantReport:
    variant: str
    model: str
    reference: str | None = None
    requests: int = 0
    window_start: datetime | None = None
    window_end: datetime | None = None
    findings: list[Finding] = field(default_factory=list)
    skipped: str | None = None  # why this variant was not checked

    @property
    def alarm(self) -> bool:
        return any(f.alarm for f in self.findings)


@dataclass
class DriftReport:
    deployment: str
    settings: DriftSettings
    variants: list[VariantReport]

    def to_dict(self) -> dict:
        def iso(moment):
            return moment.isoformat() if moment else None

        return {"deployment": self.deployment, "settings": self.settings.model_dump(),
                "variants": [{"variant": v.variant, "model": v.model, "reference": v.reference, "requests": v.requests,
                              "window_start": iso(v.window_start), "window_end": iso(v.window_end),
                              "skipped": v.skipped, "alarm": v.alarm,
                              "findings": [f.__dict__ for f in v.findings]} for v in self.variants]}


# ----------------------------------------------------------------------------- the reference


def reference_version(model: str, dataset: str | None = None):
    """The dataset version to compare ``model``'s traffic with: ``dataset`` when named, else its training data."""
    from oikyo.data import versions
    from oikyo.jobs import model_versions
    from oikyo.store.models import DatasetVersion, Run

    if dataset:
        return versions.resolve(dataset)
    if not model.startswith("mv-"):
        raise DriftError(f"{model} is a base model: it has no training data to compare with; name a reference "
                         "dataset with --reference DATASET")
    mv = model_versions.get(model)
    version_id = (mv.lineage or {}).get("dataset_version")
    with db.session() as s:
        if version_id is None and mv.run_id:
            run = s.get(Run, mv.run_id)
            version_id = run.dataset_version_id if run else None
        version = s.get(DatasetVersion, version_id) if version_id else None
    if version is None:
        raise DriftError(f"model version {mv.id} records no training dataset (lineage); name a reference dataset "
                         "with --reference DATASET")
    return version


def load_reference(version, rows: int, seed: int = 0) -> Reference:
    """A shuffled sample of at most ``rows`` items of ``version`` (of its train split when it is split)."""
    from oikyo.data import versions

    split = "train" if version.splits and version.splits.get("train") else None
    items = [it for it in (d.item_from_row(r) for r in versions.iter_rows(version, split=split)) if it is not None]
    name = f"{version.name}@{version.id}" + (f" ({split})" if split else "")
    if len(items) < MIN_REFERENCE:
        raise DriftError(f"reference {name} has {len(items)} rows with an input; a drift check needs at least "
                         f"{MIN_REFERENCE}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))[:rows]
    return Reference(name=name, version_id=version.id, items=[items[i] for i in order])


# ----------------------------------------------------------------------------- calibrated detectors


def quality_function() -> tuple[Callable[[list[str]], list[dict]], Callable[[dict], list[str]], list[str]]:
    """How :mod:`oikyo.monitor.quality` scores answers: (signals of a list of reference answers, the flags
    a signals dict raises, the flag names). Reference answers are checked against the JSON schema of
    the reference answers themselves, as live answers are against their training data's."""
    from oikyo.monitor import quality

    def reference_signals(answers: list[str]) -> list[dict]:
        schema = quality.schema_from_answers(answers)
        return [quality.check(a, schema=schema) for a in answers]

    return reference_signals, quality.flags, list(quality.FLAGS)


class Checker:
    """Detectors prepared and calibrated for one reference, base model and window size; reused across checks."""

    def __init__(self, reference: Reference, settings: DriftSettings, *, embedder=None, quality=None):
        self.reference, self.settings = reference, settings
        items = reference.items
        half = len(items) // 2
        ref, pool = items[:half], items[half:]
        count = embedder.token_counts if embedder is not None else None
        found: list[det.Detector] = [
            det.LengthDetector.build("input", ref, pool, count),
            det.CategoryDetector.build("input_script", ref, pool, lambda it: d.script_of(it.input)),
            det.OovDetector.build(ref, pool),
        ]
        if embedder is not None:
            from oikyo.monitor.embeddings import cached_embed

            found.append(det.EmbeddingDetector.build(ref, pool, embedder.embed, lambda t: cached_embed(embedder, t)))
        if sum(it.output is not None for it in items) >= 0.8 * len(items):
            found.append(det.LengthDetector.build("output", ref, pool, count))
            found += self._output_detectors(ref, pool, quality)
        self.detectors = found
        self.alpha = per_check_alpha(settings.false_alarm_every, settings.every_requests, len(found))
        rng = np.random.default_rng(settings.seed + 1)
        windows = bootstrap_windows(rng, len(pool), settings.window, draws_for(self.alpha))
        self.calibrations: dict[str, Calibrated] = {
            x.name: calibrate(x.null_raw(windows), self.alpha, x.kind, x.floor(settings.window, self.alpha),
                              center_draws=x.center_draws(rng, len(pool), len(windows)))
            for x in found}

    @staticmethod
    def _output_detectors(ref, pool, quality) -> list[det.Detector]:
        out: list[det.Detector] = []
        labels = {it.label for it in ref + pool if it.label}
        if len(labels) >= 2:
            spelling = {label.lower(): label for label in labels}
            out.append(det.CategoryDetector.build(
                "output_labels", ref, pool, lambda it: d.label_of(it.output, spelling),
                ref_categorize=lambda it: it.label or d.OTHER_LABEL, noun="label share"))
        if quality is not None:
            reference_signals, flags, names = quality
            # The reference answers' own signals, computed as the live ones are.
            for it, signals in zip(ref + pool, reference_signals([it.output or "" for it in ref + pool])):
                it.quality = signals
            out.append(det.QualityDetector.build(ref, pool, names, flags))
        return out

    def check(self, items: list[d.Item]) -> list[Finding]:
        findings = []
        for x in self.detectors:
            raw, info = x.raw(items)
            cal = self.calibrations[x.name]
            statistic = cal.statistic(raw)
            alarm = statistic > cal.threshold
            what, examples = x.describe(items, info)
            findings.append(Finding(detector=x.name, raw=raw, statistic=statistic, threshold=cal.threshold,
                                    score=cal.score(raw), alarm=alarm, what=what, examples=examples,
                                    calibration=cal.to_dict()))
        return findings


# ----------------------------------------------------------------------------- live traffic


def logged_window(deployment: str, variant: str, size: int) -> list[ServedRequest]:
    """The newest ``size`` successful logged requests of one variant, oldest first."""
    query = (select(ServedRequest)
             .where(ServedRequest.deployment == deployment, ServedRequest.variant == variant,
                    ServedRequest.request.is_not(None), ServedRequest.status == 200)
             .order_by(ServedRequest.created_at.desc(), ServedRequest.id.desc()).limit(size))
    with db.session() as s:
        return list(reversed(list(s.scalars(query))))


def logged_variants(deployment: str) -> list[str]:
    query = select(ServedRequest.variant).distinct().where(ServedRequest.deployment == deployment,
                                                           ServedRequest.request.is_not(None))
    with db.session() as s:
        return sorted(v for v in s.scalars(query) if v)


def requests_since(deployment: str, variant: str, since: datetime | None) -> int:
    query = select(func.count()).select_from(ServedRequest).where(
        ServedRequest.deployment == deployment, ServedRequest.variant == variant,
        ServedRequest.request.is_not(None), ServedRequest.status == 200)
    if since is not None:
        query = query.where(ServedRequest.created_at > since)
    with db.session() as s:
        return int(s.scalar(query) or 0)


def _items(rows: list[ServedRequest]) -> list[d.Item]:
    return [d.item_from_request(r.request, r.response, id=r.id, quality=r.quality) for r in rows]


# ----------------------------------------------------------------------------- checks


class Session:
    """What a checking process keeps between checks: loaded models and calibrated checkers."""

    def __init__(self, settings: DriftSettings, reference: str | None = None):
        self.settings, self.reference = settings, reference
        if reference is not None:
            from oikyo.data import versions

            versions.resolve(reference)  # a name that matches nothing is said at once, not after the first window
        self.embedders: dict[str, object] = {}
        self.checkers: dict[tuple, Checker] = {}

    def embedder(self, model: str):
        if not self.settings.embeddings:
            return None
        from oikyo.monitor.embeddings import Embedder
        from oikyo.serve.gateway.served_models import resolve

        load_dir = resolve(model).load_dir  # the base model an adapter runs on, or the model itself
        if load_dir not in self.embedders:
            self.embedders[load_dir] = Embedder(load_dir, nice=self.settings.nice)
        return self.embedders[load_dir]

    def close(self) -> None:
        """Stop the embedding workers (``nice`` > 0); the session cannot embed afterwards."""
        for embedder in self.embedders.values():
            embedder.close()
        self.embedders.clear()
        self.checkers.clear()

    def checker(self, model: str) -> Checker:
        version = reference_version(model, self.reference)
        embedder = self.embedder(model)
        key = (version.id, getattr(embedder, "model_dir", None))
        if key not in self.checkers:
            reference = load_reference(version, self.settings.reference_rows, self.settings.seed)
            self.checkers[key] = Checker(reference, self.settings, embedder=embedder, quality=quality_function())
        return self.checkers[key]


def _variant_models(deployment: str) -> dict[str, str]:
    from oikyo.serve.gateway import deployments

    record = deployments.get(deployment)
    models = {v["label"]: v["model"] for v in record.variants or []}
    if not record.log_requests and not logged_variants(deployment):
        raise DriftError(f"deployment {deployment!r} does not log requests, so there is no traffic to check; "
                         f"start it with --log-requests (`oikyo deploy --name {deployment} --log-requests`)")
    for label in logged_variants(deployment):
        models.setdefault(label, label)  # another adapter on the same base, asked for by name
    return models


def check_variant(deployment: str, variant: str, model: str, session: Session, *, save: bool = True) -> VariantReport:
    """Check one variant's newest window; records the findings (and an event on alarm) when ``save``."""
    settings = session.settings
    report = VariantReport(variant=variant, model=model)
    rows = logged_window(deployment, variant, settings.window)
    report.requests = len(rows)
    if len(rows) < settings.window:
        report.skipped = (f"only {len(rows)} logged request(s) of {variant}; a check needs {settings.window} "
                          "(--window)")
        return report
    checker = session.checker(model)
    report.reference = checker.reference.name
    report.window_start, report.window_end = rows[0].created_at, rows[-1].created_at
    report.findings = checker.check(_items(rows))
    if save:
        _save(deployment, report, settings, checker, last_id=rows[-1].id)
    return report


def check(deployment: str, *, settings: DriftSettings | None = None, reference: str | None = None,
          variant: str | None = None, session: Session | None = None, save: bool = True) -> DriftReport:
    """Check every variant (or one) of ``deployment`` on its newest window of logged requests."""
    own = session is None
    session = session or Session(settings or DriftSettings(), reference)
    try:
        models = _variant_models(deployment)
        if variant is not None:
            if variant not in models:
                raise DriftError(f"deployment {deployment!r} has no variant {variant!r}; it has {', '.join(models)}")
            models = {variant: models[variant]}
        reports = [check_variant(deployment, label, model, session, save=save) for label, model in models.items()]
    finally:
        if own:
            session.close()
    return DriftReport(deployment, session.settings, reports)


def _save(deployment: str, report: VariantReport, settings: DriftSettings, checker: Checker, last_id: str) -> None:
    from oikyo.monitor import events

    common = {"window": settings.window, "stride": settings.every_requests, "detectors": len(checker.detectors),
              "false_alarm_every": settings.false_alarm_every, "model": report.model}
    with db.session() as s:
        s.add_all([DriftCheck(deployment=deployment, variant=report.variant, detector=f.detector,
                              reference=report.reference, window_start=report.window_start,
                              window_end=report.window_end, requests=report.requests, statistic=f.statistic,
                              threshold=f.threshold, score=f.score, alarm=f.alarm,
                              details={**common, "what": f.what, "examples": f.examples, "raw": f.raw,
                                       "calibration": f.calibration}, created_at=utcnow())
                   for f in report.findings])
    alarms = [f for f in report.findings if f.alarm]
    if alarms:
        title = f"drift in {report.variant}: " + "; ".join(f"{f.detector} ({f.what})" for f in alarms)
        details = {"variant": report.variant, "reference": report.reference, "requests": report.requests,
                   "detectors": [{"detector": f.detector, "score": f.score, "what": f.what} for f in alarms],
                   "examples": alarms[0].examples[:EVENT_EXAMPLES], **common}
        events.record(deployment, events.DRIFT, "drift", title[:500], severity="warning", details=details,
                      dedupe_key=f"drift:{deployment}:{report.variant}:{last_id}")


def due(deployment: str, variant: str, stride: int) -> bool:
    """Whether ``stride`` new logged requests of ``variant`` came in since its last recorded check."""
    last = history(deployment, variant=variant, limit=1)
    since = None
    if last and last[0]["window_end"]:
        since = datetime.fromisoformat(last[0]["window_end"])
    return requests_since(deployment, variant, since) >= (stride if last else 1)


def watch(deployment: str, every: float, *, settings: DriftSettings | None = None, reference: str | None = None,
          iterations: int | None = None, on_report: Callable[[VariantReport], None] | None = None,
          sleep: Callable[[float], None] = time.sleep) -> None:
    """Check each variant whenever ``stride`` new requests came in, looking every ``every`` seconds."""
    session = Session(settings or DriftSettings(), reference)
    done = 0
    try:
        while iterations is None or done < iterations:
            for label, model in _variant_models(deployment).items():
                if not due(deployment, label, session.settings.every_requests):
                    continue
                try:
                    report = check_variant(deployment, label, model, session)
                except OikyoError as error:  # a missing reference for one variant must not stop the others
                    report = VariantReport(variant=label, model=model, skipped=str(error))
                if on_report is not None:
                    on_report(report)
            done += 1
            if iterations is None or done < iterations:
                sleep(every)
    finally:
        session.close()


def latest(deployment: str) -> list[dict]:
    """The newest check of each (variant, detector), as dicts."""
    seen, out = set(), []
    for row in history(deployment, limit=500):
        key = (row["variant"], row["detector"])
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


__all__ = ["DriftSettings", "DriftError", "check", "watch", "history", "latest", "describe_check", "Checker",
           "Session", "load_reference", "reference_version"]
