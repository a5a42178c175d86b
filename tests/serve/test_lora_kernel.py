"""The native LoRA kernel: built with the machine's C compiler, equal to PyTorch's products, and optional.

CI's machine has gcc, so these tests build and run the kernel there; on a machine without a C
compiler the ones that need it fail with that reason rather than pass unseen.
"""

from __future__ import annotations

import pytest
import torch

from oikyo.serve import lora_kernel
from oikyo.serve.lora_kernel import LoRAKernel, TokenPlan, load_kernel


@pytest.fixture
def kernel() -> LoRAKernel:
    built = load_kernel()
    assert built is not None, "no C compiler here (cc, gcc or clang): the native LoRA kernel could not be built"
    return built


def _reference(x, a_cat, bt_cat, layout, rows, tokens_per_row):
    """Each token's term by PyTorch: x @ A_a.T @ B_a.T * scaling for its row's adapter a."""
    out = torch.zeros(x.shape[0], bt_cat.shape[1], dtype=torch.float64)
    spans = {name: (start, end, scaling) for name, start, end, scaling in layout}
    for token in range(x.shape[0]):
        name = rows[token // tokens_per_row]
        if name in spans:
            start, end, scaling = spans[name]
            low = x[token].double() @ a_cat[start:end].double().T
            out[token] = low @ bt_cat[start:end].double() * scaling
    return out


@pytest.mark.parametrize("tokens_per_row", [1, 5])
def test_kernel_adds_each_tokens_own_adapter_term(kernel, tokens_per_row):
    generator = torch.Generator().manual_seed(0)
    in_features, out_features = 37, 53  # not multiples of the vector width: the loops' tails count
    # Ranks 4, 8 and 3; "c" is loaded but unused; "d" is used by a row but does not target this layer.
    layout = (("a", 0, 4, 2.0), ("b", 4, 12, 0.5), ("c", 12, 15, 1.0))
    a_cat = torch.randn(15, in_features, generator=generator)
    bt_cat = torch.randn(15, out_features, generator=generator)
    rows = ["b", None, "a", "d", "b", "a"]
    x = torch.randn(len(rows) * tokens_per_row, in_features, generator=generator)
    base = torch.randn(x.shape[0], out_features, generator=generator)
    out = base.clone()
    plan = TokenPlan(layout, rows, tokens_per_row)
    assert plan.args[0] == 2  # two adapters in use: a and b
    kernel(x, out, (a_cat.data_ptr(), bt_cat.data_ptr()), plan)
    expected = base.double() + _reference(x, a_cat, bt_cat, layout, rows, tokens_per_row)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-4)
    untouched = [t for t in range(x.shape[0]) if rows[t // tokens_per_row] in (None, "d")]
    assert torch.equal(out[untouched], base[untouched])  # base-model rows and non-targeted adapters
    assert not torch.allclose(out, base)


def test_kernel_is_a_no_op_when_no_row_uses_an_adapter_of_the_layer(kernel):
    x, out = torch.randn(3, 8), torch.randn(3, 6)
    before = out.clone()
    a_cat, bt_cat = torch.randn(4, 8), torch.randn(4, 6)
    kernel(x, out, (a_cat.data_ptr(), bt_cat.data_ptr()), TokenPlan((("a", 0, 4, 1.0),), [None, "z", None]))
    assert torch.equal(out, before)


def test_accepts_only_contiguous_float32_cpu_tensors():
    assert LoRAKernel.accepts(torch.zeros(2, 3), torch.zeros(3, 2))
    assert not LoRAKernel.accepts(torch.zeros(2, 3, dtype=torch.float64))
    assert not LoRAKernel.accepts(torch.zeros(2, 3, dtype=torch.bfloat16))
    assert not LoRAKernel.accepts(torch.zeros(3, 2).t())


def test_built_once_into_the_workspace_and_reused(monkeypatch):
    from oikyo import workspace

    monkeypatch.setattr(lora_kernel, "_loaded", {})  # as in a new process with an empty workspace
    built = load_kernel()
    assert built is not None, "no C compiler here (cc, gcc or clang): the native LoRA kernel could not be built"
    assert built.path.parent == workspace.home() / "kernels" and built.path.is_file()
    monkeypatch.setattr(lora_kernel, "_loaded", {})  # another process: finds the file, compiles nothing
    monkeypatch.setattr(lora_kernel, "_compile", lambda *args: pytest.fail("compiled again"))
    again = load_kernel()
    assert again is not None and again.path == built.path


def test_without_a_compiler_serving_falls_back_to_pytorch(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(lora_kernel, "_loaded", {})
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with caplog.at_level("INFO", logger="oikyo.serve.lora_kernel"):
        assert load_kernel() is None
    assert "no C compiler found" in caplog.text


def test_a_failing_compiler_falls_back_with_its_error(monkeypatch, tmp_path, caplog):
    from oikyo import workspace

    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'broken-cc: internal error' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(lora_kernel, "_loaded", {})
    monkeypatch.setenv("CC", str(broken))
    with caplog.at_level("WARNING", logger="oikyo.serve.lora_kernel"):
        assert load_kernel() is None
    assert "could not build the native LoRA kernel" in caplog.text and "internal error" in caplog.text
    assert not list((workspace.home() / "kernels").iterdir())  # no half-written file left behind


def test_the_environment_can_choose_pytorch(monkeypatch):
    monkeypatch.setenv("OIKYO_LORA_KERNEL", "torch")
    assert load_kernel() is None


def test_long_prefills_go_to_pytorch_when_it_has_several_threads():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert LoRAKernel.suits(8) and LoRAKernel.suits(4096)
        torch.set_num_threads(2)
        assert LoRAKernel.suits(8) and LoRAKernel.suits(lora_kernel.MAX_TOKENS_THREADED)
        assert not LoRAKernel.suits(lora_kernel.MAX_TOKENS_THREADED + 1)
    finally:
        torch.set_num_threads(threads)


def test_an_unwritable_workspace_falls_back_instead_of_failing(monkeypatch, caplog):
    def refuse(name):
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(lora_kernel, "_loaded", {})
    monkeypatch.setattr(lora_kernel.workspace, "subdir", refuse)
    with caplog.at_level("WARNING", logger="oikyo.serve.lora_kernel"):
        assert load_kernel() is None
    assert "Permission denied" in caplog.text
