"""A deployment's router: the one public endpoint in front of its replicas.

The router authenticates every request (API keys from the store; only a bare ``/health`` is
open), picks the variant (the A/B split, sticky per user: :mod:`oikyo.serve.gateway.ab`), forwards the
request to a replica of that variant's model over loopback HTTP (streams relayed chunk by chunk),
records it (:mod:`oikyo.serve.gateway.request_log`; the answer's quality signals are checked in the
log's writer thread by :mod:`oikyo.monitor.quality`), counts it (:mod:`oikyo.serve.gateway.metrics`), and tags the
response with its variant (``X-Oikyo-Variant`` header; ``variant`` field in the body).

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``,
``POST /v1/feedback``, ``GET /metrics`` (Prometheus), ``GET /health`` (readiness, no key). With a rate
limit (``--rate-limit``, :mod:`oikyo.serve.gateway.ratelimit`) a key over it gets 429 on the /v1 routes.

The ``model`` field may name the deployment (the split decides), a variant, or any model the
deployment's engines serve (every adapter version on a served base model). A replica that refuses
connections is skipped (the request goes to another one; while none is ready the request waits
up to ``queue_timeout_s``); a non-streamed request whose replica dies mid-way is retried once on
another, since nothing has reached the client yet. A client that disconnects mid-stream closes
the upstream connection, which cancels the generation in the replica.

``python -m oikyo.serve.gateway.router NAME`` runs a recorded deployment (what ``oikyo deploy`` starts):
bind the port, start the replicas (:mod:`oikyo.serve.gateway.replicas`), serve; on SIGTERM stop accepting,
finish the requests in flight, drain the replicas, record the deployment as stopped. On each supervisor
tick (0.5 s) it reads the recorded variants and, when only their weights changed
(``deployments.set_weights``), swaps them in place: no restart, no request dropped. A change of
models is logged as needing a restart and not applied.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import anyio
import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from oikyo.errors import OikyoError
from oikyo.monitor import quality
from oikyo.monitor.drift_records import metric_readings as drift_readings
from oikyo.serve.gateway import openai_api as oa
from oikyo.serve.gateway.ab import Variant, choose, same_arms
from oikyo.serve.gateway.httpapi import Authenticate, bearer_auth, install_error_handlers, store_keys
from oikyo.serve.gateway.metrics import RouterMetrics
from oikyo.serve.gateway.ratelimit import RateLimiter, rate_limit
from oikyo.serve.gateway.replica import RESPONSE_ID_HEADER, TTFT_HEADER, VARIANT_HEADER
from oikyo.serve.gateway.replicas import ReplicaPool
from oikyo.serve.gateway.request_log import RequestRecord, RequestRecorder, UnknownResponse, record_feedback
from oikyo.serve.gateway.served_models import ServedNames
from oikyo.serve.gateway.tool_calls import answer_text

log = logging.getLogger("oikyo.serve.gateway.router")

DISCONNECT_POLL_S = 0.25
ATTEMPTS = 3  # replicas tried for one request (connection refused, or died before answering)
USER_HEADER = "x-user-id"
LOGGED_PARAMS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "seed", "tools")


@dataclass
class Route:
    variant: str | None
    model: str
    pool: ReplicaPool


class Routing:
    """Which variant, model and pool a request's ``model`` (and user) lead to."""

    def __init__(self, deployment: str, variants: list[Variant], pools: dict[str, ReplicaPool],
                 variant_pools: dict[str, str], names: dict[str, ServedNames]):
        self.deployment = deployment
        self.variants = variants
        self.pools = pools  # load_dir -> pool
        self.variant_pools = variant_pools  # variant label -> load_dir
        self.names = names  # load_dir -> names served there
        self.weights_applied_at = datetime.now(timezone.utc)  # when self.variants' weights took effect
        self._restart_noted: list[Variant] | None = None  # recorded variants already logged as needing a restart

    def follow(self, recorded: list[dict] | None) -> str | None:
        """Take the recorded variants' weights when only weights differ from those in force: ``applied``.
        ``restart`` when the record names other variants or models (logged once; nothing changes);
        None when nothing changed. ``self.variants`` is replaced, never mutated, so a request choosing
        meanwhile sees either the old list or the new one."""
        if not recorded:
            return None
        new = [Variant(**v) for v in recorded]
        if new == self.variants:
            self._restart_noted = None
            return None
        if not same_arms(new, self.variants) or sum(v.weight for v in new) <= 0:
            if new != self._restart_noted:
                self._restart_noted = new
                log.warning("deployment %s: the recorded variants (%s) differ from those served (%s) in more "
                            "than weights; restart it to apply them (deployments.set_split does)", self.deployment,
                            _weights_text(new), _weights_text(self.variants))
            return "restart"
        log.info("deployment %s: weights now %s (were %s)", self.deployment, _weights_text(new),
                 _weights_text(self.variants))
        self.variants, self.weights_applied_at, self._restart_noted = new, datetime.now(timezone.utc), None
        return "applied"

    def fixed(self, model: str, user: str | None) -> Route | None:
        """The deployment's name (split) or one of its variants; None for anything else."""
        if model == self.deployment:
            variant = choose(self.variants, user, salt=self.deployment)
        else:
            variant = next((v for v in self.variants if model in (v.label, v.model)), None)
            if variant is None:
                return None
        return Route(variant.label, variant.model, self.pools[self.variant_pools[variant.label]])

    def served(self, model: str) -> Route:
        """Any other model an engine of this deployment serves (reads the store on a miss: blocking)."""
        for refresh in (False, True):
            for load_dir, names in self.names.items():
                if names.lookup(model, refresh_on_miss=refresh) is not None:
                    return Route(model, model, self.pools[load_dir])
        raise oa.model_not_found(model)

    def readiness(self) -> dict:
        """``ready`` when every pool has a ready replica (``starting`` before, ``failed`` if one cannot start)."""
        pools = {pool.name: {"ready": len(pool.ready()), "replicas": len(pool.replicas), "failed": pool.failed}
                 for pool in self.pools.values()}
        if any(p["failed"] for p in pools.values()):
            status = "failed"
        else:
            status = "ready" if all(p["ready"] > 0 for p in pools.values()) else "starting"
        return {"status": status, "deployment": self.deployment, "pools": pools}

    def model_list(self) -> list[dict]:
        entries = [oa.model_entry(self.deployment, kind="deployment", variants=[v.to_dict() for v in self.variants],
                                  weights_applied_at=self.weights_applied_at.isoformat())]
        for names in self.names.values():
            names.refresh()
            for name, adapter in sorted(names.names().items()):
                entries.append(oa.model_entry(name, kind="adapter" if adapter else "model"))
        return entries


