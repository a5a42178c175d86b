"""What a dataset format is, and the checks every format's converter shares.

A format is a :class:`Format`: a name, the canonical *kind* it produces, the sets of keys that make a
record look like it (``variants``), the optional keys it also understands, and a ``convert``
function that turns one source record (a dict) into one canonical row (see
:mod:`oikyo.data.schema`) or raises :class:`RowError` saying what is wrong and where.

Converters must be module-level functions (workers receive formats by pickling), must never put
``None`` values into a row (absent columns are simply left out), and must only produce strings,
lists and dicts, so that :func:`oikyo.data.ingest.row_bytes` can serialise any row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import orjson

from oikyo.data.schema import ASSISTANT_ROLES


class RowError(Exception):
    """One problem with one record: an error class, the field path it concerns, and a plain message."""

    def __init__(self, error: str, field: str | None, message: str):
        super().__init__(message)
        self.error = error
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Format:
    """A dataset format: how to recognise its records and how to convert one to a canonical row."""

    name: str
    kind: str  # "conversations" | "text" | "preference"
    # Required key sets, each in its natural order (used when suggesting --map flags); a record
    # matches the format when all the keys of one set are present.
    variants: tuple[tuple[str, ...], ...]
    optional: frozenset[str]
    convert: Callable[[dict], dict]
    description: str = ""
    # Required fields whose value is a list (messages, conversations...), not text: used when
    # suggesting --map flags, so a text column is never proposed for a list field.
    list_fields: frozenset[str] = field(default_factory=frozenset)
    # Optional judgement on a record's values, for formats that share their keys with another
    # (a KTO flag under "label"): True claims it, False refuses it, None means "ask the user".
    accepts: Callable[[dict], bool | None] | None = None

    @property
    def fields(self) -> frozenset[str]:
        """Every key the format understands."""
        return frozenset(key for variant in self.variants for key in variant) | self.optional

    def match(self, keys) -> frozenset[str] | None:
        """The largest required key set fully present in ``keys``, or None when none is."""
        best = None
        for variant in self.variants:
            if all(key in keys for key in variant) and (best is None or len(variant) > len(best)):
                best = frozenset(variant)
        return best


def row_bytes(row: dict) -> bytes:
    """A canonical row as compact JSON with sorted keys; ``None`` values are left out.

    The content hash of a dataset is the sha256 of ``row_bytes(row) + b"\\n"`` for each row, in
    order. Leaving out ``None`` makes a row read back from Parquet (where every column is present)
    serialise exactly like the row the converter produced. Raises ``orjson.JSONEncodeError`` for
    text that is not valid Unicode.
    """
    if None in row.values():
        row = {key: value for key, value in row.items() if value is not None}
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS)


# ---------------------------------------------------------------------------- field checks


def type_name(value) -> str:
    """The JSON name of a Python value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def check_fields(rec: dict, allowed: frozenset[str], fmt_name: str, required: tuple[str, ...] = ()) -> None:
    """Raise unknown_field for a non-null key the format does not use (missing_field first, if any).

    A missing required field is the more useful report: ``{"instrution": ...}`` is first of all
    a record without an instruction.
    """
    if rec.keys() <= allowed:
        return
    for name in required:
        if rec.get(name) is None:
            raise RowError("missing_field", name, f"{name} is missing (or null); every record needs it")
    unknown = sorted(k for k, v in rec.items() if k not in allowed and v is not None)
    if not unknown:
        return  # only null columns (CSV/Parquet files have every column on every row)
    extra = unknown[0]
    raise RowError(
        "unknown_field",
        extra,
        f"field {extra!r} is not part of the {fmt_name} format (it uses: {', '.join(sorted(allowed))}); "
        f"keep it as row metadata with --keep {extra}, leave it out with --drop {extra}, or rename it onto one "
        "of those fields with --map FIELD=COLUMN",
    )


def require_text(value, path: str) -> str:
    """``value`` as non-empty text, or raise missing_field / wrong_type / empty_content."""
    if type(value) is str:
        if not value or value.isspace():
            raise RowError("empty_content", path, f"{path} is empty; give it some text or remove the record")
        return value
    if value is None:
        raise RowError("missing_field", path, f"{path} is missing (or null); every record needs it")
    raise RowError("wrong_type", path, f"{path} must be text, got {type_name(value)}")


def optional_text(value, path: str) -> str | None:
    """Text, or None when the value is absent, null or empty (an optional field left blank)."""
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise RowError("wrong_type", path, f"{path} must be text, got {type_name(value)}")
    return None if value.isspace() else value


