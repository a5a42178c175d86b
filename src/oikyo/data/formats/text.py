"""Plain text format for continued pre-training: ``{"text": "..."}`` → kind ``text``.

See LLaMA-Factory's ``c4_demo.jsonl``.
"""

from __future__ import annotations

from oikyo.data.formats.base import Format, check_fields, require_text

FIELDS = frozenset({"text"})


def convert(rec: dict) -> dict:
    """One text record as a canonical text row."""
    if len(rec) != 1:
        check_fields(rec, FIELDS, "text", ("text",))
    return {"text": require_text(rec.get("text"), "text")}


FORMAT = Format(
    name="text",
    kind="text",
    variants=(("text",),),
    optional=frozenset(),
    convert=convert,
    description='plain text: {"text"}',
)
