"""The OpenAPI document of a deployment's OpenAI-compatible API.

Request bodies are the JSON Schemas of the pydantic models that validate them
(:mod:`oikyo.serve.gateway.openai_api`), so the document cannot drift from what the server
accepts; responses are OpenAI's shapes as this server writes them (extra fields allowed, as
OpenAI's own clients allow them). A deployment serves it at ``GET /openapi.json`` (with a key,
like every route but ``/health``); ``oikyo deployments openapi`` prints it without a server, and
docs/serving-openapi.json is that output (a test keeps it current). Schema fuzzers (schemathesis)
and client generators read it::

    from oikyo.serve.gateway.openapi import spec
    document = spec()            # a dict, OpenAPI 3.1
"""

from __future__ import annotations

from typing import Any

from oikyo.serve.gateway import openai_api as oa

_NULLABLE_STRING = {"type": ["string", "null"]}
_USAGE = {"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
          "properties": {name: {"type": "integer", "minimum": 0}
                         for name in ("prompt_tokens", "completion_tokens", "total_tokens")}}
_TOKEN = {"type": "object", "required": ["token", "logprob", "bytes"], "properties": {
    "token": {"type": "string"}, "logprob": {"type": "number", "maximum": 0},
    "bytes": {"type": ["array", "null"], "items": {"type": "integer", "minimum": 0, "maximum": 255}}}}
_CHAT_LOGPROBS = {"type": ["object", "null"], "description": "With \"logprobs\": true: each token's log-probability.",
                  "required": ["content"], "properties": {"content": {"type": ["array", "null"], "items": {
                      **_TOKEN, "required": [*_TOKEN["required"], "top_logprobs"],
                      "properties": {**_TOKEN["properties"], "top_logprobs": {"type": "array", "items": _TOKEN}}}}}}
_COMPLETION_LOGPROBS = {"type": ["object", "null"], "description": "With \"logprobs\": k (the legacy shape).",
                        "required": ["tokens", "token_logprobs", "top_logprobs", "text_offset"], "properties": {
    "tokens": {"type": "array", "items": {"type": "string"}},
    "token_logprobs": {"type": "array", "items": {"type": ["number", "null"], "maximum": 0}},
    "top_logprobs": {"type": ["array", "null"], "items": {
        "type": ["object", "null"], "additionalProperties": {"type": "number", "maximum": 0}}},
    "text_offset": {"type": "array", "items": {"type": "integer", "minimum": 0}}}}
_TOOL_CALL = {"type": "object", "required": ["id", "type", "function"], "properties": {
    "id": {"type": "string"}, "type": {"const": "function"},
    "function": {"type": "object", "required": ["name", "arguments"],
                 "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}}}}}


def _completion(object_name: str, choice_required: list[str], choice_properties: dict) -> dict:
    """A (chat or text) completion: the common envelope around its kind of choices."""
    return {"type": "object", "required": ["id", "object", "created", "model", "choices", "usage"], "properties": {
        "id": {"type": "string"}, "object": {"const": object_name}, "created": {"type": "integer"},
        "model": {"type": "string"}, "usage": _USAGE,
        "choices": {"type": "array", "items": {"type": "object", "required": ["index", *choice_required],
                                               "properties": {"index": {"type": "integer", "minimum": 0},
                                                              **choice_properties}}}}}


RESPONSES: dict[str, dict[str, Any]] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": _NULLABLE_STRING, "code": _NULLABLE_STRING}}}},
    "ChatCompletion": _completion("chat.completion", ["message", "finish_reason"], {
        "finish_reason": {"enum": ["stop", "length", "tool_calls", None]}, "logprobs": _CHAT_LOGPROBS,
        "message": {"type": "object", "required": ["role", "content"], "properties": {
            "role": {"const": "assistant"}, "content": _NULLABLE_STRING,
            "tool_calls": {"type": "array", "items": _TOOL_CALL}}}}),
    "Completion": _completion("text_completion", ["text", "finish_reason"], {
        "text": {"type": "string"}, "finish_reason": {"enum": ["stop", "length", None]},
        "logprobs": _COMPLETION_LOGPROBS}),
    "ModelList": {"type": "object", "required": ["object", "data"], "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {"type": "object", "required": ["id", "object", "owned_by"],
                                            "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                                                           "created": {"type": "integer"},
                                                           "owned_by": {"type": "string"}}}}}},
    "Feedback": {"type": "object", "required": ["object", "id", "response_id"], "properties": {
        "object": {"const": "feedback"}, "id": {"type": ["integer", "string"]}, "response_id": {"type": "string"},
        "variant": _NULLABLE_STRING}},
}
REQUESTS = {"ChatCompletionRequest": oa.ChatCompletionRequest, "CompletionRequest": oa.CompletionRequest,
            "FeedbackRequest": oa.FeedbackRequest}
