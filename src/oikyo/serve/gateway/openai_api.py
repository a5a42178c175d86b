"""The OpenAI-compatible wire format: request schemas, conversion to engine requests, response bodies.

What a client sends to ``/v1/chat/completions`` or ``/v1/completions`` is validated here (typed
pydantic models; a bad value becomes a 400 in OpenAI's error shape naming the parameter), turned
into :class:`~oikyo.serve.engine.requests.GenerationRequest` objects (messages go through THE chat template,
:func:`oikyo.models.chat_template.encode_prompt`, after the same OpenAI-message conversion the data
importer uses), and the engine's results are written back as OpenAI bodies and stream chunks::

    request = parse(ChatCompletionRequest, body)                   # ApiError(400) when invalid
    prompt = chat_prompt_ids(tokenizer, request)
    tools = tool_parser(tokenizer, request)                        # None without tools
    if tools is not None:
        request.use_call_format(tools.format, tokenizer)           # a forced call in the family's format
    gens = generation_requests([prompt], request, adapter="mv-1a2b", default_max_tokens=None)
    body = chat_response(response_id, model, results, prompt_tokens=len(prompt))

Supported: ``max_tokens`` (or ``max_completion_tokens``), ``temperature``, ``top_p``, ``n``,
``stop``, ``seed``, ``stream`` (+ ``stream_options.include_usage``), ``user``, ``tools`` (rendered
into the prompt by the chat template; the calls in the answer come back as ``tool_calls``, parsed by
:mod:`oikyo.serve.gateway.tool_calls` in the model family's format, with ``finish_reason``
``"tool_calls"``), ``tool_choice`` ``"auto"``, ``"none"`` (tools neither offered nor parsed),
``"required"`` or a named function (decoding constrained by llguidance to one call, the arguments
following the tool's parameters schema, written as the model family writes calls: hermes
``<tool_call>\n{"name", "arguments"}\n</tool_call>``, llama3 ``{"name", "parameters"}``, mistral
``[TOOL_CALLS][{"name", "arguments"}]``, otherwise the bare ``{"name", "arguments"}``; validation
compiles the bare form, :meth:`ChatCompletionRequest.use_call_format` the family's once the tokenizer
is known), ``parallel_tool_calls`` (false: one call at most, later ones stay text), and vLLM's
``ignore_eos`` extension (benchmarks).
On both routes: ``logprobs`` (chat: ``logprobs`` + ``top_logprobs`` up to 20; completions: ``logprobs``
= top-N up to 20, the legacy shape; streamed chunks carry their tokens' entries; figures of the model's
raw distribution, :mod:`oikyo.serve.gateway.logprobs`), ``presence_penalty`` / ``frequency_penalty``,
``logit_bias`` (token id -> -100..100) and ``response_format`` ``json_object`` / ``json_schema``
(decoding constrained by llguidance, :mod:`oikyo.serve.engine.grammar`). Completions also take
``echo`` (the prompt leads the text, and with ``logprobs`` its tokens lead the log-probabilities, the
first one's null: what scoring harnesses such as lm-evaluation-harness read; ``max_tokens`` may then
be 0; not with ``stream``). Refused with a clear 400 rather than silently ignored: ``suffix``,
``best_of`` > ``n`` and ``echo`` with ``stream``. Unknown extra
fields are ignored, as most OpenAI-compatible servers do.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from oikyo.serve.engine.requests import MAX_TOP_LOGPROBS, GenerationRequest, GenerationResult
from oikyo.serve.gateway.logprobs import chat_logprobs, completion_logprobs, echoed_logprobs
from oikyo.serve.gateway.tool_calls import ToolCallParser, forced_call_grammar

MAX_N = 16
MAX_STOP = 4
DONE = "data: [DONE]\n\n"


# ----------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, type: str | None = None, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.headers = headers  # extra response headers (Retry-After on a 429)
        self.status = status
        self.message = message
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.param = param
        self.code = code

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def model_not_found(name: str) -> ApiError:
    return ApiError(404, f"The model '{name}' does not exist or is not served by this deployment; "
                         "GET /v1/models lists the models it serves.", param="model", code="model_not_found")


def validation_error(error: ValidationError) -> ApiError:
    """The first problem pydantic found, as a 400 naming the parameter."""
    first = error.errors()[0]
    param = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or None
    message = first.get("msg", "invalid request")
    if first.get("type") == "missing":
        message = "field required"
    return ApiError(400, f"Invalid value for '{param}': {message}" if param else message, param=param,
                    code="invalid_value" if first.get("type") != "missing" else "missing_required_parameter")


# ----------------------------------------------------------------------------- requests


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Generation(BaseModel):
    """Settings shared by chat and text completions."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, description="A model id from GET /v1/models, or the deployment's name.")
    max_tokens: int | None = Field(None, ge=1, description="New tokens at most (default: the rest of the context).")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 is greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    n: int = Field(1, ge=1, le=MAX_N, description="Completions per prompt.")
    stop: str | list[str] | None = Field(None, description="Up to 4 strings that end the generation (not returned).")
    seed: int | None = Field(None, description="Seeds sampling: the same seed gives the same text.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="The end user; A/B splits are sticky per user.")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="Lowers tokens already generated.")
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="Lowers tokens by their count so far.")
    logit_bias: dict[str, float] | None = Field(None, description="Token id -> bias in [-100, 100].")
    response_format: dict[str, Any] | None = Field(None, description="text, json_object or json_schema.")
    _bias: dict[int, float] = PrivateAttr(default_factory=dict)
    _grammar: str | None = PrivateAttr(None)
    ignore_eos: bool = Field(False, description="Extension (as in vLLM): do not stop at end-of-sequence tokens.")

    @field_validator("stop")
    @classmethod
    def _stop(cls, value):
        if isinstance(value, list) and len(value) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        return value

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else [s for s in self.stop if s]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def check_supported(self) -> None:
        """Check what pydantic cannot: logit_bias keys, the response format (compiled to its grammar here)."""
        self._bias = _token_bias(self.logit_bias)
        self._grammar = _grammar(self.response_format)

    def sampling_settings(self) -> dict:
        """The engine request's logit-processing fields (after :meth:`check_supported`); ``top_logprobs_count``
        (each endpoint's own: None for no log-probabilities, k for k alternatives per token)."""
        return {"logit_bias": self._bias or None, "presence_penalty": self.presence_penalty or 0.0,
                "frequency_penalty": self.frequency_penalty or 0.0, "grammar": self._grammar,
                "logprobs": self.top_logprobs_count}


