"""The canonical dataset schema every input format is converted to.

A dataset version has one *kind*, and every row is a plain dict with these keys (absent keys are
None when stored):

``conversations`` (chat, instruction tuning, classification)::

    {"messages": [{"role": "system" | "user" | "assistant" | "tool_call" | "tool", "content": str}, ...],
     "tools": str | None,      # JSON text of the tool definitions offered to the model, if any
     "label": str | None}      # the class label for classification data (used for stratified splits)

  ``tool_call`` is an assistant turn that calls a tool (content: JSON text ``{"name", "arguments"}``);
  ``tool`` is the tool's answer (ShareGPT ``observation``, OpenAI role ``tool``).

``text`` (continued pre-training)::

    {"text": str}

``preference`` (DPO)::

    {"messages": [...prompt turns, the last one a user turn...], "chosen": str, "rejected": str}

Rows are stored as Parquet with the fixed Arrow schema :data:`ARROW_SCHEMA` (one schema for all
kinds, so readers never guess). A version splits its rows with the ``split`` column
("train" / "validation" / "test", or None before splitting).
"""

from __future__ import annotations

import pyarrow as pa

KINDS = ("conversations", "text", "preference")
ROLES = ("system", "user", "assistant", "tool_call", "tool")
# Roles whose content the model produces (trained on, counted as "assistant turns").
ASSISTANT_ROLES = ("assistant", "tool_call")
SPLITS = ("train", "validation", "test")

COLUMNS = ("messages", "text", "chosen", "rejected", "tools", "label", "split")

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
ARROW_SCHEMA = pa.schema(
    [
        ("messages", pa.list_(MESSAGE_TYPE)),
        ("text", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("tools", pa.string()),
        ("label", pa.string()),
        ("split", pa.string()),
    ]
)


def full_row(row: dict) -> dict:
    """The row with every column present (missing ones as None), in schema order."""
    return {name: row.get(name) for name in COLUMNS}
