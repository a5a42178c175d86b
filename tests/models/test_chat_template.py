"""The one conversation -> tokens path: loss masks, train/serve identity, tool turns, counting."""

from __future__ import annotations

import json
import pickle

import pytest

from oikyo.models.chat_template import (
    IGNORE_INDEX,
    TemplateError,
    TokenCounter,
    encode_conversation,
    encode_prompt,
    encode_text,
    render_prompt,
    to_template_messages,
)
from oikyo.models.loading import load_tokenizer

MULTI_TURN = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?\n\nOne word."},
    {"role": "assistant", "content": " Rome, of course.\n"},
]
WEATHER_TOOLS = json.dumps(
    [{"name": "weather", "description": "Current weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
)
TOOL_TURNS = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "tool_call", "content": '{"name": "weather", "arguments": {"city": "Paris"}}'},
    {"role": "tool", "content": '{"celsius": 21}'},
    {"role": "assistant", "content": "It is 21 °C in Paris."},
]


def labelled_runs(tokenizer, encoded) -> list[str]:
    """Decode each contiguous run of trained-on tokens."""
    runs, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token  # labels are not shifted
            current.append(token)
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def reply_starts(encoded) -> list[int]:
    """Indices where a trained-on run begins."""
    labels = [IGNORE_INDEX] + encoded.labels
    return [k for k in range(len(encoded.labels)) if labels[k] == IGNORE_INDEX and labels[k + 1] != IGNORE_INDEX]


def fresh_tokenizer(folder, template: str):
    tokenizer = load_tokenizer(folder)
    tokenizer.chat_template = template
    return tokenizer


# ----------------------------------------------------------------------------- loss mask


def test_loss_mask_covers_exactly_the_assistant_contents(bundled_tokenizer):
    enc = encode_conversation(bundled_tokenizer, MULTI_TURN)
    eot = bundled_tokenizer.eos_token  # <|im_end|>
    assert labelled_runs(bundled_tokenizer, enc) == ["Paris." + eot, " Rome, of course.\n" + eot]
    assert len(enc.input_ids) == len(enc.labels)
    # The newline the template writes after <|im_end|> is not trained on.
    assert enc.labels[-1] == IGNORE_INDEX and bundled_tokenizer.decode(enc.input_ids[-1:]) == "\n"


def test_tokens_agree_with_the_tokenizers_own_chat_template(bundled_tokenizer):
    for messages in (MULTI_TURN, MULTI_TURN[1:3]):
        mapped, _ = to_template_messages(bundled_tokenizer, messages)
        expected = bundled_tokenizer.apply_chat_template(mapped, tokenize=True, return_dict=False)
        assert encode_conversation(bundled_tokenizer, messages).input_ids == expected


def test_train_on_all_and_last(bundled_tokenizer):
    everything = encode_conversation(bundled_tokenizer, MULTI_TURN, train_on="all")
    assert everything.labels == everything.input_ids
    last = encode_conversation(bundled_tokenizer, MULTI_TURN, train_on="last")
    assert labelled_runs(bundled_tokenizer, last) == [" Rome, of course.\n<|im_end|>"]
    with pytest.raises(ValueError, match="train_on"):
        encode_conversation(bundled_tokenizer, MULTI_TURN, train_on="user")


def test_conversation_without_assistant_turn_trains_on_nothing(bundled_tokenizer):
    enc = encode_conversation(bundled_tokenizer, MULTI_TURN[:2], add_generation_prompt=True)
    assert set(enc.labels) == {IGNORE_INDEX}
    assert enc.input_ids == encode_prompt(bundled_tokenizer, MULTI_TURN[:2])


# ----------------------------------------------------------------------------- train/serve identity


@pytest.mark.parametrize("messages,tools", [(MULTI_TURN, None), (TOOL_TURNS, WEATHER_TOOLS)])
def test_training_prompt_tokens_equal_serving_prompt_tokens(bundled_tokenizer, messages, tools):
    enc = encode_conversation(bundled_tokenizer, messages, tools=tools)
    starts = reply_starts(enc)
    replies = [i for i, m in enumerate(messages) if m["role"] in ("assistant", "tool_call")]
    assert len(starts) == len(replies)
    for start, i in zip(starts, replies):
        prompt = encode_prompt(bundled_tokenizer, messages[:i], tools=tools)
        # What serving feeds the model is exactly what training conditioned this reply on.
        assert enc.input_ids[:start] == prompt


