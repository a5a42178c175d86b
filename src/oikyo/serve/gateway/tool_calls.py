"""Tool calls in a model's answer, read out as OpenAI ``tool_calls`` (whole answers and streams).

A chat request that offers ``tools`` gets its answer parsed here: each call the model wrote becomes
``{"id": "call_<random>", "type": "function", "function": {"name", "arguments"}}`` (arguments as JSON
text), the text around the calls stays the message's ``content`` (None when there is none), and the
choice finishes with ``"tool_calls"``::

    parser = ToolCallParser.for_template(template_text, tools)    # None when no tool has a name
    content, calls = parser.parse(answer_text)
    stream = parser.stream()                                       # per streamed choice
    for delta in deltas:
        for kind, value in stream.feed(delta): ...                 # ("content", text) | ("call", call)
    for kind, value in stream.finish(): ...

How a model writes a call depends on its family; the format is read from the chat template's text
(:func:`detect_format`):

- ``hermes`` (Hermes, Qwen2.5, Qwen3: the template mentions ``<tool_call>``):
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one block per call (a block left
  open at the end of the answer counts when its JSON is complete).
- ``llama3`` (Llama 3.1 / 3.2: the template asks for ``{"name": ..., "parameters": ...}`` or uses
  ``<|python_tag|>``): a JSON object ``{"name": ..., "parameters": {...}}``, optionally after
  ``<|python_tag|>``.
- ``mistral`` (the template uses ``[TOOL_CALLS]``): ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``
  (the JSON-list form; the newer ``[TOOL_CALLS]name[ARGS]{...}`` form is not read).
- ``json``, the default for templates without a convention (SmolLM2's ChatML template ignores
  ``tools``; :mod:`oikyo.models.chat_template` then describes the tools in the system message and
  asks for "only a JSON object ``{"name": <tool name>, "arguments": {...}}``"): that object, or a
  JSON list of them.

Every format also reads the bare JSON object (``"arguments"`` or ``"parameters"``) or a list of
them: oikyo renders the ``tool_call`` turns of training data as that JSON (see chat_template), so a
model fine-tuned with oikyo writes calls that way whatever its family. Special tokens such as
``<|python_tag|>`` and ``[TOOL_CALLS]`` are usually dropped by the detokenizer; the JSON after them
still parses.

What stays plain text (never an error): a call naming a tool that was not offered, arguments that
are not a JSON object (or JSON text of one), keys other than name/arguments/parameters/type, and
anything incomplete when the answer ends.

Forced calls: with ``tool_choice`` ``"required"`` or a named function, decoding is constrained
(llguidance, :func:`forced_call_grammar`) to exactly one call written the family's own way, so a
model meets the format it was taught and this parser reads the answer back:

- ``hermes``: ``<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`` (one block);
- ``llama3``: ``{"name": ..., "parameters": {...}}`` (without ``<|python_tag|>``: Llama 3.1 and 3.2
  write JSON calls to the tools given in the conversation bare, the tag opens built-in tool calls);
- ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}]`` (a space may precede the list);
- ``json``: the bare object ``{"name": ..., "arguments": {...}}``.

The arguments follow the tool's ``parameters`` schema; the JSON is compact. A marker that is one
added token of the tokenizer (``[TOOL_CALLS]`` in Mistral's, ``<tool_call>`` in Qwen's) is produced as
that token, as the model learned it: ``[TOOL_CALLS]`` is special, so the detokenizer drops it and the
answer's text is the JSON list, which the ``mistral`` format reads as well. One call even with
``parallel_tool_calls``: the grammar ends the answer after it.

Streaming: text is released as soon as it cannot be the start of a call. From a possible opening
(``{"name"``, ``[{"name"``, ``<tool_call>``, a marker) the text is held back until it is either a
complete, valid call (sent as a call) or not a call (released as content: a complete JSON value that
is not a call, or JSON that is broken rather than cut short); so a call is sent only
once it is whole and checked, and malformed output falls back to text exactly as in a whole
answer. Whitespace next to a call is dropped (the text around calls is what a model says besides
them); an answer without calls comes back unchanged. Feeding a text at once or piece by piece
gives the same events, so streamed and whole answers agree.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field

FORMATS = ("hermes", "llama3", "mistral", "json")
TAG_OPEN, TAG_CLOSE = "<tool_call>", "</tool_call>"
MARKERS = {"llama3": ("<|python_tag|>",), "mistral": ("[TOOL_CALLS]",), "hermes": (), "json": ()}
CALL_KEYS = frozenset({"name", "arguments", "parameters", "type"})
_LLAMA_JSON = re.compile(r'"name"[^\n]{0,80}"parameters"')
_DECODER = json.JSONDecoder()
_NUMBER_START = re.compile(r"-?[0-9.eE+-]*")
_UNICODE_ESCAPE_START = re.compile(r"u[0-9a-fA-F]{0,4}")

ARGUMENTS_KEY = {"llama3": "parameters"}  # how a format names a call's arguments ("arguments" for the others)

# What a prefix of the text at a candidate position is: the start of a call, maybe one, or not one.
_YES, _MAYBE, _NO = "yes", "maybe", "no"


def detect_format(template: str | None) -> str:
    """The tool-call format a chat template teaches (see the module docstring); ``json`` when none is recognised."""
    template = template or ""
    if TAG_OPEN in template:
        return "hermes"
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<|python_tag|>" in template or _LLAMA_JSON.search(template):
        return "llama3"
    return "json"


def tool_names(tools: list | None) -> frozenset[str]:
    """The function names in OpenAI ``tools`` (``{"type": "function", "function": {"name": ...}}``)."""
    names = set()
    for tool in tools or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str) and function["name"]:
            names.add(function["name"])
    return frozenset(names)


def forced_call_grammar(tools: list[dict], fmt: str, added_tokens: dict[str, int] | None = None) -> str:
    """The llguidance grammar of one call to one of ``tools`` (OpenAI tool dicts), written as format ``fmt``
    writes it (see "Forced calls" in the module docstring); ``added_tokens``: the tokenizer's added tokens
    (text -> id, ``get_added_vocab()``), so markers that are tokens are produced as them. GrammarError when a
    tool's ``parameters`` is not a schema llguidance compiles."""
    from oikyo.serve.engine.grammar import GrammarError, inline_json, json_grammar, lark_grammar

    key = ARGUMENTS_KEY.get(fmt, "arguments")
    calls = []
    for tool in tools:
        name, parameters = tool["function"]["name"], tool["function"].get("parameters") or {"type": "object"}
        if not isinstance(parameters, dict):
            raise GrammarError(f"the parameters of tool {name!r} must be a JSON schema object")
        calls.append({"type": "object", "properties": {"name": {"const": name}, key: parameters},
                      "required": ["name", key], "additionalProperties": False})
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    before, after = _frame(fmt, added_tokens or {})
    if not before and not after:
        return json_grammar(schema)
    return lark_grammar(f"start: {' '.join(before + ['call'] + after)}\ncall: {inline_json(schema)}")


