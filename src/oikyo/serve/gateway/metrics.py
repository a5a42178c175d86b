"""Prometheus metrics of a deployment, exposed by its router at ``GET /metrics`` (API key required).

Per request (labels ``deployment``, ``model``, ``variant``): ``oikyo_requests_total`` (+ ``status``),
``oikyo_request_errors_total`` (+ ``kind``: client | server), ``oikyo_request_latency_seconds``,
``oikyo_time_to_first_token_seconds``, ``oikyo_output_tokens_total``, ``oikyo_prompt_tokens_total``
and ``oikyo_output_tokens_per_second`` (each request's decode speed). Per pool of replicas (label
``pool``: the model it loads): ``oikyo_queue_depth`` (requests waiting for a batch slot, in the
engines and in the router), ``oikyo_requests_in_flight``, ``oikyo_replicas`` (+ ``state``) and
``oikyo_replica_restarts_total``, ``oikyo_engine`` (the engines' own counters: active
sequences, tokens generated, requests cancelled, ...) and ``oikyo_replica_memory_bytes`` (resident
memory of the pool's replica processes). Per deployment: ``oikyo_machine_memory_available_ratio``
(the serving machine's available memory over its total). The memory gauges are read with psutil when
``/metrics`` is scraped, never on a request's path. Quality of the answers (checked off the request
path by :mod:`oikyo.monitor.quality`): ``oikyo_quality_checked_total`` and
``oikyo_quality_flags_total`` (+ ``signal``: degenerate, refusal, empty, invalid_json,
schema_mismatch); feedback: ``oikyo_feedback_total`` and ``oikyo_feedback_negative_total``
(labels ``deployment``, ``variant``). Drift (checked outside the router by :mod:`oikyo.monitor.drift`,
read from its records when scraped): ``oikyo_drift_score`` (+ ``variant``, ``detector``: the latest
check's statistic over its calibrated threshold, above 1 is drift) and ``oikyo_drift_checks_total``
(+ ``alarm``). Each app has its own registry, so several routers (tests) can
live in one process::

    metrics = RouterMetrics("support-bot")
    metrics.observe_request(model="mv-1a2b", variant="mv-1a2b", status=200, latency_s=0.8, ttft_s=0.1,
                            prompt_tokens=31, completion_tokens=64)
    body, content_type = metrics.render()
"""

from __future__ import annotations

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30)
SPEED_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
REQUEST = ("deployment", "model", "variant")
POOL = ("deployment", "pool")
QUALITY_SIGNALS = ("degenerate", "refusal", "empty", "invalid_json", "schema_mismatch")