@pytest.mark.parametrize("reply", ["\n\nParis.", "  Paris.", "\n Paris.", " "])
def test_identity_holds_when_a_reply_starts_with_whitespace(bundled_tokenizer, reply):
    messages = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": reply}]
    enc = encode_conversation(bundled_tokenizer, messages)
    prompt = encode_prompt(bundled_tokenizer, messages[:1])
    assert enc.input_ids[: len(prompt)] == prompt
    assert labelled_runs(bundled_tokenizer, enc) == [reply + "<|im_end|>"]
    # Tokenizing the whole text at once would merge the prompt's last newline into the reply, so the
    # served prompt would not be a prefix of the trained tokens: this is why pieces are tokenized apart.
    mapped, _ = to_template_messages(bundled_tokenizer, messages)
    whole = bundled_tokenizer.apply_chat_template(mapped, tokenize=True, return_dict=False)
    assert whole[: len(prompt)] != prompt


def test_prompt_ends_with_the_generation_prompt(bundled_tokenizer):
    text = render_prompt(bundled_tokenizer, MULTI_TURN[:2])
    assert text.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert bundled_tokenizer.decode(encode_prompt(bundled_tokenizer, MULTI_TURN[:2])) == text


# ----------------------------------------------------------------------------- tool turns


def test_tool_call_and_tool_turns(bundled_tokenizer):
    enc = encode_conversation(bundled_tokenizer, TOOL_TURNS, tools=WEATHER_TOOLS)
    text = bundled_tokenizer.decode(enc.input_ids)
    # SmolLM2's ChatML template writes any role verbatim: the tool answer keeps the role "tool".
    assert '<|im_start|>assistant\n{"name": "weather", "arguments": {"city": "Paris"}}<|im_end|>' in text
    assert '<|im_start|>tool\n{"celsius": 21}<|im_end|>' in text
    # The template has no `tools` variable, so the definitions are described in a system message.
    assert text.startswith("<|im_start|>system\nYou can call the following tools.")
    assert '"name": "weather"' in text.split("<|im_end|>")[0]
    assert labelled_runs(bundled_tokenizer, enc) == [
        '{"name": "weather", "arguments": {"city": "Paris"}}<|im_end|>',
        "It is 21 °C in Paris.<|im_end|>",
    ]


def test_tools_are_appended_to_an_existing_system_message(bundled_tokenizer):
    messages = [{"role": "system", "content": "Be brief."}] + TOOL_TURNS
    mapped, template_tools = to_template_messages(bundled_tokenizer, messages, WEATHER_TOOLS)
    assert template_tools is None
    assert mapped[0]["role"] == "system" and mapped[0]["content"].startswith("Be brief.\n\nYou can call")
    assert len(mapped) == len(messages)


