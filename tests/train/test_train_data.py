"""Rows to batches: loss masks through the collator, limits, the seeded order, packing, DPO pairs."""

from __future__ import annotations

import pytest

from oikyo.train import TrainingError
from oikyo.train import data

IGNORE = -100
LIMIT = data.TokenLimit(max_length=256, context_length=2048)

CONVERSATION = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome."},
    ]
}
SHORT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def _trained_text(tokenizer, input_ids, labels) -> str:
    return tokenizer.decode([t for t, label in zip(input_ids, labels) if label != IGNORE])


def test_collator_trains_only_on_assistant_tokens_and_masks_padding(tokenizer):
    examples = data.encode_sft_rows([CONVERSATION, SHORT], tokenizer, limit=LIMIT)
    batch = data.collate(examples, pad_id=tokenizer.pad_token_id)
    long_len, short_len = len(examples[0]), len(examples[1])
    assert batch["input_ids"].shape == (2, long_len)  # padded to the longest in the batch
    assert short_len < long_len

    # Row 0: only the two assistant replies (with their end-of-turn token) are trained on.
    trained = _trained_text(tokenizer, batch["input_ids"][0].tolist(), batch["labels"][0].tolist())
    assert trained == "Paris.<|im_end|>Rome.<|im_end|>"
    assert "France" not in trained and "terse" not in trained

    # Row 1: right padding has label -100 and attention 0; real tokens attention 1.
    assert batch["attention_mask"][1, :short_len].eq(1).all()
    assert batch["attention_mask"][1, short_len:].eq(0).all()
    assert batch["labels"][1, short_len:].eq(IGNORE).all()
    assert batch["input_ids"][1, short_len:].eq(tokenizer.pad_token_id).all()
    assert _trained_text(tokenizer, batch["input_ids"][1].tolist(), batch["labels"][1].tolist()) == "Hello!<|im_end|>"
    # The loss counts exactly the trained tokens (after the causal shift).
    trained_count = sum(1 for x in batch["labels"].flatten().tolist() if x != IGNORE)
    assert data.count_targets(batch["labels"]) == trained_count


def test_train_on_all_and_plain_text_train_on_every_token(tokenizer):
    (everything,) = data.encode_sft_rows([CONVERSATION], tokenizer, limit=LIMIT, train_on="all")
    assert everything.labels == everything.input_ids
    (text,) = data.encode_sft_rows([{"text": "Once upon a time."}], tokenizer, limit=LIMIT)
    assert text.labels == text.input_ids
    assert text.input_ids[-1] == tokenizer.eos_token_id


def test_an_over_long_example_is_an_error_naming_the_row_never_truncated(tokenizer):
    rows = [SHORT, SHORT, {"messages": [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "ok"}]}]
    with pytest.raises(TrainingError) as caught:
        data.encode_sft_rows(rows, tokenizer, limit=LIMIT)
    message = str(caught.value)
    assert "row 2 (" in message and "'word word word" in message
    assert "data.max_length (256 tokens)" in message and "truncat" in message
    # The model's context is the binding limit when it is the smaller one.
    with pytest.raises(TrainingError, match="the model's context length"):
        data.encode_sft_rows(rows, tokenizer, limit=data.TokenLimit(max_length=4096, context_length=64))


def test_empty_data_and_wrong_kinds_are_errors(tokenizer):
    with pytest.raises(TrainingError, match="empty"):
        data.encode_sft_rows([], tokenizer, limit=LIMIT)
    with pytest.raises(TrainingError, match="empty"):  # no assistant reply: nothing to train on
        data.encode_sft_rows([{"messages": [{"role": "user", "content": "hi"}]}], tokenizer, limit=LIMIT)
    preference = {"messages": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}
    with pytest.raises(TrainingError, match="method.name=dpo"):
        data.encode_sft_rows([preference], tokenizer, limit=LIMIT)
    with pytest.raises(TrainingError, match="not a preference pair"):
        data.encode_dpo_rows([SHORT], tokenizer, limit=LIMIT)


