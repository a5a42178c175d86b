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

Only buffers are hashed, never Python objects, so hashing costs about what reading the memory
costs (the first version serialised every row to JSON, more than a microsecond a row).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from oikyo.data.schema import ARROW_SCHEMA

VERSION = b"oikyo-rows-v2"
_STRINGS = tuple(name for name in ARROW_SCHEMA.names if name != "messages")


class RowsDigest:
    """Incremental content hash over canonical Arrow tables (see the module docstring)."""

    def __init__(self):
        names = ("messages.turns", "messages.role", "messages.content", *_STRINGS)
        self._streams = {name: (hashlib.sha256(), hashlib.sha256()) for name in names}
        self.rows = 0

    def update(self, table: pa.Table | pa.RecordBatch) -> None:
        """Add the rows of ``table`` (the schema's columns, by name; any chunking)."""
        self.rows += table.num_rows
        for chunk in _chunks(table.column("messages")):
            lengths, _ = self._streams["messages.turns"]
            lengths.update(_int32_bytes(pc.list_value_length(chunk)))
            role, content = chunk.flatten().flatten()  # the turns of the rows in this (possibly sliced) chunk
            self._strings("messages.role", role)
            self._strings("messages.content", content)
        for name in _STRINGS:
            for chunk in _chunks(table.column(name)):
                self._strings(name, chunk)

    def _strings(self, stream: str, array: pa.Array) -> None:
        lengths, values = self._streams[stream]
        lengths.update(_int32_bytes(pc.binary_length(array)))
        values.update(_value_bytes(array))

    def hexdigest(self) -> str:
        final = hashlib.sha256(VERSION)
        for lengths, values in self._streams.values():
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
