"""What a caller hands the generation engine and what it gets back: requests, results, stream handles.

A :class:`GenerationRequest` holds prompt tokens (from :func:`oikyo.models.chat_template.encode_prompt`)
and decoding settings. :meth:`GenerationEngine.submit` returns a :class:`GenerationHandle`::

    handle = engine.submit(GenerationRequest(prompt_ids, max_new_tokens=64))
    for delta in handle:                 # text deltas as they are generated (blocking iterator)
        print(delta, end="")
    result = handle.result()             # GenerationResult

    async for delta in handle.astream():  # the same from asyncio; leaving the loop early cancels
        ...
    async for text, logprobs in handle.astream(pieces=True):  # with each delta, its tokens' TokenLogprobs
        ...

``handle.cancel()`` stops the generation and frees its batch slot at the next step.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

FINISH_REASONS = ("stop", "length", "cancelled")
MAX_TOP_LOGPROBS = 20  # as OpenAI's chat API and vLLM's default --max-logprobs


class InvalidRequest(ValueError):
    """A request the engine refuses; ``param`` names the OpenAI parameter at fault (for a 400)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclass
class TokenLogprob:
    """A token's log-probability under the model's raw distribution; ``token`` is its text. For a
    generated token, ``top`` holds that step's most likely tokens, most likely first."""

    token_id: int
    token: str
    logprob: float
    top: list[TokenLogprob] = field(default_factory=list)


@dataclass
class GenerationRequest:
    """One completion to generate.

    ``temperature`` 0 is greedy decoding. ``stop`` strings end the generation when they appear in
    the decoded text (the stop string is not part of the output). ``stop_token_ids`` end it when
    generated (None: the model's end-of-sequence tokens; [] : none). ``seed`` seeds this request's
    own random generator, so sampling gives the same tokens whatever else shares the batch.
    ``adapter`` names a LoRA adapter added with ``engine.add_adapter`` (None: the base model).
    Several completions of one prompt are several requests (with different seeds).

    Logit processing (:mod:`oikyo.serve.engine.logits`): ``logit_bias`` maps token ids to a bias
    added to their logits; ``presence_penalty`` / ``frequency_penalty`` (-2..2) lower the logits of
    tokens already generated, OpenAI's way. ``grammar`` (from
    :func:`oikyo.serve.engine.grammar.json_grammar`) constrains the output to JSON; the generation
    ends when the JSON is complete. ``logprobs``: None reports none; k reports each token's
    log-probability and the k most likely alternatives (0..20). ``prompt_logprobs`` does the same for
    the prompt's tokens (from the prefill's logits; the first token has no entry): what scoring
    harnesses read through the completions API's ``echo``.
    """

    prompt_ids: list[int]
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] | None = None
    seed: int | None = None
    adapter: str | None = None
    logit_bias: dict[int, float] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    grammar: str | None = None
    logprobs: int | None = None
    prompt_logprobs: int | None = None

    @property
    def processes_logits(self) -> bool:
        """Whether anything beyond temperature and top-p touches this request's logits."""
        return bool(self.logit_bias or self.presence_penalty or self.frequency_penalty or self.grammar
                    or self.logprobs is not None)

    def validate(self) -> None:
        if not self.prompt_ids:
            raise ValueError("prompt_ids is empty")
        if self.max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise InvalidRequest(f"{name} must be in [-2, 2]", name)
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_TOP_LOGPROBS:
                raise InvalidRequest(f"{name} must be in [0, {MAX_TOP_LOGPROBS}]", "logprobs")


@dataclass
class GenerationResult:
    """A finished generation.

    ``token_ids`` are all generated tokens, including a final stop token (eos) and the tokens that
    completed a stop string; ``text`` is their decoded text without special tokens, cut before a
    stop string. ``finish_reason``: "stop" (a stop token or string), "length" (max_new_tokens or
    the context length reached) or "cancelled". Times are seconds from submission.
    ``admitted_step`` / ``finished_step`` are the engine's step counter when the request joined the
    batch and when it left (for scheduling diagnostics). ``logprobs`` (when the request asked for
    them) has one entry per generated token except a final stop token; ``prompt_logprobs`` (when asked)
    one per prompt token, None for the first (nothing precedes it).
    """

    token_ids: list[int]
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token: float | None
    total_time: float
    adapter: str | None = None
    admitted_step: int | None = None
    finished_step: int | None = None
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None


class GenerationHandle:
    """A submitted request: stream its text, wait for its result, or cancel it. Thread-safe."""

    def __init__(self, request: GenerationRequest):
        self.request = request
        self._cond = threading.Condition()
        self._deltas: list[tuple[str, list[TokenLogprob]]] = []  # (text, its tokens' log-probabilities)
        self._result: GenerationResult | None = None
        self._error: BaseException | None = None
        self._cancelled = threading.Event()
        self._wakers: list[Callable[[], None]] = []

    # ----------------------------------------------------------------- consumer side

    @property
    def done(self) -> bool:
        return self._result is not None or self._error is not None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop generating (a disconnected client): the engine frees the slot at its next step."""
        self._cancelled.set()

    def result(self, timeout: float | None = None) -> GenerationResult:
        """Block until the generation ends; raise the engine's error if it failed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.done, timeout):
                raise TimeoutError("generation did not finish in time")
        if self._error is not None:
            raise self._error
        return self._result

    def __iter__(self):
        """Text deltas as they come (blocking); raises the engine's error if the generation failed."""
        seen = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: len(self._deltas) > seen or self.done)
                chunk, finished = self._deltas[seen:], self.done
            seen += len(chunk)
            yield from (text for text, _ in chunk if text)
            if finished:
                break
        if self._error is not None:
            raise self._error

    async def astream(self, cancel_on_exit: bool = True, pieces: bool = False):
        """Text deltas for asyncio code. Leaving the loop early (a client disconnect) cancels the request.

        ``pieces``: yield ``(text, logprobs)`` instead, the TokenLogprobs of the tokens behind the text
        (when the request asked for them; the text may be empty when tokens decode to nothing yet)."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def waker() -> None:
            loop.call_soon_threadsafe(event.set)

        with self._cond:
            self._wakers.append(waker)
        seen = 0
        try:
            while True:
                event.clear()  # cleared before reading, so a delta that arrives after the read sets it again
                with self._cond:
                    chunk, finished = self._deltas[seen:], self.done
                seen += len(chunk)
                for text, logprobs in chunk:
                    if pieces:
                        yield text, logprobs
                    elif text:
                        yield text
                if finished:
                    break
                await event.wait()
            if self._error is not None:
                raise self._error
        finally:
            with self._cond:
                self._wakers.remove(waker)
            if cancel_on_exit and not self.done:
                self.cancel()

    # ----------------------------------------------------------------- engine side

    def _notify(self) -> None:
        self._cond.notify_all()
        for waker in list(self._wakers):
            waker()

    def _emit(self, delta: str, logprobs: list[TokenLogprob] | None = None) -> None:
        if delta or logprobs:
            with self._cond:
                self._deltas.append((delta, logprobs or []))
                self._notify()

    def _finish(self, result: GenerationResult) -> None:
        with self._cond:
            self._result = result
            self._notify()

    def _fail(self, error: BaseException) -> None:
        with self._cond:
            self._error = error
            self._notify()
