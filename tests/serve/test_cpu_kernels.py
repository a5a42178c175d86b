"""oikyo's native CPU kernels (LoRA terms, base products): built with the machine's C compiler, equal to
PyTorch's products, and optional.

CI's machine has gcc, so these tests build and run the kernels there; on a machine without a C
compiler the ones that need it fail with that reason rather than pass unseen.
"""

from __future__ import annotations

import pytest
import torch

from oikyo.serve.engine import cpu_kernels
from oikyo.serve.engine.cpu_kernels import CPUKernels, TokenPlan, load_kernels


NO_COMPILER = "no C compiler here (cc, gcc or clang): the native CPU kernels could not be built"


@pytest.fixture
def kernel() -> CPUKernels:
    built = load_kernels()
    assert built is not None, NO_COMPILER
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
    kernel.lora_add(x, out, (a_cat.data_ptr(), bt_cat.data_ptr()), plan)
    expected = base.double() + _reference(x, a_cat, bt_cat, layout, rows, tokens_per_row)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-4)
    untouched = [t for t in range(x.shape[0]) if rows[t // tokens_per_row] in (None, "d")]
    assert torch.equal(out[untouched], base[untouched])  # base-model rows and non-targeted adapters
    assert not torch.allclose(out, base)


def test_kernel_is_a_no_op_when_no_row_uses_an_adapter_of_the_layer(kernel):
    x, out = torch.randn(3, 8), torch.randn(3, 6)
    before = out.clone()
    a_cat, bt_cat = torch.randn(4, 8), torch.randn(4, 6)
    kernel.lora_add(x, out, (a_cat.data_ptr(), bt_cat.data_ptr()), TokenPlan((("a", 0, 4, 1.0),), [None, "z", None]))
    assert torch.equal(out, before)


def test_accepts_only_contiguous_float32_cpu_tensors():
    assert CPUKernels.accepts(torch.zeros(2, 3), torch.zeros(3, 2))
    assert not CPUKernels.accepts(torch.zeros(2, 3, dtype=torch.float64))
    assert not CPUKernels.accepts(torch.zeros(2, 3, dtype=torch.bfloat16))
    assert not CPUKernels.accepts(torch.zeros(3, 2).t())


def test_built_once_into_the_workspace_and_reused(monkeypatch):
    from oikyo import workspace

    monkeypatch.setattr(cpu_kernels, "_loaded", {})  # as in a new process with an empty workspace
    built = load_kernels()
    assert built is not None, NO_COMPILER
    assert built.path.parent == workspace.home() / "kernels" and built.path.is_file()
    monkeypatch.setattr(cpu_kernels, "_loaded", {})  # another process: finds the file, compiles nothing
    monkeypatch.setattr(cpu_kernels, "_compile", lambda *args: pytest.fail("compiled again"))
    again = load_kernels()
    assert again is not None and again.path == built.path


def test_without_a_compiler_serving_falls_back_to_pytorch(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(cpu_kernels, "_loaded", {})
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with caplog.at_level("INFO", logger="oikyo.serve.engine.cpu_kernels"):
        assert load_kernels() is None
    assert "no C compiler found" in caplog.text


def test_a_failing_compiler_falls_back_with_its_error(monkeypatch, tmp_path, caplog):
    from oikyo import workspace

    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'broken-cc: internal error' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(cpu_kernels, "_loaded", {})
    monkeypatch.setenv("CC", str(broken))
    with caplog.at_level("WARNING", logger="oikyo.serve.engine.cpu_kernels"):
        assert load_kernels() is None
    assert "could not build the native CPU kernels" in caplog.text and "internal error" in caplog.text
    assert not list((workspace.home() / "kernels").iterdir())  # no half-written file left behind


def test_the_environment_can_choose_pytorch(monkeypatch):
    monkeypatch.setenv("OIKYO_CPU_KERNELS", "torch")
    assert load_kernels() is None


def test_long_prefills_go_to_pytorch_when_it_has_several_threads(set_threads):
    set_threads(1)
    assert CPUKernels.suits(8) and CPUKernels.suits(4096)
    set_threads(2)
    assert CPUKernels.suits(8) and CPUKernels.suits(cpu_kernels.MAX_TOKENS_THREADED)
    assert not CPUKernels.suits(cpu_kernels.MAX_TOKENS_THREADED + 1)


def test_an_unwritable_workspace_falls_back_instead_of_failing(monkeypatch, caplog):
    def refuse(name):
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(cpu_kernels, "_loaded", {})
    monkeypatch.setattr(cpu_kernels.workspace, "subdir", refuse)
    with caplog.at_level("WARNING", logger="oikyo.serve.engine.cpu_kernels"):
        assert load_kernels() is None
    assert "Permission denied" in caplog.text


# ----------------------------------------------------------------------------- base products


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 3, 8, 11, 16])
def test_linear_kernel_equals_the_layers_product(kernel, rows, bias):
    """Odd sizes (not multiples of the 32-column panels or the vector width); 11 and 16 rows take two passes."""
    generator = torch.Generator().manual_seed(rows)
    for out_features, in_features in [(53, 37), (32, 64), (70, 19)]:
        layer = torch.nn.Linear(in_features, out_features, bias=bias)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(out_features, in_features, generator=generator))
        x = torch.randn(rows, in_features, generator=generator)
        panels = kernel.pack(layer.weight)
        assert panels.numel() == -(-out_features // kernel.panel) * kernel.panel * in_features
        out = kernel.linear(x, panels, out_features, layer.bias)
        expected = x.double() @ layer.weight.double().T + (layer.bias.double() if bias else 0)
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-4)


