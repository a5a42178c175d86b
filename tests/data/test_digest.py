"""The content hash over Arrow columns: the same rows give the same hash however they are cut into tables."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from oikyo.data.digest import RowsDigest, table_digest
from oikyo.data.schema import ARROW_SCHEMA


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)


def _chat(user: str, assistant: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], **extra}


text = st.text(max_size=12)
row = st.one_of(
    st.builds(lambda u, a, label: _chat(u, a, label=label), text, text, st.one_of(st.none(), text)),
    st.builds(lambda t: {"text": t}, text),
    st.builds(lambda u, c, r: {"messages": [{"role": "user", "content": u}], "chosen": c, "rejected": r}, text, text, text),
)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(row, min_size=1, max_size=12), cuts=st.lists(st.integers(0, 12), max_size=4))
def test_the_hash_does_not_depend_on_how_rows_are_cut_into_tables(rows, cuts):
    whole = table_digest([_table(rows)])
    bounds = sorted({0, len(rows), *(c for c in cuts if c <= len(rows))})
    pieces = [_table(rows[a:b]) for a, b in zip(bounds, bounds[1:])]
    assert table_digest(pieces) == whole
    # Slices of one table and record batches (as Parquet gives back) too.
    table = _table(rows)
    assert table_digest([table.slice(a, b - a) for a, b in zip(bounds, bounds[1:])]) == whole
    assert table_digest(table.to_batches(max_chunksize=1)) == whole


def test_every_change_to_the_rows_changes_the_hash():
    base = [_chat("ab", "c"), {"text": "x"}]
    variants = [
        [_chat("a", "bc"), {"text": "x"}],  # a character moved from one turn to the next
        [_chat("ab", "c", label=""), {"text": "x"}],  # an empty label is not a missing one
        [{"text": "x"}, _chat("ab", "c")],  # row order
        [_chat("ab", "c")],  # a row fewer
        [_chat("ab", "c"), {"text": "x", "split": "test"}],
        [{"messages": [{"role": "assistant", "content": "ab"}, {"role": "assistant", "content": "c"}]}, {"text": "x"}],
        [{"messages": [{"role": "user", "content": "ab"}]}, {"messages": [{"role": "assistant", "content": "c"}]}],
    ]
    hashes = {table_digest([_table(rows)]) for rows in [base, *variants]}
    assert len(hashes) == len(variants) + 1


def test_rows_are_counted_and_the_empty_dataset_has_a_hash():
    digest = RowsDigest()
    digest.update(_table([_chat("a", "b")] * 3))
    assert digest.rows == 3
    assert len(RowsDigest().hexdigest()) == 64
    assert RowsDigest().hexdigest() != digest.hexdigest()
