"""oikyo's own forward passes (oikyo.serve.engine.decoder) and their kernels.

For each family they run (Llama, Mistral, Qwen2 with its projection biases, Qwen3 with its per-head
norms) a tiny random model with varied weights prefills prompts of different lengths together and
decodes the same greedy tokens, with the same log-probabilities, as the engine running the model's
own forward. So do the varied tiny Llama with LoRA adapters and the bundled model against Hugging
Face ``generate`` (tests/serve/test_engine.py, whose engines run oikyo's forward by default). The
kernels equal PyTorch: the attention on rows of different lengths over a cache holding stale keys,
the norm, and the rotation with its cache write.
"""

from __future__ import annotations

import math

import pytest
import torch

from oikyo.serve.engine.core import GenerationEngine
from oikyo.serve.engine.cpu_kernels import load_kernels
from oikyo.serve.engine.decoder import DecoderForward, unsupported_reason
from oikyo.serve.engine.requests import GenerationRequest

NO_COMPILER = "no C compiler here (cc, gcc or clang): the native CPU kernels could not be built"


def _family_model(path, tokenizer_dir, family: str, **extra):
    """A tiny random model of ``family`` (2 layers, hidden 64, 4 query and 2 key/value heads) whose
    weights are drawn with std 0.3, so greedy text varies token to token, saved with the bundled tokenizer."""
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    from oikyo.models.loading import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    configs = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}
    if family == "mistral":
        common["sliding_window"] = None
    config = configs[family](**{**common, **extra})
    with torch.random.fork_rng():
        torch.manual_seed(7)
        model = AutoModelForCausalLM.from_config(config).to(torch.float32)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "norm" in name:  # norms near 1, so each layer's scale still varies
                    parameter.copy_(1 + 0.2 * torch.randn(parameter.shape))
                else:
                    parameter.copy_(0.3 * torch.randn(parameter.shape))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=["llama", "mistral", "qwen2", "qwen3"])
def family_model_dir(request, tmp_path_factory, serve_tokenizer_dir):
    return _family_model(tmp_path_factory.mktemp(f"decode-{request.param}") / request.param, serve_tokenizer_dir,
                         request.param)


def _run(model_dir, prompts, monkeypatch, forward: str, threads: int = 1):
    """Five requests on a 4-slot engine: four prompts of different lengths prefilled together, the fifth
    (scoring its prompt: the model's forward) joining when a slot frees."""
    monkeypatch.setenv("OIKYO_ENGINE_FORWARD", forward)
    engine = GenerationEngine(model_dir, max_batch_size=4, num_threads=threads)
    requests = [GenerationRequest(p, max_new_tokens=24 - i, stop_token_ids=[], logprobs=2) for i, p in enumerate(prompts[:4])]
    requests.append(GenerationRequest(prompts[4], max_new_tokens=8, stop_token_ids=[], logprobs=2, prompt_logprobs=1))
    return engine, engine.generate(requests)


