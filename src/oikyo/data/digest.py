"""The content hash of a dataset: a sha256 over its canonical rows, computed from Arrow columns.

A dataset version is identified by the hash of its rows, in order, whatever file they came from and
however the rows were cut into tables on the way (an import's worker chunks, a split's batches)::

    digest = RowsDigest()
    for table in tables:            # tables with oikyo.data.schema.ARROW_SCHEMA, rows in order
        digest.update(table)
    digest.hexdigest()

Definition (version 2). Every column of :data:`~oikyo.data.schema.ARROW_SCHEMA` is flattened into
*string streams*: ``text``, ``chosen``, ``rejected``, ``tools``, ``label`` and ``split`` are one
stream each; ``messages`` gives three: the number of turns of each row, then the roles and the
contents of all turns. Each stream feeds two sha256 objects, updated in row order: one with every
value's length (little-endian int32 UTF-8 byte count; -1 for null), one with the values' UTF-8
bytes. The dataset's hash is the sha256 of ``b"oikyo-rows-v2"`` followed by the digests of those
objects in schema order. Lengths keep neighbouring values apart, so moving a character from one
field to the next, or a null for an empty string, changes the hash.

Later columns and message fields (``desirable``, ``metadata``; a message's ``reasoning``, ``weight``,
``name`` and ``tool_call_id``) are *optional streams*: each is hashed the same way (numbers and
booleans as a validity byte per value plus their little-endian float64 bytes), and its digests,
preceded by its name, enter the final hash only when some row holds a value there. So a dataset
that uses none of them keeps the hash it had before they existed, and one that does use them
cannot collide with one that does not.

Only buffers are hashed, never Python objects, so hashing costs about what reading the memory
costs (the first version serialised every row to JSON, more than a microsecond a row).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from oikyo.data.schema import ARROW_SCHEMA, EXTRA_NAMES

VERSION = b"oikyo-rows-v2"
# The columns of version 2, always hashed; the rest of the schema's columns are optional streams.
_STRINGS = ("text", "chosen", "rejected", "tools", "label", "split")
_OPTIONAL_COLUMNS = tuple(name for name in ARROW_SCHEMA.names if name not in _STRINGS and name != "messages")
_OPTIONAL = tuple(f"messages.{name}" for name in EXTRA_NAMES) + _OPTIONAL_COLUMNS


class RowsDigest:
    """Incremental content hash over canonical Arrow tables (see the module docstring)."""

    def __init__(self):
        names = ("messages.turns", "messages.role", "messages.content", *_STRINGS, *_OPTIONAL)
        self._streams = {name: (hashlib.sha256(), hashlib.sha256()) for name in names}
        self._used: set[str] = set()  # optional streams that held a value
        self._skipped: dict[str, int] = {}  # nulls seen in optional streams before their first value
        self.rows = 0

    def update(self, table: pa.Table | pa.RecordBatch) -> None:
        """Add the rows of ``table`` (the schema's columns, by name; any chunking)."""
        self.rows += table.num_rows
        for chunk in _chunks(table.column("messages")):
            lengths, _ = self._streams["messages.turns"]
            lengths.update(_int32_bytes(pc.list_value_length(chunk)))
            turns = chunk.flatten()  # the turns of the rows in this (possibly sliced) chunk
            fields = dict(zip((f.name for f in turns.type), turns.flatten()))  # flatten() honours slices
            self._strings("messages.role", fields["role"])
            self._strings("messages.content", fields["content"])
            for name in EXTRA_NAMES:  # files written before the extras existed lack them: all null
                self._optional(f"messages.{name}", fields.get(name, pa.nulls(len(turns), pa.string())))
        for name in _STRINGS:
            for chunk in _chunks(table.column(name)):
                self._strings(name, chunk)
        for name in _OPTIONAL_COLUMNS:
            column = table.column(name) if name in table.column_names else pa.nulls(table.num_rows, pa.string())
            for chunk in _chunks(column):
                self._optional(name, chunk)

    def _optional(self, stream: str, array: pa.Array) -> None:
        """Hash an optional stream's values; all-null arrays are only counted until a value appears."""
        if stream not in self._used:
            if array.null_count == len(array):
                self._skipped[stream] = self._skipped.get(stream, 0) + len(array)
                return
            self._used.add(stream)
            self._nulls(stream, array.type, self._skipped.pop(stream, 0))  # where the values sit counts
        if pa.types.is_string(array.type):
            self._strings(stream, array)
        else:
            validity, values = self._streams[stream]
            validity.update(np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=np.uint8).tobytes())
            numbers = pc.fill_null(array.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
            values.update(np.ascontiguousarray(numbers, dtype="<f8").tobytes())

    def _nulls(self, stream: str, kind: pa.DataType, count: int) -> None:
        """Hash ``count`` nulls skipped earlier exactly as :meth:`_optional` would have hashed them."""
        lengths, values = self._streams[stream]
        for start in range(0, count, 1 << 20):
            n = min(1 << 20, count - start)
            if pa.types.is_string(kind):
                lengths.update(np.full(n, -1, dtype="<i4").tobytes())
            else:
                lengths.update(np.zeros(n, dtype=np.uint8).tobytes())
                values.update(np.zeros(n, dtype="<f8").tobytes())

    def _strings(self, stream: str, array: pa.Array) -> None:
        lengths, values = self._streams[stream]
        lengths.update(_int32_bytes(pc.binary_length(array)))
        values.update(_value_bytes(array))

    def hexdigest(self) -> str:
        final = hashlib.sha256(VERSION)
        for name, (lengths, values) in self._streams.items():
            if name in _OPTIONAL:
                if name not in self._used:
                    continue
                final.update(name.encode())
            final.update(lengths.digest())
            final.update(values.digest())
        return final.hexdigest()


def _chunks(column) -> list[pa.Array]:
    return column.chunks if isinstance(column, pa.ChunkedArray) else [column]


def _int32_bytes(lengths: pa.Array) -> memoryview:
    """The lengths as little-endian int32 bytes, nulls as -1."""
    array = pc.fill_null(lengths, -1).cast(pa.int32()).to_numpy(zero_copy_only=False)
    return memoryview(np.ascontiguousarray(array, dtype="<i4")).cast("B")


def _value_bytes(array: pa.Array) -> memoryview | bytes:
    """The concatenated UTF-8 bytes of the array's values (of its slice only), without copying."""
    if len(array) == 0:
        return b""
    _, offsets, data = array.buffers()  # ARROW_SCHEMA's strings: int32 offsets
    if data is None:
        return b""
    first = np.frombuffer(offsets, dtype=np.int32, count=1, offset=4 * array.offset)[0]
    last = np.frombuffer(offsets, dtype=np.int32, count=1, offset=4 * (array.offset + len(array)))[0]
    return memoryview(data)[first:last]


def table_digest(tables) -> str:
    """The content hash of rows given as Arrow tables, in order."""
    digest = RowsDigest()
    for table in tables:
        digest.update(table)
    return digest.hexdigest()
