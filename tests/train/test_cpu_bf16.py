"""bf16 on CPUs that run it natively (AVX512-BF16 or AMX-BF16): detected, chosen by ``train.dtype: auto``,
turned off by ``OIKYO_CPU_BF16=off``, and within the stated tolerances of float32 (docs/training.md).

The rest of the suite runs with ``OIKYO_CPU_BF16=off`` (tests/conftest.py) so its exactness checks mean
the same on every machine; these tests turn it back on. The ones that train in bf16 skip, saying why, on
a CPU without bf16 instructions (there bf16 is emulated ~15x slower and never chosen).
"""

from __future__ import annotations

import pytest
from trainhelpers import chat_rows

from oikyo.errors import OikyoError
from oikyo.train import hardware
from oikyo.train.config import ConfigError, load_config, resolve_runtime


needs_native = pytest.mark.skipif(
    not hardware._cpu_has_bf16(), reason="this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag, or torch's oneDNN lacks it)")


@pytest.fixture
def bf16_on(monkeypatch):
    monkeypatch.setenv("OIKYO_CPU_BF16", "auto")


def _fake_cpu(monkeypatch, native: bool):
    monkeypatch.setattr(hardware, "_cpu_has_bf16", lambda: native)


def test_auto_chooses_bf16_exactly_where_the_cpu_has_it(bf16_on, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: auto picks it")
    _fake_cpu(monkeypatch, True)
    assert resolve_runtime(load_config(None, ["train.device=cpu"])).dtype == "bfloat16"
    assert resolve_runtime(load_config(None, ["train.device=cpu", "train.dtype=float32"])).dtype == "float32"
    monkeypatch.setenv("OIKYO_CPU_BF16", "off")
    assert resolve_runtime(load_config(None, ["train.device=cpu"])).dtype == "float32"
    monkeypatch.setenv("OIKYO_CPU_BF16", "auto")
    _fake_cpu(monkeypatch, False)
    assert resolve_runtime(load_config(None, ["train.device=cpu"])).dtype == "float32"
    with pytest.raises(ConfigError, match="train.dtype: bfloat16 needs a device that runs it natively"):
        load_config(None, ["train.device=cpu", "train.dtype=bfloat16"])


def test_detection_reads_the_cpu_flags(bf16_on, monkeypatch):
    hardware._cpu_has_bf16.cache_clear()
    try:
        monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "fma", "avx512f"})  # no bf16 instructions
        assert hardware.cpu_bf16() is False
        hardware._cpu_has_bf16.cache_clear()
        monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
        import torch

        # with the flag, torch's own oneDNN check decides (it reads the CPU's instructions itself)
        assert hardware.cpu_bf16() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    finally:
        hardware._cpu_has_bf16.cache_clear()


def test_a_wrong_setting_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv("OIKYO_CPU_BF16", "yes please")
    with pytest.raises(OikyoError, match="OIKYO_CPU_BF16='yes please': use auto .* or off"):
        hardware.cpu_bf16()
    # refused when the config is checked, so nothing is queued that would fail as it starts
    with pytest.raises(ConfigError, match="OIKYO_CPU_BF16='yes please'"):
        load_config(None, [])


@needs_native
def test_this_cpu_reports_bf16_where_its_flags_say_so(bf16_on):
    flags = hardware.cpu_flags()
    assert any(flag in flags for flag in hardware.CPU_BF16_FLAGS)
    assert hardware.device_supports_bf16("cpu") and hardware.detect().bf16


@needs_native
@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_training_in_bf16_stays_within_tolerance_of_float32(bf16_on, train_tiny, tmp_path, finetune):
    """The tiny model trained 30 steps both ways: the bf16 run says it computes in bf16, and its validation
    losses stay within the stated tolerance of float32's. (LoRA on a random model learns little: its loss
    falls ~0.9; full fine-tuning's ~5.)"""
    overrides = ["train.max_steps=30", "train.lr=5e-3", "train.batch_size=4", "train.eval_every=10",
                 "checkpoint.save_every=null", "lora.dropout=0.0", "train.seed=0", f"method.finetune={finetune}"]
    rows = chat_rows(32)
    f32 = train_tiny([*overrides, "train.dtype=float32"], rows=rows, run_dir=tmp_path / "f32")
    bf16 = train_tiny(overrides, rows=rows, run_dir=tmp_path / "bf16")
    assert any("dtype=bfloat16" in line for line in bf16.logs), bf16.logs[:3]
    assert any("dtype=float32" in line for line in f32.logs)
    f32_losses, bf16_losses = f32.series("loss"), bf16.series("loss")
    assert len(f32_losses) == len(bf16_losses) == 30
    assert bf16_losses[-1] < bf16_losses[0] - (0.5 if finetune == "lora" else 3.0)  # it learns
    # Tolerance (docs/training.md): every evaluation's loss within 2% of float32's.
    for a, b in zip(f32.series("eval_loss"), bf16.series("eval_loss"), strict=True):
        assert abs(b - a) <= 0.02 * a, (f32.series("eval_loss"), bf16.series("eval_loss"))


@needs_native
@pytest.mark.slow
def test_the_bundled_model_trains_in_bf16_within_tolerance_of_float32(bf16_on, bundled_model_dir, tmp_path):
    """The quickstart's recipe (LoRA r16, lr 1e-4, batch 8) for 12 steps on the support-ticket task, both ways:
    the validation loss after them within 2% of float32's (measured: 0.1-0.7% over 40 steps)."""
    import json

    from trainhelpers import run_direct

    from oikyo.data import sample

    rows = [json.loads(line) for line in sample.sample_path().read_text().splitlines() if line.strip()][:102]
    overrides = ["train.max_steps=12", "train.lr=1e-4", "train.batch_size=8", "lora.rank=16", "lora.alpha=32",
                 "data.max_length=160", "train.warmup_steps=4", "train.eval_every=12", "checkpoint.save_every=null",
                 "train.seed=0"]
    losses = {}
    for dtype in ("float32", "auto"):
        _, metrics = run_direct([*overrides, f"train.dtype={dtype}"], tmp_path / dtype, bundled_model_dir, rows)
        losses[dtype] = metrics[12]["eval_loss"]
    assert abs(losses["auto"] - losses["float32"]) <= 0.02 * losses["float32"], losses
