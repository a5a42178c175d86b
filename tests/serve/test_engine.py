"""The generation engine: exact greedy outputs, stopping, seeded sampling, many adapters, continuous batching.

Fast tests run on a tiny random model whose greedy outputs vary from token to token (see
conftest.py); the slow ones check greedy equality with Hugging Face ``generate`` on the bundled
SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from oikyo.serve.engine.core import GenerationEngine
from oikyo.serve.engine.lora import AdapterError
from oikyo.serve.engine.requests import GenerationRequest


def _engine(model_dir, **kwargs) -> GenerationEngine:
    return GenerationEngine(model_dir, **{"num_threads": 1, "max_batch_size": 4, **kwargs})


def _first_delta(handle) -> str:
    return next(iter(handle))


# ----------------------------------------------------------------------------- greedy = HF generate


def test_greedy_alone_equals_hf_generate(engine, prompts, reference):
    for prompt in prompts[:3]:
        [result] = engine.generate([GenerationRequest(prompt, max_new_tokens=25)])
        expected = reference(prompt, 25)
        assert len(set(expected)) > 5  # the model writes varied text: a mix-up would show
        assert result.token_ids == expected
        assert result.finish_reason == "length"
        assert result.prompt_tokens == len(prompt) and result.completion_tokens == 25
        assert result.text == engine.tokenizer.decode(expected, skip_special_tokens=True)


def test_greedy_batched_equals_each_prompt_alone(engine, prompts, reference):
    # 5 requests of different prompt lengths and budgets on 4 slots: sequences finish at different
    # steps (the slot of a finished one is refilled by the last), and the fifth joins mid-way.
    budgets = [30, 5, 30, 12, 20]
    results = engine.generate([GenerationRequest(p, max_new_tokens=n) for p, n in zip(prompts, budgets)])
    assert len({len(p) for p in prompts}) == len(prompts)
    for prompt, budget, result in zip(prompts, budgets, results):
        assert result.token_ids == reference(prompt, budget)
    assert results[4].admitted_step > 0  # it waited for a free slot, then joined the running batch


def test_max_new_tokens_zero_and_progress(engine, prompts):
    calls = []
    results = engine.generate(
        [GenerationRequest(prompts[0], max_new_tokens=0), GenerationRequest(prompts[1], max_new_tokens=3)],
        progress=lambda done, total: calls.append((done, total)),
    )
    assert results[0].token_ids == [] and results[0].finish_reason == "length"
    assert results[1].completion_tokens == 3
    assert calls == [(1, 2), (2, 2)]


# ----------------------------------------------------------------------------- stopping


def test_stop_token_ends_generation_and_is_kept_in_ids_not_text(engine, prompts, reference):
    expected = reference(prompts[0], 30)
    stop_token = expected[7]
    first = expected.index(stop_token)
    [result] = engine.generate([GenerationRequest(prompts[0], max_new_tokens=30, stop_token_ids=[stop_token])])
    assert result.finish_reason == "stop"
    assert result.token_ids == expected[: first + 1]
    assert result.text == engine.tokenizer.decode(expected[:first], skip_special_tokens=True)


def test_eos_stops_by_default(engine, prompts, reference):
    expected = reference(prompts[2], 30)
    saved = set(engine.eos_token_ids)
    engine.eos_token_ids = {expected[4]}  # pretend that token is the model's eos
    try:
        [result] = engine.generate([GenerationRequest(prompts[2], max_new_tokens=30)])
    finally:
        engine.eos_token_ids = saved
    assert result.finish_reason == "stop"
    assert result.token_ids == expected[: expected.index(expected[4]) + 1]


def test_stop_string_cuts_the_text_before_it(engine, prompts, reference):
    expected = reference(prompts[3], 30)
    full = engine.tokenizer.decode(expected, skip_special_tokens=True)
    stop = full[20:24]
    assert stop.strip()
    [result] = engine.generate([GenerationRequest(prompts[3], max_new_tokens=30, stop=["never-there", stop])])
    assert result.finish_reason == "stop"
    assert result.text == full[: full.find(stop)]
    assert stop not in result.text
    # It stopped at the token that completed the stop string, not at the budget.
    assert result.completion_tokens < 30
    assert result.token_ids == expected[: result.completion_tokens]


def test_max_new_tokens_gives_length(engine, prompts):
    [result] = engine.generate([GenerationRequest(prompts[1], max_new_tokens=7)])
    assert result.finish_reason == "length" and result.completion_tokens == 7
    assert result.time_to_first_token is not None and 0 < result.time_to_first_token <= result.total_time


# ----------------------------------------------------------------------------- sampling


def test_seeded_sampling_does_not_depend_on_the_batch(engine, prompts):
    sampled = GenerationRequest(prompts[2], max_new_tokens=20, temperature=1.0, top_p=0.9, seed=7)
    [alone] = engine.generate([sampled])
    crowd = [
        GenerationRequest(prompts[0], max_new_tokens=15),
        GenerationRequest(prompts[1], max_new_tokens=20, temperature=1.2, seed=3),
        sampled,
        GenerationRequest(prompts[3], max_new_tokens=9, temperature=0.7, seed=7),
        GenerationRequest(prompts[4], max_new_tokens=20),
    ]
    in_batch = engine.generate(crowd)[2]
    assert in_batch.token_ids == alone.token_ids
    reseeded = GenerationRequest(prompts[2], max_new_tokens=20, temperature=1.0, top_p=0.9, seed=8)
    [other_seed] = engine.generate([reseeded])
    assert other_seed.token_ids != alone.token_ids


def test_top_p_keeps_the_smallest_nucleus():
    import torch

    from oikyo.serve.engine.sampling import top_p_filter

    scores = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = torch.isfinite(top_p_filter(scores, 0.75))
    assert kept.tolist() == [True, True, False, False]
    assert torch.isfinite(top_p_filter(scores, 0.01)).tolist() == [True, False, False, False]


# ----------------------------------------------------------------------------- many adapters


@pytest.mark.parametrize("products", ["native", "torch"])
def test_mixed_adapter_batch_equals_each_adapter_alone(varied_model_dir, adapter_dirs, prompts, reference, products, monkeypatch):
    """Both ways of computing a mixed batch's LoRA terms: the native kernel and PyTorch's products."""
    if products == "torch":
        monkeypatch.setenv("OIKYO_CPU_KERNELS", "torch")
    engine = _engine(varied_model_dir)
    for name in ("alpha", "beta"):
        engine.add_adapter(name, adapter_dirs[name])
    plan = [("alpha", 0), ("beta", 1), (None, 2), ("alpha", 3), ("beta", 0)]
    results = engine.generate([GenerationRequest(prompts[i], max_new_tokens=15, adapter=a) for a, i in plan])
    assert engine.stats()["lora_products"] == {"native": "native kernel", "torch": "pytorch"}[products]
    assert engine.stats()["forward"] == "oikyo"  # adapters apply inside oikyo's own forward passes too
    for (adapter, i), result in zip(plan, results):
        expected = reference(prompts[i], 15, adapter_dirs[adapter] if adapter else None)
        assert result.token_ids == expected, (adapter, i)
        assert result.adapter == adapter
    # The adapters really change the outputs, so the comparison above can fail.
    base, alpha, beta = (reference(prompts[0], 15, adapter_dirs.get(a)) for a in (None, "alpha", "beta"))
    assert base != alpha and alpha != beta and base != beta


def test_adapters_are_evicted_least_recently_used(varied_model_dir, adapter_dirs, prompts, reference):
    engine = _engine(varied_model_dir, max_adapters=2)
    for name, folder in adapter_dirs.items():
        engine.add_adapter(name, folder)

    def run(name):
        [result] = engine.generate([GenerationRequest(prompts[0], max_new_tokens=8, adapter=name)])
        assert result.token_ids == reference(prompts[0], 8, adapter_dirs[name])

    assert engine.loaded_adapters == []  # nothing loads before a request needs it
    run("alpha")
    run("beta")
    run("alpha")
    assert engine.loaded_adapters == ["beta", "alpha"]
    run("gamma")  # evicts beta, the least recently used
    assert engine.loaded_adapters == ["alpha", "gamma"]
    run("beta")  # reloaded on demand, evicting alpha
    assert engine.loaded_adapters == ["gamma", "beta"]
    stats = engine.stats()
    assert stats["adapter_loads"] == 4 and stats["adapter_evictions"] == 2
    engine.remove_adapter("gamma")
    run("beta")
    assert engine.loaded_adapters == ["beta"]  # a removed adapter is dropped once unused
    with pytest.raises(ValueError, match="unknown adapter"):
        engine.generate([GenerationRequest(prompts[0], max_new_tokens=2, adapter="gamma")])


def test_more_adapters_in_one_batch_than_slots(varied_model_dir, adapter_dirs, prompts, reference):
    engine = _engine(varied_model_dir, max_adapters=1)
    for name, folder in adapter_dirs.items():
        engine.add_adapter(name, folder)
    plan = [("alpha", 0), ("beta", 1), ("gamma", 2), (None, 3)]
    results = engine.generate([GenerationRequest(prompts[i], max_new_tokens=6, adapter=a) for a, i in plan])
    for (adapter, i), result in zip(plan, results):
        assert result.token_ids == reference(prompts[i], 6, adapter_dirs[adapter] if adapter else None)
    # beta had to wait for alpha's sequence to leave before its weights could replace alpha's.
    assert results[1].admitted_step >= results[0].finished_step


def test_unsupported_or_unknown_adapters_are_refused(varied_model_dir, adapter_dirs, prompts, tmp_path):
    engine = _engine(varied_model_dir)
    dora = tmp_path / "dora"
    shutil.copytree(adapter_dirs["alpha"], dora)
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(AdapterError, match="use_dora"):
        engine.add_adapter("dora", dora)
    with pytest.raises(AdapterError, match="not a peft adapter folder"):
        engine.add_adapter("empty", tmp_path)
    with pytest.raises(ValueError, match="unknown adapter"):
        engine.generate([GenerationRequest(prompts[0], max_new_tokens=2, adapter="nope")])


# ----------------------------------------------------------------------------- continuous batching


def test_a_request_joins_the_running_batch(varied_model_dir, prompts, reference):
    engine = _engine(varied_model_dir)
    engine.start()
    try:
        # first: 40-token prompt + 200 fits the first cache allocation (256 positions); second needs
        # more, so the cache grows while the first sequence is running.
        first = engine.submit(GenerationRequest(prompts[0], max_new_tokens=200))
        _first_delta(first)
        second = engine.submit(GenerationRequest(prompts[1], max_new_tokens=300))
        a, b = first.result(timeout=60), second.result(timeout=60)
    finally:
        engine.stop()
    assert a.token_ids == reference(prompts[0], 200)
    assert b.token_ids == reference(prompts[1], 300)
    # The second joined after the first started and before it finished (no waiting for the batch).
    assert a.admitted_step < b.admitted_step < a.finished_step
    assert engine.stats()["tokens_generated"] == 500


def test_stream_deltas_add_up_to_the_text(varied_model_dir, prompts, reference):
    engine = _engine(varied_model_dir)
    engine.start()
    try:
        handle = engine.submit(GenerationRequest(prompts[2], max_new_tokens=40, stop=["zzz-never"]))
        deltas = list(handle)
        result = handle.result()
    finally:
        engine.stop()
    assert len(deltas) > 5
    assert "".join(deltas) == result.text
    assert result.token_ids == reference(prompts[2], 40)


def test_astream_yields_deltas_and_cancels_when_left_early(varied_model_dir, prompts):
    engine = _engine(varied_model_dir)
    engine.start()

    async def collect(handle, limit=None):
        out = []
        async for delta in handle.astream():
            out.append(delta)
            if limit and len(out) >= limit:
                break
        return out

    try:
        full = engine.submit(GenerationRequest(prompts[0], max_new_tokens=30))
        deltas = asyncio.run(collect(full))
        assert "".join(deltas) == full.result(timeout=60).text
        left = engine.submit(GenerationRequest(prompts[1], max_new_tokens=1500))
        asyncio.run(collect(left, limit=2))  # the client goes away after two deltas
        result = left.result(timeout=60)
    finally:
        engine.stop()
    assert result.finish_reason == "cancelled" and result.completion_tokens < 1500


def test_cancel_frees_the_slot(varied_model_dir, prompts, reference):
    engine = _engine(varied_model_dir, max_batch_size=1)
    engine.start()
    try:
        running = engine.submit(GenerationRequest(prompts[0], max_new_tokens=1800))
        _first_delta(running)
        queued = engine.submit(GenerationRequest(prompts[3], max_new_tokens=5))
        waiting = engine.submit(GenerationRequest(prompts[4], max_new_tokens=5))
        waiting.cancel()  # cancelled before it ever reached the batch
        running.cancel()
        done = queued.result(timeout=60)
        cancelled = running.result(timeout=60)
        never = waiting.result(timeout=60)
    finally:
        engine.stop()
    assert cancelled.finish_reason == "cancelled" and 0 < cancelled.completion_tokens < 1800
    assert never.finish_reason == "cancelled" and never.completion_tokens == 0
    # The only slot went to the queued request once the cancelled one left.
    assert done.token_ids == reference(prompts[3], 5)
    assert done.admitted_step >= cancelled.finished_step
    stats = engine.stats()
    assert stats["active_sequences"] == 0 and stats["queue_depth"] == 0 and stats["requests_cancelled"] == 2


def test_stop_with_drain_completes_in_flight_requests(varied_model_dir, prompts, reference):
    engine = _engine(varied_model_dir, max_batch_size=2)
    engine.start()
    handles = [engine.submit(GenerationRequest(p, max_new_tokens=20)) for p in prompts[:3]]
    engine.stop(drain=True)
    assert not engine.running
    for prompt, handle in zip(prompts, handles):
        assert handle.done
        assert handle.result().token_ids == reference(prompt, 20)
    with pytest.raises(RuntimeError, match="start"):
        engine.submit(GenerationRequest(prompts[0], max_new_tokens=2))


def test_stop_without_drain_cancels(varied_model_dir, prompts):
    engine = _engine(varied_model_dir, max_batch_size=1)
    engine.start()
    handles = [engine.submit(GenerationRequest(p, max_new_tokens=1500)) for p in prompts[:2]]
    _first_delta(handles[0])
    engine.stop(drain=False)
    assert [h.result().finish_reason for h in handles] == ["cancelled", "cancelled"]
    assert handles[1].result().completion_tokens == 0


def test_generate_goes_through_the_running_scheduler(varied_model_dir, prompts, reference):
    engine = _engine(varied_model_dir)
    engine.start()
    try:
        results = engine.generate([GenerationRequest(p, max_new_tokens=10) for p in prompts[:3]])
    finally:
        engine.stop()
    assert [r.token_ids for r in results] == [reference(p, 10) for p in prompts[:3]]


def test_stats_and_request_validation(engine, prompts):
    stats = engine.stats()
    for key in ("queue_depth", "active_sequences", "tokens_generated", "steps", "requests_finished"):
        assert isinstance(stats[key], int)
    with pytest.raises(ValueError, match="empty"):
        engine.generate([GenerationRequest([], max_new_tokens=2)])
    with pytest.raises(ValueError, match="context"):
        engine.generate([GenerationRequest([1] * engine.context_length, max_new_tokens=2)])
    with pytest.raises(ValueError, match="top_p"):
        engine.generate([GenerationRequest(prompts[0], top_p=0.0)])
    with pytest.raises(ValueError, match="token ids"):
        engine.generate([GenerationRequest([1, 10**7], max_new_tokens=2)])


def test_a_failed_step_fails_its_requests_and_the_engine_goes_on(varied_model_dir, prompts, reference, monkeypatch):
    engine = _engine(varied_model_dir)
    real_forward = engine._forward
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated device failure")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(engine, "_forward", flaky)
    engine.start()
    try:
        handle = engine.submit(GenerationRequest(prompts[0], max_new_tokens=20))
        with pytest.raises(RuntimeError, match="simulated"):
            handle.result(timeout=60)
        later = engine.submit(GenerationRequest(prompts[1], max_new_tokens=6))
        assert later.result(timeout=60).token_ids == reference(prompts[1], 6)
    finally:
        engine.stop()
    assert engine.stats()["requests_failed"] == 1


# ----------------------------------------------------------------------------- the bundled model


@pytest.mark.slow
def test_bundled_model_greedy_equals_hf_generate(bundled_model_dir):
    import torch

    from oikyo.models.chat_template import encode_prompt
    from oikyo.models.loading import load_model

    engine = GenerationEngine(bundled_model_dir, max_batch_size=4, num_threads=1)
    assert engine.stats()["linear_products"] == _native_linear()
    questions = ["What is the capital of France?", "Write a haiku about the sea.", "List three prime numbers.",
                 "Explain photosynthesis in two sentences.", "Hi!"]
    prompts = [encode_prompt(engine.tokenizer, [{"role": "user", "content": q}]) for q in questions]
    results = engine.generate([GenerationRequest(p, max_new_tokens=48) for p in prompts])
    hf_model = load_model(bundled_model_dir)  # plain transformers layers (the engine's are packed)
    with torch.inference_mode():
        for prompt, result in zip(prompts, results):
            out = hf_model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=48, do_sample=False)
            assert result.token_ids == out[0, len(prompt) :].tolist()
    assert "Paris" in results[0].text


# ----------------------------------------------------------------------------- layers and LoRA internals


def _native_linear(threads: int = 1) -> str:
    """What the linear layers of an engine on ``threads`` threads use here: the native kernel where it was
    built for AVX or AVX-512 (CI's machine has gcc) and, on several threads, with OpenMP on torch's
    runtime (gcc's -fopenmp), else oneDNN (see CPUKernels.linear_available and .threaded)."""
    from oikyo.serve.engine.cpu_kernels import load_kernels

    kernels = load_kernels()
    assert kernels is not None, "no C compiler here (cc, gcc or clang): the native CPU kernels could not be built"
    native = kernels.linear_available and (threads == 1 or kernels.threaded)
    return "native kernel" if native else "onednn"


@pytest.mark.parametrize(
    ("settings", "products"),
    [
        ({}, None),  # one thread (what _engine sets): the native kernel where it applies
        ({"environment": "torch"}, "onednn"),
        ({"num_threads": 2}, None),  # two threads: the native kernel threaded, where it applies
        ({"num_threads": 2, "environment": "torch"}, "onednn"),
        ({"packed_weights": False}, "pytorch"),
    ],
)
def test_every_form_of_the_linear_layers_gives_the_same_greedy_tokens(
    varied_model_dir, prompts, reference, settings, products, monkeypatch, set_threads
):
    settings = dict(settings)  # the engine sets torch's threads; set_threads restores them afterwards
    if settings.pop("environment", None):
        monkeypatch.setenv("OIKYO_CPU_KERNELS", "torch")
    engine = _engine(varied_model_dir, **settings)
    assert engine.stats()["linear_products"] == (products or _native_linear(settings.get("num_threads", 1)))
    assert engine.packed_weights is (products != "pytorch")
    results = engine.generate([GenerationRequest(p, max_new_tokens=20) for p in prompts[:3]])
    assert [r.token_ids for r in results] == [reference(p, 20) for p in prompts[:3]]


def test_multilora_logits_match_peft_on_a_plain_model(varied_model_dir, adapter_dirs, prompts):
    """On a model without serving layers, MultiLoRA works through forward hooks: rows match peft's logits."""
    import torch
    from peft import PeftModel

    from oikyo.models.loading import load_model
    from oikyo.serve.engine.lora import MultiLoRA

    model = load_model(varied_model_dir)
    lora = MultiLoRA(model, max_adapters=2)
    lora.load("alpha", adapter_dirs["alpha"])
    lora.load("beta", adapter_dirs["beta"])
    ids = torch.tensor([prompts[1][:12]] * 3)  # (3, 12): the same tokens through alpha, base, beta
    with torch.inference_mode():
        lora.set_batch(["alpha", None, "beta"])
        mixed = model(input_ids=ids).logits  # (3, 12, vocab)
        lora.set_batch(None)
        base = model(input_ids=ids[:1]).logits
        expected = {
            name: PeftModel.from_pretrained(load_model(varied_model_dir), adapter_dirs[name])(input_ids=ids[:1]).logits
            for name in ("alpha", "beta")
        }
    torch.testing.assert_close(mixed[0:1], expected["alpha"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mixed[1:2], base, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mixed[2:3], expected["beta"], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(expected["alpha"], base, atol=1e-2)


def test_a_second_multilora_on_the_engine_model_does_not_interfere(varied_model_dir, adapter_dirs, prompts, reference):
    """Evaluation scores losses on the engine's own model with a MultiLoRA of its own: both must coexist."""
    import torch
    from peft import PeftModel

    from oikyo.models.loading import load_model
    from oikyo.serve.engine.lora import MultiLoRA

    engine = _engine(varied_model_dir)
    engine.add_adapter("beta", adapter_dirs["beta"])
    scorer = MultiLoRA(engine.model)
    scorer.load("alpha", adapter_dirs["alpha"])
    [result] = engine.generate([GenerationRequest(prompts[0], max_new_tokens=12, adapter="beta")])
    assert result.token_ids == reference(prompts[0], 12, adapter_dirs["beta"])
    ids = torch.tensor([prompts[2][:10]])
    with torch.inference_mode():
        scorer.set_batch(["alpha"])
        logits = engine.model(input_ids=ids).logits
        scorer.set_batch(None)
        expected = PeftModel.from_pretrained(load_model(varied_model_dir), adapter_dirs["alpha"])(input_ids=ids).logits
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    [again] = engine.generate([GenerationRequest(prompts[0], max_new_tokens=12)])
    assert again.token_ids == reference(prompts[0], 12)
