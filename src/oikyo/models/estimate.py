"""Will it fit, and how long will it take? A before-you-start estimate for a model and a config.

``estimate(info, method="lora", batch_size=8, max_length=512, tokens=1_000_000)`` uses the model's
shape (from :func:`oikyo.models.loading.model_info`) and the detected hardware:

- memory = weights + gradients and AdamW state of the trained parameters + activations.
  Activations follow the usual transformer count without recomputation, about
  ``seq * batch * hidden * layers * 34`` bytes at 16-bit (twice that in float32), plus the logits
  ``seq * batch * vocab`` in float32 (kept for the loss and its gradient).
- time = tokens * FLOPs per token / (peak FLOP/s * utilisation). FLOPs per token are ``6 N`` for
  full fine-tuning and about ``4 N`` for LoRA (forward ``2 N``, backward through the frozen weights
  for activation gradients ``2 N``, no weight gradients). Peak FLOP/s is measured once per process
  with a matrix multiplication; the utilisation factors are rough figures from runs on CPU and GPU
  (stated in the result), so the time is an order of magnitude, not a promise.
"""

from __future__ import annotations

import functools
import os
import time

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int4": 0.5}
# Share of the measured matmul peak a training step reaches (observed order of magnitude).
UTILISATION = {"cpu": 0.5, "cuda": 0.4, "mps": 0.3}


def detect_hardware() -> dict:
    """Device kind, its memory, and whether it runs bf16 natively."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return {"device": "cuda", "name": props.name, "memory_bytes": props.total_memory,
                "bf16": torch.cuda.is_bf16_supported(), "count": torch.cuda.device_count()}
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return {"device": "mps", "name": "Apple GPU", "memory_bytes": memory, "bf16": False, "count": 1}
    from oikyo.train.hardware import cpu_bf16

    return {"device": "cpu", "name": f"{os.cpu_count()} CPU threads", "memory_bytes": memory,
            "bf16": cpu_bf16(), "count": 1}


@functools.lru_cache(maxsize=1)
def measured_peak_flops(device: str = "cpu") -> float:
    """FLOP/s of a float32 (CPU) or bf16 (CUDA) matrix multiplication on this machine."""
    import torch

    n = 2048 if device == "cpu" else 8192
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    repeats, start = 5, time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def lora_parameters(info: dict, rank: int) -> int:
    """Trainable parameters of LoRA on every linear layer of a Llama-style block."""
    hidden = info.get("hidden_size") or 0
    inter = info.get("intermediate_size") or 4 * hidden
    kv = info.get("kv_dim") or hidden
    per_layer = rank * ((hidden + hidden) * 2 + (hidden + kv) * 2 + (hidden + inter) * 3)
    return per_layer * (info.get("layers") or 0)


def estimate(info: dict, *, method: str = "lora", batch_size: int = 8, max_length: int = 512,
             tokens: int | None = None, lora_rank: int = 16, dtype: str | None = None,
             hardware: dict | None = None, measure: bool = True) -> dict:
    """Memory (bytes) and time (seconds, when ``tokens`` is given) to fine-tune a model described by ``info``."""
    hardware = hardware or detect_hardware()
    dtype = dtype or ("bfloat16" if hardware["bf16"] else "float32")
    params = info.get("parameters") or 0
    hidden, layers, vocab = info.get("hidden_size") or 0, info.get("layers") or 0, info.get("vocab_size") or 0
    weight_bytes = params * (BYTES["int4"] if method == "qlora" else BYTES[dtype])
    trained = params if method == "full" else lora_parameters(info, lora_rank)
    # float32 master weights' gradients + AdamW's two moments
    optimizer_bytes = trained * (4 + 8)
    act_scale = 2 if dtype == "float32" else 1
    activation_bytes = max_length * batch_size * hidden * layers * 34 * act_scale
    logits_bytes = max_length * batch_size * vocab * 4 * 2
    total = int(weight_bytes + optimizer_bytes + activation_bytes + logits_bytes)
    result = {
        "method": method, "dtype": dtype, "device": hardware["device"], "trainable_parameters": trained,
        "memory_bytes": {"weights": int(weight_bytes), "gradients_and_optimizer": int(optimizer_bytes),
                         "activations": int(activation_bytes + logits_bytes), "total": total},
        "available_bytes": hardware.get("memory_bytes"),
        "fits": None if not hardware.get("memory_bytes") else total < 0.9 * hardware["memory_bytes"],
    }
    if tokens and measure:
        flops_per_token = (6 if method == "full" else 4) * params
        peak = measured_peak_flops(hardware["device"]) if hardware["device"] != "mps" else 5e12
        rate = peak * UTILISATION[hardware["device"]] / max(flops_per_token, 1)
        result.update({"tokens": tokens, "tokens_per_second": rate, "seconds": tokens / rate,
                       "peak_flops": peak, "assumed_utilisation": UTILISATION[hardware["device"]]})
    return result
