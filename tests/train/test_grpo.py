"""GRPO: the advantage and loss math, the generator following the policy's weights, exact resume, bad input,
and (slow) the bundled model raising its mean reward within a few steps."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from trainhelpers import FAST, chat_rows

from oikyo.train import TrainingError, grpo, rewards
from oikyo.train.config import load_config
from oikyo.train.runner import IGNORE_INDEX

# Rewards with spread on the tiny random model's babble: its completions vary in length (in characters).
LENGTH = "grpo.rewards=[{name: length_penalty, args: {target: 40}}]"
TINY_GRPO = [*FAST, "method.name=grpo", LENGTH, "grpo.num_generations=4", "grpo.max_new_tokens=12",
             "train.batch_size=2", "train.lr=5e-3", "train.warmup_steps=0"]


# ----------------------------------------------------------------------------- math


def test_group_advantages_are_standardised_within_each_group():
    rewards_ = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 3.0, 3.0, 3.0, 0.0, 1.0, 2.0, 5.0])
    advantages = grpo.group_advantages(rewards_, group_size=4)
    for g in range(3):
        group = rewards_[4 * g : 4 * g + 4]
        expected = (group - group.mean()) / (group.std() + grpo.ADVANTAGE_EPS)
        assert torch.allclose(advantages[4 * g : 4 * g + 4], expected)
    # By hand for the first group: mean 0.5, sample std sqrt(1/3).
    assert advantages[0].item() == pytest.approx(0.5 / (3 ** -0.5 + 1e-4))
    assert torch.equal(advantages[4:8], torch.zeros(4))  # equal rewards: nothing to learn
    assert advantages[8:].sum().abs().item() < 1e-6  # centred within the group
    assert advantages[11] > advantages[10] > advantages[9] > advantages[8]  # order kept


def test_policy_loss_clips_the_ratio_on_the_side_the_advantage_favours():
    logp = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5, 1.1]))
    old = torch.zeros(5)  # ratios 1.5, 1.5, 0.5, 0.5, 1.1
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, 2.0])
    loss = grpo.policy_loss(logp, old, adv, epsilon=0.2)
    # A > 0: min(1.5, 1.2) * 1 -> 1.2; A < 0: min(-1.5, -1.2) -> -1.5 (no clip); A > 0 at 0.5: min(0.5, 0.8) -> 0.5;
    # A < 0 at 0.5: min(-0.5, -0.8) -> -0.8; inside the range: 1.1 * 2.
    assert torch.allclose(loss, -torch.tensor([1.2, -1.5, 0.5, -0.8, 2.2]))


def test_kl_k3_is_zero_at_the_reference_and_positive_elsewhere():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    assert torch.equal(grpo.kl_k3(logp, logp), torch.zeros(3))
    assert (grpo.kl_k3(logp, logp + torch.tensor([0.3, -0.4, 1.0])) > 0).all()


def _hand_built(model_dir):
    from oikyo.models.loading import load_model

    model = load_model(model_dir)
    prompts = [[5, 6, 7], [9, 10]]  # two prompts, G = 2 completions each, of different lengths
    completions = [[11, 12, 13], [14], [15, 16], [17, 18, 19, 20]]
    return model, prompts, completions, grpo.collate_groups(prompts, completions, pad_id=0)


def test_loss_on_a_hand_built_batch_is_minus_advantage_times_logp(tiny_dir):
    """With one update per generation batch the ratio is 1, so the gradient is that of -A * logp / max_new_tokens
    summed over the completion tokens, each computed here by hand from full prompt + completion sequences."""
    model, prompts, completions, batch = _hand_built(tiny_dir)
    config = load_config(None, ["method.name=grpo", LENGTH, "grpo.max_new_tokens=8", "grpo.num_generations=2"])
    recipe = grpo.GRPORecipe(config, ctx=None)
    recipe.session = SimpleNamespace(model=model)
    recipe.rewards = rewards.build(config.grpo.rewards)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    batch.update(advantages=advantages, rewards=torch.tensor([1.0, 0.0, 0.5, 0.0]),
                 parts=torch.tensor([[1.0], [0.0], [0.5], [0.0]]), group_std=torch.ones(4), zero_std=torch.zeros(4),
                 truncated=torch.tensor([0.0, 0.0, 0.0, 1.0]))

    loss, extras = recipe.loss(batch)
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    expected = 0.0
    for row, completion in enumerate(completions):
        prompt = prompts[row // 2]
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].log_softmax(-1)  # (seq, vocab)
        for t, token in enumerate(completion):
            expected = expected - advantages[row] * logits[len(prompt) + t - 1, token]
    (expected / 8).backward()
    assert loss.item() == pytest.approx(-(1.0 * 3 - 1.0 * 1 + 0.5 * 2 - 0.5 * 4) / 8)  # ratio 1: -sum(A * tokens) / 8
    for name, param in model.named_parameters():
        scale = param.grad.abs().max().item()  # float32 sums in another order: equal to ~1e-6 of the largest entry
        assert scale > 0 and torch.allclose(got[name], param.grad, rtol=1e-4, atol=1e-5 * scale), name
    assert extras["completion_length"] == 10 and extras["reward"] == 1.5 and extras["truncated"] == 1.0


def test_groups_with_equal_rewards_are_left_out_with_the_same_gradient(tiny_dir):
    """Group 0's rewards are all equal (A = 0): it is not run through the model, and the gradient equals the one
    computed over every completion. A batch where no group has spread takes no forward pass and changes nothing."""
    model, prompts, completions, batch = _hand_built(tiny_dir)
    config = load_config(None, ["method.name=grpo", LENGTH, "grpo.max_new_tokens=8", "grpo.num_generations=2"])
    recipe = grpo.GRPORecipe(config, ctx=None)
    recipe.session = SimpleNamespace(model=model, dist=None)  # one process
    recipe.rewards = rewards.build(config.grpo.rewards)
    batch.update(advantages=torch.tensor([0.0, 0.0, 0.7, -0.7]), rewards=torch.tensor([0.5, 0.5, 1.0, 0.0]),
                 parts=torch.tensor([[0.5], [0.5], [1.0], [0.0]]), group_std=torch.tensor([0.0, 0.0, 0.7, 0.7]),
                 zero_std=torch.tensor([1.0, 1.0, 0.0, 0.0]), truncated=torch.zeros(4))
    seen = []
    original = grpo.completion_logprobs

    def spy(model_, sub):
        seen.append(sub["completion_ids"].shape[0])
        return original(model_, sub)

    grpo.completion_logprobs = spy
    try:
        loss, extras = recipe.loss(batch)
    finally:
        grpo.completion_logprobs = original
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    assert seen == [2] and extras["completion_length"] == 10 and extras["reward"] == 2.0  # metrics over all four

    logp, rows = grpo.completion_logprobs(model, batch)  # every completion, group 0's advantages 0
    (grpo.policy_loss(logp, logp.detach(), batch["advantages"][rows]).sum() / 8).backward()
    for name, param in model.named_parameters():
        scale = param.grad.abs().max().item()
        assert scale > 0 and torch.allclose(got[name], param.grad, rtol=1e-4, atol=1e-5 * scale), name
    model.zero_grad()

    batch.update(advantages=torch.zeros(4), zero_std=torch.ones(4))
    loss, _ = recipe.loss(batch)
    loss.backward()
    assert loss.item() == 0 and all(p.grad is None for p in model.parameters())


def test_prompt_shared_once_per_group_gives_the_plain_path_log_probabilities(tiny_dir):
    """The prompt runs once per group (its KV cache repeated G times); the values equal target_logprobs on
    the G full sequences, and the plain layout puts labels on the completion tokens only."""
    from oikyo.train.runner import target_logprobs

    model, prompts, completions, batch = _hand_built(tiny_dir)
    full = grpo._full_sequences(batch, group=2)
    assert full["labels"].tolist()[1] == [IGNORE_INDEX] * 3 + [14, IGNORE_INDEX, IGNORE_INDEX]
    assert full["input_ids"].tolist()[3] == [9, 10, 17, 18, 19, 20]
    shared, rows = grpo.completion_logprobs(model, batch)
    plain, plain_rows = target_logprobs(model, full)
    assert torch.equal(rows, plain_rows) and rows.tolist() == [0, 0, 0, 1, 2, 2, 3, 3, 3, 3]
    assert torch.allclose(shared, plain, atol=1e-5)


# ----------------------------------------------------------------------------- generation


def test_generator_follows_the_policy_weights_after_each_sync(tiny_dir):
    """Greedy answers from the engine equal the live peft model's own greedy generate, before and after the
    adapter's weights change (a stale packed copy would keep answering like the old weights)."""
    from oikyo.models.chat_template import encode_prompt
    from oikyo.train.config import load_config as load
    from oikyo.train.runner import build_model, lora_kwargs

    config = load(None, ["lora.rank=4"])
    model = build_model(tiny_dir, "lora", torch.float32, "cpu", lora_kwargs(config), False).eval()
    generator = grpo.PolicyGenerator(tiny_dir, device="cpu", max_batch_size=4, lora=True)
    try:
        prompt = encode_prompt(generator.tokenizer, [{"role": "user", "content": "Say the word number 3."}])

        def both(step):
            generator.sync(model, step)
            ours = generator.generate([prompt], [0], max_new_tokens=10, temperature=0.0, top_p=1.0)[0].token_ids
            with torch.no_grad():
                mask = torch.ones(1, len(prompt), dtype=torch.long)
                out = model.generate(torch.tensor([prompt]), attention_mask=mask, max_new_tokens=10, do_sample=False,
                                     pad_token_id=0)
            theirs = out[0, len(prompt):].tolist()
            return ours, theirs[: len(ours)]

        first, reference = both(0)
        assert first == reference
        torch.manual_seed(1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.5)
        second, reference = both(1)
        assert second == reference
        assert second != first  # the new weights answer differently, and the engine saw them
    finally:
        generator.close()


