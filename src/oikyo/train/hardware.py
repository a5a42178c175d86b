"""What this machine can run: accelerator (CUDA / MPS / CPU), native bf16, physical cores, memory.

The training config's ``auto`` fields resolve through here, so one config file behaves sensibly on
a laptop and on a GPU server::

    from oikyo.train.hardware import detect
    hw = detect()            # Hardware(device="cpu", bf16=False, physical_cores=2, ...)
    hw.device, hw.bf16

bf16 counts as available only where the hardware runs it natively: a CUDA device with bf16
support, or a CPU with bf16 instructions (AVX512-BF16 or AMX-BF16, read from the CPU's flags) and a
torch build whose oneDNN uses them. There a bf16 matrix product runs 3.7-4.4x float32's (measured on
an Intel Xeon with AMX and an AMD EPYC with AVX512-BF16; BENCHMARKS.md). Other CPUs "support" bf16 in
PyTorch only by emulation, ~15x slower than float32, so they never report it. ``OIKYO_CPU_BF16=off``
turns the CPU's bf16 off (``auto``, the default, detects it).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Hardware:
    """A snapshot of the accelerator, cores and memory of this machine."""

    device: str  # the best device: "cuda", "mps" or "cpu"
    cuda: bool
    mps: bool
    bf16: bool  # native bf16 on the best device (CUDA with compute capability >= 8.0, or a CPU with bf16 instructions)
    device_name: str  # e.g. "NVIDIA H100 80GB HBM3" or "cpu"
    physical_cores: int  # usable physical cores (affinity-aware)
    total_memory_bytes: int  # system RAM
    accelerator_memory_bytes: int | None  # memory of CUDA device 0, None without CUDA
    bitsandbytes: bool  # the bitsandbytes package is importable (QLoRA)


def physical_cores() -> int:
    """Physical cores this process may use: the fewer of psutil's physical count and the CPU affinity set.

    Hyper-threads share one core's arithmetic units, so more PyTorch threads than physical cores
    only adds contention.
    """
    logical = os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity API
        allowed = logical
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or logical
    except ImportError:
        physical = logical
    return max(1, min(physical, allowed))


def total_memory_bytes() -> int:
    """System RAM in bytes (0 when it cannot be read)."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return 0


@functools.lru_cache(maxsize=1)
def detect() -> Hardware:
    """Detect the machine once per process (torch is imported here, not at module import)."""
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if cuda:
        device, name = "cuda", torch.cuda.get_device_name(0)
        bf16 = bool(torch.cuda.is_bf16_supported(including_emulation=False))
        accel_memory = int(torch.cuda.get_device_properties(0).total_memory)
    elif mps:
        device, name, bf16, accel_memory = "mps", "mps", False, None
    else:
        device, name, bf16, accel_memory = "cpu", "cpu", _cpu_has_bf16(), None  # the CPU's; OIKYO_CPU_BF16 aside
    return Hardware(
        device=device,
        cuda=cuda,
        mps=mps,
        bf16=bf16,
        device_name=name,
        physical_cores=physical_cores(),
        total_memory_bytes=total_memory_bytes(),
        accelerator_memory_bytes=accel_memory,
        bitsandbytes=importlib.util.find_spec("bitsandbytes") is not None,
    )


CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo's names of the CPU's bf16 instructions
CPU_BF16_ENV = "OIKYO_CPU_BF16"  # auto (default): detect; off: float32 on every CPU


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo has none, e.g. macOS)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    if not any(flag in cpu_flags() for flag in CPU_BF16_FLAGS):
        return False
    import torch

    try:  # whether this torch's oneDNN runs bf16 on this CPU (it checks the instructions itself)
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_bf16_setting() -> str:
    """``OIKYO_CPU_BF16``: "auto" (the default) or "off"; anything else is refused, naming the choices."""
    setting = os.environ.get(CPU_BF16_ENV, "auto").strip().lower() or "auto"
    if setting not in ("auto", "off"):
        from oikyo.errors import OikyoError

        raise OikyoError(f"{CPU_BF16_ENV}={os.environ[CPU_BF16_ENV]!r}: use auto (detect the CPU's bf16) or off")
    return setting


def cpu_bf16() -> bool:
    """True when this CPU runs bf16 matrix products natively and ``OIKYO_CPU_BF16`` does not say off."""
    return cpu_bf16_setting() == "auto" and _cpu_has_bf16()


def device_supports_bf16(device: str) -> bool:
    """True when ``device`` runs bf16 natively: a CUDA device with bf16 support, or a CPU with bf16
    instructions (:func:`cpu_bf16`)."""
    if device == "cpu":
        return cpu_bf16()
    hw = detect()
    return device == "cuda" and hw.cuda and hw.bf16


def process_memory_mb(device: str = "cpu") -> float:
    """Memory in use: peak allocated CUDA memory on CUDA, else this process's resident set size (MiB)."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return 0.0