def test_dpo_pairs_share_the_prompt_and_train_only_on_the_reply(tokenizer):
    row = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello, how can I help?"},
            {"role": "user", "content": "Tell me a color."},
        ],
        "chosen": "Blue.",
        "rejected": "No.",
    }
    (pair,) = data.encode_dpo_rows([row], tokenizer, limit=LIMIT)
    assert _trained_text(tokenizer, pair.chosen.input_ids, pair.chosen.labels) == "Blue.<|im_end|>"
    assert _trained_text(tokenizer, pair.rejected.input_ids, pair.rejected.labels) == "No.<|im_end|>"
    first_label = next(i for i, label in enumerate(pair.chosen.labels) if label != IGNORE)
    assert pair.chosen.input_ids[:first_label] == pair.rejected.input_ids[:first_label]
    batch = data.collate_pairs([pair, pair], pad_id=tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 4  # chosen, chosen, rejected, rejected


REASONED = {
    "messages": [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris.", "reasoning": "France's capital is Paris.", "weight": 2.0},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome.", "reasoning": "Italy's capital is Rome.", "weight": 0.0},
    ]
}


def test_sft_rows_honour_loss_on_reasoning_and_weights(tokenizer):
    (learned,) = data.encode_sft_rows([REASONED], tokenizer, limit=LIMIT)
    assert _trained_text(tokenizer, learned.input_ids, learned.labels) == (
        "<think>\nFrance's capital is Paris.\n</think>\n\nParis.<|im_end|>"  # the reply weighted 0 is not learned
    )
    (answers,) = data.encode_sft_rows([REASONED], tokenizer, limit=LIMIT, loss_on_reasoning=False)
    assert answers.input_ids == learned.input_ids
    assert _trained_text(tokenizer, answers.input_ids, answers.labels) == "Paris.<|im_end|>"
    assert {w for w, label in zip(answers.weights, answers.labels) if label != IGNORE} == {2.0}
    # A row whose every reply weighs 0 has nothing to train on: skipped, and said so.
    zero = {"messages": [dict(m, weight=0.0) if m["role"] == "assistant" else m for m in SHORT["messages"]]}
    logged = []
    examples = data.encode_sft_rows([zero, SHORT], tokenizer, limit=LIMIT, log=logged.append)
    assert len(examples) == 1 and "skipped 1 row(s)" in logged[0] and "weighted 0" in logged[0]


def test_unpaired_preference_rows_are_refused_by_sft(tokenizer):
    row = dict(SHORT, desirable=False)
    with pytest.raises(TrainingError, match="method.name=kto"):
        data.encode_sft_rows([SHORT, row], tokenizer, limit=LIMIT)


def test_loss_weights_are_collated_only_when_some_example_has_weights(tokenizer):
    plain = data.encode_sft_rows([CONVERSATION, SHORT], tokenizer, limit=LIMIT)
    assert "loss_weights" not in data.collate(plain, tokenizer.pad_token_id)
    assert "loss_weights" not in data.collate_packed([plain], tokenizer.pad_token_id)
    (weighted,) = data.encode_sft_rows([REASONED], tokenizer, limit=LIMIT)
    batch = data.collate([weighted, plain[1]], tokenizer.pad_token_id)
    weights = batch["loss_weights"]  # (2, seq)
    assert weights.dtype.is_floating_point and weights.shape == batch["labels"].shape
    assert weights[0, : len(weighted)].tolist() == weighted.weights
    short = len(plain[1])
    assert weights[1, :short].eq(1.0).all() and weights[1, short:].eq(0.0).all()  # no weights: 1; padding: 0
    packed = data.collate_packed([[plain[1], weighted]], tokenizer.pad_token_id)
    assert packed["loss_weights"][0, : short + len(weighted)].tolist() == [1.0] * short + weighted.weights


def test_dpo_pairs_ignore_weights_in_the_prompt(tokenizer):
    row = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello, how can I help?", "weight": 3.0},
            {"role": "user", "content": "Tell me a color."},
        ],
        "chosen": "Blue.",
        "rejected": "No.",
    }
    (pair,) = data.encode_dpo_rows([row], tokenizer, limit=LIMIT)
    assert _trained_text(tokenizer, pair.chosen.input_ids, pair.chosen.labels) == "Blue.<|im_end|>"
    assert pair.chosen.weights is None and "loss_weights" not in data.collate_pairs([pair], tokenizer.pad_token_id)


