"""The import's safety limits (oikyo.data.limits) and the hostile-file fixes of issue 22.

A record over OIKYO_MAX_RECORD_BYTES is refused with its line or record, having read little more than
the limit; a gzip stream expanding more than OIKYO_MAX_GZIP_RATIO times is refused as a bomb; NUL
bytes in text, a CSV quote never closed, UTF-16/32 without conversion and empty files get a clear
refusal instead of a silent or confusing import.
"""

from __future__ import annotations

import gzip
import io
import json

import pytest

from oikyo.data import ingest, limits, readers
from oikyo.data.ingest import convert_file

LIMIT = 64 << 10
GOOD = json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}).encode()


def record(size: int) -> bytes:
    """An openai record of exactly ``size`` bytes."""
    head, tail = b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "', b'"}]}'
    return head + b"y" * (size - len(head) - len(tail)) + tail


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setenv(limits.RECORD_ENV, str(LIMIT))


def only(result, error):
    assert not result.ok and error in result.problem_counts, result.problems
    return next(p for p in result.problems if p.error == error)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_line_over_the_limit_is_refused_with_its_number(tmp_path, small_limit, monkeypatch, workers):
    monkeypatch.setattr(ingest, "SMALL_FILE", 0)  # workers=2: the byte-range path with a process pool
    src, out = tmp_path / "data.jsonl", tmp_path / "out.parquet"
    src.write_bytes(b"\n".join([GOOD, GOOD, record(LIMIT + 1), GOOD]) + b"\n")
    problem = only(convert_file(src, out, workers=workers), "too_long")
    assert problem.line == 3 and "line 3 is longer than 64 KiB" in problem.message and limits.RECORD_ENV in problem.message
    assert not out.exists()
    src.write_bytes(b"\n".join([GOOD, GOOD, record(LIMIT), GOOD]) + b"\n")  # exactly at the limit: fine
    assert convert_file(src, out, workers=workers).rows == 4


def test_the_reader_stops_soon_after_the_limit(tmp_path, small_limit):
    src = tmp_path / "data.jsonl"
    src.write_bytes(GOOD + b"\n" + b"z" * (50 * LIMIT))
    for by_range in (False, True):
        source = readers.Source(src)
        list(source.tasks(by_range=by_range))
        assert source.fatal and source.problems[0][:3] == (2, None, "too_long")
        assert source.bytes_done <= 2 * LIMIT + len(GOOD) + 1  # not the 50 times the limit that the file holds
        source.close()


@pytest.mark.parametrize("name, data, where", [
    ("data.json", b"[" + GOOD + b"," + record(LIMIT + 10) + b"]", "record 1"),
    ("data.csv", b"prompt,completion\nHi,Hello\nHi," + b"y" * (LIMIT + 10) + b"\n", "line 3"),
    ("data.csv", b'prompt,completion\nHi,Hello\nHi,"never closed\n' + b"more text\n" * (LIMIT // 5), "line 3"),
    ("data.txt", b"One document.\n" + b"z" * (LIMIT + 10) + b"\n", "line 2"),
])  # fmt: skip
def test_every_file_type_bounds_its_records(tmp_path, small_limit, name, data, where):
    src = tmp_path / name
    src.write_bytes(data)
    problem = only(convert_file(src, tmp_path / "out.parquet"), "too_long")
    assert problem.location() == where or where in problem.message


def test_a_block_document_over_the_limit_is_refused(tmp_path, small_limit):
    src = tmp_path / "book.txt"
    src.write_bytes(b"Intro.\n\n" + b"a line of a very long chapter\n" * (LIMIT // 20))
    problem = only(convert_file(src, tmp_path / "out.parquet", text_unit="block"), "too_long")
    assert "document starting at line 3" in problem.message


def test_a_gzip_bomb_is_refused_after_little_work(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "GZIP_FLOOR", 1 << 20)
    for name, body in [("bomb.jsonl.gz", (GOOD + b"\n") * 100_000), ("bomb.parquet.gz", b"\x00" * (20 << 20))]:
        src = tmp_path / name
        src.write_bytes(gzip.compress(body, 9))
        problem = only(convert_file(src, tmp_path / "out.parquet"), "unreadable_file")
        assert "likely gzip bomb" in problem.message and limits.GZIP_RATIO_ENV in problem.message
    monkeypatch.setenv(limits.GZIP_RATIO_ENV, "100000")  # raised by the user: the same file imports
    src = tmp_path / "bomb.jsonl.gz"
    assert convert_file(src, tmp_path / "out.parquet").rows == 100_000


def test_ordinary_gzip_files_are_not_bombs(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "GZIP_FLOOR", 1 << 10)
    body = b"".join(b'{"text": "%d"}\n' % i for i in range(100_000))  # ~1.8 MB, compressed ~5x
    stream = limits.BoundedGzip(io.BytesIO(gzip.compress(body)))
    while stream.read(4096):
        pass
    assert stream.done == len(body)


def test_a_bad_limit_setting_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(limits.RECORD_ENV, "lots")
    src = tmp_path / "data.jsonl"
    src.write_bytes(GOOD + b"\n")
    problem = only(convert_file(src, tmp_path / "out.parquet"), "unreadable_file")
    assert "OIKYO_MAX_RECORD_BYTES must be a positive number, not 'lots'" in problem.message


@pytest.mark.parametrize("name, data, line", [
    ("data.csv", b"prompt,completion\nHi,Hello\n" + b"\x00" * 512, 3),
    ("notes.txt", b"First line.\nSecond line.\n" + b"\x00" * 512, 3),
])  # fmt: skip
def test_a_zero_filled_tail_is_refused(tmp_path, name, data, line):
    src = tmp_path / name
    src.write_bytes(data)
    problem = only(convert_file(src, tmp_path / "out.parquet"), "invalid_utf8")
    assert problem.line == line and "run of NUL bytes" in problem.message


def test_a_lone_nul_is_text_and_kept(tmp_path):
    src, out = tmp_path / "data.csv", tmp_path / "out.parquet"
    src.write_bytes(b"prompt,completion\nHi,Hel\x00lo\n")
    assert convert_file(src, out).ok
    import pyarrow.parquet as pq

    assert pq.read_table(out).column("messages").to_pylist()[0][1]["content"] == "Hel\x00lo"


def test_csv_quotes_are_read_strictly(tmp_path):
    src, out = tmp_path / "data.csv", tmp_path / "out.parquet"
    src.write_bytes(b'prompt,completion\nHi,Hello\nHi,"Hello\nHi,Hello\n')
    result = convert_file(src, out)
    assert not result.ok and "line 3: a quoted field is never closed" in result.problems[0].message
    src.write_bytes(b'prompt,completion\nHi,He said "x" and "y\n')  # a quote inside a bare field is text
    assert convert_file(src, out).ok


@pytest.mark.parametrize("codec, named", [("utf-16-le", "UTF-16"), ("utf-16-be", "UTF-16"), ("utf-32", "UTF-32")])
def test_utf16_and_utf32_are_named(tmp_path, codec, named):
    src = tmp_path / "data.jsonl"
    src.write_bytes((GOOD.decode() + "\n").encode(codec) * 3)
    problem = only(convert_file(src, tmp_path / "out.parquet"), "unreadable_file")
    assert f"the file is {named} text" in problem.message


def test_an_empty_file_says_so(tmp_path):
    src = tmp_path / "data.parquet"
    src.write_bytes(b"")
    result = convert_file(src, tmp_path / "out.parquet")
    assert not result.ok and result.problems[0].message == "data.parquet is empty (0 bytes)"
