"""A generated corpus of malformed dataset files (issue 22), each with the outcome an import must give.

``corpus(folder, full)`` writes the files under ``folder`` and returns their :class:`Case` list. Most
files hold good records around one bad record at a known place (line 3 of a JSONL or CSV file,
record 2 of a JSON array), so the refusal must name that place. A few files are valid after all
(a byte-order mark, CRLF line breaks, several gzip members): those must import faithfully, to the
same content hash as their plain twin (``twin``). The full corpus (``full=True``) adds the 1 GB single
line, a gzip bomb expanding to ~10 GiB, and larger huge files; the short one is a fixed sample of it.
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

GOOD = {
    "openai": {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]},
    "sharegpt": {"conversations": [{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello!"}]},
    "alpaca": {"instruction": "Say hello", "input": "", "output": "Hello!"},
    "preference": {"prompt": "Hi there", "chosen": "Hello!", "rejected": "Go away."},
    "prompt_completion": {"prompt": "Hi there", "completion": "Hello!"},
    "text": {"text": "A plain document about greetings."},
}


@dataclass
class Case:
    """One file and what importing it must do."""

    name: str  # file name (its extension matters)
    category: str
    expect: str  # "refuse" or "import"
    where: str | None = None  # for "refuse": "line 3" / "record 2", named in a problem's location or message
    error: str | None = None  # for "refuse": an error class the problems must include
    twin: str | None = None  # for "import": a case whose import must give the same content hash
    rows: int | None = None  # for "import": rows expected
    env: dict | None = None  # extra environment for the import (a lower record limit)
    isolated: bool = False  # run in its own `oikyo data import` process in the short run too
    full_only: bool = False  # only in the full corpus (scripts/reliability.sh)


def _line(record) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()


def _jsonl(records: list[bytes], sep: bytes = b"\n") -> bytes:
    return sep.join(records) + sep


def _array(records: list[bytes]) -> bytes:
    return b"[\n" + b",\n".join(records) + b"\n]\n"


class _Writer:
    def __init__(self, folder: Path):
        self.folder, self.cases = folder, []

    def add(self, name: str, data: bytes | None, case: Case) -> None:
        if data is not None:
            (self.folder / name).write_bytes(data)
        self.cases.append(case)

    def around(self, category: str, stem: str, fmt: str, bad: bytes, error: str | None, jsonl=True, array=True):
        """The bad record as line 3 of a JSONL file and record 2 of a JSON array, between good ones."""
        good = _line(GOOD[fmt])
        if jsonl:
            name = f"{category}-{stem}.jsonl"
            self.add(name, _jsonl([good, good, bad, good]), Case(name, category, "refuse", "line 3", error))
        if array:
            name = f"{category}-{stem}.json"
            self.add(name, _array([good, good, bad, good]), Case(name, category, "refuse", "record 2", error))


def _broken_json(w: _Writer) -> None:
    text = _line(GOOD["openai"])
    mutations = {
        "truncated": text[: len(text) // 2],
        "no-closing-brace": text[:-1],
        "missing-comma": text.replace(b', "content"', b' "content"', 1),
        "single-quotes": text.replace(b'"', b"'"),
        "trailing-comma": text[:-1] + b", }",
        "unquoted-key": text.replace(b'"messages"', b"messages"),
        "nan": text[:-1] + b', "score": NaN}',
        "infinity": text[:-1] + b', "score": -Infinity}',
        "comment": text + b" // a comment",
        "two-objects": text + b" " + text,
        "missing-value": text[:-1] + b', "extra": }',
        "bad-escape": text.replace(b"Hello!", b"Hello\\q"),
        "raw-control-char": text.replace(b"Hello!", b"Hel\x01lo"),
        "unclosed-string": text.replace(b'"Hello!"', b'"Hello!'),
        "hex-number": text[:-1] + b', "n": 0x1F}',
        "python-literals": text.replace(b'"Hi there"', b"None"),
    }
    for stem, bad in mutations.items():
        w.around("broken_json", stem, "openai", bad, "invalid_json")


def _wrong_types(w: _Writer) -> None:
    def record(fmt, path, value):
        rec = json.loads(json.dumps(GOOD[fmt]))
        target = rec
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return _line(rec)

    cases = [
        ("openai", ("messages",), "Hi there"), ("openai", ("messages",), {"role": "user"}),
        ("openai", ("messages", 0), "Hi there"), ("openai", ("messages", 1, "content"), 42),
        ("openai", ("messages", 1, "content"), [1, 2]), ("openai", ("messages", 0, "role"), 7),
        ("openai", ("messages",), None), ("openai", ("messages", 1, "content"), {"x": 1}),
        ("sharegpt", ("conversations",), "Hi"), ("sharegpt", ("conversations", 1, "value"), 3.5),
        ("sharegpt", ("conversations", 0, "from"), ["human"]),
        ("alpaca", ("instruction",), ["Say", "hello"]), ("alpaca", ("output",), 12),
        ("alpaca", ("input",), {"a": 1}),
        ("preference", ("chosen",), {"text": "Hello!"}), ("preference", ("rejected",), 0),
        ("prompt_completion", ("completion",), ["Hello!"]), ("prompt_completion", ("prompt",), True),
        ("text", ("text",), 123), ("text", ("text",), ["a", "b"]),
    ]
    for i, (fmt, path, value) in enumerate(cases):
        stem = f"{fmt}-{'.'.join(map(str, path))}-{type(value).__name__}-{i}"
        w.around("wrong_type", stem, fmt, record(fmt, path, value), None)
    for stem, value in {"array": [1, 2], "string": "hello", "number": 5, "null": None, "bool": True}.items():
        w.around("wrong_type", f"record-is-{stem}", "openai", _line(value), "not_object")


def _missing_roles(w: _Writer) -> None:
    user = {"role": "user", "content": "Hi there"}
    bot = {"role": "assistant", "content": "Hello!"}
    chats = {
        "no-role": [{"content": "Hi there"}, bot],
        "unknown-role": [{"role": "bot", "content": "Hi"}, bot],
        "role-typo": [user, {"role": "asistant", "content": "Hello!"}],
        "no-assistant": [user],
        "only-system": [{"role": "system", "content": "Be nice."}],
        "empty-messages": [],
        "empty-content": [user, {"role": "assistant", "content": ""}],
        "no-content": [user, {"role": "assistant"}],
        "whitespace-content": [user, {"role": "assistant", "content": "   "}],
        "role-empty-string": [{"role": "", "content": "Hi"}, bot],
    }
    for stem, messages in chats.items():
        w.around("missing_role", f"openai-{stem}", "openai", _line({"messages": messages}), None)
    turns = {
        "no-from": [{"value": "Hi"}, {"from": "gpt", "value": "Hello!"}],
        "unknown-from": [{"from": "robot", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}],
        "no-gpt": [{"from": "human", "value": "Hi"}],
    }
    for stem, conversation in turns.items():
        w.around("missing_role", f"sharegpt-{stem}", "sharegpt", _line({"conversations": conversation}), None)
    for stem, rec in {"alpaca-no-output": {"instruction": "Say hello", "input": ""},
                      "preference-no-rejected": {"prompt": "Hi", "chosen": "Hello!"}}.items():
        fmt = stem.split("-")[0]
        w.around("missing_role", stem, fmt, _line(rec), None)
    good = _line(GOOD["openai"])
    w.around("missing_role", "duplicate-key", "openai", good[:-1] + b', "messages": []}', "duplicate_key")
    w.around("missing_role", "unknown-field", "openai", good[:-1] + b', "usr_id": 5}', "unknown_field")


def _encoding(w: _Writer) -> None:
    good = [_line(GOOD["openai"]), _line({"messages": [{"role": "user", "content": "Grüße, 日本"},
                                                       {"role": "assistant", "content": "Hallo 👋"}]})]
    plain = _jsonl(good * 2)
    w.add("encoding-plain.jsonl", plain, Case("encoding-plain.jsonl", "encoding", "import", rows=4))
    valid = {
        "bom.jsonl": b"\xef\xbb\xbf" + plain,
        "crlf.jsonl": _jsonl(good * 2, b"\r\n"),
        "bom-crlf.jsonl": b"\xef\xbb\xbf" + _jsonl(good * 2, b"\r\n"),
        "crlf-no-final-break.jsonl": _jsonl(good * 2, b"\r\n")[:-2],
        "bom.json": b"\xef\xbb\xbf" + _array(good * 2),
        "crlf.json": _array(good * 2).replace(b"\n", b"\r\n"),
        "multi-member.jsonl.gz": gzip.compress(_jsonl(good)) + gzip.compress(_jsonl(good)),
        "bom.jsonl.gz": gzip.compress(b"\xef\xbb\xbf" + plain),
    }
    for name, data in valid.items():
        w.add(f"encoding-{name}", data, Case(f"encoding-{name}", "encoding", "import", twin="encoding-plain.jsonl", rows=4))
    csv_plain = b"prompt,completion\nHi there,Hello!\nGr\xc3\xbc\xc3\x9fe,\"a, b\"\n"
    w.add("encoding-plain.csv", csv_plain, Case("encoding-plain.csv", "encoding", "import", rows=2))
    for name, data in {"bom.csv": b"\xef\xbb\xbf" + csv_plain, "crlf.csv": csv_plain.replace(b"\n", b"\r\n"),
                       "bom-crlf.csv": b"\xef\xbb\xbf" + csv_plain.replace(b"\n", b"\r\n")}.items():
        w.add(f"encoding-{name}", data, Case(f"encoding-{name}", "encoding", "import", twin="encoding-plain.csv", rows=2))
    text_plain = b"First document, one line.\nSecond document.\nThird one.\n"
    w.add("encoding-plain.txt", text_plain, Case("encoding-plain.txt", "encoding", "import", rows=3))
    for name, data in {"crlf.txt": text_plain.replace(b"\n", b"\r\n"), "bom.txt": b"\xef\xbb\xbf" + text_plain}.items():
        w.add(f"encoding-{name}", data, Case(f"encoding-{name}", "encoding", "import", twin="encoding-plain.txt", rows=3))

    bad_bytes = {"latin1": b"Gr\xfc\xdfe", "lone-continuation": b"\x80abc", "overlong": b"\xc0\xaf",
                 "utf8-surrogate": b"\xed\xa0\x80", "truncated-sequence": b"ab\xe6\x97", "ff-byte": b"\xff\xfe"}
    text = _line(GOOD["openai"])
    for stem, raw in bad_bytes.items():
        bad = text.replace(b"Hello!", raw)
        w.around("encoding", f"invalid-utf8-{stem}", "openai", bad, "invalid_utf8")
        name = f"encoding-invalid-utf8-{stem}.csv"
        w.add(name, b"prompt,completion\nHi,Hello\nHi," + raw + b"\nHi,Hello\n",
              Case(name, "encoding", "refuse", "line 3", "invalid_utf8"))
    w.around("encoding", "escaped-lone-surrogate", "openai", text.replace(b"Hello!", b"\\ud800"), None)
    w.around("encoding", "nul-bytes", "openai", b"\x00" * 16, "invalid_json")
    w.around("encoding", "bom-mid-file", "openai", b"\xef\xbb\xbf" + text, "invalid_json")
    for stem, codec in {"utf16-le": "utf-16-le", "utf16-be": "utf-16-be", "utf16-bom": "utf-16", "utf32": "utf-32"}.items():
        for ext in ("jsonl", "csv"):
            name = f"encoding-{stem}.{ext}"
            data = plain.decode().encode(codec) if ext == "jsonl" else csv_plain.decode().encode(codec)
            named = "UTF-32 text" if stem == "utf32" else "UTF-16 text"
            w.add(name, data, Case(name, "encoding", "refuse", named, "unreadable_file"))
    name = "encoding-invalid-utf8.txt"
    w.add(name, b"Good line one.\nGood line two.\nBad \xff\xfe line.\n", Case(name, "encoding", "refuse", "line 3", "invalid_utf8"))


def _csv(w: _Writer) -> None:
    files = {
        "header-only.csv": (b"prompt,completion\n", None, "too_few_examples"),
        "ragged-long.csv": (b"prompt,completion\nHi,Hello\nHi,Hello,extra\nHi,Hello\n", "line 3", "unknown_field"),
        "ragged-short.csv": (b"prompt,completion\nHi,Hello\nHi\nHi,Hello\n", "line 3", None),
        "unclosed-quote.csv": (b'prompt,completion\nHi,Hello\nHi,"Hello\nHi,Hello\n', "line 3", None),
        "text-after-quote.csv": (b'prompt,completion\nHi,Hello\n"Hi"x,Hello\n', "line 3", None),
        "duplicate-header.csv": (b"prompt,prompt,completion\nHi,Hi,Hello\n", None, "duplicate_key"),
        "empty-header.csv": (b",completion\nHi,Hello\n", None, None),
        "semicolons.csv": (b"prompt;completion\nHi;Hello\n", None, None),
        "no-known-columns.csv": (b"foo,bar\n1,2\n3,4\n", None, "ambiguous_format"),
        "empty-lines-only.csv": (b"\n\n\n", None, None),
        "binary.csv": (bytes(range(256)) * 8, None, None),
        "commas.tsv": (b"prompt,completion\nHi,Hello\n", None, None),
        "ragged.tsv": (b"prompt\tcompletion\nHi\tHello\nHi\tHello\textra\n", "line 3", "unknown_field"),
        "zero-filled-tail.csv": (b"prompt,completion\nHi,Hello\nHi,Hello\n" + b"\x00" * 4096, "line 4", "invalid_utf8"),
    }
    for name, (data, where, error) in files.items():
        w.add(f"csv-{name}", data, Case(f"csv-{name}", "csv", "refuse", where, error))
    # A quote inside an unquoted field is text, kept as written (RFC 4180 aside, nothing is lost); so is
    # a lone NUL character (a run of them is a damaged file, refused above).
    name = "csv-quote-in-unquoted.csv"
    w.add(name, b'prompt,completion\nHi,Hello\nHi,He said "x" and "y\nHi,Hello\n', Case(name, "csv", "import", rows=3))
    name = "csv-lone-nul.csv"
    w.add(name, b"prompt,completion\nHi,Hello\nHi,Hel\x00lo\n", Case(name, "csv", "import", rows=2))


def _parquet(w: _Writer) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def parquet(table) -> bytes:
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return sink.getvalue()

    good = parquet(pa.table({"prompt": ["Hi", "Yo"], "completion": ["Hello!", "Hey"]}))
    files = {
        "truncated.parquet": good[: len(good) // 2],
        "no-footer.parquet": good[:-8],
        "magic-only.parquet": b"PAR1" + b"\x00" * 64 + b"PAR1",
        "random.parquet": bytes(range(256)) * 16,
        "empty-table.parquet": parquet(pa.table({"prompt": pa.array([], pa.string()), "completion": pa.array([], pa.string())})),
        "int-columns.parquet": parquet(pa.table({"prompt": [1, 2], "completion": [3, 4]})),
        "null-values.parquet": parquet(pa.table({"prompt": ["Hi", None], "completion": ["Hello!", "Hey"]})),
        "unknown-columns.parquet": parquet(pa.table({"foo": ["a"], "bar": ["b"]})),
        "nested-wrong.parquet": parquet(pa.table({"messages": [[{"role": 1, "content": 2}]]})),
        "truncated.parquet.gz": gzip.compress(good)[:-20],
        "corrupt-middle.parquet": good[:40] + b"\xff" * 64 + good[104:],
    }
    for name, data in files.items():
        w.add(f"parquet-{name}", data, Case(f"parquet-{name}", "parquet", "refuse"))


def _gzip(w: _Writer, full: bool) -> None:
    body = _jsonl([_line(GOOD["openai"])] * 20)
    packed = gzip.compress(body)
    corrupt = bytearray(packed)
    corrupt[len(corrupt) // 2] ^= 0xFF
    files = {
        "truncated.jsonl.gz": packed[: len(packed) // 2],
        "no-trailer.jsonl.gz": packed[:-8],
        "corrupt-middle.jsonl.gz": bytes(corrupt),
        "magic-then-garbage.jsonl.gz": b"\x1f\x8b" + bytes(range(200)),
        "trailing-garbage.jsonl.gz": packed + b"this is not gzip",
        "garbage-inside.jsonl.gz": gzip.compress(bytes(range(256)) * 64),
        "empty-member.jsonl.gz": gzip.compress(b""),
        "crc-mismatch.jsonl.gz": packed[:-8] + b"\x00\x00\x00\x00" + packed[-4:],
    }
    for name, data in files.items():
        w.add(f"gzip-{name}", data, Case(f"gzip-{name}", "gzip", "refuse"))
    # Bombs: identical gzip members, each ~1000 times its size; many members make the file.
    size = (100 if full else 20) << 20  # the short run's just pass the 16 MiB floor of oikyo.data.limits
    record = _line(GOOD["openai"]) + b"\n"
    member = gzip.compress(record * (size // len(record)), 9)
    name = "gzip-bomb-records.jsonl.gz"
    w.add(name, member * (100 if full else 1), Case(name, "gzip", "refuse", "gzip bomb", "unreadable_file", isolated=True))
    zeros = gzip.compress(b"\x00" * size, 9)
    name = "gzip-bomb-zeros.parquet.gz"
    w.add(name, zeros, Case(name, "gzip", "refuse", "gzip bomb", "unreadable_file"))
    if full:
        newlines = gzip.compress(b"\n" * size, 9)
        name = "gzip-bomb-newlines.jsonl.gz"
        w.add(name, newlines * 100, Case(name, "gzip", "refuse", "gzip bomb", "unreadable_file", full_only=True))
        for ext in ("json", "csv", "txt"):  # refused by whichever check comes first (JSON fails at byte 1)
            name = f"gzip-bomb-zeros.{ext}.gz"
            w.add(name, zeros * 50, Case(name, "gzip", "refuse", full_only=True))


def _nesting(w: _Writer) -> None:
    for depth in (1_000, 100_000):
        w.around("nesting", f"arrays-{depth}", "openai", b"[" * depth + b"]" * depth, None)
        w.around("nesting", f"objects-{depth}", "openai", b'{"a":' * depth + b"1" + b"}" * depth, None)
    good = _line(GOOD["openai"])
    deep = b'{"messages": [{"role": "user", "content": ' + b"[" * 5000 + b"]" * 5000 + b'}, {"role": "assistant", "content": "x"}]}'
    w.around("nesting", "inside-content", "openai", deep, None)
    for depth in (10_000, 1_000_000):
        name = f"nesting-whole-file-{depth}.json"
        w.add(name, b"[" * depth + b"]" * depth, Case(name, "nesting", "refuse"))
    name = "nesting-unclosed.json"
    w.add(name, b"[" + good + b"," + b"[" * 50_000, Case(name, "nesting", "refuse"))


def _empty_and_huge(w: _Writer, full: bool) -> None:
    empties = {"empty.jsonl": b"", "empty.json": b"", "empty.csv": b"", "empty.tsv": b"", "empty.txt": b"",
               "empty.parquet": b"", "empty.jsonl.gz": b"", "gz-of-nothing.jsonl.gz": gzip.compress(b""),
               "whitespace.jsonl": b"  \n\t\n   \n", "newlines.jsonl": b"\n" * 100_000, "empty-array.json": b"[]",
               "empty-object.json": b"{}", "only-bom.jsonl": b"\xef\xbb\xbf", "blank.txt": b"\n \n\t\n", "null.json": b"null",
               "no-extension": b"\x00\x01\x02\x03" * 64}
    for name, data in empties.items():
        w.add(f"empty-{name}", data, Case(f"empty-{name}", "empty", "refuse", "is empty (0 bytes)" if not data else None))
    good = _line(GOOD["openai"]) + b"\n"
    bad = b'{"messages": "not a list"}\n'
    # Huge: every line bad (problems are counted, not kept), and a good file with one bad last line.
    count = (32 << 20 if full else 1 << 20) // len(bad)  # every bad row takes the slow path: ~1 MB/s
    name = "huge-all-bad.jsonl"
    w.add(name, bad * count, Case(name, "huge", "refuse", "line 1", "wrong_type"))
    lines = (300 << 20 if full else 6 << 20) // len(good)
    name = "huge-bad-last-line.jsonl"
    w.add(name, good * lines + bad, Case(name, "huge", "refuse", f"line {lines + 1}", "wrong_type"))
    if full:
        name = "huge-bad-last-record.json"
        w.add(name, b"[" + b",".join([good.strip()] * lines + [bad.strip()]) + b"]",
              Case(name, "huge", "refuse", f"record {lines}", "wrong_type", full_only=True))


def _long_lines(w: _Writer, full: bool) -> None:
    small = {"OIKYO_MAX_RECORD_BYTES": str(1 << 20)}  # 1 MiB: the same code path as the 64 MiB default
    good = _line(GOOD["openai"]) + b"\n"
    long_value = b"y" * (3 << 20)
    long_record = b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "' + long_value + b'"}]}'
    files = {
        "over-limit.jsonl": (good * 2 + long_record + b"\n" + good, "line 3"),
        "over-limit-no-break.jsonl": (good * 2 + long_value, "line 3"),
        "over-limit.jsonl.gz": (gzip.compress(good * 2 + long_record + b"\n" + good), "line 3"),
        "over-limit.json": (b"[" + good + b"," + good + b"," + long_record + b"]", "record 2"),
        "over-limit.csv": (b"prompt,completion\nHi,Hello\nHi," + long_value + b"\n", "line 3"),
        "over-limit-open-quote.csv": (b'prompt,completion\nHi,Hello\nHi,"' + b"yyyyyyy\n" * 400_000, "line 3"),
        "over-limit.txt": (b"One document.\nAnother one.\n" + long_value + b"\n", "line 3"),
    }
    for name, (data, where) in files.items():
        own = name == "over-limit.jsonl"
        w.add(f"long-{name}", data, Case(f"long-{name}", "long_line", "refuse", where, "too_long", env=small, isolated=own))
    # At the default limit (64 MiB): a 1 GB single line, and a record just under the limit that imports.
    name = "long-1gb-line.jsonl"
    if full:
        with open(w.folder / name, "wb") as f:
            f.write(good * 2 + b'{"text": "')
            chunk = b"z" * (16 << 20)
            for _ in range(64):
                f.write(chunk)
            f.write(b'"}\n' + good)
        w.add(name, None, Case(name, "long_line", "refuse", "line 3", "too_long", full_only=True))
    name = "long-under-limit.jsonl"
    under = b'{"text": "' + b"z" * (60 << 20) + b'"}\n'
    if full:
        w.add(name, under + b'{"text": "short"}\n', Case(name, "long_line", "import", rows=2, full_only=True))


def _plain_text(w: _Writer) -> None:
    jsonl = _jsonl([_line(GOOD["openai"])] * 3)
    files = {
        "json-lines-in-disguise.txt": jsonl,
        "binary.txt": bytes(range(256)) * 16,

        "utf16.txt": "Some text\nMore text\n".encode("utf-16"),
    }
    for name, data in files.items():
        w.add(f"text-{name}", data, Case(f"text-{name}", "text", "refuse"))
    for name, data in {"zero-filled-block.md": b"# Title\n\nSome words" + b"\x00" * 512 + b"\n",
                       "zero-filled-tail.txt": b"First line.\nSecond line.\n" + b"\x00" * 4096}.items():
        w.add(f"text-{name}", data, Case(f"text-{name}", "text", "refuse", "line 3", "invalid_utf8"))


def corpus(folder: Path, full: bool) -> list[Case]:
    """Write the corpus into ``folder``; the short one (``full=False``) is a fixed sample of about 40 files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    w = _Writer(folder)
    _broken_json(w)
    _wrong_types(w)
    _missing_roles(w)
    _encoding(w)
    _csv(w)
    _parquet(w)
    _gzip(w, full)
    _nesting(w)
    _empty_and_huge(w, full)
    _long_lines(w, full)
    _plain_text(w)
    cases = w.cases
    if not full:
        cases = [c for c in cases if not c.full_only]
        keep = {c.name for c in cases if c.isolated or c.twin or c.category in ("gzip", "huge", "long_line")}
        keep |= {c.twin for c in cases if c.twin}
        sample = [c for i, c in enumerate(cases) if (c.name in keep and i % 2 == 0) or c.isolated or i % 10 == 0]
        sample += [c for c in cases if c.name in {s.twin for s in sample} and c not in sample]
        for case in cases:  # the files left out of the sample are not needed
            if case not in sample and (folder / case.name).exists():
                (folder / case.name).unlink()
        cases = sample
    return cases
