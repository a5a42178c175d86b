"""Incremental detokenization: streamed deltas, stop strings held back and cut, multi-byte characters."""

from __future__ import annotations

import pytest

from oikyo.serve.engine.detokenize import TextTracker


@pytest.fixture(scope="module")
def tokenizer(serve_tokenizer_dir):
    from oikyo.models.loading import load_tokenizer

    return load_tokenizer(serve_tokenizer_dir)


def _feed(tracker: TextTracker, ids: list[int]) -> list[str]:
    deltas = []
    for token in ids:
        stopped = tracker.add(token)
        deltas.append(tracker.take_delta(final=stopped))
        if stopped:
            break
    else:
        tracker.flush()
        deltas.append(tracker.take_delta(final=True))
    return [d for d in deltas if d]


def test_deltas_join_to_the_decoded_text(tokenizer):
    text = "Hello world, this is a test of streaming text.\nSecond line."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    tracker = TextTracker(tokenizer)
    deltas = _feed(tracker, ids)
    assert "".join(deltas) == tracker.text == tokenizer.decode(ids)
    assert len(deltas) > 5


def test_multibyte_characters_are_never_split(tokenizer):
    text = "Smile 😀 and 日本語 done"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # the emoji and the CJK characters span several byte tokens
    tracker = TextTracker(tokenizer)
    deltas = _feed(tracker, ids)
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text


def test_stop_string_is_cut_and_never_streamed(tokenizer):
    text = "The answer is 42.\n\nUser: more"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    tracker = TextTracker(tokenizer, stop=["\n\nUser:"])
    deltas = _feed(tracker, ids)
    assert tracker.stopped
    assert tracker.text == "The answer is 42."
    assert "".join(deltas) == "The answer is 42."
    assert not any("\n" in d for d in deltas)  # the stop string's start was held back, then dropped


def test_held_back_text_is_released_when_it_is_not_a_stop(tokenizer):
    text = "Use \n\nnot a stop"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    tracker = TextTracker(tokenizer, stop=["\n\nUser:"])
    deltas = _feed(tracker, ids)
    assert not tracker.stopped
    assert "".join(deltas) == text


def test_special_tokens_do_not_reach_the_text(tokenizer):
    ids = tokenizer("Hi", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    tracker = TextTracker(tokenizer)
    assert "".join(_feed(tracker, ids)) == "Hi"