def _frame(fmt: str, added_tokens: dict[str, int]) -> tuple[list[str], list[str]]:
    """The Lark items before and after a forced call's JSON object in format ``fmt``."""

    def marker(text: str) -> str:  # the added token it is (llguidance matches those only by id), else the text
        return f"<[{added_tokens[text]}]>" if text in added_tokens else json.dumps(text)

    if fmt == "hermes":
        return [marker(TAG_OPEN), r'"\n"'], [r'"\n"', marker(TAG_CLOSE)]
    if fmt == "mistral":  # the optional space: Mistral's sentencepiece writes the list after the marker as "▁["
        return [marker("[TOOL_CALLS]"), '" "?', '"["'], ['"]"']
    return [], []


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _call(value, names: frozenset[str]) -> dict | None:
    """``value`` (decoded JSON) as an OpenAI tool call, or None when it is not a valid call."""
    if not isinstance(value, dict) or not value.keys() <= CALL_KEYS or value.get("name") not in names:
        return None
    if "arguments" in value and "parameters" in value:
        return None
    if value.get("type", "function") != "function":
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # arguments given as JSON text, OpenAI-style
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {"id": new_call_id(), "type": "function",
            "function": {"name": value["name"], "arguments": json.dumps(arguments, ensure_ascii=False)}}


