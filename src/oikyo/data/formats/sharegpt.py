"""ShareGPT format: ``{"conversations": [{"from", "value"}, ...], "tools", "system"}``.

Roles: ``human``/``user`` → user, ``gpt``/``assistant`` → assistant, ``system`` → system,
``function_call`` → tool_call (its value must be JSON text ``{"name", "arguments"}``),
``observation``/``tool`` → tool. Turns written as ``{"role", "content"}`` are accepted too. A
top-level ``system`` text becomes the first turn; ``tools`` is kept as JSON text (an empty list
means no tools). See LLaMA-Factory's ``glaive_toolcall_en_demo.json``.

A turn's ``value`` may also be a list of typed parts, and a turn may carry the message fields the
OpenAI format reads (a reasoning trace, a loss weight, ``name``, ``tool_call_id``): see
:mod:`oikyo.data.formats.openai`. oikyo's ShareGPT export writes them that way.
"""

from __future__ import annotations

from oikyo.data.formats.base import (
    Format,
    RowError,
    check_fields,
    optional_text,
    require_assistant,
    require_list,
    require_text,
    tool_call_text,
    tools_text,
)
from oikyo.data.formats.parts import REASONING_KEYS, WEIGHT_KEYS

ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "tool_call",
    "observation": "tool",
    "tool": "tool",
}
TURN_KEYS = frozenset({"from", "value", "role", "content"})
EXTRA_KEYS = frozenset({*REASONING_KEYS, *WEIGHT_KEYS, "name", "tool_call_id"})
FIELDS = frozenset({"conversations", "tools", "system"})


def convert_turns(items: list, path: str) -> list[dict]:
    """A list of ShareGPT turns as canonical messages (no assistant-turn check)."""
    messages = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if type(item) is not dict:
            raise RowError("wrong_type", where, f"{where} must be an object with from and value")
        if not item.keys() <= TURN_KEYS or type(item.get("value", item.get("content"))) is list:
            extra = sorted(k for k in item if k not in TURN_KEYS | EXTRA_KEYS)
            if extra:
                raise RowError("unknown_field", f"{where}.{extra[0]}", f"{where} has field {extra[0]!r}; a turn uses: from, value")
            messages.extend(_rich_turn(item, where))
            continue
        role_key = "from" if "from" in item else "role"
        text_key = "value" if "value" in item else "content"
        role = ROLES.get(item.get(role_key)) if type(item.get(role_key)) is str else None
        if role is None:
            if role_key not in item:
                raise RowError("missing_field", f"{where}.from", f"{where} has no 'from' (who is speaking)")
            raise RowError(
                "unknown_role",
                f"{where}.{role_key}",
                f"{where}.{role_key} is {item[role_key]!r}; use one of: {', '.join(ROLES)}",
            )
        if text_key not in item:
            raise RowError("missing_field", f"{where}.value", f"{where} has no 'value' (what was said)")
        content = require_text(item[text_key], f"{where}.{text_key}")
        if role == "tool_call":
            tool_call_text(content, f"{where}.{text_key}")
        messages.append({"role": role, "content": content})
    return messages


def _rich_turn(item: dict, where: str) -> list[dict]:
    """A turn with typed parts or message fields, read the way the OpenAI format reads a message."""
    from oikyo.data.formats.openai import convert_message

    role_key = "from" if "from" in item else "role"
    role = ROLES.get(item.get(role_key)) if type(item.get(role_key)) is str else None
    if role is None:
        raise RowError("unknown_role", f"{where}.{role_key}", f"{where}.{role_key} is {item.get(role_key)!r}; use one of: {', '.join(ROLES)}")
    message = {k: v for k, v in item.items() if k not in ("from", "value", "role", "content")}
    message["role"] = role
    text_key = "value" if "value" in item else "content"
    if text_key in item:
        message["content"] = item[text_key]
    if role == "tool_call" and type(message.get("content")) is str:
        tool_call_text(message["content"], f"{where}.{text_key}")
    return convert_message(message, where)


def with_system(messages: list[dict], system) -> list[dict]:
    """Prepend a top-level ``system`` text as the first turn, when given."""
    text = optional_text(system, "system")
    if text is None:
        return messages
    return [{"role": "system", "content": text}, *messages]


def convert(rec: dict) -> dict:
    """One ShareGPT record as a canonical conversations row."""
    check_fields(rec, FIELDS, "sharegpt", ("conversations",))
    messages = convert_turns(require_list(rec.get("conversations"), "conversations"), "conversations")
    require_assistant(messages, "conversations")
    row = {"messages": with_system(messages, rec.get("system"))}
    tools = tools_text(rec.get("tools"))
    if tools is not None:
        row["tools"] = tools
    return row


FORMAT = Format(
    name="sharegpt",
    kind="conversations",
    variants=(("conversations",),),
    optional=FIELDS - {"conversations"},
    convert=convert,
    description='ShareGPT: {"conversations": [{"from", "value"}], "tools", "system"}',
    list_fields=frozenset({"conversations"}),
)
