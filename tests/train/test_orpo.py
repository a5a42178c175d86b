"""ORPO: the loss against a hand computation, on the model's own log-probabilities too, exact resume,
refused data kinds, and (slow) learning on the bundled model."""

from __future__ import annotations

import math

import pytest
import torch
from test_kto import kto_rows
from trainhelpers import FAST, chat_rows, preference_rows, run_direct

from oikyo.train import TrainingError
from oikyo.train.config import load_config
from oikyo.train.orpo import ORPORecipe, orpo_loss
from oikyo.train.runner import RunContext, run_training


def _log_odds(mean_logp: float) -> float:
    p = math.exp(mean_logp)
    return math.log(p / (1 - p))


def _logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_orpo_loss_matches_a_hand_computation():
    chosen = torch.tensor([-0.5, -2.0, -1e-4], requires_grad=True)
    rejected = torch.tensor([-1.2, -1.0, -3.0])
    loss, nll, or_loss, ratio = orpo_loss(chosen, rejected, beta=0.25)
    for i, (c, r) in enumerate(zip(chosen.tolist(), rejected.tolist())):
        expected_ratio = _log_odds(c) - _log_odds(r)
        assert ratio[i].item() == pytest.approx(expected_ratio, rel=1e-5)
        assert or_loss[i].item() == pytest.approx(-_logsigmoid(expected_ratio), rel=1e-5)
        assert nll[i].item() == pytest.approx(-c)
        assert loss[i].item() == pytest.approx(-c + 0.25 * -_logsigmoid(expected_ratio), rel=1e-5)
    assert ratio[0] > 0 and ratio[1] < 0  # chosen likelier than rejected, then the reverse
    loss.sum().backward()
    assert torch.all(chosen.grad < 0)  # every term raises the chosen reply's probability


def test_a_reply_with_probability_one_keeps_the_loss_finite():
    loss, _, or_loss, ratio = orpo_loss(torch.tensor([0.0]), torch.tensor([-2.0]), beta=0.1)
    assert torch.isfinite(loss).all() and torch.isfinite(ratio).all() and or_loss.item() < 1e-3


def _reply_mean_logp(model, encoded) -> float:
    """Mean log-probability of the labelled tokens, from the full logits (no shortcuts)."""
    ids = torch.tensor([encoded.input_ids])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)  # (seq-1, vocab)
    values = [logp[i, label].item() for i, label in enumerate(encoded.labels[1:]) if label != -100]
    return sum(values) / len(values)


def test_the_recipe_loss_equals_the_formula_on_the_models_own_log_probabilities(tiny_dir, tmp_path):
    rows = preference_rows(6)
    rows[1] = {**rows[1], "chosen": "Hello there, how are you doing today?"}  # replies of different lengths
    config = load_config(None, [*FAST, "method.name=orpo", "orpo.beta=0.4", "train.batch_size=3"])
    ctx = RunContext(tmp_path / "run", tiny_dir, lambda: rows, None, lambda s, m: None, lambda: False, lambda m: None)
    recipe = ORPORecipe(config, ctx)
    recipe.setup()
    try:
        model = recipe.session.model.eval()
        items = [0, 1, 2]
        with torch.no_grad():
            loss, sums = recipe.loss(recipe.make_batch(items))
            pairs = [recipe.pairs[i] for i in items]
            chosen = [_reply_mean_logp(model, p.chosen) for p in pairs]
            rejected = [_reply_mean_logp(model, p.rejected) for p in pairs]
        expected = margin = 0.0
        for c, r in zip(chosen, rejected):
            ratio = _log_odds(c) - _log_odds(r)
            expected += -c + 0.4 * -_logsigmoid(ratio)
            margin += ratio
        assert loss.item() == pytest.approx(expected, rel=1e-4)
        assert sums["nll"] == pytest.approx(-sum(chosen), rel=1e-4)
        assert sums["log_odds_margin"] == pytest.approx(margin, rel=1e-3, abs=1e-4)
    finally:
        recipe.cleanup()