# With "stream": true: server-sent events, each `data: {chunk as JSON}`, the last `data: [DONE]`. The
# schema describes one event, as OpenAPI 3.2's itemSchema does and schemathesis reads it.
_STREAM = {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"],
    "description": "One server-sent event: `data` holds a chunk as JSON, or [DONE] at the end.",
    "properties": {"data": {"type": "string", "contentMediaType": "application/json"},
                   "event": {"type": "string"}, "id": {"type": "string"}}}}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: int) -> dict:
    what = {400: "The request is invalid; the error names the parameter.", 401: "No or a wrong API key.",
            404: "No such model or response.", 413: "The body is too large.",
            429: "This API key is over the deployment's rate limit (--rate-limit); retry after Retry-After seconds.",
            503: "No replica can take the request now."}
    out = {str(code): {"description": what[code], "content": {"application/json": {"schema": _ref("Error")}}}
           for code in codes}
    if 429 in codes:
        out["429"]["headers"] = {"Retry-After": {"description": "Seconds until this key may send again.",
                                                 "schema": {"type": "integer", "minimum": 1}}}
    return out


def _post(summary: str, request: str, response: str, *, streams: bool) -> dict:
    ok = {"description": "OK", "content": {"application/json": {"schema": _ref(response)}, **(_STREAM if streams else {})}}
    return {"post": {"summary": summary, "security": [{"bearer": []}],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(request)}}},
                     "responses": {"200": ok, **_errors(400, 401, 404, 413, 429, 503)}}}


def spec(title: str = "oikyo deployment", models: list[str] | None = None) -> dict:
    """The OpenAPI 3.1 document of the serving API; ``models``: the served model ids, given as the
    ``model`` field's examples (what a deployment's own document lists)."""
    schemas: dict[str, Any] = {}
    for name, model in REQUESTS.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        if models and "model" in schema.get("properties", {}):
            schema["properties"]["model"]["examples"] = list(models)
        schemas[name] = schema
    schemas.update(RESPONSES)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1",
                 "description": "OpenAI-compatible serving API of an oikyo deployment. Every route but /health "
                                "needs `Authorization: Bearer <key>` (`oikyo keys create DEPLOYMENT`)."},
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/v1/chat/completions": _post("Chat completion (streamed with \"stream\": true)",
                                          "ChatCompletionRequest", "ChatCompletion", streams=True),
            "/v1/completions": _post("Text completion (streamed with \"stream\": true)", "CompletionRequest",
                                     "Completion", streams=True),
            "/v1/feedback": _post("A rating and/or a correction of a served response", "FeedbackRequest",
                                  "Feedback", streams=False),
            "/v1/models": {"get": {"summary": "The models this deployment serves", "security": [{"bearer": []}],
                                   "responses": {"200": {"description": "OK", "content": {
                                       "application/json": {"schema": _ref("ModelList")}}}, **_errors(401, 429)}}},
            "/health": {"get": {"summary": "Readiness (no key needed)", "responses": {
                "200": {"description": "Ready", "content": {"application/json": {"schema": {"type": "object"}}}},
                "503": {"description": "Not ready yet", "content": {
                    "application/json": {"schema": {"type": "object"}}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [{"bearer": []}], "responses": {
                "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
                **_errors(401)}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [{"bearer": []}], "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}},
                **_errors(401)}}},
        },
    }
