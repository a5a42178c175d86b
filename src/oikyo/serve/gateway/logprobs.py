"""Log-probabilities in OpenAI's two response shapes, from the engine's TokenLogprob entries.

Chat (``logprobs: true``, ``top_logprobs: k``)::

    {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
                  "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}, ...]}, ...],
     "refusal": null}

Text completions (``logprobs: k``, the legacy shape)::

    {"tokens": ["Hi", ...], "token_logprobs": [-0.1, ...], "top_logprobs": [{"Hi": -0.1, ...}, ...],
     "text_offset": [0, ...]}

where each ``top_logprobs`` dict holds the k most likely tokens plus the chosen one (as OpenAI:
"up to logprobs + 1 elements"), and ``text_offset`` is each token's character offset in the
completion's text. With ``echo`` the prompt's tokens come first, the first one with null
log-probabilities (nothing precedes it). The figures are the model's raw distribution (see
:mod:`oikyo.serve.engine.logits`); ``bytes`` are the UTF-8 bytes of the token's decoded text.
A streamed response carries, in each chunk, the entries of the tokens behind that chunk's text.
"""

from __future__ import annotations

from oikyo.serve.engine.requests import TokenLogprob


def chat_logprobs(entries: list[TokenLogprob] | None) -> dict | None:
    """A chat choice's ``logprobs`` (None when the request did not ask for them)."""
    if entries is None:
        return None
    return {"content": [{**_chat_token(e), "top_logprobs": [_chat_token(t) for t in e.top]} for e in entries],
            "refusal": None}


def _chat_token(entry: TokenLogprob) -> dict:
    return {"token": entry.token, "logprob": entry.logprob, "bytes": list(entry.token.encode("utf-8"))}


def completion_logprobs(entries: list[TokenLogprob] | None, text_offset: int = 0) -> dict | None:
    """A completion choice's legacy ``logprobs``; ``text_offset``: where the first token starts (a stream's
    later chunks continue from the characters already sent)."""
    if entries is None:
        return None
    offsets = []
    for entry in entries:
        offsets.append(text_offset)
        text_offset += len(entry.token)
    return {"tokens": [e.token for e in entries], "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{**{t.token: t.logprob for t in e.top}, e.token: e.logprob} for e in entries],
            "text_offset": offsets}


def echoed_logprobs(first_token: str, prompt_entries: list[TokenLogprob], entries: list[TokenLogprob] | None) -> dict:
    """An echoed completion's legacy ``logprobs``: the prompt's tokens (the first, ``first_token``, with
    null figures; then ``prompt_entries``), then the generated ``entries``."""
    body = completion_logprobs([TokenLogprob(-1, first_token, 0.0), *prompt_entries, *(entries or [])])
    body["token_logprobs"][0] = None
    body["top_logprobs"][0] = None
    return body