def test_orpo_learns_the_chosen_reply_and_separates_it_from_the_rejected_one(train_tiny):
    run = train_tiny(["method.name=orpo", "train.max_steps=12", "train.lr=1e-2", "train.batch_size=4",
                      "train.eval_every=2", "orpo.beta=0.5"], rows=preference_rows())
    assert run.result.status == "succeeded"
    margins, nll, losses = run.series("eval_log_odds_margin"), run.series("eval_nll"), run.series("eval_loss")
    assert margins[-1] > margins[0] + 0.3 and margins[-1] > 0, margins
    assert nll[-1] < nll[0] - 0.3 and losses[-1] < losses[0], (nll, losses)
    assert run.series("eval_accuracy")[-1] == 1.0
    assert {"nll", "or_loss", "log_odds_margin", "accuracy"} <= set(run.metrics[-1][1])


def test_a_cancelled_orpo_run_resumes_exactly(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    rows = preference_rows(20)
    overrides = [*FAST, "method.name=orpo", "train.max_steps=8", "train.batch_size=3", "train.grad_accum=2",
                 "train.lr=5e-3", "train.eval_every=3", "checkpoint.save_every=100", "lora.dropout=0.2", "train.seed=5"]

    def run(run_dir, stop_after=None):
        return run_direct(overrides, run_dir, tiny_dir, rows, stop_after)

    reference, expected = run(tmp_path / "reference")
    cancelled, _ = run(tmp_path / "resumed", stop_after=3)
    assert cancelled.status == "cancelled" and cancelled.steps == 3
    resumed, after = run(tmp_path / "resumed")
    assert resumed.status == "succeeded" and min(after) == 4
    for step in range(4, 9):
        for key in ("loss", "grad_norm", "lr", "nll", "log_odds_margin", "eval_loss"):
            assert after[step].get(key) == expected[step].get(key), (step, key)
    got = load_file(str(resumed.output_dir / "adapter_model.safetensors"))
    want = load_file(str(reference.output_dir / "adapter_model.safetensors"))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("rows", [chat_rows(4), kto_rows(4), [{"text": "plain"}] * 4],
                         ids=["conversations", "unpaired", "text"])
def test_other_data_kinds_are_refused_with_a_clear_message(train_tiny, rows):
    with pytest.raises(TrainingError, match=r"train row 0 is not a preference pair \(messages, chosen, rejected\)"):
        train_tiny(["method.name=orpo", "train.max_steps=1"], rows=rows, eval_rows=None)


def test_packing_is_refused_for_orpo_and_kto():
    from oikyo.train.config import ConfigError

    for method in ("orpo", "kto"):
        with pytest.raises(ConfigError, match=f"packing applies to sft and pretrain only; turn it off for {method}"):
            load_config(None, [f"method.name={method}", "data.packing=true"])


@pytest.mark.slow
def test_orpo_on_the_bundled_model_lowers_its_loss_and_widens_the_margin(bundled_model_dir, tmp_path):
    """A few LoRA steps on the real model: the chosen reply gains on the rejected one."""
    rows = [
        {
            "messages": [{"role": "user", "content": f"Customer {i}: my parcel arrived damaged. Can you help?"}],
            "chosen": "I'm sorry about that. I will send a replacement today.",
            "rejected": "Not my problem.",
        }
        for i in range(24)
    ]
    metrics: list[tuple[int, dict]] = []
    config = load_config(None, ["train.num_threads=2", "method.name=orpo", "train.max_steps=6", "train.lr=3e-4",
                                "train.batch_size=4", "train.eval_every=3", "data.max_length=96",
                                "orpo.beta=0.1", "checkpoint.save_every=null"])
    result = run_training(config, run_dir=tmp_path / "run", model_dir=bundled_model_dir, train_rows=lambda: rows,
                          eval_rows=lambda: rows[:4], on_metrics=lambda s, m: metrics.append((s, m)),
                          should_stop=lambda: False, log=print)
    assert result.status == "succeeded"
    losses = [m["loss"] for _, m in metrics]
    first_eval = next(m for _, m in metrics if "eval_loss" in m)
    last = metrics[-1][1]
    print("orpo losses", [round(x, 4) for x in losses], "eval", first_eval["eval_loss"], last["eval_loss"],
          "log-odds margin", first_eval["eval_log_odds_margin"], last["eval_log_odds_margin"])
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses
    assert last["eval_loss"] < first_eval["eval_loss"]
    assert last["eval_log_odds_margin"] > first_eval["eval_log_odds_margin"]
