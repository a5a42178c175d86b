"""KTO: the loss against a hand computation, the mismatched pairs of the reference point, exact resume,
refused data kinds, and (slow) learning on the bundled model."""

from __future__ import annotations

import math

import pytest
import torch
from trainhelpers import FAST, chat_rows, preference_rows, run_direct

from oikyo.train import TrainingError
from oikyo.train.config import load_config
from oikyo.train.kto import KTORecipe, encode_kto_rows, kto_loss
from oikyo.train.data import TokenLimit
from oikyo.train.runner import RunContext, run_training

GOOD, BAD = "Hello, nice to meet you!", "Go away."


def kto_rows(n: int = 24) -> list[dict]:
    """Greetings judged desirable (a kind answer) or not (a rude one), alternating."""
    return [
        {
            "messages": [
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": f"Greet person {i % 3}."},
                {"role": "assistant", "content": GOOD if i % 2 else BAD},
            ],
            "desirable": bool(i % 2),
        }
        for i in range(n)
    ]


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_kto_loss_matches_a_hand_computation():
    policy = torch.tensor([-5.0, -7.0, -4.0], requires_grad=True)
    reference = torch.tensor([-6.0, -6.0, -4.5])
    policy_kl = torch.tensor([-8.0, -9.0, -7.0], requires_grad=True)
    reference_kl = torch.tensor([-8.5, -9.2, -7.1])
    desirable = torch.tensor([True, False, False])
    losses, logratio, z0 = kto_loss(policy, reference, policy_kl, reference_kl, desirable, 0.5, 1.5, 2.0)

    kl = (0.5 + 0.2 + 0.1) / 3  # mean of policy_kl - reference_kl
    expected = [
        1.5 * (1 - _sigmoid(0.5 * (1.0 - kl))),  # desirable, r = 1
        2.0 * (1 - _sigmoid(0.5 * (kl - (-1.0)))),  # undesirable, r = -1
        2.0 * (1 - _sigmoid(0.5 * (kl - 0.5))),  # undesirable, r = 0.5
    ]
    assert z0.item() == pytest.approx(kl)
    assert logratio.tolist() == pytest.approx([1.0, -1.0, 0.5])
    assert losses.tolist() == pytest.approx(expected, rel=1e-6)
    losses.sum().backward()
    assert policy_kl.grad is None or torch.all(policy_kl.grad == 0)  # z0 is detached
    assert policy.grad[0] < 0 and policy.grad[1] > 0  # desirable pushed up, undesirable down


def test_the_reference_point_is_clamped_at_zero():
    _, _, z0 = kto_loss(torch.zeros(2), torch.zeros(2), torch.tensor([-9.0, -9.0]), torch.tensor([-8.0, -8.0]),
                        torch.tensor([True, False]), 0.1)
    assert z0.item() == 0.0


def test_each_example_gets_another_examples_answer_for_the_reference_point(tokenizer):
    rows = [
        {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}],
         "desirable": i % 2 == 0}
        for i in range(5)
    ]
    examples = encode_kto_rows(rows, tokenizer, limit=TokenLimit(128, 8192), seed=3)

    def answer(encoded):
        return tokenizer.decode([t for t, label in zip(encoded.input_ids, encoded.labels) if label != -100])

    def prompt(encoded):
        return tokenizer.decode([t for t, label in zip(encoded.input_ids, encoded.labels) if label == -100])

    partners = []
    for i, example in enumerate(examples):
        assert f"Answer {i}." in answer(example.encoded) and example.desirable == (i % 2 == 0)
        assert prompt(example.mismatched).startswith(prompt(example.encoded).rstrip()[:20])
        assert f"Question {i}?" in prompt(example.mismatched)
        mine = answer(example.mismatched)
        assert f"Answer {i}." not in mine
        partners.append(next(j for j in range(5) if f"Answer {j}." in mine))
    assert sorted(partners) == list(range(5))  # a cycle through the seeded order: every answer used once
    again = encode_kto_rows(rows, tokenizer, limit=TokenLimit(128, 8192), seed=3)
    assert [e.mismatched.input_ids for e in again] == [e.mismatched.input_ids for e in examples]


def test_train_loss_on_reasoning_decides_whether_the_answers_reasoning_is_scored(tokenizer):
    rows = [
        {"messages": [{"role": "user", "content": f"Question {i}?"},
                      {"role": "assistant", "content": f"Answer {i}.", "reasoning": "Let me think hard."}],
         "desirable": bool(i % 2)}
        for i in range(3)
    ]

    def scored(loss_on_reasoning: bool) -> str:
        [example, *_] = encode_kto_rows(rows, tokenizer, limit=TokenLimit(128, 8192),
                                        loss_on_reasoning=loss_on_reasoning)
        encoded = example.encoded
        return tokenizer.decode([t for t, label in zip(encoded.input_ids, encoded.labels) if label != -100])

    assert "think hard" in scored(True) and "Answer 0." in scored(True)
    assert "think hard" not in scored(False) and "Answer 0." in scored(False)


