"""OpenAI chat format: ``{"messages": [{"role", "content"}, ...], "tools": [...]}``.

Roles ``system`` (or ``developer``), ``user``, ``assistant`` and ``tool`` map to the canonical
roles. An assistant message with ``tool_calls`` (or the legacy ``function_call``) becomes one
``tool_call`` turn per call, whose content is JSON text ``{"name", "arguments"}`` (arguments parsed
from OpenAI's JSON string when they are valid JSON) and whose ``tool_call_id`` is the call's id;
any text the assistant said first stays a separate assistant turn. Content may be a list of typed
parts (text, reasoning, tool calls, tool results: see :mod:`oikyo.data.formats.parts`).

Message fields kept (see :mod:`oikyo.data.schema`): a reasoning trace (``reasoning``,
``reasoning_content`` or ``thinking``), a per-message loss weight (``weight`` as in OpenAI's
fine-tuning files, or ``loss_weight``; on assistant messages only), ``name`` and ``tool_call_id``.
A canonical ``tool_call`` role is passed through, so oikyo's own exports import again.

``label`` is a class label (text or a number). A boolean ``label`` is a KTO desirable flag, which
this format does not hold: such files are detected as ``kto``, and ``--format openai`` on them
stops with a message rather than read the flag as a class.
"""

from __future__ import annotations

from oikyo.data.formats.base import (
    Format,
    RowError,
    check_fields,
    label_text,
    loss_weight,
    optional_text,
    require_assistant,
    require_list,
    require_object,
    require_text,
    tool_call_text,
    tools_text,
    type_name,
)
from oikyo.data.formats.parts import REASONING_KEYS, WEIGHT_KEYS, content_parts, message_turns, one_of, tool_call_of

ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "tool_call": "tool_call",
}
MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "function_call", "tool_call_id", "name",
                          *WEIGHT_KEYS, *REASONING_KEYS})
FIELDS = frozenset({"messages", "tools", "parallel_tool_calls", "label"})
_PLAIN = frozenset({"role", "content"})


def _tool_calls(calls, path: str) -> list[dict]:
    """OpenAI ``tool_calls`` as ``{"name", "arguments", "id"?}`` dicts."""
    if type(calls) is not list:
        raise RowError("wrong_type", path, f"{path} must be a list, got {type_name(calls)}")
    found = []
    for i, call in enumerate(calls):
        where = f"{path}[{i}]"
        call = require_object(call, where)
        extra = sorted(k for k in call if k not in ("id", "type", "function", "name", "arguments"))
        if extra:
            raise RowError("unknown_field", f"{where}.{extra[0]}", f"{where} has field {extra[0]!r}; a tool call uses: id, type, function")
        found.append(tool_call_of(call, where))
    return found


def _extras(item: dict, role: str, where: str) -> dict:
    """The message's weight, name and tool_call_id, checked."""
    extras = {}
    key, weight = one_of(item, WEIGHT_KEYS, where, required=False)
    if weight is not None:
        if role not in ("assistant", "tool_call"):
            raise RowError("wrong_type", f"{where}.{key}",
                           f"{where} is a {role} message with a {key}; loss weights apply to the model's (assistant) turns")
        extras["weight"] = loss_weight(weight, f"{where}.{key}")
    for key in ("name", "tool_call_id"):
        if item.get(key) is not None:
            extras[key] = require_text(item[key], f"{where}.{key}")
    return extras


def convert_messages(items: list, path: str) -> list[dict]:
    """A list of OpenAI messages as canonical messages (no assistant-turn check)."""
    messages = []
    for i, item in enumerate(items):
        messages.extend(convert_message(item, f"{path}[{i}]"))
    return messages


def convert_message(item, where: str) -> list[dict]:
    """One OpenAI message as canonical turns (usually one; see the module docstring)."""
    if type(item) is not dict:
        raise RowError("wrong_type", where, f"{where} must be an object with role and content")
    role = item.get("role")
    if item.keys() <= _PLAIN and type(item.get("content")) is str and role in ROLES and role != "tool_call":
        # The common case: role and text, nothing else.
        return [{"role": ROLES[role], "content": require_text(item["content"], f"{where}.content")}]
    if not item.keys() <= MESSAGE_KEYS:
        extra = sorted(k for k in item if k not in MESSAGE_KEYS)[0]
        raise RowError(
            "unknown_field",
            f"{where}.{extra}",
            f"{where} has field {extra!r}; a message uses: {', '.join(sorted(MESSAGE_KEYS))}",
        )
    if type(role) is not str or role not in ROLES:
        raise RowError(
            "unknown_role",
            f"{where}.role",
            f"{where}.role is {role!r}; use one of: system, user, assistant, tool",
        )
    role = ROLES[role]
    extras = _extras(item, role, where)
    key, reasoning = one_of(item, REASONING_KEYS, where, required=False)
    reasoning = optional_text(reasoning, f"{where}.{key}") if key else None
    if role == "tool_call":  # oikyo's canonical tool call turn, passed through
        content = tool_call_text(require_text(item.get("content"), f"{where}.content"), f"{where}.content")
        turn = {"role": "tool_call", "content": content, **extras}
        if reasoning is not None:
            turn["reasoning"] = reasoning
        return [turn]
    calls = []
    for key in ("tool_calls", "function_call"):
        if item.get(key) is not None:
            if role != "assistant":
                raise RowError("wrong_type", f"{where}.{key}", f"{where} is a {role} message with {key}")
            value = item[key]
            calls += _tool_calls(value if key == "tool_calls" else [value], f"{where}.{key}")
    if "content" not in item and not calls:
        raise RowError("missing_field", f"{where}.content", f"{where} has no content")
    pieces = content_parts(item.get("content"), f"{where}.content")
    return message_turns(role, pieces, reasoning=reasoning, calls=calls, extras=extras, path=where)


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
        if type(rec["label"]) is bool:
            raise RowError(
                "wrong_type", "label",
                "label is true/false: that is a KTO flag (a desirable or undesirable answer), not a class; "
                "import with --format kto to train on it with KTO, or give class labels as text",
            )
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