def test_template_rejecting_the_tool_role_gets_a_user_turn(bundled_tokenizer_dir):
    strict = (
        "{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
        "{{ raise_exception('unknown role') }}{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer = fresh_tokenizer(bundled_tokenizer_dir, strict)
    mapped, _ = to_template_messages(tokenizer, TOOL_TURNS)
    assert mapped[2] == {"role": "user", "content": 'Tool result:\n{"celsius": 21}'}
    enc = encode_conversation(tokenizer, TOOL_TURNS)
    assert len(labelled_runs(tokenizer, enc)) == 2


def test_template_with_a_tools_variable_receives_the_definitions(bundled_tokenizer_dir):
    with_tools = (
        "{% if tools %}<|im_start|>system\nTOOLS:{{ tools | tojson }}<|im_end|>\n{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer = fresh_tokenizer(bundled_tokenizer_dir, with_tools)
    mapped, template_tools = to_template_messages(tokenizer, TOOL_TURNS, WEATHER_TOOLS)
    assert template_tools == json.loads(WEATHER_TOOLS)
    assert len(mapped) == len(TOOL_TURNS)
    assert render_prompt(tokenizer, TOOL_TURNS[:1], WEATHER_TOOLS).startswith('<|im_start|>system\nTOOLS:[{"name"')


# ----------------------------------------------------------------------------- refusals


def test_template_that_is_not_prefix_stable_is_refused(bundled_tokenizer_dir):
    # Marks the last message differently, so rendering more messages rewrites earlier text.
    unstable = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "{% if loop.last %} [last]{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer = fresh_tokenizer(bundled_tokenizer_dir, unstable)
    with pytest.raises(TemplateError, match="not prefix-stable"):
        encode_conversation(tokenizer, MULTI_TURN)


def test_missing_chat_template_is_a_clear_error(bundled_tokenizer_dir):
    tokenizer = fresh_tokenizer(bundled_tokenizer_dir, None)
    with pytest.raises(TemplateError, match="no chat template"):
        encode_prompt(tokenizer, MULTI_TURN[:2])


def test_conversation_starting_with_the_assistant_is_refused(bundled_tokenizer):
    with pytest.raises(TemplateError, match="cannot start with an assistant"):
        encode_conversation(bundled_tokenizer, [{"role": "assistant", "content": "Hi"}])


def test_bad_tools_json_is_refused(bundled_tokenizer):
    with pytest.raises(TemplateError, match="not valid JSON"):
        encode_conversation(bundled_tokenizer, TOOL_TURNS, tools="{not json")


# ----------------------------------------------------------------------------- text and counting


def test_encode_text_ends_with_one_eos_and_trains_on_everything(bundled_tokenizer):
    enc = encode_text(bundled_tokenizer, "The quick brown fox.")
    assert enc.input_ids[-1] == bundled_tokenizer.eos_token_id
    assert enc.labels == enc.input_ids
    assert bundled_tokenizer.decode(enc.input_ids[:-1]) == "The quick brown fox."
    again = encode_text(bundled_tokenizer, "The quick brown fox.<|im_end|>")
    assert again.input_ids == enc.input_ids  # no second eos
    assert encode_text(bundled_tokenizer, "x", add_eos=False).input_ids[-1] != bundled_tokenizer.eos_token_id


def test_token_counter_counts_every_kind(bundled_tokenizer, bundled_tokenizer_dir):
    counter = TokenCounter(bundled_tokenizer_dir)
    tok = bundled_tokenizer
    assert counter({"messages": MULTI_TURN}) == len(encode_conversation(tok, MULTI_TURN))
    assert counter({"messages": TOOL_TURNS, "tools": WEATHER_TOOLS}) == len(
        encode_conversation(tok, TOOL_TURNS, tools=WEATHER_TOOLS)
    )
    assert counter({"text": "hello world", "messages": None}) == len(encode_text(tok, "hello world"))
    prompt = MULTI_TURN[:2]
    long_reply = "A much longer chosen answer with many more words in it."
    row = {"messages": prompt, "chosen": long_reply, "rejected": "No."}
    assert counter(row) == len(encode_conversation(tok, prompt + [{"role": "assistant", "content": long_reply}]))
    assert counter.text("hello world") == 2
    with pytest.raises(ValueError):
        counter({"messages": None, "text": None})


def test_token_counter_pickles_cheaply(bundled_tokenizer_dir):
    counter = TokenCounter(bundled_tokenizer_dir)
    counter.context_length = 8192  # callers attach attributes; they travel with it
    expected = counter({"messages": MULTI_TURN})  # loads the tokenizer
    payload = pickle.dumps(counter)
    assert len(payload) < 1000  # the path, not the tokenizer
    copy = pickle.loads(payload)
    assert copy({"messages": MULTI_TURN}) == expected
    assert copy.context_length == 8192


def test_token_counter_is_fast(bundled_tokenizer_dir):
    import time

    counter = TokenCounter(bundled_tokenizer_dir)
    rows = [{"messages": MULTI_TURN[1:3]}] * 500
    counter(rows[0])
    start = time.perf_counter()
    for row in rows:
        counter(row)
    assert (time.perf_counter() - start) / len(rows) < 0.005  # measured ~0.5 ms per row on 2 CPU cores


# ----------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_bundled_model_answers_through_encode_prompt(bundled_model_dir):
    import torch

    from oikyo.models.loading import load_model

    tokenizer = load_tokenizer(bundled_model_dir)
    model = load_model(bundled_model_dir)
    ids = encode_prompt(tokenizer, [{"role": "user", "content": "What is the capital of France?"}])
    input_ids = torch.tensor([ids])  # (1, prompt)
    with torch.no_grad():
        out = model.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=20, do_sample=False
        )  # (1, prompt + new)
    answer = tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert "Paris" in answer
    assert out[0, -1].item() == tokenizer.eos_token_id  # stops at <|im_end|>


# ----------------------------------------------------------------------------- reasoning traces

REASONING_TURNS = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4.", "reasoning": "Two plus two makes four.\n"},
    {"role": "user", "content": "And 3 + 3?"},
    {"role": "assistant", "content": "6.", "reasoning": "Three plus three makes six."},
]
# Renders reasoning from the message key Qwen3 and DeepSeek use, inside <think> tags.
REASONING_CONTENT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m.reasoning_content %}<think>\n{{ m.reasoning_content.strip() }}\n</think>\n\n{% endif %}"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Renders reasoning from gpt-oss's key in an analysis channel, closed by markers of its own.
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m.thinking %}[analysis]{{ m.thinking }}[end][final]{% endif %}"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_reasoning_takes_the_default_think_form_when_the_template_has_no_key(bundled_tokenizer):
    mapped, _ = to_template_messages(bundled_tokenizer, REASONING_TURNS)
    assert mapped[1] == {"role": "assistant", "content": "<think>\nTwo plus two makes four.\n</think>\n\n4."}
    enc = encode_conversation(bundled_tokenizer, REASONING_TURNS)
    text = bundled_tokenizer.decode(enc.input_ids)
    assert "<|im_start|>assistant\n<think>\nThree plus three makes six.\n</think>\n\n6.<|im_end|>\n" in text
    assert labelled_runs(bundled_tokenizer, enc) == [
        "<think>\nTwo plus two makes four.\n</think>\n\n4.<|im_end|>",
        "<think>\nThree plus three makes six.\n</think>\n\n6.<|im_end|>",
    ]


