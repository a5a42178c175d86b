"""The canonical dataset schema every input format is converted to.

A dataset version has one *kind*, and every row is a plain dict with these keys (absent keys are
None when stored):

``conversations`` (chat, instruction tuning, classification)::

    {"messages": [message, ...],
     "tools": str | None,      # JSON text of the tool definitions offered to the model, if any
     "label": str | None,      # the class label for classification data (used for stratified splits)
     "metadata": str | None}   # JSON text of an object: the user's own columns kept with --keep

``text`` (continued pre-training)::

    {"text": str, "metadata": ...}

``preference`` (DPO, ORPO)::

    {"messages": [...prompt turns, the last one a user turn...], "chosen": str, "rejected": str,
     "tools": ..., "metadata": ...}

``unpaired_preference`` (KTO: one answer judged desirable or not)::

    {"messages": [...a whole conversation; its last assistant turn is the judged answer...],
     "desirable": bool, "tools": ..., "metadata": ...}

A *message* is::

    {"role": "system" | "user" | "assistant" | "tool_call" | "tool",
     "content": str,
     "reasoning": str | None,     # assistant / tool_call turns: the reasoning trace written before it
     "weight": float | None,      # assistant / tool_call turns: loss weight (0 = not learned); None = default
     "name": str | None,          # the speaker's name, or a tool result's function name
     "tool_call_id": str | None}  # a tool call's id, or the id of the call a tool result answers

``tool_call`` is an assistant turn that calls a tool (content: JSON text ``{"name", "arguments"}``);
``tool`` is the tool's answer (ShareGPT ``observation``, OpenAI role ``tool``). A message whose
extra fields are all None is written as just ``{"role", "content"}`` by :func:`compact_message`.

Rows are stored as Parquet with the fixed Arrow schema :data:`ARROW_SCHEMA` (one schema for all
kinds, so readers never guess). A version splits its rows with the ``split`` column
("train" / "validation" / "test", or None before splitting). Versions written before the message
extras, ``desirable`` and ``metadata`` existed lack those columns; readers treat them as None.
"""

from __future__ import annotations

import pyarrow as pa

KINDS = ("conversations", "text", "preference", "unpaired_preference")
ROLES = ("system", "user", "assistant", "tool_call", "tool")
# Roles whose content the model produces (trained on, counted as "assistant turns").
ASSISTANT_ROLES = ("assistant", "tool_call")
SPLITS = ("train", "validation", "test")

# The optional fields of a message, beyond role and content, with their Arrow types.
MESSAGE_EXTRAS = (
    ("reasoning", pa.string()),
    ("weight", pa.float64()),
    ("name", pa.string()),
    ("tool_call_id", pa.string()),
)
EXTRA_NAMES = tuple(name for name, _ in MESSAGE_EXTRAS)

COLUMNS = ("messages", "text", "chosen", "rejected", "tools", "label", "desirable", "metadata", "split")

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string()), *MESSAGE_EXTRAS])
ARROW_SCHEMA = pa.schema(
    [
        ("messages", pa.list_(MESSAGE_TYPE)),
        ("text", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("tools", pa.string()),
        ("label", pa.string()),
        ("desirable", pa.bool_()),
        ("metadata", pa.string()),
        ("split", pa.string()),
    ]
)
# Column types other than text (everything else in ARROW_SCHEMA, but messages, is a string).
NON_STRING = {"desirable": pa.bool_()}


def full_row(row: dict) -> dict:
    """The row with every column present (missing ones as None), in schema order."""
    return {name: row.get(name) for name in COLUMNS}


def compact_message(message: dict) -> dict:
    """A message without its None fields (as Parquet reads give every field)."""
    if len(message) == 2 or all(message.get(name) is not None for name in message):
        return message
    return {key: value for key, value in message.items() if value is not None}


def compact_row(row: dict) -> dict:
    """A row read back from Parquet as the converter produced it: None columns and message fields left out."""
    row = {key: value for key, value in row.items() if value is not None}
    if "messages" in row:
        row["messages"] = [compact_message(m) for m in row["messages"]]
    return row


def messages_array(offsets: pa.Array, role: pa.Array, content: pa.Array, extras: dict | None = None) -> pa.Array:
    """The ``messages`` column from flat turn arrays: ``offsets`` (rows + 1, int32) cut them into rows.

    ``extras`` maps some of :data:`EXTRA_NAMES` to arrays as long as ``role``; the others are null.
    """
    extras = extras or {}
    arrays = [role, content] + [extras.get(name, pa.nulls(len(role), kind)) for name, kind in MESSAGE_EXTRAS]
    return pa.ListArray.from_arrays(offsets, pa.StructArray.from_arrays(arrays, fields=list(MESSAGE_TYPE)))