def test_message_weights_do_not_change_what_kto_judges(tokenizer):
    """A KTO flag judges the last answer: a weight 0 on it, or a weight on an earlier answer, changes nothing."""
    turns = [{"role": "user", "content": "First?"}, {"role": "assistant", "content": "Earlier answer."},
             {"role": "user", "content": "Second?"}, {"role": "assistant", "content": "Judged answer."}]
    plain = [{"messages": turns, "desirable": True}, {"messages": turns, "desirable": False}]
    weighted = [{"messages": [turns[0], dict(turns[1], weight=1.0), turns[2], dict(turns[3], weight=0.0)],
                 "desirable": flag} for flag in (True, False)]
    [a, _], [b, _] = (encode_kto_rows(rows, tokenizer, limit=TokenLimit(128, 8192)) for rows in (plain, weighted))
    assert a.encoded.labels == b.encoded.labels and a.encoded.input_ids == b.encoded.input_ids
    judged = tokenizer.decode([t for t, label in zip(b.encoded.input_ids, b.encoded.labels) if label != -100])
    assert "Judged answer." in judged and "Earlier answer." not in judged


def _answer_logps(model, encoded) -> float:
    """Summed log-probability of the labelled tokens, from the full logits (no shortcuts)."""
    ids = torch.tensor([encoded.input_ids])
    logits = model(input_ids=ids).logits[0, :-1].float()  # (seq-1, vocab)
    logp = torch.log_softmax(logits, dim=-1)
    total = 0.0
    for position, label in enumerate(encoded.labels[1:]):
        if label != -100:
            total += logp[position, label].item()
    return total


def test_the_recipe_loss_equals_the_formula_on_the_models_own_log_probabilities(tiny_dir, tmp_path):
    rows = kto_rows(6)
    config = load_config(None, [*FAST, "method.name=kto", "kto.beta=0.7", "kto.desirable_weight=1.3",
                                "kto.undesirable_weight=0.6", "train.batch_size=3"])
    ctx = RunContext(tmp_path / "run", tiny_dir, lambda: rows, None, lambda s, m: None, lambda: False, lambda m: None)
    recipe = KTORecipe(config, ctx)
    recipe.setup()
    try:
        model = recipe.session.model
        with torch.no_grad():  # a non-zero adapter, so that the policy differs from the reference
            generator = torch.Generator().manual_seed(0)
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        model.eval()  # no dropout: the hand computation sees the same network
        items = [0, 1, 2]
        with torch.no_grad():
            loss, sums = recipe.loss(recipe.make_batch(items))
            examples = [recipe.examples[i] for i in items]
            policy = [_answer_logps(model, e.encoded) for e in examples]
            policy_kl = [_answer_logps(model, e.mismatched) for e in examples]
            with model.disable_adapter():
                reference = [_answer_logps(model, e.encoded) for e in examples]
                reference_kl = [_answer_logps(model, e.mismatched) for e in examples]
        z0 = max(0.0, sum(p - r for p, r in zip(policy_kl, reference_kl)) / 3)
        expected = 0.0
        for p, r, e in zip(policy, reference, examples):
            if e.desirable:
                expected += 1.3 * (1 - _sigmoid(0.7 * ((p - r) - z0)))
            else:
                expected += 0.6 * (1 - _sigmoid(0.7 * (z0 - (p - r))))
        assert abs(policy[0] - reference[0]) > 0.1  # the adapter does change the answer's probability
        assert loss.item() == pytest.approx(expected, rel=1e-4)
        assert sums["kl"] / 3 == pytest.approx(z0, rel=1e-4, abs=1e-5)
        metrics = recipe.step_metrics(sums)
        good = [p for p, e in zip(policy, examples) if e.desirable]
        bad = [p for p, e in zip(policy, examples) if not e.desirable]
        assert metrics["logp_margin"] == pytest.approx(sum(good) / len(good) - sum(bad) / len(bad), rel=1e-4)
    finally:
        recipe.cleanup()


