"""Validation: every error class with its location and field, file types, skip vs fail, hashing, the pool."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oikyo.data import ingest, readers
from oikyo.data.digest import table_digest
from oikyo.data.ingest import ERROR_CLASSES, convert_file

ALPACA = [{"instruction": f"question {i}", "input": "", "output": f"answer {i}"} for i in range(5)]


def run(tmp_path: Path, name: str, content: bytes | str, **kwargs):
    src = tmp_path / name
    src.write_bytes(content.encode() if isinstance(content, str) else content)
    out = tmp_path / "out.parquet"
    return convert_file(src, out, **kwargs), out


def jsonl(records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def only(result) -> tuple:
    """The single problem of a result as (location, error, field)."""
    assert len(result.problems) >= 1, result
    problem = result.problems[0]
    return problem.location(), problem.error, problem.field


# ---------------------------------------------------------------------------- each error class


@pytest.mark.parametrize(
    "line, expected",
    [
        ('{"instruction": "q", "output": ', ("line 2", "invalid_json", None)),
        ('["q", "a"]', ("line 2", "not_object", None)),
        ('{"instruction": "q"}', ("line 2", "missing_field", "output")),
        ('{"instruction": "q", "output": "a", "source": "web"}', ("line 2", "unknown_field", "source")),
        ('{"instruction": " ", "output": "a"}', ("line 2", "empty_content", "instruction")),
        ('{"instruction": "q", "output": 42}', ("line 2", "wrong_type", "output")),
        ('{"instruction": "q", "output": "a", "output": "b"}', ("line 2", "duplicate_key", "output")),
        ('{"instruction": "q", "output": "a", "history": [["x"]]}', ("line 2", "wrong_type", "history[0]")),
    ],
)
def test_alpaca_errors_have_line_and_field(tmp_path, line, expected):
    result, out = run(tmp_path, "data.jsonl", jsonl([ALPACA[0], line, ALPACA[1]]))
    assert not result.ok and not out.exists()
    assert only(result) == expected
    assert result.problem_counts == {expected[1]: 1}
    assert result.rows == 0 and result.content_hash is None


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]},
         ("line 1", "unknown_role", "messages[1].role")),
        ({"messages": [{"role": "user", "content": "q"}]}, ("line 1", "no_assistant_turn", "messages")),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
         ("line 1", "empty_content", "messages[1].content")),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "text": "a"}]},
         ("line 1", "unknown_field", "messages[1].text")),
        ({"messages": "hello"}, ("line 1", "wrong_type", "messages")),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ["x", 1]}]},
         ("line 1", "wrong_type", "messages[1].content[1]")),
    ],
)  # fmt: skip
def test_chat_errors_have_field_paths(tmp_path, record, expected):
    result, _ = run(tmp_path, "chat.jsonl", jsonl([record]), format="openai")
    assert only(result) == expected


def test_sharegpt_errors_have_field_paths(tmp_path):
    records = [
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "not json"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "again"}]},
    ]
    result, _ = run(tmp_path, "s.jsonl", jsonl(records))
    assert result.format == "sharegpt"
    assert [(p.line, p.error, p.field) for p in result.problems] == [
        (2, "unknown_role", "conversations[1].from"),
        (3, "wrong_type", "conversations[1].value"),
        (4, "no_assistant_turn", "conversations"),
    ]


def test_nested_duplicate_key_reports_its_path(tmp_path):
    line = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "role": "user", "content": "a"}]}'
    result, _ = run(tmp_path, "d.jsonl", line + "\n")
    assert only(result) == ("line 1", "duplicate_key", "messages[1].role")


def test_colons_and_escaped_quotes_in_text_are_not_duplicate_keys(tmp_path):
    records = [{"instruction": 'say "a": then "b" :', "output": '{"x": 1, "x": 2}'}]
    result, _ = run(tmp_path, "c.jsonl", jsonl(records))
    assert result.ok, result.problems


def test_invalid_utf8_is_reported_and_the_rest_continues(tmp_path):
    lines = [json.dumps(ALPACA[0]).encode(), b'{"instruction": "caf\xe9", "output": "x"}', json.dumps(ALPACA[1]).encode()]
    result, out = run(tmp_path, "u.jsonl", b"\n".join(lines) + b"\n", on_error="skip")
    assert result.ok and result.rows == 2
    assert [(p.line, p.error) for p in result.dropped_rows] == [(2, "invalid_utf8")]


def test_invalid_utf8_in_csv_and_json_array(tmp_path):
    result, _ = run(tmp_path, "u.csv", b"text\nok\nbad \xff\nfine\n")
    assert only(result) == ("line 3", "invalid_utf8", None)
    array = b'[{"text": "ok"}, {"text": "bad \xff"}]'
    result, _ = run(tmp_path, "u.json", array)
    assert only(result) == ("record 1", "invalid_utf8", None)


def test_too_long_uses_length_fn_and_never_truncates(tmp_path):
    records = [{"text": "short"}, {"text": "x" * 100}, {"text": "fine"}]
    result, out = run(tmp_path, "t.jsonl", jsonl(records), length_fn=_chars, max_tokens=50, on_error="skip")
    assert result.ok and result.rows == 2
    assert [(p.line, p.error) for p in result.dropped_rows] == [(2, "too_long")]
    assert "100" in result.dropped_rows[0].message
    assert [r["text"] for r in pq.read_table(out).to_pylist()] == ["short", "fine"]


def _chars(row: dict) -> int:
    return len(row["text"])


def test_too_few_examples(tmp_path):
    result, out = run(tmp_path, "few.jsonl", jsonl(ALPACA[:3]), min_rows=10)
    assert not result.ok and not out.exists()
    assert only(result) == ("file", "too_few_examples", None)
    result, _ = run(tmp_path, "empty.jsonl", "")
    assert result.problem_counts == {"too_few_examples": 1}


def test_unreadable_files(tmp_path):
    result = convert_file(tmp_path / "missing.jsonl", tmp_path / "out.parquet")
    assert only(result) == ("file", "unreadable_file", None) and result.source_sha256 == ""
    good = gzip.compress(jsonl(ALPACA).encode())
    result, _ = run(tmp_path, "cut.jsonl.gz", good[: len(good) // 2])
    assert "unreadable_file" in result.problem_counts and not result.ok
    result, _ = run(tmp_path, "broken.parquet", b"PAR1 this is not really parquet PAR1")
    assert result.problem_counts.get("unreadable_file") == 1
    result, _ = run(tmp_path, "noise", bytes(range(256)) * 4)
    assert only(result) == ("file", "unreadable_file", None)


def test_every_problem_uses_a_known_error_class(tmp_path):
    assert len(set(ERROR_CLASSES)) == 14
    result, _ = run(tmp_path, "x.jsonl", jsonl(["{", "[]", '{"a": 1}', '{"instruction": "", "output": 1}']))
    assert set(result.problem_counts) <= set(ERROR_CLASSES)


# ---------------------------------------------------------------------------- locations by file type


def test_json_array_problems_use_the_record_index(tmp_path):
    data = json.dumps([ALPACA[0], "text", {"instruction": "q"}, ALPACA[1]], indent=2)
    result, _ = run(tmp_path, "a.json", data)
    assert [(p.index, p.line, p.error) for p in result.problems] == [
        (1, None, "not_object"),
        (2, None, "missing_field"),
    ]
    assert result.problems[0].location() == "record 1"


def test_broken_json_array_stops_with_a_located_problem(tmp_path):
    result, _ = run(tmp_path, "b.json", '[\n{"text": "a"},\n{"text": "b" oops},\n{"text": "c"}\n]', on_error="skip")
    assert not result.ok
    assert (result.problems[0].index, result.problems[0].error) == (1, "invalid_json")
    assert "line 3" in result.problems[0].message
    assert result.problem_counts == {"invalid_json": 1, "unreadable_file": 1}


def test_csv_lines_count_the_header_and_multiline_fields(tmp_path):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows([["instruction", "output"], ["q1", "a1"], ["multi\nline", "a2"], ["q3", ""], ["q4", "a4"]])
    result, _ = run(tmp_path, "d.csv", buffer.getvalue())
    assert [(p.line, p.error, p.field) for p in result.problems] == [(5, "empty_content", "output")]


def test_csv_extra_values_and_duplicate_columns(tmp_path):
    result, _ = run(tmp_path, "x.csv", "text,label\na,b\nc,d,e\n")
    assert only(result) == ("line 3", "unknown_field", "column 3")
    result, _ = run(tmp_path, "y.csv", "text,text\na,b\n", format="text")
    assert only(result) == ("line 2", "duplicate_key", "text")


def test_parquet_problems_use_the_record_index(tmp_path):
    table = pa.table({"prompt": ["p0", "p1", None], "completion": ["c0", "", "c2"]})
    pq.write_table(table, tmp_path / "in.parquet")
    result = convert_file(tmp_path / "in.parquet", tmp_path / "out.parquet")
    assert result.format == "prompt_completion"
    assert [(p.index, p.error, p.field) for p in result.problems] == [
        (1, "empty_content", "completion"),
        (2, "missing_field", "prompt"),
    ]


# ---------------------------------------------------------------------------- silent handling


def test_bom_crlf_and_blank_lines_are_not_errors(tmp_path):
    data = "\ufeff" + "\r\n".join(json.dumps(r) for r in ALPACA[:2]) + "\r\n\r\n  \r\n" + json.dumps(ALPACA[2]) + "\r\n"
    result, _ = run(tmp_path, "bom.jsonl", data.encode("utf-8"))
    assert result.ok and result.rows == 3 and result.problems == []
    csv_data = "\ufeffinstruction,output\r\nq,a\r\n\r\nq2,a2\r\n"
    result, _ = run(tmp_path, "bom.csv", csv_data.encode("utf-8"))
    assert result.ok and result.rows == 2 and result.format == "alpaca"
    array = "\ufeff" + json.dumps(ALPACA[:2], indent=2).replace("\n", "\r\n")
    result, _ = run(tmp_path, "bom.json", array.encode("utf-8"))
    assert result.ok and result.rows == 2


def test_gzip_by_extension_and_by_magic_bytes(tmp_path):
    data = gzip.compress(jsonl(ALPACA).encode())
    for name in ("data.jsonl.gz", "data.jsonl", "upload"):
        result, _ = run(tmp_path, name, data)
        assert result.ok and result.rows == 5 and result.format == "alpaca", name
        assert result.source_sha256 == hashlib.sha256(data).hexdigest()


def test_json_file_holding_jsonl_and_pretty_printed_values(tmp_path):
    result, _ = run(tmp_path, "lines.json", jsonl(ALPACA))
    assert result.ok and result.rows == 5
    stream = "\n".join(json.dumps(r, indent=2) for r in ALPACA)
    result, _ = run(tmp_path, "stream.json", stream)
    assert result.ok and result.rows == 5


# ---------------------------------------------------------------------------- fail vs skip


def test_fail_mode_stores_nothing_and_counts_everything(tmp_path):
    records = [*ALPACA] + ['{"instruction": "q"}'] * 120 + ["nope"] * 3
    result, out = run(tmp_path, "bad.jsonl", jsonl(records))
    assert not result.ok and not out.exists() and not out.with_name("out.parquet.partial").exists()
    assert result.problem_counts == {"missing_field": 120, "invalid_json": 3}
    assert len(result.problems) == ingest.MAX_PROBLEMS
    assert result.problems[0].line == 6 and result.dropped_rows == [] and result.rows == 0


def test_skip_mode_keeps_valid_rows_and_lists_every_dropped_row(tmp_path):
    records = [*ALPACA] + ['{"instruction": "q"}'] * 60 + [ALPACA[0]]
    result, out = run(tmp_path, "bad.jsonl", jsonl(records), on_error="skip")
    assert result.ok and result.rows == 6 and result.dropped == 60
    assert len(result.dropped_rows) == 60 and len(result.problems) == ingest.MAX_PROBLEMS
    assert [p.line for p in result.dropped_rows] == list(range(6, 66))
    assert all(p.error == "missing_field" and p.field == "output" for p in result.dropped_rows)
    assert pq.read_metadata(out).num_rows == 6
    assert result.to_dict()["dropped_rows"][0]["location"] == "line 6"


# ---------------------------------------------------------------------------- hashing and output


def _same_rows_as_every_file_type(tmp_path: Path) -> dict[str, Path]:
    rows = [
        {"instruction": "Say hi", "input": "", "output": "Hi!"},
        {"instruction": "Translate", "input": "chat", "output": "cat, in French: «chat» — é"},
        {"instruction": "Quote", "input": "a \"b\", c", "output": "line1\nline2"},
    ]
    files = {"jsonl": tmp_path / "d.jsonl", "json": tmp_path / "d.json", "csv": tmp_path / "d.csv"}
    files["jsonl"].write_text(jsonl(rows), encoding="utf-8")
    files["json"].write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    for kind, delimiter in (("csv", ","), ("tsv", "\t")):
        files[kind] = tmp_path / f"d.{kind}"
        with open(files[kind], "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, ["instruction", "input", "output"], delimiter=delimiter)
            writer.writeheader()
            writer.writerows(rows)
    files["parquet"] = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), files["parquet"])
    files["gz"] = tmp_path / "d.jsonl.gz"
    files["gz"].write_bytes(gzip.compress(files["jsonl"].read_bytes()))
    return files


def test_same_content_gives_the_same_hash_from_every_file_type(tmp_path):
    hashes = {}
    for kind, path in _same_rows_as_every_file_type(tmp_path).items():
        out = tmp_path / f"{kind}.parquet"
        result = convert_file(path, out)
        assert result.ok and result.format == "alpaca" and result.rows == 3, (kind, result.problems)
        hashes[kind] = result.content_hash
        assert result.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(set(hashes.values())) == 1, hashes
    # The hash is the rows digest of the stored rows, in order, whatever their row groups.
    stored = pq.read_table(tmp_path / "csv.parquet")
    assert hashes["csv"] == table_digest([stored]) == table_digest(stored.to_batches(max_chunksize=1))


def test_output_has_the_schema_and_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "ROW_GROUP_ROWS", 100)
    records = [{"text": f"row {i}"} for i in range(450)]
    result, out = run(tmp_path, "t.jsonl", jsonl(records))
    assert result.ok
    meta = pq.read_metadata(out)
    assert meta.schema.to_arrow_schema() == ingest.ARROW_SCHEMA
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [100, 100, 100, 100, 50]
    assert pq.read_table(out).column("text").to_pylist() == [r["text"] for r in records]


def test_progress_reaches_the_total(tmp_path):
    calls = []
    result, _ = run(tmp_path, "p.jsonl", jsonl(ALPACA), progress=lambda done, total: calls.append((done, total)))
    assert result.ok and calls and calls[-1][0] == calls[-1][1] > 0


# ---------------------------------------------------------------------------- the worker pool


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".json", ".csv"])
def test_pool_gives_the_same_result_as_in_process(tmp_path, monkeypatch, suffix):
    records = [{"instruction": f"q{i}", "output": f"a{i}"} if i % 37 else {"instruction": f"q{i}"} for i in range(3000)]
    if suffix == ".csv":
        text = "instruction,output\n" + "".join(f"{r['instruction']},{r.get('output', '')}\n" for r in records)
    elif suffix == ".json":
        text = json.dumps(records, indent=1)
    else:
        text = jsonl(records)
    data = gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode()
    src = tmp_path / f"in{suffix}"
    src.write_bytes(data)
    single = convert_file(src, tmp_path / "one.parquet", workers=1, on_error="skip")
    monkeypatch.setattr(ingest, "SMALL_FILE", 0)
    monkeypatch.setattr(readers, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(readers, "RECORDS_PER_TASK", 100)
    pooled = convert_file(src, tmp_path / "two.parquet", workers=2, on_error="skip")
    assert pooled.ok and pooled.rows == single.rows == 3000 - len(range(0, 3000, 37))
    assert pooled.content_hash == single.content_hash
    assert [p.to_dict() for p in pooled.dropped_rows] == [p.to_dict() for p in single.dropped_rows]
    assert pq.read_table(tmp_path / "two.parquet").equals(pq.read_table(tmp_path / "one.parquet"))


@pytest.mark.parametrize("chunk", [1, 3, 17, 256])
def test_chunk_boundaries_change_nothing(tmp_path, monkeypatch, chunk):
    records = [{"text": "x" * (i * 7 % 300), "label": i * 0.25} for i in range(60)]  # some empty: problems
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["text", "label"], *[[r["text"] + "\n,\"", r["label"]] for r in records]])
    files = {
        "a.jsonl": jsonl(records) + '{"text": "no newline at the end", "label": 1.5e3}',
        "a.json": json.dumps(records, indent=2),
        "a.csv": buffer.getvalue(),
        "a.jsonl.gz": gzip.compress(jsonl(records).encode()),
    }
    for name, content in files.items():
        expected, _ = run(tmp_path, name, content, on_error="skip")
        monkeypatch.setattr(readers, "CHUNK_BYTES", chunk)
        got, _ = run(tmp_path, name, content, on_error="skip")
        monkeypatch.undo()
        assert got.ok and got.rows == expected.rows > 0, name
        assert got.content_hash == expected.content_hash, name
        assert [p.to_dict() for p in got.dropped_rows] == [p.to_dict() for p in expected.dropped_rows], name
