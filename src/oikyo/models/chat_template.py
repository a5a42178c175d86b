"""THE one place that turns canonical conversations into tokens (training, evaluation and serving).

Every conversation is rendered with the tokenizer's own Jinja chat template, so a fine-tuned model
sees exactly the format its base model was taught. Training and serving share one code path::

    enc = encode_conversation(tokenizer, messages)          # Encoded(input_ids, labels, weights)
    ids = encode_prompt(tokenizer, messages[:-1])           # what serving feeds to generate()

and ``enc.input_ids`` up to the start of the last assistant reply equals ``ids`` token for token.

Role mapping (canonical schema -> template):

- ``system``, ``user``, ``assistant``: unchanged.
- ``tool_call``: an ``assistant`` turn carrying the call the way the template writes calls when it
  has a convention (it renders a message's ``tool_calls``: Qwen's ``<tool_call>`` blocks, Llama 3.1's
  JSON with ``parameters``...; probed once with a sentinel call), so a model is trained on, and
  shown in served histories, the format its family writes; otherwise (SmolLM2) an ``assistant``
  turn whose content is the call's JSON text ``{"name", "arguments"}`` unchanged, the format the
  tools system message asks for. Either way the serving gateway reads such calls back as OpenAI
  ``tool_calls`` (:mod:`oikyo.serve.gateway.tool_calls`).
- ``tool``: the role ``tool`` when the template renders it (SmolLM2's ChatML template writes any role
  verbatim as ``<|im_start|>tool``); otherwise a ``user`` turn whose content starts with
  ``Tool result:`` (for templates that reject unknown roles).
- Tool definitions (``tools``, JSON text or a list of dicts) go to the template's ``tools`` variable
  when the template uses one; otherwise (SmolLM2) they are described in the system message.

Reasoning traces (the ``reasoning`` field of an assistant or tool_call message) render the way the
model's own template renders them. The template is probed once, with a sentinel, for the message
key it reads reasoning from: ``reasoning_content`` (Qwen3, DeepSeek), ``thinking`` (gpt-oss) or
``reasoning``; the first key whose value appears before the content in the rendering is used (recent
transformers also copy each of these keys into the others before rendering; the probe does not rely
on it).
Templates without one (SmolLM2's ChatML) get the documented default: the reply's content becomes
``"<think>\n{reasoning}\n</think>\n\n{content}"`` (:data:`DEFAULT_REASONING`, the trace's outer
whitespace stripped, as Qwen3's template does). A template that drops the reasoning of a turn
(some drop it for earlier turns) is refused with :class:`TemplateError` rather than trained on text
the model never sees. An empty or whitespace-only reasoning is no reasoning.

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
``tokenizer.apply_chat_template(..., tokenize=True)`` (tested). A reply with reasoning is cut once
more, right after its rendered reasoning (and the text the template writes to close it, such as
``</think>\n\n``): the reasoning part and the answer part are tokenized apart, whether or not the
reasoning is learned, so the tokens never depend on ``loss_on_reasoning`` and serving (which
tokenizes the same pieces) still sees the training tokens.

Trained on (labels != -100): the content of every assistant/tool_call turn and its end-of-turn token
(the last special token of the reply piece; SmolLM2's newline after ``<|im_end|>`` is not trained
on), its reasoning part too unless ``loss_on_reasoning=False``. Labels are not shifted: the model
shifts them itself.

Per-message loss weights (the ``weight`` field of an assistant or tool_call message, a non-negative
number): an explicit weight on a turn wins over ``train_on`` for that turn. Weight 0: the turn (its
reasoning included) is not trained on, even with ``train_on="all"``. A weight w > 0: the turn is
trained on, even when ``train_on="last"`` would skip it, and each of its tokens counts w times in
the loss (``Encoded.weights``; prompt tokens trained with ``train_on="all"`` count once). A weight
of 1, or none, is the default, and an example whose trained tokens all weigh 1 carries no weights
at all (``Encoded.weights is None``), so unweighted data takes the unweighted fast path.
``use_weights=False`` ignores the field (the preference recipes, whose loss is on the final reply).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

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
# Reply content for reasoning when the template reads no reasoning key (see the module docstring).
DEFAULT_REASONING = "<think>\n{reasoning}\n</think>\n\n{content}"
_DEFAULT_REASONING_END = "\n</think>\n\n"  # what DEFAULT_REASONING writes between reasoning and content
# Message keys templates read reasoning from, tried in this order.
REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")
_SENTINEL = "oikyo-sentinel-7f3a"
_ANSWER_SENTINEL = "oikyo-answer-5c1e"


class TemplateError(ValueError):
    """The tokenizer's chat template cannot encode this conversation safely."""