def test_loss_on_reasoning_false_masks_exactly_the_reasoning(bundled_tokenizer):
    learned = encode_conversation(bundled_tokenizer, REASONING_TURNS)
    answers = encode_conversation(bundled_tokenizer, REASONING_TURNS, loss_on_reasoning=False)
    # Same tokens either way: only the labels change.
    assert answers.input_ids == learned.input_ids
    assert labelled_runs(bundled_tokenizer, answers) == ["4.<|im_end|>", "6.<|im_end|>"]
    unmasked = [k for k, (a, b) in enumerate(zip(learned.labels, answers.labels)) if a != b]
    reasoning = bundled_tokenizer.decode([learned.input_ids[k] for k in unmasked])
    assert reasoning == (
        "<think>\nTwo plus two makes four.\n</think>\n\n<think>\nThree plus three makes six.\n</think>\n\n"
    )
    # The flag also holds with train_on="all": everything but the reasoning is trained on.
    everything = encode_conversation(bundled_tokenizer, REASONING_TURNS, train_on="all", loss_on_reasoning=False)
    assert [k for k, label in enumerate(everything.labels) if label == IGNORE_INDEX] == unmasked


def test_serving_prompt_tokens_equal_training_tokens_with_reasoning(bundled_tokenizer):
    enc = encode_conversation(bundled_tokenizer, REASONING_TURNS)
    starts = reply_starts(enc)
    assert len(starts) == 2
    for start, i in zip(starts, (1, 3)):
        assert enc.input_ids[:start] == encode_prompt(bundled_tokenizer, REASONING_TURNS[:i])
    # Turns without reasoning keep exactly the tokens they had: the template's own tokenization.
    plain = [{k: v for k, v in m.items() if k != "reasoning"} for m in REASONING_TURNS]
    mapped, _ = to_template_messages(bundled_tokenizer, plain)
    expected = bundled_tokenizer.apply_chat_template(mapped, tokenize=True, return_dict=False)
    assert encode_conversation(bundled_tokenizer, plain).input_ids == expected