def test_epoch_plan_is_a_seeded_permutation_per_epoch():
    lengths = [(i * 37) % 101 + 1 for i in range(203)]
    plan = data.epoch_plan(lengths, batch_size=8, seed=3, epoch=0)
    assert plan == data.epoch_plan(lengths, batch_size=8, seed=3, epoch=0)
    assert plan != data.epoch_plan(lengths, batch_size=8, seed=3, epoch=1)
    assert plan != data.epoch_plan(lengths, batch_size=8, seed=4, epoch=0)
    assert sorted(i for batch in plan for i in batch) == list(range(203))
    assert all(len(batch) <= 8 for batch in plan)


def test_length_grouping_cuts_padding_waste():
    lengths = [(i * 7919) % 500 + 10 for i in range(800)]

    def waste(plan):
        padded = sum(len(b) * max(lengths[i] for i in b) for b in plan)
        return 1 - sum(lengths) / padded

    grouped = waste(data.epoch_plan(lengths, 8, seed=0, epoch=0, group_by_length=True))
    random_order = waste(data.epoch_plan(lengths, 8, seed=0, epoch=0, group_by_length=False))
    assert grouped < 0.05 < 0.3 < random_order


def test_pack_plan_fills_blocks_without_exceeding_max_length():
    lengths = [(i * 13) % 60 + 5 for i in range(100)]
    plan = data.pack_plan(lengths, max_length=128, batch_size=4, seed=0, epoch=0)
    blocks = [block for batch in plan for block in batch]
    assert sorted(i for block in blocks for i in block) == list(range(100))
    assert all(sum(lengths[i] for i in block) <= 128 for block in blocks)
    assert len(blocks) < 100 / 2  # several examples per block


def test_packed_batch_gives_the_same_per_token_loss_as_separate_examples(tokenizer, tiny_dir):
    """Attention stays inside each packed example: the packed log-probs equal the unpacked ones."""
    import torch

    from oikyo.models.loading import load_model
    from oikyo.train.runner import target_logprobs

    rows = [CONVERSATION, SHORT, {"messages": [{"role": "user", "content": "Count"}, {"role": "assistant", "content": "1 2 3"}]}]
    examples = data.encode_sft_rows(rows, tokenizer, limit=LIMIT)
    model = load_model(tiny_dir)
    data.check_packing_support(model)
    with torch.no_grad():
        packed, _ = target_logprobs(model, data.collate_packed([examples], tokenizer.pad_token_id))
        separate = torch.cat([target_logprobs(model, data.collate([e], tokenizer.pad_token_id))[0] for e in examples])
        padded, _ = target_logprobs(model, data.collate(examples, tokenizer.pad_token_id))
    assert packed.shape == separate.shape == padded.shape
    torch.testing.assert_close(packed, separate, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(padded, separate, rtol=1e-4, atol=1e-4)
    # Without the position restarts, the later examples would see the earlier ones: different values.
    crossed = data.collate_packed([examples], tokenizer.pad_token_id)
    crossed["position_ids"] = torch.arange(crossed["input_ids"].shape[1])[None]
    with torch.no_grad():
        leaked, _ = target_logprobs(model, crossed)
    assert not torch.allclose(leaked, separate, atol=1e-4)


def test_target_logprobs_match_the_models_own_logits_with_the_padding_mask(tokenizer, tiny_dir):
    """The head-on-targets-only path (no padding mask: right padding + causal) equals the full forward."""
    import torch

    from oikyo.models.loading import load_model
    from oikyo.train.runner import target_logprobs

    examples = data.encode_sft_rows([CONVERSATION, SHORT], tokenizer, limit=LIMIT)
    batch = data.collate(examples, tokenizer.pad_token_id)
    model = load_model(tiny_dir)
    with torch.no_grad():
        got, rows = target_logprobs(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (2, seq, vocab)
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE
    expected = torch.log_softmax(logits[:, :-1], dim=-1)[mask].gather(1, targets[mask][:, None])[:, 0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert rows.tolist() == mask.nonzero()[:, 0].tolist()
