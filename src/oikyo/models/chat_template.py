"""THE one place that turns canonical conversations into tokens (training, evaluation and serving).

Every conversation is rendered with the tokenizer's own Jinja chat template, so a fine-tuned model
sees exactly the format its base model was taught. Training and serving share one code path::

    enc = encode_conversation(tokenizer, messages)          # Encoded(input_ids, labels)
    ids = encode_prompt(tokenizer, messages[:-1])           # what serving feeds to generate()

and ``enc.input_ids`` up to the start of the last assistant reply equals ``ids`` token for token.

Role mapping (canonical schema -> template):

- ``system``, ``user``, ``assistant``: unchanged.
- ``tool_call``: an ``assistant`` turn whose content is the call's JSON text ``{"name", "arguments"}``
  unchanged, so a served reply that parses as such JSON is a tool call.
- ``tool``: the role ``tool`` when the template renders it (SmolLM2's ChatML template writes any role
  verbatim as ``<|im_start|>tool``); otherwise a ``user`` turn whose content starts with
  ``Tool result:`` (for templates that reject unknown roles).
- Tool definitions (``tools``, JSON text or a list of dicts) go to the template's ``tools`` variable
  when the template uses one; otherwise (SmolLM2) they are described in the system message.

Loss mask: the conversation is rendered prefix by prefix: before each assistant turn i,
messages[:i] plus the generation prompt, then messages[:i+1]. Each rendering must extend the
previous one as text, otherwise the template is not prefix-stable and :class:`TemplateError` is
raised rather than guessing a mask. This cuts the text into alternating prompt and reply pieces;
each piece is tokenized on its own and the token lists are concatenated. Why not tokenize the whole
text once: byte-level BPE merges across the boundary when a reply starts with whitespace (SmolLM2:
"assistant\n" + "\n\nx" tokenizes differently as one string), so the training prompt would not be
a token prefix of the full tokenization and would differ from what serving feeds the model. Pieces
make the prompt tokens identical in training and serving by construction, and the reply tokens are
those the model produces when it generates after the prompt. For ordinary replies the result equals
``tokenizer.apply_chat_template(..., tokenize=True)`` (tested).

Trained on (labels != -100): the content of every assistant/tool_call turn and its end-of-turn token
(the last special token of the reply piece; SmolLM2's newline after ``<|im_end|>`` is not trained
on). Labels are not shifted: the model shifts them itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oikyo.data.schema import ASSISTANT_ROLES
from oikyo.models.loading import context_length  # noqa: F401  (re-exported: part of this module's API)

IGNORE_INDEX = -100
TRAIN_ON = ("assistant", "last", "all")
TOOL_RESULT_PREFIX = "Tool result:\n"
TOOLS_SYSTEM_PROMPT = (
    "You can call the following tools. To call one, reply with only a JSON object "
    '{{"name": <tool name>, "arguments": {{<argument name>: <value>, ...}}}}.\n'
    "<tools>\n{tools}\n</tools>"
)
_SENTINEL = "oikyo-sentinel-7f3a"


class TemplateError(ValueError):
    """The tokenizer's chat template cannot encode this conversation safely."""


@dataclass
class Encoded:
    """Token ids of one example and their training labels (``IGNORE_INDEX`` where not trained on)."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


# ----------------------------------------------------------------------------- role mapping


@dataclass(frozen=True)
class _TemplateTraits:
    renders_tool_role: bool  # a "tool" message renders (not rejected, content kept)
    renders_system: bool  # a "system" message renders
    uses_tools: bool  # the template reads the `tools` variable


def _template_text(tokenizer) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: use the default one
        template = template.get("default") or next(iter(template.values()), None)
    if not template:
        raise TemplateError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
            "use a chat (instruct) model or the text dataset kind"
        )
    return template


def _renders(tokenizer, messages: list[dict]) -> bool:
    try:
        return _SENTINEL in tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # templates reject roles with raise_exception(...); any failure means "no"
        return False


_TRAITS: dict[tuple, _TemplateTraits] = {}


def _traits(tokenizer) -> _TemplateTraits:
    """What the tokenizer's template accepts, probed once per template by rendering sentinel messages."""
    template = _template_text(tokenizer)
    key = (template, tokenizer.bos_token, tokenizer.eos_token)
    if key not in _TRAITS:
        tool_probe = [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
            {"role": "tool", "content": _SENTINEL},
        ]
        system_probe = [{"role": "system", "content": _SENTINEL}, {"role": "user", "content": "q"}]
        _TRAITS[key] = _TemplateTraits(
            renders_tool_role=_renders(tokenizer, tool_probe),
            renders_system=_renders(tokenizer, system_probe),
            uses_tools=re.search(r"\btools\b", template) is not None,
        )
    return _TRAITS[key]


