"""Text classification: ``{"text", "label"}`` → a two-turn conversation with ``label`` set.

The row is ``messages = [user: text, assistant: label]`` and ``label`` is the label as text
(numbers and booleans written the way JSON writes them, so a CSV ``1`` and a JSON ``1`` agree);
the label column drives stratified splits. More specific than ``text``, so a file with both
columns is classification.
"""

from __future__ import annotations

from oikyo.data.formats.base import Format, check_fields, label_text, require_text

FIELDS = frozenset({"text", "label"})


def convert(rec: dict) -> dict:
    """One labelled text as a canonical conversations row."""
    if len(rec) != 2:
        check_fields(rec, FIELDS, "classification", ("text", "label"))
    text = require_text(rec.get("text"), "text")
    label = label_text(rec.get("label"), "label")
    return {
        "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": label}],
        "label": label,
    }


FORMAT = Format(
    name="classification",
    kind="conversations",
    variants=(("text", "label"),),
    optional=frozenset(),
    convert=convert,
    description='classification: {"text", "label"}',
)