def _assert_same(results, expected):
    assert len(results) == len(expected) == 5
    for got, want in zip(results, expected):
        assert got.token_ids == want.token_ids
        for a, b in zip(got.logprobs, want.logprobs):
            assert math.isclose(a.logprob, b.logprob, rel_tol=1e-4, abs_tol=1e-4)
            assert [t.token_id for t in a.top] == [t.token_id for t in b.top]
    scored, reference = results[4].prompt_logprobs, expected[4].prompt_logprobs
    assert len(scored) == len(reference) > 10
    for a, b in zip(scored[1:], reference[1:]):
        assert math.isclose(a.logprob, b.logprob, rel_tol=1e-4, abs_tol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_each_family_decodes_as_the_models_own_forward(family_model_dir, prompts, monkeypatch, set_threads, threads):
    oikyo, results = _run(family_model_dir, prompts, monkeypatch, "auto", threads)
    assert oikyo.stats()["forward"] == "oikyo"
    transformers, expected = _run(family_model_dir, prompts, monkeypatch, "transformers", threads)
    assert transformers.stats()["forward"] == "transformers"
    assert len({t for r in expected for t in r.token_ids}) > 20  # varied text: a mix-up of rows or positions shows
    _assert_same(results, expected)


def test_without_the_native_kernels_decoding_uses_pytorch_operators(family_model_dir, prompts, monkeypatch, set_threads):
    monkeypatch.setenv("OIKYO_CPU_KERNELS", "torch")
    engine, results = _run(family_model_dir, prompts, monkeypatch, "auto")
    assert engine.forward == "oikyo" and not engine._own_forward.prefills  # prefills: the model's forward
    _, expected = _run(family_model_dir, prompts, monkeypatch, "transformers")
    _assert_same(results, expected)


def test_unsupported_models_keep_their_own_forward(tmp_path, serve_tokenizer_dir, monkeypatch, caplog):
    sliding = _family_model(tmp_path / "sliding", serve_tokenizer_dir, "mistral", sliding_window=8)
    from oikyo.models.loading import load_model

    assert "sliding-window" in unsupported_reason(load_model(sliding))
    with caplog.at_level("INFO"):
        assert DecoderForward.build(load_model(sliding)) is None
    assert "sliding-window" in caplog.text
    model = load_model(_family_model(tmp_path / "llama", serve_tokenizer_dir, "llama"))
    assert unsupported_reason(model) is None
    model.config.model_type = "gemma"
    assert "'gemma' is not one of" in unsupported_reason(model)
    model.config.model_type = "llama"
    assert "bfloat16" in unsupported_reason(model.to(torch.bfloat16))
    monkeypatch.setenv("OIKYO_ENGINE_FORWARD", "transformers")
    assert DecoderForward.build(load_model(tmp_path / "llama")) is None


def _attention_case(lengths, kv_heads=3, group=3, dim=64, capacity=256, seed=0):
    generator = torch.Generator().manual_seed(seed)
    n = len(lengths)
    q = torch.randn((n, kv_heads, group, dim), generator=generator)
    keys = torch.randn((n + 2, kv_heads, capacity, dim), generator=generator)  # stale keys past each length
    values = torch.randn((n + 2, kv_heads, capacity, dim), generator=generator)
    return q, keys, values, torch.tensor(lengths, dtype=torch.int64)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("lengths", "group", "dim"), [([1, 7, 130, 64], 3, 64), ([5], 1, 16), ([9, 2], 7, 128)])