def _token_bias(bias: dict[str, float] | None) -> dict[int, float]:
    """OpenAI's logit_bias (token id strings -> -100..100) with integer keys; ApiError(400) when malformed."""
    out = {}
    for key, value in (bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise ApiError(400, f"logit_bias keys must be token ids, got {key!r}", param="logit_bias",
                           code="invalid_value") from None
        if not -100.0 <= value <= 100.0:
            raise ApiError(400, f"logit_bias values must be in [-100, 100], got {value} for {key}",
                           param="logit_bias", code="invalid_value")
        out[token] = float(value)
    return out


def _grammar(response_format: dict[str, Any] | None) -> str | None:
    """The llguidance grammar a response_format asks for (None for text); ApiError(400) naming response_format."""
    if not response_format:
        return None
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    from oikyo.serve.engine.grammar import GrammarError, json_grammar

    if kind == "json_object":
        schema = None
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise ApiError(400, "response_format json_schema needs {\"json_schema\": {\"name\": ..., \"schema\": {...}}}",
                           param="response_format", code="invalid_value")
        schema = spec.get("schema", {})
    else:
        raise ApiError(400, f"response_format type must be 'text', 'json_object' or 'json_schema', got {kind!r}",
                       param="response_format", code="invalid_value")
    try:
        return json_grammar(schema)
    except GrammarError as error:
        raise ApiError(400, f"response_format: {error}", param="response_format", code="invalid_value") from None


def _call_grammar(tools: list[dict], fmt: str = "json", added_tokens: dict[str, int] | None = None) -> str:
    """The llguidance grammar of one call to one of ``tools`` in the family format ``fmt``
    (:func:`~oikyo.serve.gateway.tool_calls.forced_call_grammar`); ApiError(400) naming tools."""
    from oikyo.serve.engine.grammar import GrammarError

    try:
        return forced_call_grammar(tools, fmt, added_tokens)
    except GrammarError as error:
        raise ApiError(400, f"tools: {error}", param="tools", code="invalid_value") from None


class ChatCompletionRequest(_Generation):
    messages: list[dict[str, Any]] = Field(min_length=1, description="OpenAI chat messages.")
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = Field(
        None, description='"auto" (default), "none", "required" or {"type": "function", "function": {"name": ...}}.')
    parallel_tool_calls: bool = Field(True, description="False: at most one tool call per answer.")
    logprobs: bool | None = Field(None, description="Return each token's log-probability.")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS, description="Alternatives per token.")
    _forced: list[dict] | None = PrivateAttr(None)  # the tools one of which must be called (tool_choice)

    def check_supported(self) -> None:
        super().check_supported()
        self._check_tools()
        if self.top_logprobs and not self.logprobs:
            raise ApiError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs", code="invalid_value")

    @property
    def top_logprobs_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def _check_tools(self) -> None:
        for i, tool in enumerate(self.tools or ()):
            function = tool.get("function")
            if tool.get("type") != "function" or not isinstance(function, dict) or not function.get("name") \
                    or not isinstance(function["name"], str):
                raise ApiError(400, f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}",
                               param=f"tools[{i}]", code="invalid_value")
        if self.tool_choice in (None, "auto", "none"):
            return
        if (self.response_format or {}).get("type", "text") != "text":
            raise ApiError(400, "tool_choice 'required' or a named function constrains the answer to a tool call; "
                                "it cannot be combined with a structured response_format", param="tool_choice",
                           code="invalid_value")
        self._forced = self._forced_tools()
        self._grammar = _call_grammar(self._forced)  # the json family's form; compiling it checks the schemas

    def use_call_format(self, fmt: str, tokenizer) -> None:
        """Write the call that tool_choice "required" or a named function forces as the model's family does
        (``fmt``, from its chat template: :func:`~oikyo.serve.gateway.tool_calls.detect_format`). Validation,
        before the model is known, compiled the ``json`` form; this compiles the family's, with the
        tokenizer's added tokens (markers such as ``[TOOL_CALLS]`` are produced as their token)."""
        if self._forced and fmt != "json":
            self._grammar = _call_grammar(self._forced, fmt, tokenizer.get_added_vocab())

    def _forced_tools(self) -> list[dict]:
        """The tools one of which must be called: all of them ("required") or the named one."""
        choice = self.tool_choice
        if not self.tools:
            raise ApiError(400, "tool_choice 'required' or a named function needs 'tools'", param="tool_choice",
                           code="invalid_value")
        if choice == "required":
            return self.tools
        name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
        if not isinstance(choice, dict) or choice.get("type", "function") != "function" or not isinstance(name, str):
            raise ApiError(400, "tool_choice must be 'auto', 'none', 'required' or {\"type\": \"function\", "
                                f"\"function\": {{\"name\": ...}}}}, got {choice!r}", param="tool_choice",
                           code="invalid_value")
        named = [tool for tool in self.tools if tool["function"]["name"] == name]
        if not named:
            raise ApiError(400, f"tool_choice names the function {name!r}, which is not in 'tools'",
                           param="tool_choice", code="invalid_value")
        return named

    @property
    def offered_tools(self) -> list[dict] | None:
        """The tools rendered into the prompt and parsed from the answer (none with tool_choice 'none')."""
        return None if self.tool_choice == "none" else (self.tools or None)

    @property
    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(description="Text, texts, or token ids.")
    max_tokens: int | None = Field(16, ge=0, description="New tokens at most (0 only with echo).")
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS, description="Top-N log-probabilities per token.")
    echo: bool = Field(False, description="Return the prompt before the completion (and its tokens' logprobs).")
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    def check_supported(self) -> None:
        super().check_supported()
        if self.echo and self.stream:
            raise ApiError(400, "'echo' is not supported with 'stream'; ask without streaming", param="echo",
                           code="unsupported_parameter")
        if self.max_tokens == 0 and not self.echo:
            raise ApiError(400, "max_tokens must be at least 1 (0 only with echo)", param="max_tokens",
                           code="invalid_value")
        if self.suffix:
            raise ApiError(400, "'suffix' is not supported by this server", param="suffix",
                           code="unsupported_parameter")
        if self.best_of is not None and self.best_of != self.n:
            raise ApiError(400, "'best_of' is not supported by this server (leave it out or equal to n)",
                           param="best_of", code="unsupported_parameter")

    @property
    def token_budget(self) -> int | None:
        return self.max_tokens or (1 if self.max_tokens == 0 else None)  # 0 (echo): one token, not returned

    @property
    def top_logprobs_count(self) -> int | None:
        return self.logprobs

    def sampling_settings(self) -> dict:
        settings = super().sampling_settings()
        if self.echo and self.logprobs is not None:
            settings["prompt_logprobs"] = self.logprobs
        return settings


