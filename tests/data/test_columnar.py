"""The columnar fast path of JSONL imports: exact rows for plain chunks, the row-by-row path for anything else."""

from __future__ import annotations

import sys

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oikyo.data import formats
from oikyo.data.formats import columnar
from oikyo.data.formats.convert import Chunk, Job, add_lines
from oikyo.data.ingest import convert_file
from oikyo.data.schema import compact_row

PLAIN = {"instruction": "Name a colour.", "input": "", "output": "Blue."}


def _jsonl(records) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def _row_by_row(data: bytes, fmt: str = "alpaca") -> tuple[list[dict], list[tuple], int]:
    chunk = Chunk(Job(formats.get(fmt), {}, None, None), build=True)
    lines = add_lines(chunk, data)
    count, tables, problems = chunk.result()
    rows = pa.concat_tables(tables).to_pylist() if tables else []
    assert count == len(rows)
    return rows, problems, lines


def test_whitespace_pattern_covers_every_character_python_calls_whitespace():
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    assert len(spaces) > 20
    matched = pc.match_substring_regex(pa.array(spaces + ["".join(spaces), ""]), columnar.WHITESPACE)
    assert all(matched.to_pylist())
    others = ["a", "é", "東", "\u200b", "a ", " a", "0"]  # zero-width space is not whitespace to Python either
    assert not any(pc.match_substring_regex(pa.array(others), columnar.WHITESPACE).to_pylist())


text = st.text(max_size=30)
records = st.lists(
    st.fixed_dictionaries(
        {"instruction": text, "output": text},
        optional={"input": st.one_of(st.none(), text, st.sampled_from(["", " ", "\u3000", "x"]))},
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(records=records)
def test_a_chunk_it_takes_gives_exactly_the_row_by_row_rows(records):
    data = _jsonl(records)
    table = columnar.convert_chunk("alpaca", data)
    rows, problems, lines = _row_by_row(data)
    assert columnar.line_count(data) == lines
    if table is None:
        return  # the row-by-row path decides; nothing to compare
    assert not problems
    assert table.to_pylist() == rows


@settings(max_examples=100, deadline=None)
@given(records=st.lists(
    st.fixed_dictionaries({
        "instruction": st.text(min_size=1, max_size=30).filter(lambda s: not s.isspace()),
        "input": st.text(max_size=20).filter(lambda s: not s or not s.isspace()),
        "output": st.text(min_size=1, max_size=30).filter(lambda s: not s.isspace()),
    }),
    min_size=1,
    max_size=8,
))
def test_plain_records_do_take_the_fast_path(records):
    data = _jsonl(records)
    table = columnar.convert_chunk("alpaca", data)
    assert table is not None
    assert table.to_pylist() == _row_by_row(data)[0]


turn = st.fixed_dictionaries({
    "role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "robot", "tool_call"]),
    "content": st.one_of(text, st.sampled_from(["", " ", "Hi", "東京"])),
})
chats = st.lists(st.fixed_dictionaries({"messages": st.lists(turn, max_size=5)}), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(records=chats)
def test_openai_chunks_it_takes_give_exactly_the_row_by_row_rows(records):
    data = _jsonl(records)
    table = columnar.convert_chunk("openai", data)
    rows, problems, _ = _row_by_row(data, "openai")
    if table is not None:
        assert not problems
        assert table.to_pylist() == rows


def test_plain_openai_chats_take_the_fast_path():
    records = [
        {"messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": f"Hi {i}"},
                      {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
                      {"role": "assistant", "content": "Bye."}]}
        for i in range(50)
    ]
    data = _jsonl(records)
    table = columnar.convert_chunk("openai", data)
    assert table is not None and table.num_rows == 50
    assert table.to_pylist() == _row_by_row(data, "openai")[0]
    assert compact_row(table.to_pylist()[0])["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(
    "data",
    [
        b'{"messages": [{"role": "user", "content": "a"}]}\n',  # no assistant turn
        b'{"messages": []}\n',
        b'{"messages": null}\n',
        b'{"messages": [null]}\n',
        b'{"messages": [{"role": "user", "content": "a", "name": "x"}, {"role": "assistant", "content": "b"}]}\n',
        b'{"messages": [{"role": "user", "content": ["a"]}, {"role": "assistant", "content": "b"}]}\n',
        b'{"messages": [{"role": "user"}, {"role": "assistant", "content": "b"}]}\n',
        b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "tools": []}\n',
    ],
)
def test_unusual_openai_records_go_row_by_row(data):
    assert columnar.convert_chunk("openai", data) is None


@pytest.mark.parametrize(
    "data",
    [
        b'{"instruction": "a", "instruction": "b", "output": "c"}\n',  # duplicate key
        b'{"instruction": "a", "output": "c"}{"instruction": "a", "output": "c"}\n\n',  # two objects + a blank line
        b'{"instruction": "a", "output": "c"}\n  \n{"instruction": "a", "output": "c"}\n',  # whitespace-only line
        b'\n{"instruction": "a", "output": "c"}\n',  # blank first line
        b'{"instruction": "a", "output": "c"}\n\xef\xbb\xbf{"instruction": "a", "output": "c"}\n',  # BOM mid-file
        b'{"instruction": "caf\xe9", "output": "c"}\n',  # invalid UTF-8
        b'{"instruction": "a\\ud800", "output": "c"}\n',  # lone surrogate
        b'{"instruction": null, "output": "c"}\n',
        b'{"instruction": "a"}\n',  # missing output
        b'{"instruction": "  ", "output": "c"}\n',  # whitespace-only
        b'{"instruction": "a", "output": ""}\n',
        b'{"instruction": "a", "output": "c", "input": 3}\n',  # wrong type
        b'{"instruction": "a", "output": "c", "system": "s"}\n',  # a field the fast path leaves to the careful one
        b'{"instruction": "a", "output": "c", "split": "test"}\n',
        b'[1, 2]\n',
        b'{"instruction": "a", "output": "c",}\n',  # trailing comma
        b'null\n{"instruction": "a", "output": "c"}\n',  # pyarrow 26 crashed the process on a first null line
        b'{"instruction": "a", "output": "c"}\nnull\n',  # ... and read a later one as a row of nulls
        b'{"instruction": "a", "output": "c"}\n 7\n',
    ],
)
def test_anything_unusual_goes_row_by_row(data):
    assert columnar.convert_chunk("alpaca", data) is None


def test_formats_without_a_columnar_converter_go_row_by_row():
    assert columnar.convert_chunk("sharegpt", _jsonl([PLAIN])) is None


def test_an_import_stores_the_same_rows_and_hash_either_way(tmp_path):
    records = [dict(PLAIN, instruction=f"Question {i} about 東京?", input="ctx" if i % 3 else "") for i in range(3000)]
    path = tmp_path / "plain.jsonl"
    path.write_bytes(_jsonl(records))
    fast = convert_file(path, tmp_path / "fast.parquet", workers=1)
    # Dropping a column the file does not have changes nothing but sends every row down the careful path.
    careful = convert_file(path, tmp_path / "careful.parquet", workers=1, drop=["no_such_column"])
    assert fast.ok and careful.ok and fast.rows == careful.rows == 3000
    assert fast.content_hash == careful.content_hash
    assert pq.read_table(tmp_path / "fast.parquet").to_pylist() == pq.read_table(tmp_path / "careful.parquet").to_pylist()


def test_a_bad_line_in_a_plain_file_is_still_reported_by_its_number(tmp_path):
    lines = _jsonl([PLAIN] * 10).splitlines(keepends=True)
    lines[6] = b'{"instruction": "a", "output": ""}\n'
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(lines))
    result = convert_file(path, tmp_path / "out.parquet", workers=1)
    assert not result.ok
    assert [(p.line, p.error, p.field) for p in result.problems] == [(7, "empty_content", "output")]