@pytest.mark.parametrize(
    "template,closing,reasoning_part",
    [
        (REASONING_CONTENT_TEMPLATE, "\n</think>\n\n", "<think>\nThree plus three makes six.\n</think>\n\n"),
        (THINKING_TEMPLATE, "[end][final]", "[analysis]Three plus three makes six.[end][final]"),
    ],
)
def test_reasoning_goes_to_the_templates_own_key(bundled_tokenizer_dir, template, closing, reasoning_part):
    from oikyo.models.chat_template import REASONING_KEYS, _traits

    tokenizer = fresh_tokenizer(bundled_tokenizer_dir, template)
    traits = _traits(tokenizer)
    # Recent transformers copy reasoning_content / thinking / reasoning into each other, so any key
    # the template reads may be found first; what matters is that the template renders it.
    assert traits.reasoning_key in REASONING_KEYS and traits.reasoning_end == closing
    mapped, _ = to_template_messages(tokenizer, REASONING_TURNS)
    assert mapped[3] == {"role": "assistant", "content": "6.", traits.reasoning_key: "Three plus three makes six."}
    learned = encode_conversation(tokenizer, REASONING_TURNS, train_on="last")
    assert labelled_runs(tokenizer, learned) == [reasoning_part + "6.<|im_end|>"]
    answers = encode_conversation(tokenizer, REASONING_TURNS, train_on="last", loss_on_reasoning=False)
    assert answers.input_ids == learned.input_ids
    assert labelled_runs(tokenizer, answers) == ["6.<|im_end|>"]
    starts = reply_starts(learned)
    assert learned.input_ids[: starts[0]] == encode_prompt(tokenizer, REASONING_TURNS[:3])


def test_a_template_that_drops_the_reasoning_is_refused(bundled_tokenizer_dir):
    # Keeps only the text after </think> (as DeepSeek-R1's template does for earlier turns).
    dropping = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'].split('</think>')[-1] | trim }}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer = fresh_tokenizer(bundled_tokenizer_dir, dropping)
    with pytest.raises(TemplateError, match="does not render the reasoning"):
        encode_conversation(tokenizer, REASONING_TURNS)


def test_empty_reasoning_is_no_reasoning_and_other_roles_cannot_reason(bundled_tokenizer):
    plain = encode_conversation(bundled_tokenizer, [REASONING_TURNS[0], {"role": "assistant", "content": "4."}])
    for empty in (" \n", "", None):
        turns = [REASONING_TURNS[0], {"role": "assistant", "content": "4.", "reasoning": empty}]
        assert encode_conversation(bundled_tokenizer, turns) == plain
    with pytest.raises(TemplateError, match="assistant or tool_call"):
        encode_conversation(bundled_tokenizer, [dict(REASONING_TURNS[0], reasoning="hm"), REASONING_TURNS[1]])


# ----------------------------------------------------------------------------- per-message weights


def weighted(turns, *weights):
    """The conversation with the given weights on its model turns, in order (None: no weight)."""
    out, it = [], iter(weights)
    for message in turns:
        message = dict(message)
        if message["role"] in ("assistant", "tool_call"):
            message["weight"] = next(it)
        out.append(message)
    return out


def test_weight_zero_masks_a_reply_whatever_train_on_says(bundled_tokenizer):
    for train_on in ("assistant", "last", "all"):
        base = encode_conversation(bundled_tokenizer, MULTI_TURN, train_on=train_on)
        enc = encode_conversation(bundled_tokenizer, weighted(MULTI_TURN, None, 0), train_on=train_on)
        assert enc.input_ids == base.input_ids
        assert enc.weights is None  # weights of 0 and 1 need no per-token weights
        runs = labelled_runs(bundled_tokenizer, enc)
        assert " Rome, of course.\n<|im_end|>" not in runs
        assert not any("Rome" in run for run in runs)
    assert labelled_runs(bundled_tokenizer, encode_conversation(bundled_tokenizer, weighted(MULTI_TURN, None, 0))) == [
        "Paris.<|im_end|>"
    ]


