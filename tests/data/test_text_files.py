"""Plain-text corpora (.txt, .md, gzipped or not): documents per line or per blank-line block, as a user sees them.

Every test checks what lands in the stored rows (exact text, nothing dropped or changed), what the
import says about the layout it chose, and where problems are reported.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from oikyo.data import plaintext, readers, versions
from oikyo.data.export import export_version
from oikyo.data.ingest import convert_file

LINES = "The cat sat on the mat.\n  Indented, with trailing spaces   \nA third document.\n"
MARKDOWN = (
    "# A title\n"
    "\n"
    "A paragraph that is\nwrapped over three\nlines.\n"
    "\n"
    "\n"
    "- a list item\n- another item\n"
    "\n"
    "    indented code stays indented\n"
)
MARKDOWN_DOCS = [
    "# A title",
    "A paragraph that is\nwrapped over three\nlines.",
    "- a list item\n- another item",
    "    indented code stays indented",
]


def texts(parquet) -> list[str]:
    return pq.read_table(parquet, columns=["text"]).column("text").to_pylist()


def convert(tmp_path, name: str, content: str | bytes, **options):
    path = tmp_path / name
    data = content.encode() if isinstance(content, str) else content
    if name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    out = tmp_path / (name + ".parquet")
    result = convert_file(path, out, **options)
    return result, (texts(out) if result.ok else None)


def chars(row: dict) -> int:
    """A picklable row length for ``max_tokens`` checks: characters of the text."""
    return len(row["text"])


# ---------------------------------------------------------------------------- layouts


def test_a_txt_with_one_document_per_line_keeps_each_line_exactly(tmp_path):
    result, docs = convert(tmp_path, "corpus.txt", LINES)
    assert result.ok and result.format == "text" and result.kind == "text"
    assert result.text_layout == {"unit": "line", "detected": True, "blank_lines": 0}
    assert docs == ["The cat sat on the mat.", "  Indented, with trailing spaces   ", "A third document."]


def test_a_markdown_file_with_blank_line_blocks_is_read_as_blocks(tmp_path):
    result, docs = convert(tmp_path, "notes.md", MARKDOWN)
    assert result.ok and result.text_layout == {"unit": "block", "detected": True, "blank_lines": 4}
    assert docs == MARKDOWN_DOCS


def test_the_unit_can_be_given_instead_of_detected(tmp_path):
    result, docs = convert(tmp_path, "notes.md", MARKDOWN, text_unit="line")
    assert result.text_layout == {"unit": "line", "detected": False, "blank_lines": 4}
    assert docs == [line for doc in MARKDOWN_DOCS for line in doc.split("\n")]
    result, docs = convert(tmp_path, "corpus.txt", LINES, text_unit="block")
    assert result.text_layout["unit"] == "block" and docs == [LINES.removesuffix("\n")]


@pytest.mark.parametrize("text, unit", [
    ("one\ntwo\nthree\n", "line"),
    ("one\n\ntwo\n\nthree\n", "line"),  # double-spaced single lines: every block is one line
    ("a\nb\n\nc\n", "block"),
    (MARKDOWN, "block"),
    ("para one\nstill one\n", "line"),  # one block only: nothing separates documents
    # 200 documents, one per line, with a stray blank line: two huge "blocks" are not blocks.
    ("".join(f"doc {i}\n" for i in range(100)) + "\n" + "".join(f"doc {i}\n" for i in range(100)), "line"),
    ("", "line"),
])
def test_detection_rule(text, unit):
    assert plaintext.detect_text_unit(text.encode()) == unit


def test_crlf_bom_and_inner_line_breaks_are_kept_as_written(tmp_path):
    content = "\ufeffline one  \r\nsecond\r\n".encode()
    result, docs = convert(tmp_path, "crlf.txt", content)
    assert docs == ["line one  ", "second"]
    # In a block, the breaks between its lines are part of the document (as written: CRLF stays).
    result, docs = convert(tmp_path, "crlf.md", b"a\r\nb\r\n\r\nc\r\nd\r\n")
    assert result.text_layout["unit"] == "block" and docs == ["a\r\nb", "c\r\nd"]


def test_blank_lines_are_skipped_and_counted_not_errors(tmp_path):
    content = "first\n\n   \n\t\n\u3000\nsecond\n\n"  # an ideographic space is whitespace too
    result, docs = convert(tmp_path, "gaps.txt", content, text_unit="line")
    assert result.ok and not result.problems and result.problem_counts == {}
    assert docs == ["first", "second"] and result.text_layout["blank_lines"] == 5


def test_gzip_gives_the_same_rows_and_hash(tmp_path):
    plain, plain_docs = convert(tmp_path, "notes.md", MARKDOWN)
    packed, packed_docs = convert(tmp_path, "notes.md.gz", MARKDOWN)
    assert packed.ok and packed.text_layout == plain.text_layout
    assert packed_docs == plain_docs and packed.content_hash == plain.content_hash
    lines, _ = convert(tmp_path, "corpus.txt.gz", LINES)
    assert lines.text_layout["unit"] == "line" and lines.rows == 3


# ---------------------------------------------------------------------------- problems


def test_problems_name_the_first_line_of_their_document(tmp_path):
    content = b"short\n\nfine\nok\n\nthis block starts on line 6\nand its second line \xff is not UTF-8\n\nend\nx\n"
    result, _ = convert(tmp_path, "bad.md", content)
    assert not result.ok and result.text_layout["unit"] == "block"
    [problem] = result.problems
    assert (problem.error, problem.line, problem.location()) == ("invalid_utf8", 6, "line 6")
    assert "line 7" in problem.message  # the message points at the bad line itself
    # A length limit is reported at the document's first line too, and skip mode keeps the rest.
    lines = "a\n\n" + "b" * 50 + "\nb\n\nc\nc\n"
    result, docs = convert(tmp_path, "long.md", lines, length_fn=chars, max_tokens=20, on_error="skip")
    assert result.ok and [(p.line, p.error) for p in result.dropped_rows] == [(3, "too_long")]
    assert docs == ["a", "c\nc"]


def test_a_txt_of_json_lines_is_refused_unless_the_unit_is_given(tmp_path):
    content = '{"text": "hello"}\n{"text": "world"}\n'
    result, _ = convert(tmp_path, "records.txt", content)
    assert not result.ok and result.problem_counts == {"unreadable_file": 1}
    assert ".jsonl" in result.problems[0].message and "--text-unit line" in result.problems[0].message
    result, docs = convert(tmp_path, "records.txt", content, text_unit="line")
    assert result.ok and docs == ['{"text": "hello"}', '{"text": "world"}']


def test_tasks_stay_small_and_number_lines_across_them(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("".join(f"document {i}\n" for i in range(1, 201)))
    source = readers.Source(path)
    tasks = list(source.tasks(chunk_bytes=256))
    source.close()
    assert len(tasks) > 5 and all(kind == "records" for kind, _ in tasks)
    items = [item for _, batch in tasks for item in batch]
    assert [(line, value["text"]) for line, _, value, _ in items] == [(i, f"document {i}") for i in range(1, 201)]


# ---------------------------------------------------------------------------- properties

# Text of one line: anything but a line break, not blank, not ending on a carriage return (a final
# CR is part of the line break, see docs/data.md), no lone surrogates (not UTF-8).
_LINE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), min_size=1, max_size=30)
_LINE = _LINE.filter(lambda s: not s.isspace() and not s.endswith("\r"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(_LINE, min_size=1, max_size=8), gz=st.booleans())
def test_property_every_line_comes_back_exactly(tmp_path, docs, gz):
    assume(not docs[0].startswith("\ufeff"))  # a leading byte-order mark is not text
    result, got = convert(tmp_path, "p.txt" + (".gz" if gz else ""), "\n".join(docs) + "\n", text_unit="line")
    assert result.ok, result.problems
    assert got == docs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(st.lists(_LINE, min_size=1, max_size=4).map("\n".join), min_size=1, max_size=6),
       gap=st.sampled_from(["\n\n", "\n\n\n", "\n \n"]), end=st.sampled_from(["", "\n", "\n\n"]))
def test_property_every_block_comes_back_exactly(tmp_path, docs, gap, end):
    assume(not docs[0].startswith("\ufeff"))
    result, got = convert(tmp_path, "p.md", gap.join(docs) + end, text_unit="block")
    assert result.ok, result.problems
    assert got == docs


@settings(max_examples=100, deadline=None)
@given(docs=st.lists(_LINE, min_size=1, max_size=30), blocks=st.lists(st.lists(_LINE, min_size=1, max_size=50),
                                                                       min_size=2, max_size=6))
def test_property_detection_of_each_layout(docs, blocks):
    assume(not any(line.startswith("\ufeff") for block in [docs, *blocks] for line in block))
    # Lines with no blank line between them are documents per line; so are double-spaced ones.
    assert plaintext.detect_text_unit("\n".join(docs).encode()) == "line"
    assert plaintext.detect_text_unit("\n\n".join(docs).encode()) == "line"
    # Blank-line-separated blocks, one of them longer than a line, are blocks.
    assume(max(map(len, blocks)) > 1)
    assert plaintext.detect_text_unit("\n\n".join(map("\n".join, blocks)).encode()) == "block"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(st.lists(_LINE, min_size=1, max_size=3).map("\n".join), min_size=1, max_size=5))
def test_property_import_export_import_gives_the_same_hash(tmp_path, docs):
    assume(not docs[0].startswith("\ufeff"))
    path = tmp_path / "corpus.md"
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    first = versions.import_dataset(path, name="corpus", text_unit="block")
    exported, count = export_version(first.version.id, "jsonl", tmp_path / "corpus.export.jsonl")
    assert count == len(docs)
    again = versions.import_dataset(exported, name="corpus-again")
    assert again.version.content_hash == first.version.content_hash
    assert [row["text"] for row in versions.iter_rows(again.version)] == docs


# ---------------------------------------------------------------------------- versions, CLI, API


def test_the_unit_is_recorded_in_the_lineage(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text(MARKDOWN)
    options = versions.import_dataset(path).version.lineage["options"]
    assert (options["text_unit"], options["text_unit_detected"], options["detected_format"]) == ("block", True, "text")
    given_unit = versions.import_dataset(path, name="by-line", text_unit="line").version
    assert given_unit.lineage["options"]["text_unit"] == "line" and given_unit.name == "by-line"
    assert versions.import_dataset(path).version.name == "notes"
    with pytest.raises(versions.DataError, match="line, block"):
        versions.import_dataset(path, text_unit="paragraph")
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"text": "a"}\n')
    with pytest.raises(versions.DataError, match="plain-text files"):
        versions.import_dataset(jsonl, text_unit="line")


def oikyo(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "oikyo.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_shows_the_layout_and_round_trips_through_export(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("first document\n\nsecond document\n\n\nthird document\n")
    imported = oikyo("data", "import", str(corpus), "--no-report")
    assert imported.returncode == 0, imported.stderr
    assert "Detected format: text (one document per line, detected; 3 blank lines skipped)" in imported.stdout
    assert "3 rows" in imported.stdout

    notes = tmp_path / "notes.md"
    notes.write_text(MARKDOWN)
    given_unit = oikyo("data", "import", str(notes), "--text-unit", "block", "--json")
    assert given_unit.returncode == 0, given_unit.stderr
    body = json.loads(given_unit.stdout)
    assert body["text_layout"] == {"unit": "block", "detected": False, "blank_lines": 4}
    version = body["version"]
    assert version["rows"] == len(MARKDOWN_DOCS) and version["lineage"]["options"]["text_unit"] == "block"

    out = tmp_path / "notes.jsonl"
    exported = oikyo("data", "export", version["id"], "--to", "jsonl", "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    again = json.loads(oikyo("data", "import", str(out), "--json").stdout)
    assert again["existed"] is True and again["version"]["content_hash"] == version["content_hash"]

    wrong = oikyo("data", "import", str(out), "--text-unit", "line")
    assert wrong.returncode != 0 and "plain-text files" in wrong.stderr and "Traceback" not in wrong.stderr


def test_the_dashboard_upload_takes_txt_and_md_and_the_unit(tmp_path):
    from fastapi.testclient import TestClient

    from oikyo.api.app import create_app

    token = "test-login-token-0123456789"
    with TestClient(create_app(token), headers={"Authorization": f"Bearer {token}"}) as client:
        answer = client.post("/api/v1/datasets", files={"file": ("notes.md", MARKDOWN.encode())})
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert body["text_layout"]["unit"] == "block" and body["version"]["rows"] == len(MARKDOWN_DOCS)
        assert body["version"]["name"] == "notes"
        packed = gzip.compress(MARKDOWN.encode())
        answer = client.post("/api/v1/datasets", files={"file": ("notes.md.gz", packed)},
                             data={"text_unit": "line", "name": "notes-lines"})
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert body["text_layout"] == {"unit": "line", "detected": False, "blank_lines": 4}
        assert body["version"]["lineage"]["options"]["text_unit"] == "line"
        bad = client.post("/api/v1/datasets", files={"file": ("notes.md", MARKDOWN.encode())},
                          data={"text_unit": "sentence"})
        assert bad.status_code == 400 and "line, block" in bad.text