class RouterMetrics:
    """The metrics of one deployment's router, in a registry of their own."""

    def __init__(self, deployment: str):
        self.deployment = deployment
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("oikyo_requests", "Requests answered.", (*REQUEST, "status"), registry=r)
        self.errors = Counter("oikyo_request_errors", "Requests answered with an error.", (*REQUEST, "kind"),
                              registry=r)
        self.latency = Histogram("oikyo_request_latency_seconds", "Time from request to the end of the response.",
                                 REQUEST, buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("oikyo_time_to_first_token_seconds", "Time from request to the first generated text.",
                              REQUEST, buckets=TTFT_BUCKETS, registry=r)
        self.output_tokens = Counter("oikyo_output_tokens", "Generated tokens.", REQUEST, registry=r)
        self.prompt_tokens = Counter("oikyo_prompt_tokens", "Prompt tokens.", REQUEST, registry=r)
        self.speed = Histogram("oikyo_output_tokens_per_second", "Each request's generated tokens per second "
                               "after its first token.", REQUEST, buckets=SPEED_BUCKETS, registry=r)
        self.queue_depth = Gauge("oikyo_queue_depth", "Requests waiting for a batch slot.", POOL, registry=r)
        self.in_flight = Gauge("oikyo_requests_in_flight", "Requests being answered.", POOL, registry=r)
        self.replicas = Gauge("oikyo_replicas", "Replica processes by state.", (*POOL, "state"), registry=r)
        self.restarts = Counter("oikyo_replica_restarts", "Replicas that died and were replaced.", POOL, registry=r)
        self.engine = Gauge("oikyo_engine", "The replicas' engine counters, summed per pool (last reading): "
                            "active_sequences, tokens_generated, requests_cancelled, ...", (*POOL, "counter"),
                            registry=r)
        self.replica_memory = Gauge("oikyo_replica_memory_bytes", "Resident memory of the pool's replica processes "
                                    "(read at each scrape).", POOL, registry=r)
        self.machine_memory = Gauge("oikyo_machine_memory_available_ratio", "The machine's available memory over "
                                    "its total (read at each scrape).", ("deployment",), registry=r)
        self._restarts_seen: dict[str, int] = {}
        self.feedback = Counter("oikyo_feedback", "Feedback ratings received.", ("deployment", "variant"), registry=r)
        self.rate_limited = Counter("oikyo_rate_limited", "Requests refused with 429: their API key was over the "
                                    "deployment's rate limit.", ("deployment",), registry=r)
        self.feedback_negative = Counter("oikyo_feedback_negative", "Negative feedback ratings received (thumbs "
                                         "down, or 1-2 stars).", ("deployment", "variant"), registry=r)
        self.quality_checked = Counter("oikyo_quality_checked", "Answers whose quality signals were checked.",
                                       REQUEST, registry=r)
        self.quality_flags = Counter("oikyo_quality_flags", "Checked answers flagged, by signal: degenerate, "
                                     "refusal, empty, invalid_json, schema_mismatch.", (*REQUEST, "signal"),
                                     registry=r)
        self.drift = DriftReadings(deployment)
        r.register(self.drift)

    def observe_drift(self, readings: dict) -> None:
        """The drift checks' latest scores and counts (:func:`oikyo.monitor.drift_records.metric_readings`)."""
        self.drift.readings = readings

    def observe_request(self, *, model: str, variant: str | None, status: int, latency_s: float,
                        ttft_s: float | None = None, prompt_tokens: int | None = None,
                        completion_tokens: int | None = None) -> None:
        labels = (self.deployment, model, variant or "")
        self.requests.labels(*labels, str(status)).inc()
        if status >= 400:
            self.errors.labels(*labels, "client" if status < 500 else "server").inc()
            return
        self.latency.labels(*labels).observe(latency_s)
        if ttft_s is not None:
            self.ttft.labels(*labels).observe(ttft_s)
        if prompt_tokens:
            self.prompt_tokens.labels(*labels).inc(prompt_tokens)
        if completion_tokens:
            self.output_tokens.labels(*labels).inc(completion_tokens)
            decode_s = latency_s - (ttft_s or 0.0)
            if completion_tokens > 1 and decode_s > 0:
                self.speed.labels(*labels).observe((completion_tokens - 1) / decode_s)

    def observe_quality(self, *, model: str, variant: str | None, flags: list[str]) -> None:
        """One checked answer and the quality flags it raised (called from the request log's writer thread)."""
        labels = (self.deployment, model, variant or "")
        self.quality_checked.labels(*labels).inc()
        for signal in QUALITY_SIGNALS:  # every signal's series exists (at 0), so alert rules' ratios are defined
            counter = self.quality_flags.labels(*labels, signal)
            if signal in flags:
                counter.inc()

    def observe_pool(self, pool: str, *, queue_depth: float, in_flight: int, states: dict[str, int],
                     restarts: int = 0, engine: dict[str, float] | None = None,
                     pids: list[int] | None = None) -> None:
        """Set the pool's gauges (called when /metrics is scraped); ``pids``: its replica processes, whose
        resident memory is summed (None: not known, e.g. replicas run elsewhere)."""
        counted = self._restarts_seen.get(pool, 0)
        if restarts > counted:
            self.restarts.labels(self.deployment, pool).inc(restarts - counted)
            self._restarts_seen[pool] = restarts
        for name, value in (engine or {}).items():
            self.engine.labels(self.deployment, pool, name).set(value)
        self.queue_depth.labels(self.deployment, pool).set(queue_depth)
        self.in_flight.labels(self.deployment, pool).set(in_flight)
        for state in ("starting", "ready", "suspect", "draining"):
            self.replicas.labels(self.deployment, pool, state).set(states.get(state, 0))
        if pids is not None:
            self.replica_memory.labels(self.deployment, pool).set(resident_bytes(pids))

    def render(self) -> tuple[bytes, str]:
        memory = psutil.virtual_memory()  # one read of /proc/meminfo (or the OS's own call)
        self.machine_memory.labels(self.deployment).set(memory.available / memory.total)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class DriftReadings:
    """Exports the drift checks' records as read at the last scrape (the checks run in another process)."""

    def __init__(self, deployment: str):
        self.deployment = deployment
        self.readings: dict = {"scores": {}, "checks": {}}

    def describe(self):
        return []  # nothing to reserve; keeps the registry from collecting at registration

    def collect(self):
        labels = ["deployment", "variant", "detector"]
        score = GaugeMetricFamily("oikyo_drift_score", "The latest drift check's statistic over its threshold "
                                  "(calibrated to the stated false-alarm rate): above 1 is drift.", labels=labels)
        for (variant, detector), value in sorted(self.readings.get("scores", {}).items()):
            score.add_metric([self.deployment, variant, detector], value)
        yield score
        checks = CounterMetricFamily("oikyo_drift_checks", "Drift checks run, by verdict.", labels=[*labels, "alarm"])
        for (variant, detector, alarm), count in sorted(self.readings.get("checks", {}).items()):
            checks.add_metric([self.deployment, variant, detector, alarm], count)
        yield checks


def resident_bytes(pids: list[int]) -> int:
    """The summed resident memory (RSS) of these processes; ones that have exited count 0."""
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total
