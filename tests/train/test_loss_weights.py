"""Per-message loss weights reach the gradient: a reply weighted 0 gets exactly zero, weight w counts w times.

The gradient is read at the trunk's output (the hidden state each position's logits are computed
from, one position at a time): the loss reaches position t only through the logits that predict
token t+1, so a zero gradient there is a zero gradient for the logits at t.
"""

from __future__ import annotations

import pytest

from oikyo.train import data
from oikyo.train.sft import token_loss

IGNORE = -100
LIMIT = data.TokenLimit(max_length=256, context_length=2048)


def conversation(first=None, second=None, third=None) -> dict:
    """Three replies with the given loss weights (None: no weight field)."""
    turns = [
        ("Name a fruit.", "An apple."),
        ("Name a river.", "The Nile, in Africa."),
        ("Name a stone.", "Granite."),
    ]
    messages = []
    for (question, answer), weight in zip(turns, (first, second, third)):
        reply = {"role": "assistant", "content": answer}
        if weight is not None:
            reply["weight"] = weight
        messages += [{"role": "user", "content": question}, reply]
    return {"messages": messages}


@pytest.fixture(scope="module")
def model(tiny_dir):
    import torch

    from oikyo.models.loading import load_model

    torch.manual_seed(0)
    return load_model(tiny_dir).train()


def batch_of(tokenizer, rows, packed=False) -> dict:
    examples = data.encode_sft_rows(rows, tokenizer, limit=LIMIT)
    if packed:
        return data.collate_packed([examples], tokenizer.pad_token_id)
    return data.collate(examples, tokenizer.pad_token_id)


def loss_and_hidden_grad(model, batch):
    """(the SFT loss, its gradient at the trunk's output (batch, seq, hidden))."""
    captured = {}

    def keep(module, inputs, output):
        output.last_hidden_state.retain_grad()
        captured["hidden"] = output.last_hidden_state

    handle = model.get_decoder().register_forward_hook(keep)
    try:
        model.zero_grad(set_to_none=True)
        loss = token_loss(model, batch)
        loss.backward()
    finally:
        handle.remove()
    return loss.detach(), captured["hidden"].grad


def positions_predicting(tokenizer, batch, row: int, text: str) -> list[int]:
    """Positions t whose logits predict the tokens of ``text`` (its first occurrence in the row)."""
    ids = batch["input_ids"][row].tolist()
    pieces = [tokenizer.decode(ids[k : k + 1]) for k in range(len(ids))]
    for start in range(len(ids)):
        end = start
        joined = ""
        while end < len(ids) and len(joined) < len(text):
            joined += pieces[end]
            end += 1
        if joined == text:
            return list(range(start - 1, end - 1))
    raise AssertionError(f"{text!r} not found")


def test_a_reply_weighted_zero_gets_exactly_zero_gradient(tokenizer, model):
    import torch

    batch = batch_of(tokenizer, [conversation(None, 0.0, None), conversation()])
    loss, grad = loss_and_hidden_grad(model, batch)  # grad: (2, seq, hidden)
    assert loss.item() > 0
    norms = grad.abs().sum(-1)  # (2, seq)
    masked = positions_predicting(tokenizer, batch, 0, "The Nile, in Africa.<|im_end|>")
    trained = positions_predicting(tokenizer, batch, 0, "An apple.<|im_end|>") + positions_predicting(
        tokenizer, batch, 0, "Granite.<|im_end|>"
    )
    assert torch.equal(norms[0, masked], torch.zeros(len(masked)))  # exactly zero, not merely small
    assert (norms[0, trained] > 0).all()
    # The same reply without the weight (row 1) is trained on: the mask, not the text, did it.
    assert (norms[1, positions_predicting(tokenizer, batch, 1, "The Nile, in Africa.<|im_end|>")] > 0).all()
    # Everything that is not a target (prompts, padding, the zero-weight reply) has zero gradient.
    targets = torch.zeros_like(norms, dtype=torch.bool)
    targets[:, :-1] = batch["labels"][:, 1:] != IGNORE
    assert torch.equal(norms[~targets], torch.zeros(int((~targets).sum())))
    assert (norms[targets] > 0).all()