def test_serving_linear_uses_the_kernel_for_decoding_rows_only(kernel, monkeypatch, set_threads):
    from oikyo.serve.engine.linear_layers import ServingLinear

    set_threads(1)
    plain = torch.nn.Linear(40, 70)
    layer = ServingLinear(plain, pack=True, kernels=kernel)
    assert layer.panels is not None and layer.packed is None  # one packed copy, not two
    calls = []
    original = kernel.linear
    monkeypatch.setattr(kernel, "linear", lambda *args: calls.append(args[0].shape[0]) or original(*args))
    with torch.inference_mode():
        for shape in [(4, 1, 40), (1, 1, 40), (2, 9, 40)]:  # decoding steps, then an 18-token prefill
            x = torch.randn(*shape)
            torch.testing.assert_close(layer(x), plain(x), rtol=1e-5, atol=1e-5)
    assert calls == [4, 1]  # the prefill's 18 rows went to PyTorch


@pytest.mark.parametrize("threaded", [True, False])
def test_linear_kernel_for_few_rows_on_several_threads_only_when_threaded(kernel, monkeypatch, set_threads, threaded):
    monkeypatch.setattr(kernel, "threaded", threaded)
    set_threads(1)
    assert kernel.linear_suits(1) and kernel.linear_suits(cpu_kernels.MAX_LINEAR_ROWS)
    assert not kernel.linear_suits(cpu_kernels.MAX_LINEAR_ROWS + 1)
    set_threads(2)
    assert kernel.linear_suits(1) is threaded and kernel.linear_suits(cpu_kernels.MAX_LINEAR_ROWS_THREADED) is threaded
    assert not kernel.linear_suits(cpu_kernels.MAX_LINEAR_ROWS_THREADED + 1)


def test_the_kernel_shares_torch_s_openmp_runtime_and_threads_the_base_product(kernel, set_threads):
    """Built here with gcc's -fopenmp: one OpenMP runtime in the process (torch's libgomp), and the
    threaded product equals the one-thread product and the layer's, at several thread counts."""
    import ctypes
    import subprocess
    import sys

    assert ctypes.CDLL(str(kernel.path)).oikyo_threaded() == 1, "built without OpenMP"
    # A fresh process with torch alone, as a replica: one runtime. (This test process may hold others:
    # libraries that bundle their own libgomp, which is what the check is for.)
    probe = ("import torch\nfrom oikyo.serve.engine.cpu_kernels import load_kernels\n"
             "k = load_kernels()\nprint(k.threaded)")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert found.stdout.strip().endswith("True"), found.stdout + found.stderr
    torch.manual_seed(0)
    layer = torch.nn.Linear(96, 40 * kernel.panel + 3)  # enough panels to split, a ragged last one
    panels = kernel.pack(layer.weight)
    x = torch.randn(7, 96)
    results = {}
    for threads in (1, 2, 3):  # the C function itself, whatever this process's runtimes
        out = torch.empty(7, layer.out_features)
        kernel._linear(x.data_ptr(), 7, 96, panels.data_ptr(), layer.out_features, layer.bias.data_ptr(),
                       out.data_ptr(), threads)
        results[threads] = out
    torch.testing.assert_close(results[1], layer(x).detach(), rtol=1e-5, atol=1e-5)
    assert torch.equal(results[1], results[2]) and torch.equal(results[1], results[3])


def test_two_openmp_runtimes_count_as_unshared(monkeypatch, tmp_path):
    maps = ("7f00-7f01 r-xp 0 08:01 1 /usr/lib/libgomp.so.1\n"
            "7f02-7f03 r-xp 0 08:01 2 /venv/torch/lib/libiomp5.so\n7f04-7f05 r-xp 0 08:01 3 /usr/lib/libc.so.6\n")
    fake = tmp_path / "maps"
    fake.write_text(maps)
    real_path = cpu_kernels.Path
    monkeypatch.setattr(cpu_kernels, "Path", lambda p: real_path(fake) if p == "/proc/self/maps" else real_path(p))
    assert not cpu_kernels._one_openmp_runtime()
    fake.write_text(maps.replace("/venv/torch/lib/libiomp5.so", "/usr/lib/libgomp.so.1"))
    assert cpu_kernels._one_openmp_runtime()


@pytest.mark.parametrize("wide", [True, False])
def test_the_base_product_kernel_only_where_it_was_measured_faster(kernel, monkeypatch, wide, set_threads):
    """Built with AVX or AVX-512 vectors the layers get the kernel's panels; otherwise oneDNN's packed weights."""
    from oikyo.serve.engine.linear_layers import prepare_linear_layers

    assert kernel.panel == 2 * kernel.lanes
    assert kernel.linear_available is (kernel.lanes >= 8)
    monkeypatch.setattr(kernel, "linear_available", wide)
    set_threads(2)  # several threads: the kernel is threaded here (tested above)
    assert prepare_linear_layers(torch.nn.Sequential(torch.nn.Linear(8, 8)), pack=True) == (
        "native kernel" if wide else "onednn")
    monkeypatch.setattr(kernel, "threaded", False)  # a kernel without OpenMP: oneDNN on several threads
    assert prepare_linear_layers(torch.nn.Sequential(torch.nn.Linear(8, 8)), pack=True) == "onednn"
    set_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    assert prepare_linear_layers(model, pack=True) == ("native kernel" if wide else "onednn")
    assert (model[0].panels is not None) is wide and (model[0].packed is not None) is (not wide)
