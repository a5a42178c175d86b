"""A replica: one process, one generation engine, the OpenAI-compatible API over it.

The engine (:mod:`oikyo.serve.engine.core`) batches every request in flight into shared forward passes
and serves every LoRA adapter on its base model; this module only adapts HTTP to it::

    app = create_replica_app(engine, ServedNames(load_dir, specs), authenticate=store_keys())
    # POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /stats, GET /health

A streamed response is a server-sent event per text delta in OpenAI's chunk format, ending with
``data: [DONE]``. A client that disconnects (mid-stream, or while waiting for a whole response)
cancels its generation, so its batch slot is freed at the engine's next step.

Behind a deployment's router a replica runs as its own process (``python -m oikyo.serve.gateway.replica``,
started by :mod:`oikyo.serve.gateway.replicas`): it serves on a socket the router bound and handed over
(no port race), trusts only the router's shared token, exits when the router dies, and on SIGTERM
stops accepting, finishes the requests in flight, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import threading
import time
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from oikyo.serve.gateway import openai_api as oa
from oikyo.serve.gateway.httpapi import Authenticate, bearer_auth, install_error_handlers, shared_token
from oikyo.serve.gateway.served_models import ModelSpec, ServedNames

log = logging.getLogger("oikyo.serve.gateway.replica")

TOKEN_ENV = "OIKYO_REPLICA_TOKEN"
VARIANT_HEADER = "X-Oikyo-Variant"
RESPONSE_ID_HEADER = "X-Oikyo-Response-Id"
TTFT_HEADER = "X-Oikyo-Time-To-First-Token"
DISCONNECT_POLL_S = 0.25


class _State:
    """What the routes share: the engine, the names it answers to, requests in flight."""

    def __init__(self, engine, names: ServedNames):
        self.engine = engine
        self.names = names
        self.in_flight = 0
        self.adapter_lock = threading.Lock()

    async def adapter_for(self, model: str) -> str | None:
        """The engine adapter name for ``model`` (None: the loaded model itself); 404 when not served."""
        found = self.names.lookup(model)
        if found is None:
            found = await run_in_threadpool(self.names.lookup, model, True)
        if found is None:
            raise oa.model_not_found(model)
        name, adapter_dir = found
        if adapter_dir is None:
            return None
        with self.adapter_lock:
            if self.engine.adapters.get(name) != Path(adapter_dir):
                from oikyo.serve.engine.lora import AdapterError

                try:
                    self.engine.add_adapter(name, adapter_dir)
                except AdapterError as error:
                    raise oa.ApiError(400, f"model {name!r} cannot be served: {error}", param="model",
                                      code="model_not_supported") from None
        return name


def create_replica_app(engine, names: ServedNames, *, authenticate: Authenticate, blocking_auth: bool = True,
                       owns_engine: bool = False) -> FastAPI:
    """The OpenAI-compatible app over ``engine``. ``owns_engine``: start it with the app, drain it at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if owns_engine:
            engine.start()
        yield
        if owns_engine:
            await run_in_threadpool(engine.stop, True)

    app = FastAPI(title="oikyo replica", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    state = _State(engine, names)
    app.state.engine = engine
    app.state.replica = state
    install_error_handlers(app)
    auth = [Depends(bearer_auth(authenticate, blocking=blocking_auth))]

    @app.get("/health")
    async def health():
        return {"status": "ok" if engine.running else "stopped", "model": str(engine.model_dir)}

    @app.get("/stats", dependencies=auth)
    async def stats():
        return {**engine.stats(), "in_flight": state.in_flight, "loaded_adapters": engine.loaded_adapters}

    @app.get("/v1/models", dependencies=auth)
    async def models():
        names_now = await run_in_threadpool(lambda: (state.names.refresh(), state.names.names())[1])
        return {"object": "list", "data": [oa.model_entry(n, kind="adapter" if d else "model")
                                           for n, d in sorted(names_now.items())]}

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(request: Request):
        return await _complete(state, request, chat=True)

    @app.post("/v1/completions", dependencies=auth)
    async def completions(request: Request):
        return await _complete(state, request, chat=False)

    return app


async def _complete(state: _State, request: Request, chat: bool):
    """Validate, submit ``n`` generations per prompt to the engine, answer whole or streamed."""
    body = oa.read_json(await request.body())
    params = oa.parse(oa.ChatCompletionRequest if chat else oa.CompletionRequest, body)
    adapter = await state.adapter_for(params.model)
    engine = state.engine
    tools = None
    if chat:
        prompts = [oa.chat_prompt_ids(engine.tokenizer, params)]
        tools = oa.tool_parser(engine.tokenizer, params)
        if tools is not None:
            params.use_call_format(tools.format, engine.tokenizer)  # a forced call in the model family's format
    else:
        prompts = oa.completion_prompt_ids(engine.tokenizer, params)
    generations = oa.generation_requests(prompts, params, adapter, engine.context_length)
    handles = []
    try:
        for generation in generations:
            handles.append(engine.submit(generation))
    except ValueError as error:  # InvalidRequest names the parameter (logit_bias ids beyond the vocabulary...)
        _cancel(handles)
        raise oa.ApiError(400, str(error), param=getattr(error, "param", None)) from None
    except RuntimeError:
        _cancel(handles)
        raise oa.ApiError(503, "this replica is shutting down; retry", type="server_error") from None
    variant = request.headers.get(VARIANT_HEADER)
    response_id = request.headers.get(RESPONSE_ID_HEADER) or oa.new_response_id("chat" if chat else "text")
    headers = {VARIANT_HEADER: variant} if variant else {}
    call = _Call(response_id, params.model, variant, chat, sum(len(p) for p in prompts), params.include_usage)
    call.tools = tools
    call.logprobs = params.top_logprobs_count is not None
    state.in_flight += 1
    if params.stream:
        return StreamingResponse(_stream(state, call, handles), media_type="text/event-stream", headers=headers)
    try:
        results = await _collect(handles, request)
    finally:
        state.in_flight -= 1
    build = oa.chat_response if chat else oa.completion_response
    ttfts = [r.time_to_first_token for r in results if r.time_to_first_token is not None]
    if ttfts:
        headers[TTFT_HEADER] = f"{min(ttfts):.6f}"
    extra = {"tools": call.tools} if chat else {"echo": oa.echo_for(engine.tokenizer, engine.token_text, params, prompts)}
    return JSONResponse(build(response_id, params.model, results, call.prompt_tokens, variant, **extra),
                        headers=headers)


class _Call:
    """The response-wide facts a stream's chunks repeat, and each choice's tool-call parsing state."""

    def __init__(self, response_id: str, model: str, variant: str | None, chat: bool, prompt_tokens: int,
                 include_usage: bool):
        self.response_id, self.model, self.variant, self.chat = response_id, model, variant, chat
        self.prompt_tokens, self.include_usage = prompt_tokens, include_usage
        self.created = int(time.time())
        self.tools = None  # a ToolCallParser when the request offers tools
        self.logprobs = False  # the request asked for log-probabilities
        self._unsent_logprobs: dict[int, list] = {}  # choice index -> TokenLogprobs not yet in a chunk
        self._text_offsets: dict[int, int] = {}  # choice index -> characters of its tokens sent (completions)
        self._tool_streams: dict = {}  # choice index -> its ToolCallStream
        self._tool_calls: dict[int, int] = {}  # choice index -> tool calls sent so far

    def text_chunks(self, index: int, text: str) -> list[str]:
        """The chunks for a text delta: the text itself, or what tool-call parsing releases of it."""
        if self.tools is None:
            return [self.chunk(index, text)]
        if index not in self._tool_streams:
            self._tool_streams[index] = self.tools.stream()
        return self._tool_chunks(index, self._tool_streams[index].feed(text))

    def held_chunks(self, index: int) -> list[str]:
        """At the end of a choice: what tool-call parsing still held back (text, a call the end closed)."""
        stream = self._tool_streams.pop(index, None)
        return self._tool_chunks(index, stream.finish()) if stream is not None else []

    def finish_reason(self, index: int, finish_reason: str) -> str:
        return oa.tool_finish_reason(finish_reason) if self._tool_calls.get(index) else finish_reason

    def _tool_chunks(self, index: int, events) -> list[str]:
        chunks = []
        for kind, value in events:
            if kind == "content":
                chunks.append(self.chunk(index, value))
                continue
            position = self._tool_calls.get(index, 0)
            self._tool_calls[index] = position + 1
            for delta in oa.tool_call_deltas(position, value):
                chunks.append(oa.sse(oa.chat_chunk(self.response_id, self.model, self.created, index, delta,
                                                   variant=self.variant)))
        return chunks

    def note_logprobs(self, index: int, entries: list) -> None:
        """Log-probabilities of choice ``index``'s latest tokens: the next chunk of that choice carries them."""
        self._unsent_logprobs.setdefault(index, []).extend(entries)

    def _logprobs(self, index: int) -> dict | None:
        if not self.logprobs:
            return None
        entries = self._unsent_logprobs.pop(index, [])
        if self.chat:
            return oa.chat_logprobs(entries)
        offset = self._text_offsets.get(index, 0)
        self._text_offsets[index] = offset + sum(len(e.token) for e in entries)
        return oa.completion_logprobs(entries, offset)

    def chunk(self, index: int, text: str | None, finish_reason: str | None = None, usage_body=None,
              role: bool = False) -> str:
        if self.chat:
            # With tools the answer may hold only calls: its content starts null, as OpenAI's does.
            opening = {"role": "assistant", "content": None if self.tools is not None else ""}
            delta = opening if role else ({} if text is None else {"content": text})
            body = oa.chat_chunk(self.response_id, self.model, self.created, index, delta, finish_reason,
                                 self.variant, usage_body, logprobs=None if role else self._logprobs(index))
        else:
            body = oa.completion_chunk(self.response_id, self.model, self.created, index, text or "", finish_reason,
                                       self.variant, usage_body, logprobs=self._logprobs(index))
        return oa.sse(body)


def _cancel(handles) -> None:
    for handle in handles:
        if not handle.done:
            handle.cancel()


async def _merged(handles):
    """``(index, (text, logprobs), None)`` for each delta of any handle, then ``(index, None, result or error)``."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, handle) -> None:
        try:
            async for piece in handle.astream(cancel_on_exit=False, pieces=True):
                queue.put_nowait((index, piece, None))
            queue.put_nowait((index, None, handle.result()))
        except Exception as error:  # the engine failed this generation: report it, do not hang
            queue.put_nowait((index, None, error))

    tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
    try:
        remaining = len(handles)
        while remaining:
            item = await queue.get()
            if item[1] is None:
                remaining -= 1
            yield item
    finally:
        for task in tasks:
            task.cancel()
        _cancel(handles)


async def _collect(handles, request: Request):
    """Every handle's result; the generations are cancelled if the client disconnects meanwhile."""

    async def watch() -> None:
        while True:
            await asyncio.sleep(DISCONNECT_POLL_S)
            if await request.is_disconnected():
                _cancel(handles)
                return

    watcher = asyncio.create_task(watch())
    results: list = [None] * len(handles)
    try:
        async with aclosing(_merged(handles)) as events:
            async for index, _delta, end in events:
                if isinstance(end, BaseException):
                    raise oa.ApiError(500, f"generation failed: {end}", type="server_error")
                if end is not None:
                    results[index] = end
    finally:
        watcher.cancel()
    return results


async def _stream(state: _State, call: _Call, handles):
    """The SSE body. If the client goes away, Starlette cancels this generator and ``finally`` frees the slots."""
    completion_tokens = finished = 0
    try:
        if call.chat:
            for index in range(len(handles)):
                yield call.chunk(index, None, role=True)
        async with aclosing(_merged(handles)) as events:
            async for index, piece, end in events:
                if piece is not None:
                    text, logprobs = piece
                    call.note_logprobs(index, logprobs)
                    for chunk in call.text_chunks(index, text):
                        yield chunk
                    continue
                if isinstance(end, BaseException):
                    yield oa.sse(oa.error_body(f"generation failed: {end}", "server_error"))
                    yield oa.DONE
                    return
                finished += 1
                completion_tokens += end.completion_tokens
                last = finished == len(handles)
                usage_body = oa.usage(call.prompt_tokens, completion_tokens) if last else None
                for chunk in call.held_chunks(index):
                    yield chunk
                yield call.chunk(index, None, call.finish_reason(index, end.finish_reason), usage_body)
        if call.include_usage:
            name = "chat.completion.chunk" if call.chat else "text_completion"
            yield oa.sse(oa.usage_chunk(call.response_id, call.model, call.created, name,
                                        oa.usage(call.prompt_tokens, completion_tokens), call.variant))
        yield oa.DONE
    finally:
        _cancel(handles)
        state.in_flight -= 1


# ----------------------------------------------------------------------------- the replica process


def _watch_parent(server, parent: int) -> None:
    """Ask the server to exit (gracefully) once the router that started this process is gone."""

    def run() -> None:
        while not server.should_exit:
            if os.getppid() != parent:
                log.warning("the router (pid %d) is gone; shutting down", parent)
                server.should_exit = True
                return
            time.sleep(1.0)

    threading.Thread(target=run, name="oikyo-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """``python -m oikyo.serve.gateway.replica --spec JSON --fd N``: serve one engine on a socket from the router."""
    import uvicorn

    from oikyo.serve.engine.core import WEIGHTS, GenerationEngine

    parser = argparse.ArgumentParser(prog="oikyo.serve.gateway.replica")
    parser.add_argument("--spec", required=True, help='{"load_dir": ..., "models": [ModelSpec dicts]}')
    parser.add_argument("--fd", type=int, required=True, help="An inherited, bound (not listening) TCP socket.")
    parser.add_argument("--name", default="replica")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-adapters", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", choices=WEIGHTS, default="float32",
                        help="What decoding steps read: float16 needs the native CPU kernel.")
    parser.add_argument("--graceful-timeout", type=float, default=600.0)
    parser.add_argument("--parent", type=int, default=None, help="Exit when this process is gone.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.name} %(levelname)s %(message)s")
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    token = os.environ.get(TOKEN_ENV)
    if not token:
        log.error("%s is not set: a replica only serves its router", TOKEN_ENV)
        return 2  # replicas.SETTINGS_EXIT: the pool does not try again
    spec = json.loads(args.spec)
    sock = socket.socket(fileno=args.fd)
    started = time.perf_counter()
    try:
        engine = GenerationEngine(spec["load_dir"], device=args.device, max_batch_size=args.max_batch_size,
                                  max_adapters=args.max_adapters, num_threads=args.threads, weights=args.weights)
    except ValueError as error:  # settings this machine cannot serve (float16 weights without the kernel...)
        log.error("cannot start the engine: %s", error)  # one line: the router's failure shows the log's tail
        sock.close()
        return 2  # replicas.SETTINGS_EXIT: the pool fails at once instead of retrying
    names = ServedNames(spec["load_dir"], [ModelSpec.from_dict(m) for m in spec["models"]])
    log.info("loaded %s in %.1f s (%d adapters known)", spec["load_dir"], time.perf_counter() - started,
             len(names.names()))
    app = create_replica_app(engine, names, authenticate=shared_token(token), blocking_auth=False, owns_engine=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=args.graceful_timeout, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    if args.parent:
        _watch_parent(server, args.parent)
    server.run(sockets=[sock])
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