def _weights_text(variants: list[Variant]) -> str:
    return ", ".join(f"{v.label}={v.weight:g}" for v in variants)


class Forwarder:
    """Sends requests to replicas and relays the answers, recording and counting each one."""

    def __init__(self, deployment: str, routing: Routing, *, token: str | None, metrics: RouterMetrics,
                 recorder: RequestRecorder | None, log_requests: bool, queue_timeout_s: float):
        self.deployment = deployment
        self.routing = routing
        self.token = token
        self.metrics = metrics
        self.recorder = recorder
        self.log_requests = log_requests
        self.queue_timeout_s = queue_timeout_s
        self.client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        timeout = httpx.Timeout(connect=5.0, read=None, write=60.0, pool=None)
        self.client = httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def handle(self, request: Request, endpoint: str) -> Response:
        started = time.perf_counter()
        body = oa.read_json(await request.body())
        if not isinstance(body, dict):
            raise oa.ApiError(400, "the request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise oa.ApiError(400, "'model' is required: the deployment's name or a model from GET /v1/models",
                              param="model", code="missing_required_parameter")
        user = request.headers.get(USER_HEADER) or (body["user"] if isinstance(body.get("user"), str) else None)
        route = self.routing.fixed(model, user) or await run_in_threadpool(self.routing.served, model)
        body["model"] = route.model
        stream = body.get("stream") is True
        response_id = oa.new_response_id("chat" if endpoint == "chat" else "text")
        record = RequestRecord(id=response_id, deployment=self.deployment, variant=route.variant, model=route.model,
                               endpoint=endpoint, status=0, latency_s=0.0, stream=stream,
                               request=self._logged_request(body, endpoint) if self.log_requests else None)
        headers = {"Content-Type": "application/json", RESPONSE_ID_HEADER: response_id}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if route.variant:
            headers[VARIANT_HEADER] = route.variant
        path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
        payload = json.dumps(route.pool.upstream_body(body)).encode()
        try:
            if stream:
                return await self._stream(route, path, payload, headers, record, started)
            return await _unless_disconnected(request, self._whole(route, path, payload, headers, record, started))
        except _ClientGone:
            self._finish(record, started, 499, error="client disconnected")
            return Response(status_code=499)
        except oa.ApiError as error:
            self._finish(record, started, error.status, error=error.message)
            raise

    async def feedback(self, given: oa.FeedbackRequest) -> dict:
        """Store a rating and/or a correction of one of this deployment's responses (404 for an unknown
        response id). A correction without a rating is counted as negative feedback."""

        def store():
            self.recorder.flush()  # the response may still be in the write buffer
            stored = record_feedback(self.deployment, given.response_id, given.rating, given.comment,
                                     correction=given.correction)
            return stored, quality.note_feedback(self.deployment, stored.response_id, stored.rating,
                                                 corrected=stored.correction is not None)

        try:
            stored, negative = await run_in_threadpool(store)
        except UnknownResponse as error:
            raise oa.ApiError(404, str(error), param="response_id", code="response_not_found") from None
        except OikyoError as error:
            raise oa.ApiError(400, str(error), code="invalid_value") from None
        self.metrics.feedback.labels(self.deployment, stored.variant or "").inc()
        negatives = self.metrics.feedback_negative.labels(self.deployment, stored.variant or "")
        if negative:
            negatives.inc()
        return {"object": "feedback", "id": stored.id, "response_id": stored.response_id, "variant": stored.variant,
                "rating": stored.rating, "correction": stored.correction}

    @staticmethod
    def _logged_request(body: dict, endpoint: str) -> dict:
        content = {"messages": body.get("messages")} if endpoint == "chat" else {"prompt": body.get("prompt")}
        return {**content, "params": {k: body[k] for k in LOGGED_PARAMS if k in body}}

    def _reply_headers(self, route: Route, record: RequestRecord) -> dict:
        headers = {RESPONSE_ID_HEADER: record.id}
        if route.variant:
            headers[VARIANT_HEADER] = route.variant
        return headers

    async def _whole(self, route: Route, path: str, payload: bytes, headers: dict, record: RequestRecord,
                     started: float) -> Response:
        response = None
        for attempt in range(ATTEMPTS):
            replica = await route.pool.acquire(self.queue_timeout_s)
            sent_at = time.perf_counter()
            try:
                response = await self.client.post(replica.url + path, content=payload, headers=headers)
                break
            except (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as error:
                route.pool.suspect(replica)
                log.warning("replica %s failed (%s); %s", replica.id, error.__class__.__name__,
                            "retrying on another" if attempt + 1 < ATTEMPTS else "giving up")
            finally:
                route.pool.release(replica)
        if response is None:
            raise oa.ApiError(502, "the replicas failed to answer this request; retry", type="server_error")
        ttft = None
        if response.headers.get(TTFT_HEADER):
            ttft = (sent_at - started) + float(response.headers[TTFT_HEADER])
        usage, text = {}, None
        if response.status_code == 200:
            answer = response.json()
            usage = answer.get("usage") or {}
            choice = (answer.get("choices") or [{}])[0]
            if "message" in choice:
                message = choice.get("message") or {}
                text = message.get("content")
                if message.get("tool_calls"):
                    text = answer_text(text, message["tool_calls"])
            else:
                text = choice.get("text")
        error = None if response.status_code == 200 else _error_message(response.content)
        self._finish(record, started, response.status_code, pool=route.pool, ttft=ttft, usage=usage, text=text,
                     error=error)
        content = response.content
        if response.status_code == 200 and not route.pool.stamps_responses:
            content = json.dumps(_stamped(answer, record)).encode()
        return Response(content, status_code=response.status_code, media_type="application/json",
                        headers=self._reply_headers(route, record))

    async def _open_stream(self, route: Route, path: str, payload: bytes, headers: dict):
        for _ in range(ATTEMPTS):
            replica = await route.pool.acquire(self.queue_timeout_s)
            request = self.client.build_request("POST", replica.url + path, content=payload, headers=headers)
            try:
                return replica, await self.client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                route.pool.suspect(replica)
                route.pool.release(replica)
        raise oa.ApiError(502, "the replicas failed to answer this request; retry", type="server_error")

    async def _stream(self, route: Route, path: str, payload: bytes, headers: dict, record: RequestRecord,
                      started: float) -> Response:
        replica, upstream = await self._open_stream(route, path, payload, headers)
        if upstream.status_code != 200:
            content = await upstream.aread()
            await upstream.aclose()
            route.pool.release(replica)
            self._finish(record, started, upstream.status_code, error=_error_message(content))
            return Response(content, status_code=upstream.status_code, media_type="application/json",
                            headers=self._reply_headers(route, record))
        return StreamingResponse(self._relay(route, replica, upstream, record, started),
                                 media_type="text/event-stream", headers=self._reply_headers(route, record))

    async def _relay(self, route: Route, replica, upstream, record: RequestRecord, started: float):
        """Pass the replica's events through as they come, reading usage and text on the way."""
        tracker = _StreamTracker(started)
        status, error = 200, None
        try:
            stamp = not route.pool.stamps_responses
            async for line in upstream.aiter_lines():
                event = tracker.see(line)
                if stamp and event is not None:
                    line = "data: " + json.dumps(_stamped(event, record))
                yield line + "\n"
        except httpx.HTTPError as failure:
            status, error = 502, f"the replica stopped mid-response ({failure.__class__.__name__})"
            route.pool.suspect(replica)
            yield oa.sse(oa.error_body(error + "; retry", "server_error"))
            yield oa.DONE
        except BaseException:  # cancelled: the client went away; closing upstream cancels the generation
            status, error = 499, "client disconnected"
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await upstream.aclose()
            route.pool.release(replica)
            if tracker.error and status == 200:
                status, error = 500, tracker.error
            self._finish(record, started, status, pool=route.pool, ttft=tracker.ttft, usage=tracker.usage,
                         text=tracker.answer(), error=error)

    def _finish(self, record: RequestRecord, started: float, status: int, *, pool: ReplicaPool | None = None,
                ttft: float | None = None,
                usage: dict | None = None, text: str | None = None, error: str | None = None) -> None:
        usage = usage or {}
        record.status = status
        record.latency_s = time.perf_counter() - started
        record.ttft_s = ttft
        record.prompt_tokens = usage.get("prompt_tokens")
        record.completion_tokens = usage.get("completion_tokens")
        record.error = error
        if status == 200:
            record.text = text  # in memory for the quality hook; stored only with --log-requests:
            if self.log_requests:
                record.response = text
        self.metrics.observe_request(model=record.model, variant=record.variant, status=status,
                                     latency_s=record.latency_s, ttft_s=ttft, prompt_tokens=record.prompt_tokens,
                                     completion_tokens=record.completion_tokens)
        if status == 200 and pool is not None:
            pool.observe_latency(record.latency_s)
        if self.recorder is not None:
            self.recorder.add(record)


class _StreamTracker:
    """Reads a relayed SSE stream: time to first text, choice 0's text and tool calls, usage, an error event."""

    def __init__(self, started: float):
        self.started = started
        self.ttft: float | None = None
        self.text: list[str] = []
        self.tool_calls: list[dict] = []  # choice 0's calls, put together from their deltas
        self.usage: dict = {}
        self.error: str | None = None

    def see(self, line: str) -> dict | None:
        """Note what ``line`` says; returns its event when it is a chunk of the answer."""
        if not line.startswith("data: ") or line == "data: [DONE]":
            return None
        try:
            event = json.loads(line[6:])
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        if "error" in event:
            self.error = (event["error"] or {}).get("message")
            return None
        if event.get("usage"):
            self.usage = event["usage"]
        for choice in event.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content") if "delta" in choice else choice.get("text")
            if piece:
                if self.ttft is None:
                    self.ttft = time.perf_counter() - self.started
                if choice.get("index", 0) == 0:
                    self.text.append(piece)
            if choice.get("index", 0) == 0 and "delta" in choice:
                self._see_calls((choice.get("delta") or {}).get("tool_calls") or ())
        return event

    def _see_calls(self, deltas) -> None:
        for delta in deltas:
            function = delta.get("function") or {}
            if delta.get("id"):  # a call's first delta: its id and name
                if self.ttft is None:
                    self.ttft = time.perf_counter() - self.started
                self.tool_calls.append({"id": delta["id"], "function": {"name": function.get("name"), "arguments": ""}})
            elif self.tool_calls and function.get("arguments"):
                position = delta.get("index", len(self.tool_calls) - 1)
                if 0 <= position < len(self.tool_calls):
                    self.tool_calls[position]["function"]["arguments"] += function["arguments"]

    def answer(self) -> str:
        """Choice 0's answer as one text (tool calls as JSON lines after the content)."""
        text = "".join(self.text)
        return answer_text(text, self.tool_calls) if self.tool_calls else text


def _stamped(body: dict, record: RequestRecord) -> dict:
    """A replica's answer (or stream chunk) under the router's response id and tagged with the variant,
    as oikyo's engine writes them: what a client sends to /v1/feedback is the id it was given."""
    body["id"] = record.id
    if "model" in body:  # llama-server names the GGUF file there; the client asked for record.model
        body["model"] = record.model
    if record.variant:
        body["variant"] = record.variant
    return body


class _ClientGone(Exception):
    """The client disconnected before its (non-streamed) answer was ready."""


async def _unless_disconnected(request: Request, awaitable):
    """Await ``awaitable``, cancelling it if the client disconnects meanwhile (the replica then stops generating)."""
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise _ClientGone()
    finally:
        if not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(task, return_exceptions=True)


def _error_message(content: bytes) -> str | None:
    try:
        return json.loads(content)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return content[:500].decode("utf-8", "replace") or None


def _lifespan(forwarder: Forwarder, recorder: RequestRecorder, supervisor, on_shutdown):
    """Open the upstream client and start the replicas; at shutdown drain them and flush the log."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await forwarder.open()
        if supervisor is not None:
            supervisor.start()
        try:
            yield
        finally:
            if supervisor is not None:
                await supervisor.stop()
            await forwarder.close()
            await run_in_threadpool(recorder.close)
            if on_shutdown is not None:
                await on_shutdown()

    return lifespan


def create_router_app(deployment: str, routing: Routing, *, authenticate: Authenticate, token: str | None,
                      log_requests: bool = False, queue_timeout_s: float = 120.0, supervisor=None,
                      recorder: RequestRecorder | None = None, on_shutdown=None,
                      rate_limiter: RateLimiter | None = None) -> FastAPI:
    """The router app. ``supervisor`` (replica processes) starts and stops with the app; ``rate_limiter``
    (None: no limit) answers 429 on the /v1 routes to a key over its limit."""
    metrics = RouterMetrics(deployment)
    recorder = recorder or RequestRecorder()
    recorder.add_hook(quality.RequestQuality(metrics))  # quality signals, in the recorder's writer thread
    forwarder = Forwarder(deployment, routing, token=token, metrics=metrics, recorder=recorder,
                          log_requests=log_requests, queue_timeout_s=queue_timeout_s)
    app = FastAPI(title=f"oikyo deployment {deployment}", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=_lifespan(forwarder, recorder, supervisor, on_shutdown))
    app.state.routing, app.state.metrics, app.state.recorder = routing, metrics, recorder
    install_error_handlers(app)
    auth = [Depends(bearer_auth(authenticate))]
    refused = metrics.rate_limited.labels(deployment).inc
    limited = auth + ([Depends(rate_limit(rate_limiter, on_refused=refused))] if rate_limiter is not None else [])

    @app.get("/health")
    async def health():
        body = routing.readiness()
        return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)

    @app.get("/metrics", dependencies=auth)
    async def prometheus():
        for pool in routing.pools.values():
            metrics.observe_pool(pool.name, queue_depth=pool.queue_depth(), in_flight=pool.in_flight(),
                                 states=pool.states(), restarts=pool.restarts, engine=pool.engine_totals(),
                                 pids=[r.pid for r in pool.replicas if r.pid])
        try:  # drift checks run in their own process; their records are read here (cached a few seconds)
            metrics.observe_drift(await run_in_threadpool(drift_readings, deployment))
        except Exception:  # noqa: BLE001 - a store hiccup must not take the other metrics down
            log.exception("could not read the drift checks of %s", deployment)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/openapi.json", dependencies=auth)
    async def openapi_document():
        from oikyo.serve.gateway.openapi import spec

        served = await run_in_threadpool(routing.model_list)
        return spec(f"oikyo deployment {deployment}", models=[entry["id"] for entry in served])

    @app.get("/v1/models", dependencies=limited)
    async def models():
        return {"object": "list", "data": await run_in_threadpool(routing.model_list)}

    @app.post("/v1/chat/completions", dependencies=limited)
    async def chat_completions(request: Request):
        return await forwarder.handle(request, "chat")

    @app.post("/v1/completions", dependencies=limited)
    async def completions(request: Request):
        return await forwarder.handle(request, "completions")

    @app.post("/v1/feedback", dependencies=limited)
    async def feedback(request: Request):
        return await forwarder.feedback(oa.parse(oa.FeedbackRequest, oa.read_json(await request.body())))

    return app


# ----------------------------------------------------------------------------- the router process


def bind(host: str, port: int) -> socket.socket:
    """The deployment's listening socket, bound before any replica starts (a taken port fails at once)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def run(name: str) -> int:
    """Serve the recorded deployment ``name`` until SIGTERM or Ctrl-C; returns the exit code."""
    import uvicorn

    from oikyo.serve.gateway import deployments

    logging.basicConfig(level=logging.INFO, format="%(asctime)s router %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    token = secrets.token_urlsafe(32)
    log_file = open(deployments.log_path(name), "ab", buffering=0)
    try:
        plan = deployments.plan(name)
        plan.probe_engine()
        sock = bind(plan.host, plan.port)
        # --engine llamacpp converts the models to GGUF here (cached after the first start)
        pools = plan.process_pools(token=token, log_file=log_file, on_change=lambda: plan.write_registry(pools))
    except (OikyoError, OSError) as error:
        deployments.mark(name, "failed", error=str(error), pid=None)
        log.error("cannot start deployment %s: %s", name, error)
        return 2
    routing = Routing(name, plan.variants, pools, plan.variant_pools, plan.served_names())
    server: uvicorn.Server | None = None
    status = {"state": "starting"}

    async def on_tick():
        failed = [p for p in pools.values() if p.failed]
        if failed and status["state"] != "failed":
            status["state"] = "failed"
            await run_in_threadpool(deployments.mark, name, "failed", error=f"{failed[0].name}: {failed[0].failed}")
            server.should_exit = True
        elif not failed and status["state"] == "starting" and all(p.ready() for p in pools.values()):
            status["state"] = "running"
            await run_in_threadpool(deployments.mark, name, "running", error=None)
            log.info("deployment %s is ready at http://%s:%d/v1", name, plan.host, plan.port)
        # deployments.set_weights writes the record; follow it (one small read per tick, off the loop)
        routing.follow(await run_in_threadpool(deployments.recorded_variants, name))

    async def on_shutdown():
        if status["state"] != "failed":
            await run_in_threadpool(deployments.mark, name, "stopped", pid=None)
        plan.write_registry({})

    from oikyo.serve.gateway.replicas import Supervisor

    supervisor = Supervisor(pools, token=token, on_tick=on_tick)
    deployments.mark(name, "starting", pid=os.getpid(), error=None)
    app = create_router_app(name, routing, authenticate=store_keys(), token=token, log_requests=plan.log_requests,
                            queue_timeout_s=plan.queue_timeout_s, supervisor=supervisor, on_shutdown=on_shutdown,
                            rate_limiter=plan.rate_limiter())
    config = uvicorn.Config(app, log_level="info", access_log=False, lifespan="on", timeout_keep_alive=30,
                            timeout_graceful_shutdown=plan.graceful_timeout_s)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        log_file.close()
    return 1 if status["state"] == "failed" else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m oikyo.serve.gateway.router DEPLOYMENT", file=sys.stderr)
        return 2
    return run(args[0])


if __name__ == "__main__":
    sys.exit(main())
