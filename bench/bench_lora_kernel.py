"""What four LoRA adapters add to a decoding step: PyTorch's products against oikyo's native kernel.

One "step" runs every linear layer of a model shaped like the bundled SmolLM2-135M (30 layers x
q/k/v/o/gate/up/down; hidden 576, intermediate 1536, key/value 192) on 8 rows, one token each,
with the engine's prepacked oneDNN base product, then adds the LoRA terms of four rank-16 adapters
(rows 0-7 use adapters 0, 1, 2, 3, 0, 1, 2, 3), in one of these ways:

- ``base``: no adapters (the merged model's cost);
- ``torch``: the engine's PyTorch form, ``low = x @ A_cat.T * mask; out += low @ Bt_cat``;
- ``kernel``: the native kernel (:mod:`oikyo.serve.lora_kernel`);
- ``read``: a plain read of the same adapter matrices (``.sum()``), the memory traffic's floor.

Weights are random (the timing does not depend on the values) and every layer has its own, so each
step streams the whole 78 MB of adapters from memory, as in the engine. The variants alternate, and
the script prints the median step of each and what each adds to ``base``. Both forms are checked
to give the same sums first.

    python bench/bench_lora_kernel.py [--threads 1] [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

HIDDEN, INTERMEDIATE, KV, LAYERS, RANK, ADAPTERS, ROWS = 576, 1536, 192, 30, 16, 4, 8
SHAPES = [(HIDDEN, HIDDEN), (KV, HIDDEN), (KV, HIDDEN), (HIDDEN, HIDDEN), (INTERMEDIATE, HIDDEN),
          (INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)]  # (out, in) of q, k, v, o, gate, up, down


def main() -> None:
    from bench_generate import machine  # the sibling script's description of the machine

    from oikyo.serve.lora_kernel import TokenPlan, load_kernel

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kernel = load_kernel()
    if kernel is None:
        raise SystemExit("the native LoRA kernel is not available here (no C compiler?); nothing to compare")
    generator = torch.Generator().manual_seed(0)
    layers = []
    for _ in range(LAYERS):
        for out_features, in_features in SHAPES:
            weight = torch.randn(out_features, in_features, generator=generator) * 0.02
            a_cat = torch.randn(ADAPTERS * RANK, in_features, generator=generator) * 0.02
            bt_cat = torch.randn(ADAPTERS * RANK, out_features, generator=generator) * 0.02
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, ROWS)
            layers.append((packed, a_cat, bt_cat, (a_cat.data_ptr(), bt_cat.data_ptr())))
    names = [f"a{i}" for i in range(ADAPTERS)]
    layout = tuple((name, i * RANK, (i + 1) * RANK, 2.0) for i, name in enumerate(names))
    rows = [names[i % ADAPTERS] for i in range(ROWS)]
    plan = TokenPlan(layout, rows)
    mask = torch.zeros(ROWS, ADAPTERS * RANK)
    for i in range(ROWS):
        mask[i, (i % ADAPTERS) * RANK:(i % ADAPTERS + 1) * RANK] = 2.0
    inputs = {HIDDEN: torch.randn(ROWS, HIDDEN, generator=generator),
              INTERMEDIATE: torch.randn(ROWS, INTERMEDIATE, generator=generator)}
    linear = torch.ops.mkldnn._linear_pointwise

    def step(variant: str) -> None:
        for packed, a_cat, bt_cat, pointers in layers:
            x = inputs[a_cat.shape[1]]
            out = linear(x, packed, None, "none", [], "")
            if variant == "torch":
                low = torch.nn.functional.linear(x, a_cat)
                low.mul_(mask)
                out.addmm_(low, bt_cat)
            elif variant == "kernel":
                kernel(x, out, pointers, plan)
            elif variant == "read":
                a_cat.sum()
                bt_cat.sum()

    with torch.inference_mode():
        packed, a_cat, bt_cat, pointers = layers[-1]
        x = inputs[INTERMEDIATE]
        by_torch = linear(x, packed, None, "none", [], "").addmm_(torch.nn.functional.linear(x, a_cat) * mask, bt_cat)
        by_kernel = linear(x, packed, None, "none", [], "")
        kernel(x, by_kernel, pointers, plan)
        torch.testing.assert_close(by_kernel, by_torch, rtol=1e-4, atol=1e-5)
        variants = ["base", "torch", "kernel", "read"]
        for variant in variants:
            step(variant)  # warm-up
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.repeats):
            for variant in variants:
                started = time.perf_counter()
                step(variant)
                times[variant].append(time.perf_counter() - started)
    adapter_mb = sum(a.numel() + b.numel() for _, a, b, _ in layers) * 4 / 1e6
    print(f"machine: {machine()}")
    print(f"{len(layers)} linear layers, {ROWS} rows, {ADAPTERS} adapters of rank {RANK}: {adapter_mb:.0f} MB of adapters per step")
    base = statistics.median(times["base"])
    for variant in variants:
        median = statistics.median(times[variant])
        added = "" if variant == "base" else f"   adds {1e3 * (median - base):5.1f} ms"
        print(f"  {variant:7s} step median {1e3 * median:6.1f} ms{added}   [{', '.join(f'{1e3 * t:.1f}' for t in times[variant])}]")
    torch_added = statistics.median(times["torch"]) - base
    kernel_added = statistics.median(times["kernel"]) - base
    print(f"kernel / torch, time the adapters add: {kernel_added / torch_added:.2f}")
    print(f"step ratio base / with adapters: torch {base / statistics.median(times['torch']):.2f}, "
          f"kernel {base / statistics.median(times['kernel']):.2f}")


if __name__ == "__main__":
    main()