@dataclass
class Encoded:
    """Token ids of one example and their training labels (``IGNORE_INDEX`` where not trained on).

    ``weights``: each token's loss weight (0.0 where the label is ``IGNORE_INDEX``), or None when
    every trained token weighs 1 (the common case; see the per-message weights in the module docstring).
    """

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    weights: list[float] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


# ----------------------------------------------------------------------------- role mapping


@dataclass(frozen=True)
class _TemplateTraits:
    renders_tool_role: bool  # a "tool" message renders (not rejected, content kept)
    renders_tool_calls: bool  # an assistant message's `tool_calls` render (the template has a call format)
    renders_system: bool  # a "system" message renders
    uses_tools: bool  # the template reads the `tools` variable
    reasoning_key: str | None  # the message key the template renders reasoning from (None: DEFAULT_REASONING)
    reasoning_end: str  # the text the template writes between a reasoning trace and the content


class _Reply(NamedTuple):
    """What a mapped message that the model produced carries besides its text."""

    reasoning: str | None  # the reasoning trace, as in the canonical message (None: none)
    weight: float | None  # the explicit loss weight (None: the default from train_on)


class _Piece(NamedTuple):
    """A piece of the rendered conversation, tokenized on its own."""

    text: str
    kind: str  # "prompt", "reasoning" (a reply's reasoning part) or "reply" (its answer part)
    turn: int  # index of the mapped message a reasoning/reply piece belongs to (-1 for prompts)
    weight: float | None  # the reply's explicit weight