class FeedbackRequest(BaseModel):
    """Feedback on a served response: a rating, a correction (the ideal answer), or both.

    Ratings are -1..1 (thumbs) or 1..5 (stars); keep one scale per deployment. A correction given
    without a rating counts as negative feedback; ``oikyo data from-traffic`` trains on it."""

    model_config = ConfigDict(extra="ignore")

    response_id: str = Field(min_length=1, max_length=64)
    rating: float | None = Field(None, ge=-1.0, le=5.0)
    comment: str | None = Field(None, max_length=10_000)
    correction: str | None = Field(None, max_length=100_000)

    def check_supported(self) -> None:
        if self.correction is not None and not self.correction.strip():
            raise ApiError(400, "'correction' is empty: give the ideal answer, or leave the field out",
                           param="correction", code="invalid_value")
        if self.rating is None and self.correction is None:
            raise ApiError(400, "give a 'rating' (-1..1 or 1..5), a 'correction' (the ideal answer) or both",
                           param="rating", code="missing_required_parameter")


def parse(model: type[BaseModel], body: Any):
    """``body`` (parsed JSON) validated as ``model``; ApiError(400) naming the first bad parameter."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        request = model.model_validate(body)
    except ValidationError as error:
        raise validation_error(error) from None
    check = getattr(request, "check_supported", None)
    if check is not None:
        check()
    return request


def read_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None


# ----------------------------------------------------------------------------- to the engine


def canonical_messages(messages: list[dict]) -> list[dict]:
    """OpenAI messages as canonical ones, by the same conversion ``oikyo data import`` applies."""
    from oikyo.data.formats.base import RowError
    from oikyo.data.formats.openai import MESSAGE_KEYS, convert_messages

    # Clients send keys the importer does not know (refusal: None, annotations, ...): keep the ones it reads.
    cleaned = [{k: v for k, v in m.items() if k in MESSAGE_KEYS and v is not None} if isinstance(m, dict) else m
               for m in messages]
    for message in cleaned:
        if isinstance(message, dict) and "content" not in message and not message.get("tool_calls"):
            message["content"] = ""
    try:
        return convert_messages(cleaned, "messages")
    except RowError as error:
        raise ApiError(400, error.message, param=error.field) from None


def chat_prompt_ids(tokenizer, request: ChatCompletionRequest) -> list[int]:
    """Prompt token ids for a chat request, through THE chat template."""
    from oikyo.models.chat_template import TemplateError, encode_prompt

    messages = canonical_messages(request.messages)
    try:
        return encode_prompt(tokenizer, messages, tools=request.offered_tools)
    except TemplateError as error:
        raise ApiError(400, str(error), param="messages") from None


def tool_parser(tokenizer, request: ChatCompletionRequest) -> ToolCallParser | None:
    """What reads tool calls out of this request's answers, in the format of the model's chat template
    (None when no tools are offered)."""
    from oikyo.models.chat_template import template_source

    return ToolCallParser.for_template(template_source(tokenizer), request.offered_tools,
                                       parallel=request.parallel_tool_calls)


def completion_prompt_ids(tokenizer, request: CompletionRequest) -> list[list[int]]:
    """Token ids of each prompt of a text-completion request (text is tokenized as is)."""
    prompt = request.prompt
    if isinstance(prompt, str):
        prompts: list = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [list(prompt)]
    else:
        prompts = list(prompt)
    if not prompts:
        raise ApiError(400, "prompt is empty", param="prompt")
    ids = []
    vocab = len(tokenizer)
    for p in prompts:
        tokens = tokenizer(p, add_special_tokens=True)["input_ids"] if isinstance(p, str) else list(p)
        if not tokens:
            raise ApiError(400, "prompt is empty", param="prompt")
        if any(not 0 <= t < vocab for t in tokens):
            raise ApiError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
        ids.append(tokens)
    return ids


def generation_requests(prompts: list[list[int]], request: _Generation, adapter: str | None,
                        context_length: int) -> list[GenerationRequest]:
    """``n`` engine requests per prompt, in choice order (choice index = prompt * n + j).

    With a seed, choice j samples with seed + j, so the n choices differ and the whole response is
    reproducible. Without ``max_tokens`` the generation may use the rest of the context.
    """
    out = []
    for prompt in prompts:
        if len(prompt) >= context_length:
            raise ApiError(400, f"This model's maximum context length is {context_length} tokens; the prompt has "
                                f"{len(prompt)}. Shorten the messages.", param="messages",
                           code="context_length_exceeded")
        budget = request.token_budget or context_length
        for j in range(request.n):
            out.append(GenerationRequest(
                prompt_ids=prompt, max_new_tokens=budget, temperature=request.temperature, top_p=request.top_p,
                stop=request.stop_list, stop_token_ids=[] if request.ignore_eos else None,
                seed=None if request.seed is None else request.seed + j, adapter=adapter,
                **request.sampling_settings(),
            ))
    return out


# ----------------------------------------------------------------------------- responses


def new_response_id(kind: str = "chat") -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + secrets.token_hex(12)


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _tagged(body: dict, variant: str | None) -> dict:
    if variant is not None:
        body["variant"] = variant
    return body


def chat_choice(index: int, result: GenerationResult, tools: ToolCallParser | None = None) -> dict:
    """One choice of a chat response; with ``tools``, the answer's tool calls as ``tool_calls``."""
    message = {"role": "assistant", "content": result.text}
    finish_reason = result.finish_reason
    if tools is not None:
        content, calls = tools.parse(result.text)
        if calls:
            message = {"role": "assistant", "content": content, "tool_calls": calls}
            finish_reason = tool_finish_reason(finish_reason)
    return {"index": index, "message": message, "logprobs": chat_logprobs(result.logprobs),
            "finish_reason": finish_reason}


