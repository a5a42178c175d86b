"""Fuzzing: arbitrary bytes and arbitrary JSON never crash convert_file; the result is always structured."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oikyo.data.formats.convert import INTERNAL
from oikyo.data.ingest import ERROR_CLASSES, ImportResult, available_formats, convert_file

SUFFIXES = ["data.jsonl", "data.json", "data.csv", "data.tsv", "data.parquet", "data", "data.jsonl.gz"]
# OIKYO_FUZZ_EXAMPLES=5000 for a long hunt; the default keeps the suite fast.
FUZZ = settings(
    max_examples=int(os.environ.get("OIKYO_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def check(result: ImportResult, out: Path) -> None:
    """What every result must be, whatever the input."""
    assert isinstance(result, ImportResult)
    assert set(result.problem_counts) <= set(ERROR_CLASSES)
    assert sum(result.problem_counts.values()) >= len(result.problems)
    for problem in result.problems:
        assert problem.error in ERROR_CLASSES and problem.message
        assert INTERNAL not in problem.message, problem
        assert problem.location()
        json.dumps(problem.to_dict())
    assert result.ok == out.exists()
    if result.ok:
        assert result.content_hash and result.rows >= 1
    else:
        assert result.problems and result.content_hash is None and result.rows == 0
    assert not out.with_name(out.name + ".partial").exists()


def run(name: str, data: bytes, **kwargs) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / name, Path(tmp) / "out.parquet"
        src.write_bytes(data)
        check(convert_file(src, out, **kwargs), out)


@FUZZ
@given(name=st.sampled_from(SUFFIXES), data=st.binary(max_size=400), on_error=st.sampled_from(["fail", "skip"]))
def test_arbitrary_bytes(name, data, on_error):
    run(name, data, on_error=on_error)


@FUZZ
@given(name=st.sampled_from(SUFFIXES), prefix=st.sampled_from([b"[", b"{", b'{"text": "', b"\xef\xbb\xbf", b"\x1f\x8b"]),
       data=st.binary(max_size=200))  # fmt: skip
def test_bytes_that_start_like_a_dataset(name, prefix, data):
    run(name, prefix + data)


KEYS = st.sampled_from(
    ["messages", "conversations", "role", "content", "from", "value", "instruction", "input", "output", "system",
     "history", "prompt", "completion", "text", "label", "chosen", "rejected", "tools", "tool_calls", "function",
     "name", "arguments", "type", "x"]
)  # fmt: skip
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "human", "gpt", "function_call", "observation", "?"])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8) | ROLES
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
                    max_leaves=20)  # fmt: skip
RECORDS = st.lists(st.dictionaries(KEYS, JSON, max_size=5) | JSON, min_size=0, max_size=6)


@FUZZ
@given(records=RECORDS, fmt=st.sampled_from(["auto", *available_formats()]), on_error=st.sampled_from(["fail", "skip"]))
def test_arbitrary_json_records(records, fmt, on_error):
    lines = "".join(json.dumps(r) + "\n" for r in records).encode()
    run("data.jsonl", lines, format=fmt, on_error=on_error)
    run("data.json", json.dumps(records).encode(), format=fmt, on_error=on_error)
    run("data.jsonl.gz", gzip.compress(lines), format=fmt, on_error=on_error)


@FUZZ
@given(text=st.text(max_size=300), fmt=st.sampled_from(["auto", "alpaca", "text", "classification"]))
def test_arbitrary_text_as_csv(text, fmt):
    run("data.csv", text.encode("utf-8", "surrogatepass"), format=fmt)
    run("data.tsv", ("text\tlabel\n" + text).encode("utf-8", "surrogatepass"), format=fmt)


TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40) | st.sampled_from(
    ['a "quoted": b', "back\\slash", "line\r\nbreak", "tab\there", "{\"x\": 1}", "é😀", " "]
)


@FUZZ
@given(rows=st.lists(st.tuples(TEXT, TEXT, TEXT), min_size=1, max_size=8))
def test_same_rows_hash_the_same_from_jsonl_csv_and_parquet(rows):
    import csv
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"instruction": i, "input": x, "output": o} for i, x, o in rows]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, ["instruction", "input", "output"])
    writer.writeheader()
    writer.writerows(records)
    parquet = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), parquet)
    files = {
        "d.jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode(),
        "d.csv": buffer.getvalue().encode(),
        "d.parquet": parquet.getvalue(),
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
            results[name] = convert_file(Path(tmp) / name, Path(tmp) / "out.parquet", format="alpaca", on_error="skip")
    summary = {name: (r.rows, r.content_hash, [(p.error, p.field) for p in r.dropped_rows]) for name, r in results.items()}
    assert len(set(map(repr, summary.values()))) == 1, summary