def template_source(tokenizer) -> str | None:
    """The text of the tokenizer's chat template (the default one of several named ones); None without one."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: use the default one
        template = template.get("default") or next(iter(template.values()), None)
    return template or None


def _template_text(tokenizer) -> str:
    template = template_source(tokenizer)
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
        call_probe = [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [_template_call(_SENTINEL, {}, "probe")]},
        ]
        _TRAITS[key] = _TemplateTraits(
            renders_tool_role=_renders(tokenizer, tool_probe),
            renders_tool_calls=_renders(tokenizer, call_probe),
            renders_system=_renders(tokenizer, system_probe),
            uses_tools=re.search(r"\btools\b", template) is not None,
            **_probe_reasoning(tokenizer),
        )
    return _TRAITS[key]


def _probe_reasoning(tokenizer) -> dict:
    """The key the template reads reasoning from, and what it writes between reasoning and content.

    A key counts only when its sentinel value is rendered before the content's sentinel: the
    reasoning part of a reply must come first for it to be cut off (and masked) on its own.
    """
    for name in REASONING_KEYS:
        probe = [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": _ANSWER_SENTINEL, name: _SENTINEL},
        ]
        try:
            text = tokenizer.apply_chat_template(probe, tokenize=False)
        except Exception:  # a template may reject unexpected keys; that means "not this key"
            continue
        start = text.find(_SENTINEL)
        answer = text.find(_ANSWER_SENTINEL, start + len(_SENTINEL)) if start >= 0 else -1
        if answer >= 0:
            return {"reasoning_key": name, "reasoning_end": text[start + len(_SENTINEL) : answer]}
    return {"reasoning_key": None, "reasoning_end": _DEFAULT_REASONING_END}


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


def _map_messages(
    tokenizer, messages: list[dict], tools: Any
) -> tuple[list[dict], list[_Reply | None], list | None]:
    """Like :func:`to_template_messages`, plus for each mapped message its :class:`_Reply` (None: not a reply)."""
    traits = _traits(tokenizer)
    out: list[dict] = []
    replies: list[_Reply | None] = []
    for index, message in enumerate(messages):
        role, content = message["role"], message.get("content") or ""
        reply = _reply_fields(message, index)
        if role == "tool_call":
            role = "assistant"
        elif role == "tool" and not traits.renders_tool_role:
            role, content = "user", TOOL_RESULT_PREFIX + content
        elif role not in ("system", "user", "assistant", "tool"):
            raise TemplateError(f"unknown role {role!r}")
        mapped = {"role": role, "content": content}
        if message["role"] == "tool_call" and traits.renders_tool_calls:
            mapped = {"role": "assistant", "content": "", "tool_calls": [_native_call(message, index)]}
        if reply is not None and reply.reasoning is not None:
            if traits.reasoning_key is not None:
                mapped[traits.reasoning_key] = reply.reasoning
            else:
                mapped["content"] = DEFAULT_REASONING.format(reasoning=reply.reasoning.strip(),
                                                             content=mapped["content"])
        out.append(mapped)
        replies.append(reply)

    tool_list = parse_tools(tools)
    template_tools = tool_list if tool_list and traits.uses_tools else None
    if tool_list and not traits.uses_tools:
        description = TOOLS_SYSTEM_PROMPT.format(tools=json.dumps(tool_list, ensure_ascii=False, indent=1))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + description}
        else:
            out.insert(0, {"role": "system", "content": description})
            replies.insert(0, None)
    if not traits.renders_system and out and out[0]["role"] == "system":
        # Templates without a system role (e.g. Gemma): fold it into the first user turn.
        system = out.pop(0)["content"]
        replies.pop(0)
        if out and out[0]["role"] == "user":
            out[0] = {"role": "user", "content": system + "\n\n" + out[0]["content"]}
        else:
            out.insert(0, {"role": "user", "content": system})
            replies.insert(0, None)
    return out, replies, template_tools


def _template_call(name: str, arguments: Any, call_id: str) -> dict:
    """One entry of a message's ``tool_calls`` as chat templates read it (arguments as a dict, as in
    Hugging Face's convention; the id as 9 letters and digits, which Mistral's templates require)."""
    short_id = hashlib.sha256(call_id.encode()).hexdigest()[:9]
    return {"id": short_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _native_call(message: dict, index: int) -> dict:
    """A canonical tool_call turn (content: JSON text ``{"name", "arguments"}``) as a ``tool_calls`` entry."""
    try:
        call = json.loads(message.get("content") or "")
    except ValueError:
        call = None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise TemplateError(f'message {index}: a tool_call\'s content must be JSON text {{"name": ..., "arguments": ...}}')
    return _template_call(call["name"], call.get("arguments", {}), message.get("tool_call_id") or str(index))


def _reply_fields(message: dict, index: int) -> _Reply | None:
    """The reasoning and weight of a model turn (None for other roles, which may carry neither)."""
    reasoning, weight = message.get("reasoning"), message.get("weight")
    if reasoning is not None and not isinstance(reasoning, str):
        raise TemplateError(f"message {index}: reasoning must be text, got {type(reasoning).__name__}")
    reasoning = reasoning if reasoning and reasoning.strip() else None
    if message["role"] not in ASSISTANT_ROLES:
        if reasoning is not None or weight is not None:
            raise TemplateError(
                f"message {index} ({message['role']}): reasoning and weight belong on assistant or tool_call turns"
            )
        return None
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise TemplateError(f"message {index}: weight must be a non-negative number, got {weight!r}")
        weight = float(weight)
    return _Reply(reasoning, weight)


# ----------------------------------------------------------------------------- rendering


def _render(tokenizer, messages: list[dict], tools, add_generation_prompt: bool) -> str:
    if not messages:
        if add_generation_prompt:
            raise TemplateError("cannot build a prompt from an empty conversation")
        return ""
    from jinja2 import TemplateError as JinjaError

    try:
        return tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False
        )
    except JinjaError as error:  # the template's own raise_exception(...), or a template bug
        raise TemplateError(f"the chat template refused this conversation: {error}") from error


def _extend(previous: str, current: str, where: str) -> str:
    """The text ``current`` adds to ``previous``; TemplateError when it does not extend it."""
    if not current.startswith(previous):
        raise TemplateError(
            f"the chat template is not prefix-stable at {where}: rendering more messages changed the text "
            "of earlier ones, so the loss mask cannot be derived safely"
        )
    return current[len(previous) :]


def _reply_pieces(text: str, turn: int, reply: _Reply, reasoning_end: str) -> list[_Piece]:
    """One reply's text as pieces: its answer, preceded by its reasoning part when it has reasoning.

    The reasoning part runs from the start of the reply to the end of the rendered reasoning plus
    the closing text the template writes after it (``reasoning_end``, e.g. ``\n</think>\n\n``), so
    it holds the opening and closing markers too. Templates may strip the trace's outer whitespace,
    so the stripped trace is searched for, followed (after optional whitespace) by the closing text.
    """
    if reply.reasoning is None:
        return [_Piece(text, "reply", turn, reply.weight)]
    trace = reply.reasoning.strip()
    found = re.search(re.escape(trace) + r"\s*" + re.escape(reasoning_end), text) if reasoning_end.strip() else None
    if found is not None:
        end = found.end()
    elif trace in text:  # the template closes the trace with whitespace only (or writes nothing)
        end = text.index(trace) + len(trace)
    else:
        raise TemplateError(
            f"the chat template does not render the reasoning of message {turn} where a reply is written "
            "(some templates drop the reasoning of earlier turns); the model would be trained on text it "
            "never sees. Remove the reasoning from such turns or use a template that keeps it"
        )
    return [_Piece(text[:end], "reasoning", turn, reply.weight), _Piece(text[end:], "reply", turn, reply.weight)]


def _segments(tokenizer, messages: list[dict], tools, add_generation_prompt: bool) -> list[_Piece]:
    """Split the rendered conversation into text pieces: prompt, then (reasoning,) reply, and so on.

    A "reply" piece is one assistant turn's content plus the template's end-of-turn text, preceded
    by a "reasoning" piece when the turn has reasoning; the text between replies is one "prompt"
    piece. Joining the texts gives exactly the full rendering. Rendering happens only where a reply
    starts or ends (and at the end), each rendering checked to extend the previous one.
    """
    mapped, replies, template_tools = _map_messages(tokenizer, messages, tools)
    reasoning_end = _traits(tokenizer).reasoning_end
    pieces: list[_Piece] = []
    text = ""
    for i, reply in enumerate(replies):
        if reply is None:
            continue
        if i == 0:
            raise TemplateError("a conversation cannot start with an assistant turn")
        prompt = _render(tokenizer, mapped[:i], template_tools, add_generation_prompt=True)
        added = _extend(text, prompt, f"message {i} (generation prompt)")
        if added:
            pieces.append(_Piece(added, "prompt", -1, None))
        text = _render(tokenizer, mapped[: i + 1], template_tools, add_generation_prompt=False)
        pieces.extend(_reply_pieces(_extend(prompt, text, f"message {i}"), i, reply, reasoning_end))
    if add_generation_prompt or not (replies and replies[-1] is not None):
        final = _render(tokenizer, mapped, template_tools, add_generation_prompt=add_generation_prompt)
        added = _extend(text, final, "the end of the conversation")
        if added:
            pieces.append(_Piece(added, "prompt", -1, None))
    return pieces


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
    loss_on_reasoning: bool = True,
    use_weights: bool = True,
) -> Encoded:
    """Tokens, labels and (when some trained token does not weigh 1) loss weights of a conversation.

    ``train_on``: "assistant" (every assistant/tool_call reply and its end-of-turn token), "last"
    (only the last reply) or "all" (every token). ``loss_on_reasoning=False``: the reasoning part of
    every reply is not trained on, whatever ``train_on`` and the weights say (the answer after it
    is). ``use_weights``: honour the messages' ``weight`` fields (see the module docstring).
    """
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
    pieces = _segments(tokenizer, messages, tools, add_generation_prompt)
    token_lists = _tokenize_pieces(tokenizer, [piece.text for piece in pieces])
    last_reply = max((piece.turn for piece in pieces if piece.kind != "prompt"), default=-1)
    special_ids = set(tokenizer.all_special_ids)
    weighted = use_weights and any(piece.weight not in (None, 0.0, 1.0) for piece in pieces)

    encoded = Encoded(weights=[] if weighted else None)
    for piece, ids in zip(pieces, token_lists):
        weight = piece.weight if use_weights else None
        if piece.kind == "prompt":
            trained = train_on == "all"
        elif weight is not None:  # an explicit weight wins over train_on
            trained = weight > 0
        else:
            trained = train_on != "last" or piece.turn == last_reply
        if piece.kind == "reasoning" and not loss_on_reasoning:
            trained = False
        if not trained:
            labels = [IGNORE_INDEX] * len(ids)
        elif piece.kind == "reply" and train_on != "all":
            labels = _reply_labels(ids, special_ids)
        else:
            labels = list(ids)
        encoded.input_ids.extend(ids)
        encoded.labels.extend(labels)
        if weighted:
            scale = weight if weight is not None else 1.0
            encoded.weights.extend(0.0 if label == IGNORE_INDEX else scale for label in labels)
    return encoded


def encode_prompt(tokenizer, messages: list[dict], tools: Any = None) -> list[int]:
    """Token ids for generation: the conversation so far plus the generation prompt."""
    pieces = _segments(tokenizer, messages, tools, add_generation_prompt=True)
    return [token for ids in _tokenize_pieces(tokenizer, [piece.text for piece in pieces]) for token in ids]


def render_prompt(tokenizer, messages: list[dict], tools: Any = None) -> str:
    """The prompt text that :func:`encode_prompt` tokenizes (for logs and debugging)."""
    return "".join(piece.text for piece in _segments(tokenizer, messages, tools, add_generation_prompt=True))


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
    """The dataset kind of a canonical row: "preference", "unpaired_preference", "conversations" or "text"."""
    if row.get("chosen") is not None:
        return "preference"
    if row.get("desirable") is not None:
        return "unpaired_preference"
    if row.get("messages") is not None:
        return "conversations"
    if row.get("text") is not None:
        return "text"
    raise ValueError("row has neither messages nor text")


class TokenCounter:
    """Counts tokens of canonical rows with one tokenizer; cheap to pickle to worker processes.

    Only the folder path is pickled; the tokenizer loads on first use, once per process.
    ``counter(row)`` is the length the trainer will see: a conversation's encoded length (an
    unpaired preference row is its conversation), a text's length with eos, or for a preference row
    the longer of prompt+chosen and prompt+rejected.
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
        if kind in ("conversations", "unpaired_preference"):
            return len(encode_conversation(tokenizer, messages, tools=tools))
        return max(
            len(encode_conversation(tokenizer, messages + [{"role": "assistant", "content": reply}], tools=tools))
            for reply in (row["chosen"], row["rejected"] or "")
        )

    def text(self, s: str) -> int:
        """Tokens in a plain string (no special tokens added)."""
        return len(_tokenize_pieces(self.tokenizer, [s])[0])
