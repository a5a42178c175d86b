"""The row-by-row JSONL hot path (convert.add_lines) gives exactly what the careful path gives (the columnar
fast path has its own tests in test_columnar.py)."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from oikyo.data import formats
from oikyo.data.digest import table_digest
from oikyo.data.formats.convert import Chunk, Job, add_lines
from oikyo.data.schema import ARROW_SCHEMA, compact_row
from oikyo.data.ingest import convert_file


def _hot(fmt_name: str, records: list[dict]) -> Chunk:
    chunk = Chunk(Job(formats.get(fmt_name), {}, None, None), build=True)
    add_lines(chunk, b"".join(orjson.dumps(r) + b"\n" for r in records))
    return chunk


def _careful_rows(fmt_name: str, records: list[dict]) -> list[dict]:
    return [formats.get(fmt_name).convert(dict(r)) for r in records]


text = st.text(min_size=1, max_size=40).filter(lambda s: not s.isspace())


def _rows(tables) -> list[dict]:
    return pa.concat_tables(tables).to_pylist() if tables else []


@settings(max_examples=200, deadline=None)
@given(instruction=text, extra=st.text(max_size=20), output=text)
def test_alpaca_rows_equal_the_careful_path(instruction, extra, output):
    record = {"instruction": instruction, "input": extra, "output": output}
    chunk = _hot("alpaca", [record])
    [row] = _careful_rows("alpaca", [record])
    [table] = chunk.result()[1]
    assert compact_row(table.to_pylist()[0])["messages"] == row["messages"]
    assert table_digest([table]) == table_digest([pa.Table.from_pylist([row], schema=ARROW_SCHEMA)])


@settings(max_examples=100, deadline=None)
@given(prompt=text, completion=text)
def test_prompt_completion_rows_equal_the_careful_path(prompt, completion):
    record = {"prompt": prompt, "completion": completion}
    chunk = _hot("prompt_completion", [record])
    [row] = _careful_rows("prompt_completion", [record])
    assert _rows(chunk.result()[1]) == [pa.Table.from_pylist([row], schema=ARROW_SCHEMA).to_pylist()[0]]


def test_plain_and_unusual_records_keep_their_file_order(tmp_path):
    """Plain records take the flat hot path, records with a system prompt, history or split the dict
    path, bad ones the slow path: the stored rows are still in file order, with the same hash."""
    records = [
        {"instruction": "a", "output": "1"},
        {"instruction": "b", "output": "2", "system": "be brief"},
        {"instruction": "c", "input": "x", "output": "3"},
        {"instruction": "d", "output": "4", "history": [["hi", "hello"]]},
        {"instruction": "e", "output": "5", "split": "test"},
        {"instruction": "f: with a colon", "output": "6"},
        {"instruction": "g", "output": "7"},
    ] * 3
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + b"not json\n")
    result = convert_file(path, tmp_path / "out.parquet", on_error="skip", workers=1)
    assert result.ok and result.rows == len(records) and result.dropped == 1
    expected = []
    for record in records:
        record = dict(record)
        split = record.pop("split", None)
        row = formats.get("alpaca").convert(record)
        if split:
            row["split"] = split
        expected.append(row)
    stored = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [compact_row(r)["messages"] for r in stored] == [r["messages"] for r in expected]
    assert [r["split"] for r in stored] == [r.get("split") for r in expected]
    assert result.content_hash == table_digest([pa.Table.from_pylist(expected, schema=ARROW_SCHEMA)])
