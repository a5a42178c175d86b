"""Labelled (KTO) conversations: one answer each, flagged desirable or not → kind ``unpaired_preference``.

The KTO convention: each record is a conversation whose last assistant turn is the answer being
judged, plus a boolean flag, ``true`` for a desirable answer and ``false`` for an undesirable one.
Shapes read (the flag is ``label``, LLaMA-Factory's ``kto_tag``, or oikyo's own ``desirable``):

* OpenAI: ``{"messages": [...], "label": true}``;
* ShareGPT: ``{"conversations": [{"from", "value"}], "kto_tag": false, "system", "tools"}``;
* TRL's unpaired preference: ``{"prompt", "completion", "label"}`` (text, or lists of messages).

The flag must be a boolean (or the text "true"/"false", as a CSV cell holds it). Detection claims
a file for this format only when its flags are booleans; text "true"/"false" under ``label`` could
also be a classifier's class, so detection then asks (``--format kto`` or ``--format openai``).
A flag is never read as a class label, and a class label is never read as a flag.
"""

from __future__ import annotations

from oikyo.data.formats.base import (
    Format,
    RowError,
    check_fields,
    desirable_flag,
    require_list,
    tools_text,
)
from oikyo.data.formats.openai import convert_messages
from oikyo.data.formats.prompt_completion import _turns
from oikyo.data.formats.sharegpt import convert_turns, with_system
from oikyo.data.schema import ASSISTANT_ROLES

FLAG_KEYS = ("label", "kto_tag", "desirable")
CONVERSATION_KEYS = ("messages", "conversations", "prompt")
FIELDS = frozenset({*FLAG_KEYS, "messages", "conversations", "prompt", "completion", "system", "tools"})


def _flag(rec: dict) -> tuple[str, bool]:
    present = [key for key in FLAG_KEYS if rec.get(key) is not None]
    if not present:
        raise RowError("missing_field", "label", "record has no desirable flag: give label (true or false)")
    if len(present) > 1:
        raise RowError("duplicate_key", present[1], f"record has both {present[0]!r} and {present[1]!r}; keep one flag")
    return present[0], desirable_flag(rec[present[0]], present[0])


def _conversation(rec: dict) -> tuple[list[dict], str]:
    present = [key for key in CONVERSATION_KEYS if rec.get(key) is not None]
    if not present:
        raise RowError("missing_field", "messages", "record has no conversation: give messages, conversations or prompt")
    if len(present) > 1:
        raise RowError("unknown_field", present[1], f"record has both {present[0]!r} and {present[1]!r}; keep one")
    key = present[0]
    if key == "messages":
        return convert_messages(require_list(rec[key], key), key), key
    if key == "conversations":
        return with_system(convert_turns(require_list(rec[key], key), key), rec.get("system")), key
    if rec.get("completion") is None:
        raise RowError("missing_field", "completion", "completion is missing (or null): it is the answer being judged")
    return _turns(rec["prompt"], "prompt", "user") + _turns(rec["completion"], "completion", "assistant"), "completion"


def convert(rec: dict) -> dict:
    """One labelled conversation as a canonical unpaired_preference row."""
    check_fields(rec, FIELDS, "kto")
    _, desirable = _flag(rec)
    messages, key = _conversation(rec)
    if rec.get("completion") is not None and key != "completion":
        raise RowError("unknown_field", "completion", "completion goes with prompt, not with messages or conversations")
    if rec.get("system") is not None and key != "conversations":
        raise RowError("unknown_field", "system", "system goes with conversations; put it in the messages instead")
    if not messages or messages[-1]["role"] not in ASSISTANT_ROLES:
        raise RowError(
            "no_assistant_turn", key,
            f"{key} must end with the assistant's answer: that answer is the one the flag judges",
        )
    if not any(m["role"] == "user" for m in messages):
        raise RowError("missing_field", key, f"{key} has no user turn: the judged answer needs a prompt")
    row = {"messages": messages, "desirable": desirable}
    tools = tools_text(rec.get("tools"))
    if tools is not None:
        row["tools"] = tools
    return row


def accepts(rec: dict) -> bool | None:
    """Whether a record's flag makes it KTO data: True for booleans, None ("ask") for "true"/"false" text."""
    for key in FLAG_KEYS:
        value = rec.get(key)
        if value is None:
            continue
        if type(value) is bool:
            return True
        if key != "label" and type(value) is str and value.strip().lower() in ("true", "false"):
            return True  # kto_tag and desirable mean nothing but the flag
        if type(value) is str and value.strip().lower() in ("true", "false"):
            return None
        return False
    return False


FORMAT = Format(
    name="kto",
    kind="unpaired_preference",
    variants=tuple((conv, flag) for flag in FLAG_KEYS for conv in ("messages", "conversations"))
    + tuple(("prompt", "completion", flag) for flag in FLAG_KEYS),
    optional=frozenset({"system", "tools"}),
    convert=convert,
    description='labelled (KTO) conversations: {"messages" | "conversations" | "prompt"+"completion", "label": true|false}',
    list_fields=frozenset({"messages", "conversations"}),
    accepts=accepts,
)