def _calls(value, names: frozenset[str]) -> list[dict] | None:
    """A call object or a non-empty list of them as calls; None unless every one is valid."""
    items = value if isinstance(value, list) else [value]
    calls = [_call(item, names) for item in items]
    return calls if calls and all(calls) else None


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _json_opening(text: str, i: int) -> str:
    """Whether ``text[i:]`` starts like a call in JSON: ``{"name":`` or ``[{"name":`` (whitespace allowed)."""
    if i < len(text) and text[i] == "[":
        i = _skip_ws(text, i + 1)
    if i >= len(text):
        return _MAYBE
    if text[i] != "{":
        return _NO
    i = _skip_ws(text, i + 1)
    rest, key = text[i : i + 6], '"name"'
    if len(rest) < len(key):
        return _MAYBE if key.startswith(rest) else _NO
    if rest != key:
        return _NO
    i = _skip_ws(text, i + len(key))
    if i >= len(text):
        return _MAYBE
    return _YES if text[i] == ":" else _NO


def _may_complete(text: str, error: json.JSONDecodeError) -> bool:
    """Whether JSON that failed to decode is only cut short (more text may complete it), not broken."""
    if error.msg.startswith("Unterminated string"):
        return True
    if error.msg.startswith("Invalid \\uXXXX escape"):  # cut inside a \uXXXX escape (or a surrogate pair)
        return _UNICODE_ESCAPE_START.fullmatch(text[error.pos :]) is not None
    rest = text[error.pos :].strip()  # what the decoder stopped at: nothing, or a literal or number being written
    return not rest or any(word.startswith(rest) for word in ("true", "false", "null")) or \
        _NUMBER_START.fullmatch(rest) is not None


def _literal_opening(text: str, i: int, literal: str) -> str:
    head = text[i : i + len(literal)]
    if head == literal:
        return _YES
    return _MAYBE if len(head) < len(literal) and literal.startswith(head) else _NO


@dataclass(frozen=True)
class ToolCallParser:
    """Reads the tool calls of one format (see :data:`FORMATS`) naming one of ``names``."""

    format: str
    names: frozenset[str]
    max_calls: int | None = None  # 1 with parallel_tool_calls=false: later calls stay text

    @classmethod
    def for_template(cls, template: str | None, tools: list | None, parallel: bool = True) -> ToolCallParser | None:
        names = tool_names(tools)
        if not names:
            return None
        return cls(detect_format(template), names, None if parallel else 1)

    def parse(self, text: str) -> tuple[str | None, list[dict]]:
        """``(content, calls)`` of a whole answer; content is None when calls fill it (see the module docstring)."""
        stream = self.stream()
        events = stream.feed(text) + stream.finish()
        content = "".join(value for kind, value in events if kind == "content")
        calls = [value for kind, value in events if kind == "call"]
        return (content or None) if calls else text, calls

    def stream(self) -> ToolCallStream:
        return ToolCallStream(self)