def test_a_positive_weight_trains_the_turn_and_scales_its_tokens(bundled_tokenizer):
    enc = encode_conversation(bundled_tokenizer, weighted(MULTI_TURN, 2.5, None), train_on="last")
    # The explicit weight wins over train_on="last": the first reply is trained too.
    assert labelled_runs(bundled_tokenizer, enc) == ["Paris.<|im_end|>", " Rome, of course.\n<|im_end|>"]
    assert len(enc.weights) == len(enc.labels)
    by_run = {}
    for token, label, weight in zip(enc.input_ids, enc.labels, enc.weights):
        if label == IGNORE_INDEX:
            assert weight == 0.0
        else:
            by_run.setdefault(weight, []).append(token)
    assert bundled_tokenizer.decode(by_run[2.5]) == "Paris.<|im_end|>"
    assert bundled_tokenizer.decode(by_run[1.0]) == " Rome, of course.\n<|im_end|>"
    # Explicit weights of 1 are the default: no per-token weights at all.
    ones = encode_conversation(bundled_tokenizer, weighted(MULTI_TURN, 1.0, 1))
    assert ones.weights is None and ones.labels == encode_conversation(bundled_tokenizer, MULTI_TURN).labels
    # The preference recipes ignore weights.
    ignored = encode_conversation(bundled_tokenizer, weighted(MULTI_TURN, 2.5, 0), train_on="last", use_weights=False)
    assert ignored.weights is None and labelled_runs(bundled_tokenizer, ignored) == [" Rome, of course.\n<|im_end|>"]


def test_weights_with_reasoning_and_train_on_all(bundled_tokenizer):
    enc = encode_conversation(
        bundled_tokenizer, weighted(REASONING_TURNS, 3.0, None), train_on="all", loss_on_reasoning=False
    )
    assert enc.labels.count(IGNORE_INDEX) > 0
    assert all(weight == 0.0 for label, weight in zip(enc.labels, enc.weights) if label == IGNORE_INDEX)
    heavy = bundled_tokenizer.decode([t for t, w in zip(enc.input_ids, enc.weights) if w == 3.0])
    assert heavy == "4.<|im_end|>\n"  # train_on=all: the newline after the end of turn too, reasoning masked
    assert set(enc.weights) == {0.0, 1.0, 3.0}  # prompt tokens count once


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "heavy", True])
def test_a_bad_weight_is_refused(bundled_tokenizer, bad):
    with pytest.raises(TemplateError, match="weight must be a non-negative number"):
        encode_conversation(bundled_tokenizer, weighted(MULTI_TURN, bad, None))


def test_a_weight_on_a_user_turn_is_refused(bundled_tokenizer):
    messages = [dict(MULTI_TURN[1], weight=0.0), MULTI_TURN[2]]
    with pytest.raises(TemplateError, match="assistant or tool_call"):
        encode_conversation(bundled_tokenizer, messages)


def test_unpaired_preference_rows_and_rows_with_reasoning_are_counted(bundled_tokenizer, bundled_tokenizer_dir):
    from oikyo.models.chat_template import row_kind

    counter = TokenCounter(bundled_tokenizer_dir)
    row = {"messages": weighted(REASONING_TURNS, 0.0, 2.0), "desirable": False, "chosen": None}
    assert row_kind(row) == "unpaired_preference"
    assert row_kind({"messages": MULTI_TURN, "desirable": None}) == "conversations"
    assert counter(row) == len(encode_conversation(bundled_tokenizer, REASONING_TURNS))
    assert counter({"messages": REASONING_TURNS}) > counter({"messages": MULTI_TURN[1:2] + [REASONING_TURNS[3]]})
