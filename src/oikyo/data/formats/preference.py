"""Preference pairs for DPO: a prompt plus a ``chosen`` and a ``rejected`` answer → kind ``preference``.

Three shapes are read:

* ShareGPT (LLaMA-Factory's ``dpo_en_demo.json``): ``{"conversations": [{"from", "value"}],
  "chosen": {"from": "gpt", "value"}, "rejected": {...}, "system", "tools"}``;
* OpenAI: ``{"messages": [{"role", "content"}], "chosen", "rejected"}``;
* flat: ``{"prompt", "chosen", "rejected"}`` where the prompt is text or a list of messages.

``chosen``/``rejected`` may be text, one ``{from, value}``/``{role, content}`` turn, or a list
holding one assistant message (TRL's conversational form). The prompt must end with a user turn.
More specific than sharegpt/openai, so a record with chosen and rejected is always preference.

Full-message pairs are read too: ``{"chosen_messages": [...], "rejected_messages": [...]}``, or
``{"chosen": [...], "rejected": [...]}`` with whole conversations and no prompt key (TRL's
"implicit prompt"). The turns both share are the prompt; what follows must be one assistant
text answer on each side, or the record is refused saying so (nothing is cut away).
"""

from __future__ import annotations

from oikyo.data.formats.base import (
    Format,
    RowError,
    check_fields,
    require_list,
    require_text,
    tools_text,
    type_name,
)
from oikyo.data.formats.openai import convert_messages
from oikyo.data.formats.sharegpt import convert_turns, with_system

PROMPT_KEYS = ("conversations", "messages", "prompt")
FULL_KEYS = ("chosen_messages", "rejected_messages")
FIELDS = frozenset({*PROMPT_KEYS, *FULL_KEYS, "chosen", "rejected", "system", "tools"})
ANSWER_ROLES = frozenset({"gpt", "assistant"})


def _prompt(rec: dict) -> tuple[list[dict], str, str]:
    """The prompt turns, the key they came from and the name of that key's role field."""
    present = [key for key in PROMPT_KEYS if key in rec]
    if not present:
        raise RowError("missing_field", "prompt", "record has no prompt: give conversations, messages or prompt")
    key = present[0]
    if len(present) > 1:
        raise RowError("unknown_field", present[1], f"record has both {key!r} and {present[1]!r}; keep only one prompt")
    if key == "conversations":
        return convert_turns(require_list(rec[key], key), key), key, "from"
    if key == "prompt" and type(rec[key]) is not list:
        return [{"role": "user", "content": require_text(rec[key], key)}], key, "role"
    return convert_messages(require_list(rec[key], key), key), key, "role"


def _answer(value, path: str) -> str:
    """A chosen/rejected answer as text."""
    if type(value) is list:
        if len(value) != 1:
            raise RowError("wrong_type", path, f"{path} must be one answer, got a list of {len(value)}")
        value, path = value[0], f"{path}[0]"
    if type(value) is dict:
        role_key = "from" if "from" in value else "role"
        text_key = "value" if "value" in value else "content"
        extra = [k for k in value if k not in (role_key, text_key)]
        if extra:
            raise RowError("unknown_field", f"{path}.{extra[0]}", f"{path} has field {extra[0]!r}; use from and value")
        role = value.get(role_key)
        if role is not None and role not in ANSWER_ROLES:
            raise RowError("unknown_role", f"{path}.{role_key}", f"{path}.{role_key} is {role!r}; an answer is 'gpt'")
        return require_text(value.get(text_key), f"{path}.{text_key}")
    if value is not None and type(value) is not str:
        raise RowError("wrong_type", path, f"{path} must be text or a {{from, value}} turn, got {type_name(value)}")
    return require_text(value, path)


def _full_turns(value, path: str) -> list[dict]:
    items = require_list(value, path)
    if all(type(item) is dict and "from" in item for item in items):
        return convert_turns(items, path)
    return convert_messages(items, path)


def _full_pair(rec: dict, chosen_key: str, rejected_key: str) -> tuple[list[dict], str, str]:
    """Prompt turns and the two answers of a full-message pair (the shared turns are the prompt)."""
    chosen = _full_turns(rec.get(chosen_key), chosen_key)
    rejected = _full_turns(rec.get(rejected_key), rejected_key)
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    answers = []
    for key, turns in ((chosen_key, chosen), (rejected_key, rejected)):
        rest = turns[shared:]
        if len(rest) != 1 or rest[0]["role"] != "assistant" or len(rest[0]) != 2:
            raise RowError(
                "wrong_type", key,
                f"{chosen_key} and {rejected_key} must share every turn but the last, and end with one assistant "
                f"text answer each; {key} has {len(rest)} turn(s) after the {shared} shared one(s)"
                + (" and its answer carries reasoning, a weight or a tool call" if len(rest) == 1 and len(rest[0]) != 2 else ""),
            )
        answers.append(rest[0]["content"])
    return chosen[:shared], answers[0], answers[1]


def _is_full(rec: dict) -> bool:
    """A {chosen, rejected} record without a prompt whose answers are whole conversations."""
    if any(key in rec for key in PROMPT_KEYS):
        return False
    return all(type(rec.get(key)) is list and len(rec[key]) > 1 for key in ("chosen", "rejected"))


def convert(rec: dict) -> dict:
    """One preference record as a canonical preference row."""
    if any(key in rec for key in FULL_KEYS) or _is_full(rec):
        keys = FULL_KEYS if any(key in rec for key in FULL_KEYS) else ("chosen", "rejected")
        if any(key in rec for key in PROMPT_KEYS):
            raise RowError("unknown_field", next(k for k in PROMPT_KEYS if k in rec),
                           "full-message pairs carry their prompt inside the chosen and rejected conversations")
        check_fields(rec, frozenset({*keys, "system", "tools"}), "preference", keys)
        messages, chosen, rejected = _full_pair(rec, *keys)
        key, role_key = keys[0], "role"
        if not messages:
            raise RowError("missing_field", key, f"{keys[0]} and {keys[1]} share no prompt turn before their answers")
    else:
        messages, key, role_key = _prompt(rec)
        chosen = rejected = None
        check_fields(rec, FIELDS - set(FULL_KEYS), "preference", ("chosen", "rejected"))
    if not messages or messages[-1]["role"] != "user":
        last = len(messages) - 1
        raise RowError(
            "unknown_role",
            f"{key}[{last}].{role_key}",
            f"the prompt must end with the user's turn, but {key}[{last}] is a {messages[-1]['role']} turn",
        )
    row = {
        "messages": with_system(messages, rec.get("system")),
        "chosen": chosen if chosen is not None else _answer(rec.get("chosen"), "chosen"),
        "rejected": rejected if rejected is not None else _answer(rec.get("rejected"), "rejected"),
    }
    tools = tools_text(rec.get("tools"))
    if tools is not None:
        row["tools"] = tools
    return row


FORMAT = Format(
    name="preference",
    kind="preference",
    variants=tuple((key, "chosen", "rejected") for key in PROMPT_KEYS) + (FULL_KEYS, ("chosen", "rejected")),
    optional=frozenset({"system", "tools"}),
    convert=convert,
    description='preference pairs: {"conversations" | "messages" | "prompt", "chosen", "rejected"}, '
    'or {"chosen_messages", "rejected_messages"}',
    list_fields=frozenset({"conversations", "messages", *FULL_KEYS}),
)