def tool_finish_reason(finish_reason: str) -> str:
    """An answer with tool calls finishes with "tool_calls", unless it was cut short ("length" stays)."""
    return "tool_calls" if finish_reason == "stop" else finish_reason


def tool_call_deltas(position: int, call: dict) -> list[dict]:
    """A tool call as the stream deltas OpenAI sends: its id, type and name with empty arguments, then
    the arguments (``position``: the call's index within its choice)."""
    head = {"index": position, "id": call["id"], "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""}}
    arguments = {"index": position, "function": {"arguments": call["function"]["arguments"]}}
    return [{"tool_calls": [head]}, {"tool_calls": [arguments]}]


def chat_response(response_id: str, model: str, results: list[GenerationResult], prompt_tokens: int,
                  variant: str | None = None, created: int | None = None,
                  tools: ToolCallParser | None = None) -> dict:
    choices = [chat_choice(i, r, tools) for i, r in enumerate(results)]
    return _tagged({"id": response_id, "object": "chat.completion", "created": created or int(time.time()),
                    "model": model, "choices": choices, "system_fingerprint": None,
                    "usage": usage(prompt_tokens, sum(r.completion_tokens for r in results))}, variant)


def chat_chunk(response_id: str, model: str, created: int, index: int, delta: dict, finish_reason: str | None = None,
               variant: str | None = None, usage_body: dict | None = None, logprobs: dict | None = None) -> dict:
    body = {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]}
    if usage_body is not None:
        body["usage"] = usage_body
    return _tagged(body, variant)


