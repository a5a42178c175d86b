"""Per-request logit processing and log-probabilities: logit bias, penalties, structured outputs.

A request that asks for any of these gets a :class:`RowLogits` (on its ``RowSampling.logits``);
plain requests get none, and :func:`oikyo.serve.engine.sampling.choose_tokens` then does nothing
beyond one check. Before its token is chosen, a row's logits go through, in order:

1. ``logit_bias``: ``logits[token] += bias`` (OpenAI's -100..100; -100 in effect bans a token);
2. presence and frequency penalties over the tokens generated so far, OpenAI's definition:
   ``logits[t] -= presence * (count[t] > 0) + frequency * count[t]``;
3. the grammar mask of a structured output (:mod:`oikyo.serve.engine.grammar`): forbidden
   tokens get -inf.

Temperature and top-p apply after that, in :mod:`oikyo.serve.engine.sampling`.

Log-probabilities are those of the model's raw distribution: ``log_softmax`` of the logits as the
model computed them, before bias, penalties, grammar mask, temperature and top-p. That is vLLM's
default (``logprobs_mode="raw_logprobs"``), so the two engines report the same numbers, and a
token's figure says how likely the model itself found it whatever the request's settings::

    row = RowLogits(logit_bias={198: -100.0}, frequency_penalty=0.5, top_logprobs=3, token_text=decode)
    row.process_(scores[i])              # (vocab,) float32, adjusted in place before the token is chosen
    entry = row.accept(token)            # TokenLogprob of the chosen token (None without logprobs)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from oikyo.serve.engine.grammar import RowGrammar
from oikyo.serve.engine.requests import TokenLogprob


class RowLogits:
    """What one request changes in its logits, and the state that needs (counts, grammar position).

    ``top_logprobs``: None reports no log-probabilities; k >= 0 reports the chosen token's and
    the k most likely tokens' at every step; ``token_text`` names a token (id -> text) in those entries.
    """

    def __init__(self, *, logit_bias: dict[int, float] | None = None, presence_penalty: float = 0.0,
                 frequency_penalty: float = 0.0, grammar: RowGrammar | None = None, top_logprobs: int | None = None,
                 token_text: Callable[[int], str] = str):
        self.bias = dict(logit_bias or {})
        self.presence = presence_penalty
        self.frequency = frequency_penalty
        self.grammar = grammar
        self.top_logprobs = top_logprobs
        self.token_text = token_text
        self._bias_ids: torch.Tensor | None = None
        self._bias_values: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None  # (vocab,) times each token was generated (penalties only)
        self._raw: torch.Tensor | None = None  # (vocab,) this step's raw log-probabilities
        self._top: list[TokenLogprob] = []

    @property
    def penalized(self) -> bool:
        return bool(self.presence or self.frequency)

    def process_(self, scores: torch.Tensor) -> None:
        """Adjust this row's float32 logits in place (after reading its raw log-probabilities). scores: (vocab,)."""
        if self.top_logprobs is not None:
            self._raw = torch.log_softmax(scores, dim=-1)
            if self.top_logprobs:
                values, ids = self._raw.topk(self.top_logprobs)
                self._top = [TokenLogprob(i, self.token_text(i), v) for i, v in zip(ids.tolist(), values.tolist())]
        if self.bias:
            if self._bias_ids is None:
                self._bias_ids = torch.tensor(list(self.bias), device=scores.device)
                self._bias_values = torch.tensor(list(self.bias.values()), dtype=scores.dtype, device=scores.device)
            scores.index_add_(0, self._bias_ids, self._bias_values)
        if self.penalized:
            if self._counts is None:
                self._counts = torch.zeros_like(scores)
            scores -= self.presence * (self._counts > 0) + self.frequency * self._counts
        if self.grammar is not None:
            self.grammar.mask_(scores)

    def accept(self, token: int) -> TokenLogprob | None:
        """Record the chosen token: counts, grammar position; its log-probability entry when asked for."""
        if self._counts is not None:
            self._counts[token] += 1
        if self.grammar is not None:
            self.grammar.advance(token)
        if self._raw is None:
            return None
        entry = TokenLogprob(token, self.token_text(token), float(self._raw[token]), self._top)
        self._raw, self._top = None, []
        return entry

    @property
    def complete(self) -> bool:
        """The structured output is complete: the row must end."""
        return self.grammar is not None and self.grammar.complete
