"""Message content given as a list of typed parts, and the message fields beyond role and content.

Chat data from different tools writes the same things differently. :func:`content_parts` reads a
message's content (text, or a list of parts) into *pieces*, in order:

- ``("text", str)``: a string, or ``{"type": "text" | "input_text" | "output_text", "text" | "value"}``;
- ``("reasoning", str)``: ``{"type": "reasoning" | "thinking", "text" | "value" | "reasoning" | "thinking"}``;
- ``("tool_call", {"name", "arguments", "id"?})``: ``{"type": "tool_call" | "function_call" |
  "tool_use", "name", "arguments" | "input", "id" | "call_id"?}``, or ``{"type": "tool_call" |
  "function", "function": {"name", "arguments"}, "id"?}``;
- ``("tool_result", {"content", "tool_call_id"?, "name"?})``: ``{"type": "tool_result" |
  "function_call_output", "content" | "output", "tool_use_id" | "call_id" | "tool_call_id"?, "name"?}``.

Any other part, or a part with a key not listed, is refused with its path: nothing is dropped.
:func:`message_turns` turns one message's pieces into canonical turns (see
:mod:`oikyo.data.schema`): text and reasoning of an assistant message make an assistant turn whose
``reasoning`` is the trace, each tool call a ``tool_call`` turn, each tool result a ``tool`` turn.
"""

from __future__ import annotations

import json

from oikyo.data.formats.base import (
    RowError,
    dumps_json,
    optional_text,
    require_object,
    require_text,
    type_name,
)

TEXT_TYPES = frozenset({"text", "input_text", "output_text"})
REASONING_TYPES = frozenset({"reasoning", "thinking"})
CALL_TYPES = frozenset({"tool_call", "function_call", "tool_use", "function"})
RESULT_TYPES = frozenset({"tool_result", "function_call_output"})
PART_KEYS = {
    "text": frozenset({"type", "text", "value"}),
    "reasoning": frozenset({"type", "text", "value", "reasoning", "thinking"}),
    "tool_call": frozenset({"type", "name", "arguments", "input", "id", "call_id", "function"}),
    "tool_result": frozenset({"type", "content", "output", "tool_use_id", "call_id", "tool_call_id", "name"}),
}
# Message keys that hold a reasoning trace (DeepSeek/vLLM/Qwen3 "reasoning_content", OpenRouter
# "reasoning", gpt-oss "thinking"); oikyo's own canonical key is "reasoning".
REASONING_KEYS = ("reasoning", "reasoning_content", "thinking")
# Message keys that hold a per-message loss weight (OpenAI's "weight"; "loss_weight" elsewhere).
WEIGHT_KEYS = ("weight", "loss_weight")


def one_of(part: dict, keys: tuple[str, ...], path: str, required: bool = True):
    """The value of the one key of ``keys`` present in ``part`` (two present is an error)."""
    present = [key for key in keys if part.get(key) is not None]
    if len(present) > 1:
        raise RowError("duplicate_key", f"{path}.{present[1]}", f"{path} has both {present[0]!r} and {present[1]!r}")
    if not present:
        if required:
            raise RowError("missing_field", f"{path}.{keys[0]}", f"{path} has no {' or '.join(map(repr, keys))}")
        return None, None
    return present[0], part[present[0]]


def _text_of(value, path: str) -> str:
    """Text, or a list of text parts joined with newlines (a tool result's content may be either)."""
    if type(value) is list:
        pieces = content_parts(value, path)
        if any(kind != "text" for kind, _ in pieces):
            raise RowError("wrong_type", path, f"{path} must hold text parts only")
        value = "\n".join(text for _, text in pieces)
    return require_text(value, path)


def tool_call_of(part: dict, path: str) -> dict:
    """A tool call part as ``{"name", "arguments", "id"?}``."""
    function = part.get("function")
    source = require_object(function, f"{path}.function") if function is not None else part
    name = require_text(source.get("name"), f"{path}.name")
    _, arguments = one_of(source, ("arguments", "input"), path, required=False)
    arguments = {} if arguments is None else arguments
    if type(arguments) is str:
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass  # not JSON: keep the text as the model should write it
    _, call_id = one_of(part, ("id", "call_id"), path, required=False)
    call = {"name": name, "arguments": arguments}
    if call_id is not None:
        call["id"] = require_text(call_id, f"{path}.id")
    return call