def usage_chunk(response_id: str, model: str, created: int, object_name: str, usage_body: dict,
                variant: str | None = None) -> dict:
    """The extra last chunk OpenAI sends with ``stream_options.include_usage``: no choices, the usage."""
    return _tagged({"id": response_id, "object": object_name, "created": created, "model": model, "choices": [],
                    "usage": usage_body}, variant)


@dataclass
class Echo:
    """What ``echo`` puts before each choice: the prompt's text and its first token's text, one per
    choice; ``keep_generated`` False when ``max_tokens`` was 0 (the one token generated is not returned)."""

    prompts: list[str]
    first_tokens: list[str]
    keep_generated: bool = True


def completion_response(response_id: str, model: str, results: list[GenerationResult], prompt_tokens: int,
                        variant: str | None = None, created: int | None = None, echo: Echo | None = None) -> dict:
    choices, completion_tokens = [], 0
    for i, r in enumerate(results):
        text, logprobs, generated = r.text, completion_logprobs(r.logprobs), r.completion_tokens
        if echo is not None:
            if not echo.keep_generated:
                text, generated = "", 0
            text = echo.prompts[i] + text
            if r.prompt_logprobs is not None:
                logprobs = echoed_logprobs(echo.first_tokens[i], r.prompt_logprobs[1:],
                                           r.logprobs if echo.keep_generated else [])
        completion_tokens += generated
        choices.append({"index": i, "text": text, "logprobs": logprobs, "finish_reason": r.finish_reason})
    return _tagged({"id": response_id, "object": "text_completion", "created": created or int(time.time()),
                    "model": model, "choices": choices, "system_fingerprint": None,
                    "usage": usage(prompt_tokens, completion_tokens)}, variant)