def json_list(value, path: str) -> list | None:
    """A list value, also accepted as JSON text (CSV/TSV cells); None when absent or blank."""
    if value is None or value == "":
        return None
    if type(value) is str:
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RowError("wrong_type", path, f"{path} must be a list (or JSON text of a list)") from None
    if type(value) is not list:
        raise RowError("wrong_type", path, f"{path} must be a list, got {type_name(value)}")
    return value


def require_list(value, path: str) -> list:
    """A non-empty list (also accepted as JSON text), or raise."""
    items = json_list(value, path)
    if items is None:
        raise RowError("missing_field", path, f"{path} is missing (or null); every record needs it")
    if not items:
        raise RowError("empty_content", path, f"{path} is an empty list; it needs at least one turn")
    return items


def require_object(value, path: str) -> dict:
    """A dict, or raise wrong_type."""
    if type(value) is not dict:
        raise RowError("wrong_type", path, f"{path} must be an object, got {type_name(value)}")
    return value


def dumps_json(value, path: str) -> str:
    """``value`` as JSON text (non-ASCII kept), or wrong_type when it holds something JSON cannot."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        raise RowError("wrong_type", path, f"{path} holds values that cannot be written as JSON") from None


def tools_text(value, path: str = "tools") -> str | None:
    """The tool definitions as JSON text, or None when absent or empty.

    Lists and objects are serialised; text must already be valid JSON and is kept as given, so
    the user's exact tool text reaches training.
    """
    if value is None or value == "":
        return None
    if type(value) is str:
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RowError("wrong_type", path, f"{path} must be JSON text of the tool definitions") from None
        if type(parsed) not in (list, dict):
            raise RowError("wrong_type", path, f"{path} must be a JSON list of tool definitions")
        return value if parsed else None
    if type(value) in (list, dict):
        return dumps_json(value, path) if value else None
    raise RowError("wrong_type", path, f"{path} must be a list of tool definitions, got {type_name(value)}")


def tool_call_text(value: str, path: str) -> str:
    """Check a tool call's content is JSON text of an object with a "name"; return it unchanged."""
    try:
        call = orjson.loads(value)
    except orjson.JSONDecodeError:
        call = None
    if type(call) is not dict or type(call.get("name")) is not str:
        raise RowError(
            "wrong_type", path, f'{path} must be JSON text of a tool call: {{"name": ..., "arguments": {{...}}}}'
        )
    return value


def require_assistant(messages: list[dict], path: str) -> None:
    """Raise no_assistant_turn unless some turn is the model's (assistant or tool_call)."""
    for message in messages:
        if message["role"] in ASSISTANT_ROLES:
            return
    raise RowError(
        "no_assistant_turn", path, f"{path} has no assistant turn, so there is nothing to train on; add the answer"
    )


def label_text(value, path: str = "label") -> str:
    """A class label as text (numbers and booleans are written the way JSON writes them)."""
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) in (int, float):
        return json.dumps(value)
    return require_text(value, path)


def metadata_text(given, kept: dict) -> str | None:
    """Row metadata as canonical JSON text (sorted keys): an export's ``metadata`` object plus --keep columns.

    ``given`` is the record's own ``metadata`` (an object, or JSON text of one, as oikyo's exports
    write it); ``kept`` the ``{column: value}`` of the ``--keep`` columns. None when both are empty.
    """
    merged = {}
    if given is not None and given != "":
        if type(given) is str:
            try:
                given = orjson.loads(given)
            except orjson.JSONDecodeError:
                given = None
        if type(given) is not dict:
            raise RowError("wrong_type", "metadata", "metadata must be an object (or JSON text of one)")
        merged.update(given)
    for column, value in kept.items():
        if column in merged and merged[column] != value:
            raise RowError("duplicate_key", column, f"--keep {column}: the row's metadata already has a different {column!r}")
        merged[column] = value
    if not merged:
        return None
    try:
        return json.dumps(merged, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        raise RowError("wrong_type", "metadata", "metadata holds values that cannot be written as JSON") from None


def loss_weight(value, path: str) -> float:
    """A per-message loss weight: a finite number >= 0 (0 = the turn is not learned)."""
    if type(value) not in (int, float) or value != value or value in (float("inf"), float("-inf")):
        raise RowError("wrong_type", path, f"{path} must be a number (0 = not learned, 1 = learned), got {type_name(value)}")
    if value < 0:
        raise RowError("wrong_type", path, f"{path} must not be negative, got {value}")
    return float(value)


def desirable_flag(value, path: str = "label") -> bool:
    """A KTO flag: true (a desirable answer) or false (an undesirable one); "true"/"false" text too (CSV)."""
    if type(value) is bool:
        return value
    if type(value) is str and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise RowError(
        "wrong_type", path, f"{path} must be true (a desirable answer) or false (an undesirable one), got {value!r}"
    )