def test_a_weight_of_two_doubles_the_tokens_contribution(tokenizer, model):
    import torch

    from oikyo.train.runner import target_logprobs

    once = batch_of(tokenizer, [conversation()])
    twice = batch_of(tokenizer, [conversation(None, 2.0, None)])
    assert "loss_weights" not in once and torch.equal(once["labels"], twice["labels"])
    loss_once, grad_once = loss_and_hidden_grad(model, once)
    loss_twice, grad_twice = loss_and_hidden_grad(model, twice)
    doubled = positions_predicting(tokenizer, once, 0, "The Nile, in Africa.<|im_end|>")
    others = [t for t in range(once["input_ids"].shape[1]) if t not in doubled]
    torch.testing.assert_close(grad_twice[0, doubled], 2 * grad_once[0, doubled], rtol=1e-6, atol=0)
    torch.testing.assert_close(grad_twice[0, others], grad_once[0, others], rtol=1e-6, atol=0)
    # In the loss: the weighted reply's summed cross-entropy is added once more.
    with torch.no_grad():
        logp, _ = target_logprobs(model, once)  # (N,), in the order of the targets
    targets = once["labels"][0, 1:] != IGNORE
    in_reply = torch.zeros_like(targets)
    in_reply[doubled] = True
    reply_nll = -logp[in_reply[targets]].sum()
    torch.testing.assert_close(loss_twice, loss_once + reply_nll, rtol=1e-5, atol=1e-5)


def test_weights_of_one_take_the_unweighted_path_bit_for_bit(tokenizer, model):
    import torch

    plain = batch_of(tokenizer, [conversation(), conversation(None, None, None)])
    ones = batch_of(tokenizer, [conversation(1.0, 1.0, 1), conversation(1, None, 1.0)])
    assert plain.keys() == ones.keys() and "loss_weights" not in ones  # no per-token weights at all
    assert all(torch.equal(plain[key], ones[key]) for key in plain)
    with torch.no_grad():
        unweighted = token_loss(model, plain)
        assert torch.equal(token_loss(model, ones), unweighted)
        # Even forced through the weighted path, weights of 1 give the same bits.
        forced = dict(plain, loss_weights=torch.ones(plain["labels"].shape))
        assert torch.equal(token_loss(model, forced), unweighted)


def test_packed_weighted_batches_give_the_padded_loss(tokenizer, model):
    import torch

    rows = [conversation(None, 0.0, 3.0), conversation(0.5), conversation()]
    padded = batch_of(tokenizer, rows)
    packed = batch_of(tokenizer, rows, packed=True)
    assert "loss_weights" in padded and "loss_weights" in packed
    with torch.no_grad():
        torch.testing.assert_close(token_loss(model, packed), token_loss(model, padded), rtol=1e-4, atol=1e-4)


def test_the_sft_recipe_reads_loss_on_reasoning_and_trains_weighted_rows(tokenizer, tiny_dir, tmp_path, train_tiny):
    from trainhelpers import FAST

    from oikyo.train.config import load_config
    from oikyo.train.runner import RunContext
    from oikyo.train.sft import SFTRecipe

    reasoned = {
        "messages": [
            {"role": "user", "content": "Name a fruit."},
            {"role": "assistant", "content": "An apple.", "reasoning": "Apples are fruit.", "weight": 2.0},
            {"role": "user", "content": "Name a river."},
            {"role": "assistant", "content": "The Nile.", "weight": 0.0},
        ]
    }
    rows = [reasoned, conversation(None, 0.0, 0.5)] * 4
    config = load_config(None, [*FAST, "train.loss_on_reasoning=false", "train.max_steps=2", "train.batch_size=4"])
    logs = []
    ctx = RunContext(
        tmp_path / "setup", tiny_dir, lambda: list(rows), None, lambda step, m: None, lambda: False, logs.append
    )
    recipe = SFTRecipe(config, ctx)
    try:
        recipe.setup()
        first = recipe.examples[0]
        trained = tokenizer.decode([t for t, label in zip(first.input_ids, first.labels) if label != IGNORE])
        assert trained == "An apple.<|im_end|>"  # no reasoning, no reply weighted 0
        assert "loss_weights" in recipe.make_batch([0, 1])
    finally:
        recipe.cleanup()
    run = train_tiny(["train.loss_on_reasoning=false", "train.max_steps=3", "train.batch_size=4"], rows=rows)
    assert run.result.status == "succeeded"
    losses = run.series("loss")
    assert len(losses) == 3 and all(loss == loss and loss > 0 for loss in losses)
