"""The engine's float16 weights (``GenerationEngine(weights="float16")``, ``oikyo deploy --weights float16``).

The native base-product kernel reads the linear weights as IEEE halves, widened to float32 as they
are loaded (F16C), and multiplies and sums in float32. So a product from half panels must equal the
float32 product with the weights rounded to float16, and an engine with float16 weights must decode
exactly as the float32 engine whose decoding panels hold those rounded weights: the same greedy
tokens, log-probabilities within float32 rounding. Where the kernel cannot run, asking for float16
is a clear error, never a silent float32.
"""

from __future__ import annotations

import math

import pytest
import torch

from oikyo.serve.engine.core import GenerationEngine
from oikyo.serve.engine.cpu_kernels import load_kernels
from oikyo.serve.engine.linear_layers import HALF_UNAVAILABLE, ServingLinear
from oikyo.serve.engine.requests import GenerationRequest

NO_COMPILER = "no C compiler here (cc, gcc or clang): the native CPU kernels could not be built"


@pytest.fixture
def kernel():
    built = load_kernels()
    assert built is not None, NO_COMPILER
    if not built.half_available:  # an x86 CPU without AVX2/F16C, or another architecture
        pytest.skip(f"this build of the kernels has no F16C half panels ({built.lanes}-lane vectors)")
    return built


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows", [1, 3, 8, 11, 16])
def test_half_panels_equal_the_product_with_the_weights_rounded_to_float16(kernel, rows, threads, set_threads):
    """Odd sizes (not multiples of the panels or vectors); 300 outputs are enough panels for two threads."""
    set_threads(threads)
    generator = torch.Generator().manual_seed(rows)
    for out_features, in_features in [(53, 37), (32, 64), (70, 19), (300, 96)]:
        weight = torch.randn(out_features, in_features, generator=generator)
        bias = torch.randn(out_features, generator=generator)
        x = torch.randn(rows, in_features, generator=generator)
        panels = kernel.pack(weight, half=True)
        assert panels.dtype == torch.float16
        assert panels.numel() == -(-out_features // kernel.panel) * kernel.panel * in_features
        out = kernel.linear(x, panels, out_features, bias)
        rounded = x.double() @ weight.half().double().T + bias.double()
        torch.testing.assert_close(out.double(), rounded, rtol=1e-5, atol=1e-4)
        exact = x.double() @ weight.double().T + bias.double()
        assert (out.double() - exact).abs().max() > 1e-4  # the halves were used, not the float32 weights


def test_serving_linear_with_half_panels_keeps_float32_for_prefills(kernel, set_threads):
    set_threads(1)
    plain = torch.nn.Linear(40, 70)
    layer = ServingLinear(plain, pack=True, kernels=kernel, half=True)
    assert layer.panels.dtype == torch.float16 and layer.weight is plain.weight  # the model's weights unchanged
    with torch.inference_mode():
        x = torch.randn(4, 1, 40)  # a decoding step: the kernel, rounded weights
        rounded = torch.nn.functional.linear(x, plain.weight.half().float(), plain.bias)
        torch.testing.assert_close(layer(x), rounded, rtol=1e-5, atol=1e-5)
        x = torch.randn(2, 9, 40)  # an 18-token prefill: PyTorch on the float32 weights
        torch.testing.assert_close(layer(x), plain(x), rtol=0, atol=0)


def _requests(prompts):
    return [GenerationRequest(p, max_new_tokens=20, stop_token_ids=[], logprobs=2) for p in prompts[:4]]


def test_float16_weights_decode_as_float32_with_rounded_decoding_weights(kernel, varied_model_dir, prompts,
                                                                         set_threads):
    half = GenerationEngine(varied_model_dir, max_batch_size=4, num_threads=1, weights="float16")
    assert half.stats()["weights"] == "float16"
    assert half.linear_products == "native kernel, float16 weights"
    results = half.generate(_requests(prompts))

    # The reference: the float32 engine, its decoding panels holding the float16-rounded weights.
    reference = GenerationEngine(varied_model_dir, max_batch_size=4, num_threads=1)
    assert reference.stats()["weights"] == "float32"
    layers = [m for m in reference.model.modules() if isinstance(m, ServingLinear) and m.panels is not None]
    assert len(layers) > 10
    for layer in layers:
        layer.panels = kernel.pack(layer.weight.detach().half().float())
    expected = reference.generate(_requests(prompts))

    assert len({t for r in expected for t in r.token_ids}) > 10  # varied text: a wrong row or weight shows
    for got, want in zip(results, expected, strict=True):
        assert got.token_ids == want.token_ids
        for a, b in zip(got.logprobs, want.logprobs, strict=True):
            assert math.isclose(a.logprob, b.logprob, rel_tol=1e-4, abs_tol=1e-4)


def test_float16_weights_where_they_cannot_run_are_a_clear_error(varied_model_dir, monkeypatch):
    with pytest.raises(ValueError, match="weights must be one of float32, float16"):
        GenerationEngine(varied_model_dir, max_batch_size=2, weights="bfloat16")
    with pytest.raises(ValueError, match="needs packed weights"):
        GenerationEngine(varied_model_dir, max_batch_size=2, weights="float16", packed_weights=False)
    monkeypatch.setenv("OIKYO_CPU_KERNELS", "torch")  # no native kernels: float16 would silently be float32
    with pytest.raises(ValueError, match="F16C") as error:
        GenerationEngine(varied_model_dir, max_batch_size=2, weights="float16")
    assert str(error.value) == HALF_UNAVAILABLE
