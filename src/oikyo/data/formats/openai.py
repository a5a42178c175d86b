"""OpenAI chat format: ``{"messages": [{"role", "content"}, ...], "tools": [...]}``.

Roles ``system`` (or ``developer``), ``user``, ``assistant`` and ``tool`` map to the canonical
roles. An assistant message with ``tool_calls`` becomes one ``tool_call`` turn per call, whose
content is JSON text ``{"name", "arguments"}`` (arguments parsed from OpenAI's JSON string when
they are valid JSON); any text the assistant said first stays a separate assistant turn. Content
given as a list of ``{"type": "text", "text"}`` parts is joined with newlines. A canonical
``tool_call`` role and a ``label`` are passed through, so oikyo's own exports import again.
"""

from __future__ import annotations

import json

from oikyo.data.formats.base import (
    Format,
    RowError,
    check_fields,
    dumps_json,
    label_text,
    optional_text,
    require_assistant,
    require_list,
    require_object,
    require_text,
    tool_call_text,
    tools_text,
    type_name,
)

ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "tool_call": "tool_call",
}
MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "tool_call_id", "name", "weight"})
FIELDS = frozenset({"messages", "tools", "parallel_tool_calls", "label"})


def _content(value, path: str) -> str | None:
    """Message content as text: a string, or a list of text parts; None when absent or empty."""
    if type(value) is list:
        parts = []
        for i, part in enumerate(value):
            if type(part) is str:
                parts.append(part)
            elif type(part) is dict and part.get("type", "text") == "text" and type(part.get("text")) is str:
                parts.append(part["text"])
            else:
                raise RowError("wrong_type", f"{path}[{i}]", f"{path}[{i}] must be a text part; only text is supported")
        value = "\n".join(parts)
    return optional_text(value, path)


def _tool_calls(calls, path: str) -> list[dict]:
    """OpenAI ``tool_calls`` as canonical tool_call turns."""
    if type(calls) is not list:
        raise RowError("wrong_type", path, f"{path} must be a list, got {type_name(calls)}")
    turns = []
    for i, call in enumerate(calls):
        where = f"{path}[{i}]"
        call = require_object(call, where)
        function = require_object(call.get("function", call), f"{where}.function")
        name = require_text(function.get("name"), f"{where}.function.name")
        arguments = function.get("arguments", {})
        if type(arguments) is str:
            try:
                arguments = json.loads(arguments)
            except ValueError:
                pass  # not JSON: keep the text as the model should write it
        content = dumps_json({"name": name, "arguments": arguments}, where)
        turns.append({"role": "tool_call", "content": content})
    return turns


def convert_messages(items: list, path: str) -> list[dict]:
    """A list of OpenAI messages as canonical messages (no assistant-turn check)."""
    messages = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if type(item) is not dict:
            raise RowError("wrong_type", where, f"{where} must be an object with role and content")
        if not item.keys() <= MESSAGE_KEYS:
            extra = sorted(k for k in item if k not in MESSAGE_KEYS)[0]
            raise RowError(
                "unknown_field",
                f"{where}.{extra}",
                f"{where} has field {extra!r}; a message uses: {', '.join(sorted(MESSAGE_KEYS))}",
            )
        role = item.get("role")
        if type(role) is not str or role not in ROLES:
            raise RowError(
                "unknown_role",
                f"{where}.role",
                f"{where}.role is {role!r}; use one of: system, user, assistant, tool",
            )
        role = ROLES[role]
        calls = item.get("tool_calls")
        if role == "assistant" and calls:
            content = _content(item.get("content"), f"{where}.content")
            if content is not None:
                messages.append({"role": "assistant", "content": content})
            messages.extend(_tool_calls(calls, f"{where}.tool_calls"))
            continue
        if "content" not in item:
            raise RowError("missing_field", f"{where}.content", f"{where} has no content")
        content = require_text(_content(item["content"], f"{where}.content") or "", f"{where}.content")
        if role == "tool_call":
            tool_call_text(content, f"{where}.content")
        messages.append({"role": role, "content": content})
    return messages


def convert(rec: dict) -> dict:
    """One OpenAI chat record as a canonical conversations row."""
    check_fields(rec, FIELDS, "openai", ("messages",))
    messages = convert_messages(require_list(rec.get("messages"), "messages"), "messages")
    require_assistant(messages, "messages")
    row = {"messages": messages}
    tools = tools_text(rec.get("tools"))
    if tools is not None:
        row["tools"] = tools
    if rec.get("label") is not None:
        row["label"] = label_text(rec["label"])
    return row


FORMAT = Format(
    name="openai",
    kind="conversations",
    variants=(("messages",),),
    optional=FIELDS - {"messages"},
    convert=convert,
    description='OpenAI chat: {"messages": [{"role", "content"}], "tools"}',
    list_fields=frozenset({"messages"}),
)