@dataclass
class ToolCallStream:
    """Incremental parsing of one streamed answer: text deltas in, content and call events out."""

    parser: ToolCallParser
    pending: str = ""  # text not yet released: it starts at a possible call opening
    held_ws: str = ""  # trailing whitespace of released content, sent only when more content follows
    calls: int = 0
    after_call: bool = False
    events: list = field(default_factory=list, init=False, repr=False)  # what the current feed decides

    def feed(self, delta: str) -> list[tuple[str, object]]:
        """Events the text so far decides: ``("content", text)`` and ``("call", tool call)``."""
        self.pending += delta
        return self._drain(final=False)

    def finish(self) -> list[tuple[str, object]]:
        """The events left at the end of the answer (held text released, an open tag closed by the end)."""
        events = self._drain(final=True)
        if self.held_ws and not self.calls:
            events.append(("content", self.held_ws))
        self.held_ws = ""
        return events

    # ------------------------------------------------------------------ internals

    def _drain(self, final: bool) -> list[tuple[str, object]]:
        self.events = []
        while self.pending:
            position, outcome = self._next_call(final)
            if outcome is None:  # no call opening anywhere: all of it is content
                self._content(self.pending)
                self.pending = ""
            elif outcome == _MAYBE:  # wait for more text before deciding
                self._content(self.pending[:position])
                self.pending = self.pending[position:]
                break
            else:
                end, calls = outcome
                self._content(self.pending[:position])
                for call in calls:
                    self._call(call)
                self.pending = self.pending[end:]
        return self.events

    def _next_call(self, final: bool):
        """The first position where a call starts: ``(position, (end, calls))``, or ``(position, MAYBE)``
        where more text must come to tell, or ``(None, None)``."""
        text = self.pending
        limit = self.parser.max_calls
        if limit is not None and self.calls >= limit:
            return None, None
        i = 0
        while i < len(text):
            if text[i] not in "{[<":
                i += 1
                continue
            opening, body = self._opening(text, i)
            if opening == _MAYBE and not final:
                return i, _MAYBE
            if opening == _YES:
                found = self._complete(text, i, body, final)
                if found == _MAYBE:
                    return i, _MAYBE
                if found is not None:
                    end, calls = found
                    if calls is not None and (limit is None or len(calls) <= limit - self.calls):
                        return i, (end, calls)
                    i = end  # a complete JSON value or block that is not a call: all text
                    continue
            i += 1
        return None, None

    def _opening(self, text: str, i: int) -> tuple[str, str]:
        """Whether a call opens at ``i``, and how its body is written (``tag``, ``json``, or ``marker:M``)."""
        best = _NO
        if self.parser.format == "hermes":
            tag = _literal_opening(text, i, TAG_OPEN)
            if tag == _YES:
                return _YES, "tag"
            best = tag
        for marker in MARKERS[self.parser.format]:
            seen = _literal_opening(text, i, marker)
            if seen == _YES:
                after = _json_opening(text, i + len(marker))
                if after != _NO:
                    return after, "marker:" + marker
            elif seen == _MAYBE:
                best = _MAYBE
        seen = _json_opening(text, i)
        if seen != _NO:
            return seen, "json"
        return best, ""

    def _complete(self, text: str, i: int, body: str, final: bool):
        """``(end, calls or None)`` once the call opened at ``i`` is complete; MAYBE while it is not."""
        if body == "tag":
            inner_start = i + len(TAG_OPEN)
            close = text.find(TAG_CLOSE, inner_start)
            if close < 0 and not final:
                return _MAYBE
            end = len(text) if close < 0 else close + len(TAG_CLOSE)
            inner = text[inner_start : close if close >= 0 else len(text)].strip()
            try:
                value = json.loads(inner)
            except ValueError:
                return end, None
            return end, _calls(value, self.parser.names)
        if body.startswith("marker:"):
            i += len(body) - len("marker:")
        try:
            value, end = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError as error:
            return _MAYBE if not final and _may_complete(text, error) else None  # None: broken, so text
        return end, _calls(value, self.parser.names)

    def _content(self, text: str) -> None:
        if self.after_call:
            text = text.lstrip()
        if not text:
            return
        self.after_call = False
        combined = self.held_ws + text
        body = combined.rstrip()
        self.held_ws = combined[len(body) :]
        if body:
            self.events.append(("content", body))

    def _call(self, call: dict) -> None:
        self.held_ws = ""
        self.after_call = True
        self.calls += 1
        self.events.append(("call", call))


def answer_text(content: str | None, calls: list[dict] | None) -> str:
    """An answer with tool calls as one text, for request logs and quality checks: the content, then
    each call as oikyo's canonical JSON ``{"name", "arguments"}`` (a ``tool_call`` turn's content) on its own line."""
    lines = [content] if content else []
    for call in calls or ():
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = function.get("arguments")
        lines.append(json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False))
    return "\n".join(lines)