def echo_for(tokenizer, token_text, request: CompletionRequest, prompts: list[list[int]]) -> Echo | None:
    """The :class:`Echo` of an ``echo`` request (None otherwise): text prompts come back as sent, token
    prompts decoded; one entry per choice (choice index = prompt * n + j). ``token_text``: a token id's
    text, as the log-probability entries write it."""
    if not request.echo:
        return None
    sent = request.prompt
    texts = [sent] if isinstance(sent, str) else list(sent) if sent and isinstance(sent[0], str) else None
    out = Echo([], [], keep_generated=request.max_tokens != 0)
    for k, ids in enumerate(prompts):
        text = texts[k] if texts is not None else tokenizer.decode(ids)
        out.prompts += [text] * request.n
        out.first_tokens += [token_text(ids[0])] * request.n
    return out


def completion_chunk(response_id: str, model: str, created: int, index: int, text: str,
                     finish_reason: str | None = None, variant: str | None = None,
                     usage_body: dict | None = None, logprobs: dict | None = None) -> dict:
    body = {"id": response_id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]}
    if usage_body is not None:
        body["usage"] = usage_body
    return _tagged(body, variant)


def sse(data: dict) -> str:
    """One server-sent event carrying a JSON object."""
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def model_entry(model_id: str, owned_by: str = "oikyo", **extra) -> dict:
    return {"id": model_id, "object": "model", "created": int(time.time()), "owned_by": owned_by, **extra}