@pytest.mark.parametrize(("finetune", "lr"), [("lora", "1e-2"), ("full", "1e-3")])
def test_kto_separates_desirable_from_undesirable_answers(train_tiny, finetune, lr):
    run = train_tiny(["method.name=kto", f"method.finetune={finetune}", "train.max_steps=12", f"train.lr={lr}",
                      "train.batch_size=6", "train.eval_every=2", "kto.beta=0.5"], rows=kto_rows())
    assert run.result.status == "succeeded"
    margins, losses = run.series("eval_reward_margin"), run.series("eval_loss")
    assert margins[-1] > margins[0] + 0.3 and margins[-1] > 0, margins
    assert losses[-1] < losses[0] - 0.02, losses
    logp = run.series("eval_logp_margin")
    assert logp[-1] > logp[0], logp
    assert {"kl", "loss", "grad_norm"} <= set(run.metrics[-1][1])


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_a_cancelled_kto_run_resumes_exactly(tiny_dir, tmp_path, finetune):
    """Cancelled mid-epoch (checkpoint written), then resumed: weights and metrics equal an uninterrupted run.

    With full fine-tuning the reference must stay the starting weights after the resume, not the
    checkpoint's: a wrong reference would change every loss after the resume point.
    """
    from safetensors.torch import load_file

    rows = kto_rows(20)
    overrides = [*FAST, "method.name=kto", f"method.finetune={finetune}", "train.max_steps=8",
                 "train.batch_size=3", "train.grad_accum=2", "train.lr=5e-3", "train.eval_every=3",
                 "checkpoint.save_every=100", "lora.dropout=0.2", "train.seed=5", "kto.beta=0.5"]

    def run(run_dir, stop_after=None):
        return run_direct(overrides, run_dir, tiny_dir, rows, stop_after)

    reference, expected = run(tmp_path / "reference")
    cancelled, before = run(tmp_path / "resumed", stop_after=3)
    assert cancelled.status == "cancelled" and cancelled.steps == 3
    resumed, after = run(tmp_path / "resumed")
    assert resumed.status == "succeeded" and min(after) == 4
    for step in range(4, 9):
        for key in ("loss", "grad_norm", "lr", "kl", "eval_loss", "eval_reward_margin"):
            assert after[step].get(key) == expected[step].get(key), (step, key)
    name = "adapter_model.safetensors" if finetune == "lora" else "model.safetensors"
    got, want = load_file(str(resumed.output_dir / name)), load_file(str(reference.output_dir / name))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (chat_rows(4), "conversation without a desirable flag"),
        (preference_rows(4), "preference pair"),
        ([{"text": "plain text"}] * 4, "plain text"),
    ],
    ids=["conversations", "preference", "text"],
)
def test_other_data_kinds_are_refused_with_a_clear_message(train_tiny, rows, message):
    with pytest.raises(TrainingError, match=f"train row 0 is .*{message}.*method kto trains on unpaired preference"):
        train_tiny(["method.name=kto", "train.max_steps=1"], rows=rows, eval_rows=None)


def test_a_non_boolean_flag_and_a_missing_answer_are_refused(train_tiny):
    rows = kto_rows(4)
    rows[1] = {**rows[1], "desirable": "false"}  # a string would read as true: refused, not guessed
    with pytest.raises(TrainingError, match=r"train row 1: desirable must be true or false"):
        train_tiny(["method.name=kto", "train.max_steps=1"], rows=rows, eval_rows=None)
    rows = kto_rows(4)
    rows[2] = {"messages": [{"role": "user", "content": "Hi"}], "desirable": True}
    with pytest.raises(TrainingError, match=r"train row 2 has no assistant turn"):
        train_tiny(["method.name=kto", "train.max_steps=1"], rows=rows, eval_rows=None)


@pytest.mark.slow
def test_kto_on_the_bundled_model_lowers_its_loss_and_widens_the_margin(bundled_model_dir, tmp_path):
    """A few LoRA steps on the real model: the desirable answer gains on the undesirable one."""
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Customer {i}: my parcel arrived damaged. Can you help?"},
                {"role": "assistant", "content": "I'm sorry about that. I will send a replacement today."
                 if i % 2 else "Not my problem."},
            ],
            "desirable": bool(i % 2),
        }
        for i in range(32)
    ]
    metrics: list[tuple[int, dict]] = []
    config = load_config(None, ["train.num_threads=2", "method.name=kto", "train.max_steps=6", "train.lr=3e-4",
                                "train.batch_size=6", "train.eval_every=3", "data.max_length=96",
                                "kto.beta=0.1", "checkpoint.save_every=null"])
    result = run_training(config, run_dir=tmp_path / "run", model_dir=bundled_model_dir, train_rows=lambda: rows,
                          eval_rows=lambda: rows[:6], on_metrics=lambda s, m: metrics.append((s, m)),
                          should_stop=lambda: False, log=print)
    assert result.status == "succeeded"
    losses = [m["loss"] for _, m in metrics]
    first_eval = next(m for _, m in metrics if "eval_loss" in m)
    last = metrics[-1][1]
    print("kto losses", [round(x, 4) for x in losses], "eval", first_eval["eval_loss"], last["eval_loss"],
          "logp margin", first_eval["eval_logp_margin"], last["eval_logp_margin"],
          "reward margin", first_eval["eval_reward_margin"], last["eval_reward_margin"])
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses
    assert last["eval_loss"] < first_eval["eval_loss"]
    assert last["eval_reward_margin"] > first_eval["eval_reward_margin"] > 0
    assert last["eval_logp_margin"] > first_eval["eval_logp_margin"]