def parse_tools(tools: Any) -> list[dict] | None:
    """Tool definitions as a list of dicts (from JSON text, one dict, or a list); None when empty."""
    if tools is None or tools == "":
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as err:
            raise TemplateError(f"tools is not valid JSON: {err}") from err
    if isinstance(tools, dict):
        tools = [tools]
    return list(tools) or None


def to_template_messages(tokenizer, messages: list[dict], tools: Any = None) -> tuple[list[dict], list | None]:
    """Canonical messages -> (messages the template understands, ``tools`` argument for the template)."""
    mapped, _, template_tools = _map_messages(tokenizer, messages, tools)
    return mapped, template_tools


def _map_messages(tokenizer, messages: list[dict], tools: Any) -> tuple[list[dict], list[bool], list | None]:
    """Like :func:`to_template_messages`, plus for each mapped message whether it is a model reply."""
    traits = _traits(tokenizer)
    out: list[dict] = []
    replies: list[bool] = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "tool_call":
            role = "assistant"
        elif role == "tool" and not traits.renders_tool_role:
            role, content = "user", TOOL_RESULT_PREFIX + content
        elif role not in ("system", "user", "assistant", "tool"):
            raise TemplateError(f"unknown role {role!r}")
        out.append({"role": role, "content": content})
        replies.append(message["role"] in ASSISTANT_ROLES)

    tool_list = parse_tools(tools)
    template_tools = tool_list if tool_list and traits.uses_tools else None
    if tool_list and not traits.uses_tools:
        description = TOOLS_SYSTEM_PROMPT.format(tools=json.dumps(tool_list, ensure_ascii=False, indent=1))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + description}
        else:
            out.insert(0, {"role": "system", "content": description})
            replies.insert(0, False)
    if not traits.renders_system and out and out[0]["role"] == "system":
        # Templates without a system role (e.g. Gemma): fold it into the first user turn.
        system = out.pop(0)["content"]
        replies.pop(0)
        if out and out[0]["role"] == "user":
            out[0] = {"role": "user", "content": system + "\n\n" + out[0]["content"]}
        else:
            out.insert(0, {"role": "user", "content": system})
            replies.insert(0, False)
    return out, replies, template_tools


# ----------------------------------------------------------------------------- rendering


def _render(tokenizer, messages: list[dict], tools, add_generation_prompt: bool) -> str:
    if not messages:
        if add_generation_prompt:
            raise TemplateError("cannot build a prompt from an empty conversation")
        return ""
    return tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False
    )


def _extend(segments: list[tuple[str, str]], previous: str, current: str, kind: str, where: str) -> str:
    """Append ``current``'s new text (beyond ``previous``) as a segment of ``kind``; return ``current``."""
    if not current.startswith(previous):
        raise TemplateError(
            f"the chat template is not prefix-stable at {where}: rendering more messages changed the text "
            "of earlier ones, so the loss mask cannot be derived safely"
        )
    if current != previous or kind == "reply":
        segments.append((current[len(previous) :], kind))
    return current


def _segments(tokenizer, messages: list[dict], tools, add_generation_prompt: bool) -> list[tuple[str, str]]:
    """Split the rendered conversation into alternating text pieces: (text, "prompt" | "reply").

    A "reply" piece is one assistant turn's content plus the template's end-of-turn text; the text
    between replies is one "prompt" piece. Joining the texts gives exactly the full rendering.
    Rendering happens only where a reply starts or ends (and at the end), each rendering checked to
    extend the previous one.
    """
    mapped, replies, template_tools = _map_messages(tokenizer, messages, tools)
    segments: list[tuple[str, str]] = []
    text = ""
    for i, is_reply in enumerate(replies):
        if not is_reply:
            continue
        if i == 0:
            raise TemplateError("a conversation cannot start with an assistant turn")
        prompt = _render(tokenizer, mapped[:i], template_tools, add_generation_prompt=True)
        text = _extend(segments, text, prompt, "prompt", f"message {i} (generation prompt)")
        reply = _render(tokenizer, mapped[: i + 1], template_tools, add_generation_prompt=False)
        text = _extend(segments, text, reply, "reply", f"message {i}")
    if add_generation_prompt or not (replies and replies[-1]):
        final = _render(tokenizer, mapped, template_tools, add_generation_prompt=add_generation_prompt)
        _extend(segments, text, final, "prompt", "the end of the conversation")
    return segments


