"""Structured outputs: constrain a row's tokens to a JSON schema with llguidance.

llguidance (the grammar engine vLLM and SGLang also use) compiles a JSON schema into a grammar,
and a per-request matcher says, before each step, which tokens may come next (a bitmask over the
vocabulary, computed in Rust in well under a millisecond), then advances with the token that was
chosen. oikyo writes no grammar logic of its own::

    grammar = json_grammar({"type": "object", "properties": {...}})   # GrammarError when invalid
    request = GenerationRequest(prompt_ids, grammar=grammar)              # the engine makes the matcher
    framed = lark_grammar(f'start: "<tool_call>" call "</tool_call>"\\ncall: {inline_json(schema)}')

The engine keeps one :class:`Grammars` (the tokenizer converted once, lazily: ~1 s) and gives each
constrained request a :class:`RowGrammar`. End-of-sequence tokens are allowed only once the JSON
is complete, and the row ends as soon as the grammar can take nothing more. Generated JSON is
compact (no whitespace between tokens), which keeps a model from wandering in whitespace.

:func:`lark_grammar` compiles llguidance's Lark-like syntax (its "Syntax of LLGuidance Grammars"): text
around JSON, as tool calls are framed (``<tool_call>...</tool_call>``). There ``%json {...}`` embeds a
schema (:func:`inline_json` keeps it compact), and ``<[id]>`` matches one token by id: llguidance
counts every added token of a tokenizer as special, so a quoted literal never matches one (worse, a
literal that spells one makes the matcher offer that token, then refuse it).
"""

from __future__ import annotations

import json
import logging
import threading

import torch

log = logging.getLogger(__name__)

# Compact JSON: no free whitespace (a weak model could otherwise emit spaces until max_tokens).
COMPILE_OPTIONS = {"whitespace_flexible": False}
# What response_format {"type": "json_object"} asks for: any JSON object.
ANY_OBJECT = {"type": "object"}


class GrammarError(ValueError):
    """A schema llguidance cannot turn into a grammar (the message says why)."""


def json_grammar(schema: dict | None = None) -> str:
    """The llguidance grammar for JSON following ``schema`` (None: any JSON object); GrammarError when invalid."""
    import llguidance

    if schema is None:
        schema = ANY_OBJECT
    if not isinstance(schema, dict):
        raise GrammarError("the JSON schema must be a JSON object")
    return _compiled(lambda: llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema),
                                                                           defaults=COMPILE_OPTIONS), "JSON schema")


def inline_json(schema: dict) -> str:
    """``schema`` as a ``%json {...}`` item of a Lark grammar, compact like :func:`json_grammar`'s output."""
    return "%json " + json.dumps({**schema, "x-guidance": COMPILE_OPTIONS})


def lark_grammar(lark: str) -> str:
    """The llguidance grammar of a Lark-like text (see the module docstring); GrammarError when it does not compile."""
    import llguidance

    return _compiled(lambda: llguidance.LLMatcher.grammar_from_lark(lark), "grammar")


def _compiled(compile_grammar, what: str) -> str:
    """The grammar ``compile_grammar()`` returns, validated by llguidance; GrammarError("invalid <what>: ...")."""
    import llguidance

    try:
        grammar = compile_grammar()
    except (ValueError, TypeError) as error:
        raise GrammarError(f"invalid {what}: {error}") from None
    problem = llguidance.LLMatcher.validate_grammar(grammar)
    if problem:
        raise GrammarError(f"invalid {what}: {problem}")
    return grammar


class Grammars:
    """Matchers for one engine's tokenizer: the llguidance tokenizer is built on first use, then shared."""

    def __init__(self, tokenizer, vocab_size: int, eos_token_ids: set[int]):
        self._hf_tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos = sorted(eos_token_ids)
        self._tokenizer = None
        self._lock = threading.Lock()

    def _ll_tokenizer(self):
        with self._lock:
            if self._tokenizer is None:
                import llguidance.hf

                eos = self._eos or None
                self._tokenizer = llguidance.hf.from_tokenizer(self._hf_tokenizer, n_vocab=self._vocab_size,
                                                               eos_token=eos)
            return self._tokenizer

    def matcher(self, grammar: str) -> RowGrammar:
        """A fresh matcher for ``grammar`` (from :func:`json_grammar` or :func:`lark_grammar`); GrammarError if it
        does not compile."""
        import llguidance

        matcher = llguidance.LLMatcher(self._ll_tokenizer(), grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(f"invalid grammar: {matcher.get_error()}")
        return RowGrammar(matcher, self._vocab_size)


class RowGrammar:
    """One request's position in its grammar."""

    def __init__(self, matcher, vocab_size: int):
        self._matcher = matcher
        self._vocab_size = vocab_size

    def mask_(self, logits: torch.Tensor) -> None:
        """Set the logits of every token the grammar forbids now to -inf, in place. logits: (vocab,)."""
        # One byte per token of llguidance's vocabulary: 0 forbidden, 200 allowed.
        allowed = torch.frombuffer(bytearray(self._matcher.compute_logit_bias()), dtype=torch.uint8)
        forbidden = allowed[: self._vocab_size] == 0  # (vocab,)
        logits.masked_fill_(forbidden.to(logits.device), float("-inf"))

    def advance(self, token: int) -> None:
        """Take the chosen token (one the mask allowed; a refused one leaves the matcher in error: complete)."""
        if not self._matcher.consume_token(token):
            log.warning("the grammar refused token %d (%s); ending the row", token, self._matcher.get_error())

    @property
    def complete(self) -> bool:
        """True once nothing more can follow (the JSON value is closed, or an end token was taken)."""
        return self._matcher.is_stopped() or self._matcher.is_error()