def content_parts(value, path: str) -> list[tuple[str, object]]:
    """A message's content as ordered pieces (see the module docstring); [] when absent or blank."""
    if type(value) is not list:
        text = optional_text(value, path)
        return [] if text is None else [("text", text)]
    pieces = []
    for i, part in enumerate(value):
        where = f"{path}[{i}]"
        if type(part) is str:
            pieces.append(("text", part))
            continue
        if type(part) is not dict:
            raise RowError("wrong_type", where, f"{where} must be text or a typed part, got {type_name(part)}")
        kind = part.get("type", "text")
        group = ("text" if kind in TEXT_TYPES else "reasoning" if kind in REASONING_TYPES else
                 "tool_call" if kind in CALL_TYPES else "tool_result" if kind in RESULT_TYPES else None)
        if group is None:
            raise RowError(
                "wrong_type", f"{where}.type",
                f"{where} is a {kind!r} part; oikyo reads text, reasoning, tool call and tool result parts",
            )
        extra = sorted(k for k in part if k not in PART_KEYS[group])
        if extra:
            raise RowError("unknown_field", f"{where}.{extra[0]}",
                           f"{where} ({kind} part) has field {extra[0]!r}; it uses: {', '.join(sorted(PART_KEYS[group]))}")
        if group == "text":
            _, text = one_of(part, ("text", "value"), where)
            pieces.append(("text", require_text(text, where) if not isinstance(text, str) else text))
        elif group == "reasoning":
            _, text = one_of(part, ("text", "value", "reasoning", "thinking"), where)
            pieces.append(("reasoning", require_text(text, where)))
        elif group == "tool_call":
            pieces.append(("tool_call", tool_call_of(part, where)))
        else:
            _, content = one_of(part, ("content", "output"), where)
            _, call_id = one_of(part, ("tool_call_id", "tool_use_id", "call_id"), where, required=False)
            result = {"content": _text_of(content, where)}
            if call_id is not None:
                result["tool_call_id"] = require_text(call_id, where)
            if part.get("name") is not None:
                result["name"] = require_text(part["name"], f"{where}.name")
            pieces.append(("tool_result", result))
    return pieces


def call_turn(call: dict, path: str) -> dict:
    """A canonical tool_call turn for ``{"name", "arguments", "id"?}``."""
    turn = {"role": "tool_call", "content": dumps_json({"name": call["name"], "arguments": call["arguments"]}, path)}
    if call.get("id") is not None:
        turn["tool_call_id"] = call["id"]
    return turn


def message_turns(role: str, pieces: list, *, reasoning: str | None, calls: list[dict], extras: dict, path: str) -> list[dict]:
    """Canonical turns of one message of ``role`` from its content ``pieces`` and its tool ``calls``.

    ``reasoning``: a message-level trace (it comes before any reasoning part). ``extras``: the
    message's own ``weight``/``name``/``tool_call_id`` (weights go to the model's turns only).
    Consecutive text pieces are joined with newlines into one turn.
    """
    traces = [reasoning] if reasoning else []
    traces += [text for kind, text in pieces if kind == "reasoning"]
    if traces and role != "assistant":
        raise RowError("wrong_type", path, f"{path} is a {role} message with reasoning; only the assistant reasons")
    turns: list[dict] = []
    texts: list[str] = []

    def flush_text() -> None:
        if texts:
            turns.append({"role": role, "content": require_text("\n".join(texts), f"{path}.content")})
            texts.clear()

    for kind, value in pieces:
        if kind == "text":
            texts.append(value)
        elif kind == "tool_call":
            if role != "assistant":
                raise RowError("wrong_type", path, f"{path} is a {role} message with a tool call; only the assistant calls tools")
            flush_text()
            turns.append(call_turn(value, path))
        elif kind == "tool_result":
            if role not in ("user", "tool"):
                raise RowError("wrong_type", path, f"{path} is a {role} message with a tool result")
            flush_text()
            turns.append({"role": "tool", **value})
    flush_text()
    turns.extend(call_turn(call, path) for call in calls)
    if not turns:
        raise RowError("empty_content", f"{path}.content", f"{path}.content is empty; give it some text or remove the record")
    if traces:
        turns[0]["reasoning"] = "\n".join(traces)
    for turn in turns:
        for key, value in extras.items():
            if key == "weight" and turn["role"] not in ("assistant", "tool_call"):
                continue
            if key == "tool_call_id" and turn.get("tool_call_id") is not None:
                continue
            turn.setdefault(key, value)
    return turns