def test_attention_kernel_equals_pytorch(lengths, group, dim, threads, set_threads):
    kernels = load_kernels()
    assert kernels is not None, NO_COMPILER
    torch.set_num_threads(threads)
    q, keys, values, lengths_t = _attention_case(lengths, group=group, dim=dim)
    max_len = max(lengths)
    got = kernels.decode_attention(q, keys, values, lengths_t, max_len, dim ** -0.5)
    n = len(lengths)
    mask = (torch.arange(max_len)[None, :] < lengths_t[:, None])[:, None, None, :]
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.double(), keys[:n, :, :max_len].double(), values[:n, :, :max_len].double(), attn_mask=mask, scale=dim ** -0.5)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_norm_and_rotation_kernels_equal_pytorch():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    kernels = load_kernels()
    assert kernels is not None, NO_COMPILER
    generator = torch.Generator().manual_seed(1)
    h, delta, weight = (torch.randn(shape, generator=generator) for shape in ((5, 96), (5, 96), (96,)))
    expected_h = h + delta
    expected = torch.nn.functional.rms_norm(expected_h, (96,), weight, 1e-5)
    normed = kernels.add_rms_norm(h, delta, weight, 1e-5)
    torch.testing.assert_close(h, expected_h)  # the residual stream, updated in place
    torch.testing.assert_close(normed, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kernels.add_rms_norm(h, None, weight, 1e-5), expected, rtol=1e-5, atol=1e-5)

    n, heads, kv_heads, d = 3, 4, 2, 16
    q, k, v = (torch.randn((n, count, d), generator=generator) for count in (heads, kv_heads, kv_heads))
    angles = torch.randn((n, d // 2), generator=generator)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()  # rope's layout
    keys, values = torch.zeros((6, kv_heads, 8, d)), torch.zeros((6, kv_heads, 8, d))
    slots, positions = torch.tensor([4, 0, 2]), torch.tensor([7, 0, 3])
    expected_q, expected_k = apply_rotary_pos_emb(q, k, cos, sin)  # transformers' rotation, broadcast over heads
    kernels.rope_cache(q, k, v, cos, sin, slots, positions, keys, values)
    torch.testing.assert_close(q, expected_q, rtol=1e-6, atol=1e-6)  # rotated in place
    torch.testing.assert_close(keys[slots, :, positions], expected_k, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(values[slots, :, positions], v)
    written = torch.zeros(6, 8, dtype=torch.bool)
    written[slots, positions] = True
    assert not keys.transpose(1, 2)[~written].any() and not values.transpose(1, 2)[~written].any()  # nothing else


# ----------------------------------------------------------------------------- mixed steps

def _staggered(model_dir, prompts, monkeypatch, *, mixed: bool, forward: str = "auto", threads: int = 1,
               adapters: dict | None = None):
    """Seven requests on a 3-slot engine, each stopping after a different number of tokens, so the
    waiting ones join one or two at a time while others decode (with ``mixed``: in mixed steps)."""
    monkeypatch.setenv("OIKYO_ENGINE_FORWARD", forward)
    monkeypatch.setenv("OIKYO_ENGINE_MIXED_STEPS", "1" if mixed else "0")
    engine = GenerationEngine(model_dir, max_batch_size=3, num_threads=threads)
    names = [None]
    for name, folder in (adapters or {}).items():
        engine.add_adapter(name, folder)
        names.append(name)
    requests = [GenerationRequest(prompts[i % len(prompts)], max_new_tokens=5 + 4 * i, stop_token_ids=[], logprobs=2,
                                  adapter=names[i % len(names)])
                for i in range(7)]
    return engine, engine.generate(requests)


def _assert_same_tokens(results, expected):
    assert len(results) == len(expected) == 7
    for got, want in zip(results, expected):
        assert got.token_ids == want.token_ids
        assert len(got.logprobs) == len(want.logprobs) == len(want.token_ids)
        for a, b in zip(got.logprobs, want.logprobs):
            assert math.isclose(a.logprob, b.logprob, rel_tol=1e-4, abs_tol=1e-4)
            assert [t.token_id for t in a.top] == [t.token_id for t in b.top]


@pytest.mark.parametrize("threads", [1, 2])
def test_mixed_steps_decode_as_separate_prefills_and_the_models_own_forward(family_model_dir, prompts, monkeypatch,
                                                                           set_threads, threads):
    if load_kernels() is None:
        pytest.skip(NO_COMPILER)
    mixed, results = _staggered(family_model_dir, prompts, monkeypatch, mixed=True, threads=threads)
    assert mixed.mixed_steps and mixed.stats()["mixed_steps"] >= 3  # newcomers joined while others decoded
    apart, separate = _staggered(family_model_dir, prompts, monkeypatch, mixed=False, threads=threads)
    assert not apart.mixed_steps and apart.stats()["mixed_steps"] == 0
    _, expected = _staggered(family_model_dir, prompts, monkeypatch, mixed=True, forward="transformers",
                             threads=threads)
    assert len({t for r in expected for t in r.token_ids}) > 20
    _assert_same_tokens(separate, expected)
    _assert_same_tokens(results, expected)


def test_mixed_steps_apply_each_rows_adapter(varied_model_dir, adapter_dirs, prompts, monkeypatch, set_threads):
    """Decoding rows and newcomers' prompts with different adapters (and none) in one forward."""
    if load_kernels() is None:
        pytest.skip(NO_COMPILER)
    mixed, results = _staggered(varied_model_dir, prompts, monkeypatch, mixed=True, adapters=adapter_dirs)
    assert mixed.stats()["mixed_steps"] >= 3
    _, expected = _staggered(varied_model_dir, prompts, monkeypatch, mixed=False, forward="transformers",
                             adapters=adapter_dirs)
    _assert_same_tokens(results, expected)
    assert len({tuple(r.token_ids) for r in expected}) == 7  # the adapters change the answers


def test_without_native_kernels_there_are_no_mixed_steps(varied_model_dir, prompts, monkeypatch, set_threads):
    monkeypatch.setenv("OIKYO_CPU_KERNELS", "torch")
    engine, _ = _staggered(varied_model_dir, prompts, monkeypatch, mixed=True)
    assert not engine.mixed_steps and engine.stats()["mixed_steps"] == 0