def _tokenize_pieces(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without added special tokens (templates write their own bos)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # fast path: one Rust batch call
        return [enc.ids for enc in backend.encode_batch(texts, add_special_tokens=False)]
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


def _reply_labels(ids: list[int], special_ids: set[int]) -> list[int]:
    """Labels for one reply piece: trained up to and including its last special token (end of turn)."""
    last_special = max((k for k, token in enumerate(ids) if token in special_ids), default=len(ids) - 1)
    return ids[: last_special + 1] + [IGNORE_INDEX] * (len(ids) - last_special - 1)


# ----------------------------------------------------------------------------- public API


def encode_conversation(
    tokenizer,
    messages: list[dict],
    *,
    tools: Any = None,
    add_generation_prompt: bool = False,
    train_on: str = "assistant",
) -> Encoded:
    """Tokens and labels of a canonical conversation.

    ``train_on``: "assistant" (every assistant/tool_call reply and its end-of-turn token), "last"
    (only the last reply) or "all" (every token).
    """
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
    segments = _segments(tokenizer, messages, tools, add_generation_prompt)
    pieces = _tokenize_pieces(tokenizer, [text for text, _ in segments])
    last_reply = max((k for k, (_, kind) in enumerate(segments) if kind == "reply"), default=-1)
    special_ids = set(tokenizer.all_special_ids)

    encoded = Encoded()
    for k, ((_, kind), ids) in enumerate(zip(segments, pieces)):
        encoded.input_ids.extend(ids)
        if train_on == "all":
            encoded.labels.extend(ids)
        elif kind == "reply" and (train_on == "assistant" or k == last_reply):
            encoded.labels.extend(_reply_labels(ids, special_ids))
        else:
            encoded.labels.extend([IGNORE_INDEX] * len(ids))
    return encoded


def encode_prompt(tokenizer, messages: list[dict], tools: Any = None) -> list[int]:
    """Token ids for generation: the conversation so far plus the generation prompt."""
    segments = _segments(tokenizer, messages, tools, add_generation_prompt=True)
    pieces = _tokenize_pieces(tokenizer, [text for text, _ in segments])
    return [token for ids in pieces for token in ids]


def render_prompt(tokenizer, messages: list[dict], tools: Any = None) -> str:
    """The prompt text that :func:`encode_prompt` tokenizes (for logs and debugging)."""
    return "".join(text for text, _ in _segments(tokenizer, messages, tools, add_generation_prompt=True))


def encode_text(tokenizer, text: str, *, add_eos: bool = True) -> Encoded:
    """Tokens of a plain document (the ``text`` kind), every token trained on.

    The tokenizer adds its bos token if it is configured to (Llama-style tokenizers do; SmolLM2's
    does not); eos is appended so the model learns where documents end.
    """
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    eos = tokenizer.eos_token_id
    if add_eos and eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return Encoded(input_ids=ids, labels=list(ids))


# ----------------------------------------------------------------------------- counting

_TOKENIZERS: dict[str, Any] = {}


def cached_tokenizer(tokenizer_dir: str | Path):
    """The tokenizer of ``tokenizer_dir``, loaded once per process (shared; do not modify it)."""
    key = str(Path(tokenizer_dir).resolve())
    if key not in _TOKENIZERS:
        from oikyo.models.loading import load_tokenizer

        _TOKENIZERS[key] = load_tokenizer(key)
    return _TOKENIZERS[key]


def row_kind(row: dict) -> str:
    """The dataset kind of a canonical row: "preference", "conversations" or "text"."""
    if row.get("chosen") is not None:
        return "preference"
    if row.get("messages") is not None:
        return "conversations"
    if row.get("text") is not None:
        return "text"
    raise ValueError("row has neither messages nor text")


class TokenCounter:
    """Counts tokens of canonical rows with one tokenizer; cheap to pickle to worker processes.

    Only the folder path is pickled; the tokenizer loads on first use, once per process.
    ``counter(row)`` is the length the trainer will see: a conversation's encoded length, a text's
    length with eos, or for a preference row the longer of prompt+chosen and prompt+rejected.
    """

    def __init__(self, tokenizer_dir: str | Path):
        self.tokenizer_dir = str(tokenizer_dir)
        self._tokenizer = None

    def __getstate__(self) -> dict:
        # Everything but the loaded tokenizer (callers may attach attributes such as context_length).
        return {**self.__dict__, "_tokenizer": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = cached_tokenizer(self.tokenizer_dir)
        return self._tokenizer

    def __call__(self, row: dict) -> int:
        kind = row_kind(row)
        tokenizer = self.tokenizer
        if kind == "text":
            return len(encode_text(tokenizer, row["text"]))
        messages, tools = list(row["messages"]), row.get("tools")
        if kind == "conversations":
            return len(encode_conversation(tokenizer, messages, tools=tools))
        return max(
            len(encode_conversation(tokenizer, messages + [{"role": "assistant", "content": reply}], tools=tools))
            for reply in (row["chosen"], row["rejected"] or "")
        )

    def text(self, s: str) -> int:
        """Tokens in a plain string (no special tokens added)."""
        return len(_tokenize_pieces(self.tokenizer, [s])[0])
