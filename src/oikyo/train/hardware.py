"""What this machine can run: accelerator (CUDA / MPS / CPU), native bf16, physical cores, memory.

The training config's ``auto`` fields resolve through here, so one config file behaves sensibly on
a laptop and on a GPU server::

    from oikyo.train.hardware import detect
    hw = detect()            # Hardware(device="cpu", bf16=False, physical_cores=2, ...)
    hw.device, hw.bf16

bf16 counts as available only where the hardware runs it natively (a CUDA device with bf16
support). CPUs "support" bf16 in PyTorch by emulation, which is ~15x slower than float32 on an
ordinary laptop CPU, so a CPU never reports it.
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
    bf16: bool  # native bf16 on the best device (CUDA with compute capability >= 8.0)
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
    else:
        device, name, bf16, accel_memory = ("mps" if mps else "cpu"), ("mps" if mps else "cpu"), False, None
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


def device_supports_bf16(device: str) -> bool:
    """True when ``device`` runs bf16 natively (only CUDA devices with bf16 support qualify)."""
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