@pytest.mark.parametrize("fmt", ["auto", "alpaca", "openai"])
@pytest.mark.parametrize("position", [0, 2])
def test_a_line_that_is_not_an_object_is_refused_by_its_number(tmp_path, fmt, position):
    """A JSONL file with a null line (first, or later) is refused naming the line; the first one crashed
    the whole process in pyarrow's reader (found by tests/data/test_ingest_fuzz.py)."""
    record = PLAIN if fmt != "openai" else {"messages": [{"role": "user", "content": "Hi"},
                                                          {"role": "assistant", "content": "Hello"}]}
    lines = _jsonl([record] * 4).splitlines(keepends=True)
    lines.insert(position, b"null\n")
    path = tmp_path / "nulls.jsonl"
    path.write_bytes(b"".join(lines))
    result = convert_file(path, tmp_path / "out.parquet", workers=1, format=fmt)
    assert not result.ok and not (tmp_path / "out.parquet").exists()
    assert [p.line for p in result.problems] == [position + 1], result.problems


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from([b'{"instruction": "a", "output": "b"}', b"", b" ", b"{", b'"x"', b"\xff", b"\xef\xbb\xbf",
                              b'{"instruction": "a", "output": "b", "input": "c"}', b"\r"]), max_size=6)
    .map(b"\n".join),
))
def test_arbitrary_bytes_never_raise_and_whatever_it_takes_matches_the_row_by_row_path(data):
    for fmt in ("alpaca", "openai"):
        table = columnar.convert_chunk(fmt, data)
        if table is not None:
            rows, problems, _ = _row_by_row(data, fmt)
            assert not problems and table.to_pylist() == rows