def test_seeds_depend_on_seed_step_prompt_and_sample():
    seeds = {grpo.request_seed(s, step, p, k) for s in (0, 1) for step in (0, 1) for p in (0, 1) for k in (0, 1)}
    assert len(seeds) == 16 and all(0 <= x < 2**63 for x in seeds)
    assert grpo.request_seed(0, 3, 2, 1) == grpo.request_seed(0, 3, 2, 1)


# ----------------------------------------------------------------------------- runs


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "adapter_model.safetensors"))


def test_a_run_reports_rewards_and_resumes_exactly(train_tiny, tmp_path, tiny_dir):
    """Uninterrupted 6 steps vs cancelled after 3 (checkpoint) then resumed: same groups, metrics and weights."""
    overrides = [*TINY_GRPO, "train.max_steps=6", "checkpoint.save_every=3", "train.eval_every=3"]
    reference = train_tiny(overrides, run_dir=tmp_path / "reference")
    assert reference.result.status == "succeeded" and reference.result.steps == 6
    metrics = dict(reference.metrics)
    assert {"reward", "reward/length_penalty", "completion_length", "generation_s", "generated_tokens_per_s",
            "eval_reward", "zero_std_groups"} <= set(metrics[3])
    assert metrics[3]["eval_loss"] == -metrics[3]["eval_reward"]
    assert any(m["grad_norm"] > 0 for m in metrics.values())  # the rewards had spread: the weights moved
    trained = _weights(reference.result.output_dir)
    assert trained["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"].abs().sum() > 0

    run_dir = tmp_path / "interrupted"
    checkpoint = run_dir / "checkpoints" / "step-000003"
    first = train_tiny(overrides, run_dir=run_dir, should_stop=checkpoint.exists)  # cancelled right after step 3
    assert first.result.status == "cancelled" and first.result.steps == 3
    resumed = train_tiny(overrides, run_dir=run_dir)
    assert any("Resumed from step-000003" in line for line in resumed.logs), resumed.logs
    after = dict(resumed.metrics)
    assert sorted(after) == [4, 5, 6]
    for step in (4, 5, 6):
        for key in ("reward", "completion_length", "loss", "grad_norm", "lr"):
            assert after[step][key] == metrics[step][key], (step, key)
    expected, got = _weights(reference.result.output_dir), _weights(resumed.result.output_dir)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_non_conversation_rows_and_long_prompts_stop_the_run_with_a_message(train_tiny, tmp_path):
    from trainhelpers import preference_rows

    with pytest.raises(TrainingError, match="grpo trains on conversations rows.*row 0 is a preference row"):
        train_tiny([*TINY_GRPO, "train.max_steps=1"], rows=preference_rows(), eval_rows=None)
    with pytest.raises(TrainingError, match=r"leave no room for grpo.max_new_tokens \(12\).*row 0"):
        train_tiny([*TINY_GRPO, "train.max_steps=1", "data.max_length=20"], eval_rows=None, run_dir=tmp_path / "b")
    with pytest.raises(TrainingError, match="unknown reward 'nope'"):
        train_tiny([*TINY_GRPO, "train.max_steps=1", "grpo.rewards=[{name: nope}]"], eval_rows=None,
                   run_dir=tmp_path / "c")


