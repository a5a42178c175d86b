"""Plain-text corpora (``.txt``, ``.md``): how their bytes are cut into documents.

:class:`oikyo.data.readers.Source` reads a plain-text file line by line and uses these helpers;
each document becomes the record ``{"text": ...}`` of the ``text`` format. Two layouts
(:data:`TEXT_UNITS`)::

    line    one document per line
    block   documents are runs of non-blank lines; blank lines separate them

:func:`detect_text_unit` chooses one from the first bytes of a file; the user can give it instead
(``oikyo data import --text-unit``). A document is its lines exactly as written (leading and
trailing spaces, inner line breaks, CRLF included) less the line break that ends its last line
(:func:`text_document`). Blank lines (:func:`is_blank`) belong to no document.
"""

from __future__ import annotations

import orjson

BOM = b"\xef\xbb\xbf"
# Plain-text layouts: one document per line, or per block of lines between blank lines.
TEXT_UNITS = ("line", "block")
TEXT_UNIT_NAMES = {"line": "one document per line", "block": "documents separated by blank lines"}
# Block detection: blocks this long on average are stray blank lines in a line-per-document file.
MAX_MEAN_BLOCK_LINES = 50


def is_blank(line: bytes) -> bool:
    """Whether a line (bytes, with or without its line break) is empty or only whitespace.

    Unicode whitespace counts too (an ideographic space, a no-break space), as it does for the
    ``text`` format's empty check; a line that is not valid UTF-8 is not blank.
    """
    stripped = line.strip()
    if not stripped:
        return True
    if 0x20 < stripped[0] < 0x7F:
        return False  # a printable ASCII character: the common case, decided without decoding
    try:
        return stripped.decode("utf-8").isspace()  # str.isspace also knows \x1c-\x1f, U+3000, U+00A0 ...
    except UnicodeDecodeError:
        return False


def _complete_lines(head: bytes, whole: bool) -> list[bytes]:
    """The lines of a sniffed head, less a last line that the sniff may have cut short."""
    lines = head.removeprefix(BOM).split(b"\n")
    if not whole and len(lines) > 1:
        lines.pop()
    return lines


def detect_text_unit(head: bytes, whole: bool = True) -> str:
    """``"block"`` or ``"line"``: the layout of plain text, from its first bytes.

    Blocks are runs of non-blank lines between blank lines. The text is read as blocks when it has
    at least two blocks, at least one of them spans more than one line, and they average at most
    :data:`MAX_MEAN_BLOCK_LINES` lines (a few stray blank lines in a corpus of one document per
    line make a few huge "blocks", not many short ones). Otherwise it is one document per line.
    ``whole``: ``head`` is the entire content (else its last, possibly cut, line is ignored).
    """
    blocks, current = [], 0
    for line in _complete_lines(head, whole):
        if is_blank(line):
            if current:
                blocks.append(current)
            current = 0
        else:
            current += 1
    if current:
        blocks.append(current)
    if len(blocks) >= 2 and max(blocks) > 1 and sum(blocks) <= MAX_MEAN_BLOCK_LINES * len(blocks):
        return "block"
    return "line"


def json_lines_in_disguise(head: bytes, whole: bool, lines: int = 20) -> bool:
    """Whether the first non-blank lines of a text file are all JSON objects (a misnamed JSONL file)."""
    seen = 0
    for line in _complete_lines(head, whole):
        if is_blank(line):
            continue
        if line.lstrip()[:1] != b"{":
            return False
        try:
            if type(orjson.loads(line)) is not dict:
                return False
        except orjson.JSONDecodeError:
            return False
        seen += 1
        if seen >= lines:
            break
    return seen > 0


# A run of NUL bytes: a damaged file (a zero-filled tail after a crash) or a binary one, never text. A
# lone NUL is a character like any other and is kept.
NUL_RUN = b"\x00" * 64


def nul_run_problem(line: int) -> str:
    """The message for line ``line`` holding a :data:`NUL_RUN`."""
    return (f"line {line} holds a run of NUL bytes (\\x00), as a damaged (zero-filled) or binary file does; "
            "repair the file or remove them")


def text_document(lines: list[bytes], first: int) -> tuple:
    """The record of one document: its lines as written, less the break after the last one."""
    data = b"".join(lines)
    data = data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data
    if NUL_RUN in data:  # damaged or binary: never a document
        bad = next(number for number, line in enumerate(lines, start=first) if NUL_RUN in line)
        return (first, None, {"text": ""}, ("invalid_utf8", "text", nul_run_problem(bad)))
    try:
        return (first, None, {"text": data.decode("utf-8")}, None)
    except UnicodeDecodeError:
        bad = first
        for number, line in enumerate(lines, start=first):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                bad = number
                break
        problem = ("invalid_utf8", "text", f"line {bad} is not valid UTF-8; re-save the file as UTF-8")
        return (first, None, {"text": data.decode("utf-8", errors="replace")}, problem)
