"""Format detection: which registered format a sample of records is in, or a question for the user.

Each record votes for the formats whose required keys it has (null values count as absent).
When several match, the more specific wins: a format whose matched key set strictly contains
another's (preference ``{conversations, chosen, rejected}`` beats sharegpt ``{conversations}``;
classification ``{text, label}`` beats text). A format may also judge a record's values
(:attr:`Format.accepts`): kto claims ``{messages, label}`` only when the label is a boolean; text
"true"/"false" there could be a flag or a class, so kto then matches without beating openai, and the
tie becomes a question. Records that match nothing do not vote (they will
fail validation with missing_field). The format most records vote for is the answer; when the top
vote is a tie, or a record set matches two formats neither of which contains the other, or no
record matches anything, the answer is a :class:`Detection` with a question naming the possible
formats, the columns found and the exact ``--format``/``--map`` flags to pass. Never a guess.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from oikyo.data.formats.base import Format

# Column names that commonly mean a format's field; used only to order --map suggestions.
HINTS = {
    "instruction": ("question", "query", "prompt", "input_text", "source"),
    "output": ("answer", "response", "completion", "target", "reply"),
    "prompt": ("question", "query", "instruction", "input_text", "source"),
    "completion": ("answer", "response", "output", "target", "reply"),
    "text": ("content", "sentence", "document", "body", "review"),
    "label": ("class", "category", "target", "sentiment"),
}


@dataclass
class Detection:
    """The outcome of detection: a format name, or a question with the choices behind it."""

    format: str | None
    question: str | None = None
    candidates: list[str] = field(default_factory=list)  # formats the user could mean
    columns: list[str] = field(default_factory=list)  # keys seen in the sample, in order
    suggestions: list[dict] = field(default_factory=list)  # {"format", "mapping", "flags"}


def _present(rec: dict) -> set[str]:
    return {key for key, value in rec.items() if value is not None}


def best_matches(keys, formats: dict[str, Format], record: dict | None = None) -> tuple[str, ...]:
    """The most specific formats whose required keys are all in ``keys`` (sorted names).

    With ``record``, formats that judge values (:attr:`Format.accepts`) may refuse it, or match it
    without beating less specific formats (a "maybe").
    """
    matched, unsure = {}, set()
    for name, fmt in formats.items():
        required = fmt.match(keys)
        if required is None:
            continue
        verdict = fmt.accepts(record) if (fmt.accepts is not None and record is not None) else True
        if verdict is False:
            continue
        matched[name] = required
        if verdict is None:
            unsure.add(name)
    return tuple(
        sorted(
            name
            for name, req in matched.items()
            if not any(req < other for o, other in matched.items() if o not in unsure)
        )
    )


def detect(records: list[dict], formats: dict[str, Format]) -> Detection:
    """Detect the format of ``records`` (already renamed by any ``--map``)."""
    columns = list(dict.fromkeys(key for rec in records for key in rec))
    if not records:
        return Detection(
            None,
            "No records could be read from this file, so its format cannot be detected. Fix the errors "
            "listed, or pass --format with one of: " + ", ".join(formats),
            list(formats),
            columns,
        )
    votes = Counter(best_matches(_present(rec), formats, rec) for rec in records)
    votes.pop((), None)
    if not votes:
        return _unmatched(records, columns, formats)
    ranked = votes.most_common()
    top, count = ranked[0]
    tied = [names for names, n in ranked if n == count]
    if len(tied) == 1 and len(top) == 1:
        return Detection(top[0], candidates=[top[0]], columns=columns)
    candidates = sorted({name for names in tied for name in names})
    suggestions = [{"format": name, "mapping": {}, "flags": f"--format {name}"} for name in candidates]
    question = (
        f"The records fit more than one format ({', '.join(candidates)}), so oikyo will not guess.\n"
        f"Columns found: {', '.join(columns)}\n"
        "Say which one with:\n" + "\n".join(f"  {s['flags']}" for s in suggestions)
    )
    return Detection(None, question, candidates, columns, suggestions)


def _unmatched(records: list[dict], columns: list[str], formats: dict[str, Format]) -> Detection:
    """The question for records that match no format: suggest --format/--map flags that would fit."""
    samples = {}
    for rec in records:
        for key, value in rec.items():
            if value is not None and key not in samples:
                samples[key] = value
    suggestions = []
    for name, fmt in formats.items():
        mapping = suggest_mapping(fmt, columns, samples)
        if mapping is not None:
            flags = " ".join([f"--format {name}", *(f"--map {f}={c}" for f, c in mapping.items())])
            suggestions.append({"format": name, "mapping": mapping, "flags": flags})
    lines = [
        "The records match none of the known formats, so oikyo cannot tell how to read them.",
        f"Columns found: {', '.join(columns) or '(none)'}",
    ]
    if suggestions:
        lines.append("Say which format they are and which column holds each field, for example:")
        lines += [f"  {s['flags']}" for s in suggestions]
    lines.append("Known formats:")
    lines += [f"  {fmt.name}: {fmt.description}" for fmt in formats.values()]
    return Detection(None, "\n".join(lines), [s["format"] for s in suggestions], columns, suggestions)


def _fits(fmt: Format, field_name: str, value) -> bool:
    """Whether a sample value could be given as ``field_name`` of ``fmt``."""
    if field_name in fmt.list_fields:
        return isinstance(value, list) or (isinstance(value, str) and value.lstrip().startswith("["))
    if field_name == "label":
        return isinstance(value, (str, int, float))
    return isinstance(value, str)


def suggest_mapping(fmt: Format, columns: list[str], samples: dict) -> dict[str, str] | None:
    """A ``{field: column}`` mapping under which every column has a place in ``fmt``, or None."""
    for variant in fmt.variants:
        missing = [f for f in variant if f not in columns]
        free = [c for c in columns if c not in fmt.fields]
        if not missing or len(free) < len(missing) or len(free) > len(missing):
            continue  # nothing to map, too few columns, or columns that would be left unknown
        mapping = {}
        for f in missing:  # a column whose name hints at the field first, then column order
            hinted = [c for c in free if c.lower() in HINTS.get(f, ())]
            column = (hinted or free)[0]
            free.remove(column)
            mapping[f] = column
        if all(_fits(fmt, f, samples.get(c)) for f, c in mapping.items()):
            return mapping
    return None