def test_rows_without_a_prompt_are_counted_not_dropped_silently(tokenizer):
    from oikyo.train.data import TokenLimit

    rows = [*chat_rows(3), {"messages": [{"role": "assistant", "content": "Hi!"}]},
            {"messages": [{"role": "user", "content": "No answer yet."}]}]
    logs = []
    prompts = grpo.encode_prompts(rows, tokenizer, max_new_tokens=8, limit=TokenLimit(256, 2048), log=logs.append)
    assert len(prompts) == 4 and prompts[0].reference == "The word is apple." and prompts[3].reference is None
    assert prompts[0].messages == rows[0]["messages"][:1]
    assert logs == ["train: skipped 1 row(s) that give no prompt (no user or tool turn before the answer)"]


# ----------------------------------------------------------------------------- slow: the bundled model


@pytest.mark.slow
def test_grpo_raises_the_mean_reward_of_the_bundled_model(bundled_model_dir, tmp_path):
    """A length reward (answers of at most 20 characters) on 8 short questions: within 6 steps the mean reward
    of the sampled groups rises clearly (measured: about -0.97 at the first step, -0.2 at the sixth)."""
    from oikyo.train.runner import run_training

    questions = ["What is the capital of France?", "Name a fruit.", "What colour is the sky?",
                 "How many legs does a dog have?", "Say hello.", "What is 2 + 2?", "Name a planet.",
                 "What is water made of?"]
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "ok"}]} for q in questions]
    config = load_config(None, [
        "method.name=grpo", "grpo.rewards=[{name: length_penalty, args: {target: 20, only_longer: true}}]",
        "grpo.num_generations=4", "grpo.max_new_tokens=32", "train.batch_size=4", "train.max_steps=6",
        "train.eval_every=null", "data.eval_split=null", "checkpoint.save_every=null", "train.lr=2e-3",
        "train.warmup_steps=0",
    ])
    metrics = []
    result = run_training(config, run_dir=tmp_path / "run", model_dir=bundled_model_dir, train_rows=lambda: rows,
                          eval_rows=None, on_metrics=lambda step, m: metrics.append(m), should_stop=lambda: False,
                          log=lambda message: None)
    assert result.status == "succeeded" and result.steps == 6
    reward = [m["reward"] for m in metrics]
    first, last = sum(reward[:2]) / 2, sum(reward[-2:]) / 2
    assert last > first + 0.3, reward
    assert metrics[-1]["completion_length"] < metrics[0]["completion_length"], [m["completion_length"] for m in metrics]


# ----------------------------------------------------------------------------- config


def test_shipped_config_and_the_forms_rewards_can_take():
    shipped = load_config(Path(__file__).resolve().parents[2] / "src" / "oikyo" / "configs" / "grpo.yaml")
    assert shipped.method.name == "grpo"
    assert [r.name for r in shipped.grpo.rewards] == ["json_valid", "json_field_match"]
    assert rewards.build(shipped.grpo.rewards).score('{"a": 1}', '{"a": 1, "b": 2}', [])[0] == pytest.approx(1.0)
    # The dashboard sends YAML flow text; the CLI may give bare names.
    flow = load_config(None, ["method.name=grpo", "grpo.rewards=[{name: regex_match, weight: 2, args: {pattern: x}}]"])
    assert flow.grpo.rewards[0].weight == 2 and flow.grpo.rewards[0].args == {"pattern": "x"}
    names = load_config(None, ["method.name=grpo", "grpo.rewards=json_valid, exact_match", "grpo.reward_modules=mine"])
    assert [r.name for r in names.grpo.rewards] == ["json_valid", "exact_match"]
    assert names.grpo.reward_modules == ["mine"]
    from oikyo.train.config import ConfigError
    from oikyo.web.runform import form_groups

    with pytest.raises(ConfigError, match="grpo.rewards: grpo needs at least one reward"):
        load_config(None, ["method.name=grpo"])
    fields = {f["path"]: f for group in form_groups() for f in group["fields"]}
    assert fields["grpo.rewards"]["kind"] == "yaml" and fields["grpo.num_generations"]["kind"] == "int"


def test_group_engine_prefills_each_prompt_once_and_samples_the_same_tokens(tiny_dir):
    """Four prompts x 3 sampled completions: the group engine prefills 4 rows, not 12, and every completion's
    tokens equal the plain engine's for the same seed (greedy ones too)."""
    from oikyo.models.chat_template import encode_prompt
    from oikyo.serve.engine.core import GenerationEngine
    from oikyo.serve.engine.requests import GenerationRequest

    plain = GenerationEngine(tiny_dir, max_batch_size=16)
    grouped = grpo.group_engine(tiny_dir, max_batch_size=16)
    questions = [[{"role": "user", "content": f"Question {i}{'?' * i}"}] for i in range(4)]
    prompts = [encode_prompt(plain.tokenizer, messages) for messages in questions]
    prefilled = []
    forward = grouped._forward

    def counting(ids, *args, **kwargs):  # records the rows of every prefill (more than one column)
        if ids.shape[1] > 1:
            prefilled.append(ids.shape)
        return forward(ids, *args, **kwargs)

    grouped._forward = counting

    def requests():
        return [GenerationRequest(prompt_ids=p, max_new_tokens=12, temperature=1.0 if k else 0.0, seed=100 * i + k)
                for i, p in enumerate(prompts) for k in range(3)]

    ours = [r.token_ids for r in grouped.generate(requests())]
    theirs = [r.token_ids for r in plain.generate(requests())]
    assert ours == theirs
    assert [shape[0] for shape in prefilled] == [4]  # one prefill row per distinct prompt
    assert len({tuple(t) for t in ours[1:3]}) == 2  # sampled siblings differ: each drew with its own seed
    assert grouped.stats()["prompt_tokens"] == plain.stats()["prompt_tokens"]


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_kl_to_the_starting_model_and_full_fine_tuning(train_tiny, tmp_path, tiny_dir, finetune):
    """beta > 0 adds the KL to the starting model (adapter off, or a frozen copy for full fine-tuning): 0 at the
    first step, when policy and reference are the same weights, then positive; full fine-tuning's generator gets
    every weight copied in after each step and follows the policy exactly (greedy answers equal its own)."""
    run = train_tiny([*TINY_GRPO, "grpo.beta=0.5", "train.max_steps=3", "train.eval_every=null",
                      f"method.finetune={finetune}", "train.lr=1e-2"], eval_rows=None, run_dir=tmp_path / finetune)
    kl = run.series("kl")
    assert run.result.status == "succeeded" and len(kl) == 3
    assert abs(kl[0]) < 1e-6 and kl[-1] > 0, kl

    if finetune == "full":
        from oikyo.models.chat_template import encode_prompt
        from oikyo.models.loading import load_model

        policy = load_model(run.result.output_dir).eval()
        generator = grpo.PolicyGenerator(tiny_dir, device="cpu", max_batch_size=2, lora=False)
        try:
            live = dict(policy.named_parameters())
            name, _ = next((n, p) for n, p in generator.engine.model.named_parameters() if "layers.0" in n)
            assert not torch.equal(dict(generator.engine.model.named_parameters())[name], live[name])  # trained
            generator.sync(policy, step=0)
            assert all(torch.equal(p, live[n]) for n, p in generator.engine.model.named_parameters())
            prompt = encode_prompt(generator.tokenizer, [{"role": "user", "content": "Say the word number 1."}])
            ours = generator.generate([prompt], [0], max_new_tokens=8, temperature=0.0, top_p=1.0)[0].token_ids
            mask = torch.ones(1, len(prompt), dtype=torch.long)
            with torch.no_grad():
                out = policy.generate(torch.tensor([prompt]), attention_mask=mask, max_new_tokens=8, do_sample=False,
                                      pad_token_id=0)
            assert ours == out[0, len(prompt):].tolist()[: len(ours)]
            assert generator.engine.linear_products == "pytorch"  # unpacked: the weights change every step
        finally:
            generator.close()
