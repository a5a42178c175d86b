"""oikyo's native CPU kernels against PyTorch's products, in decoding steps of the bundled model's shapes.

Two parts, each on random weights shaped like SmolLM2-135M (the timing does not depend on the values;
every layer has its own weights, so each step streams them all from memory, as in the engine):

1. Base products. One step runs the 211 linear layers (30 x q/k/v/o/gate/up/down and the 49152 x 576
   output layer, 538 MB) on ``rows`` rows, one token each, with: ``mkl`` (``F.linear`` on the plain
   weight), ``onednn`` (the prepacked oneDNN product the engine uses with several threads) and
   ``kernel`` (the native kernel on its packed panels, what the engine uses with one thread), for
   1, 8 and 16 rows. The kernel is checked against ``F.linear`` first.

2. What four LoRA adapters add to a step. One "step" runs the 210 layers of the decoder (no output
   layer) on 8 rows, one token each, with the prepacked oneDNN base product, then adds the LoRA terms
   of four rank-16 adapters (rows 0-7 use adapters 0, 1, 2, 3, 0, 1, 2, 3), in one of these ways:

- ``base``: no adapters (the merged model's cost);
- ``torch``: the engine's PyTorch form, ``low = x @ A_cat.T * mask; out += low @ Bt_cat``;
- ``kernel``: the native kernel (:mod:`oikyo.serve.engine.cpu_kernels`);
- ``read``: a plain read of the same adapter matrices (``.sum()``), the memory traffic's floor.

Each step streams the whole 78 MB of adapters from memory, as in the engine. The script prints
the median step of each variant and what each adds to ``base``. Both forms are checked to give
the same sums first.

In both parts the variants alternate, one step each per round, and the figures are medians.

    python bench/bench_cpu_kernels.py [--threads 1] [--repeats 9]

``--threads`` is torch's (the kernels always run on one thread).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

HIDDEN, INTERMEDIATE, KV, LAYERS, RANK, ADAPTERS, ROWS, VOCAB = 576, 1536, 192, 30, 16, 4, 8, 49152
SHAPES = [(HIDDEN, HIDDEN), (KV, HIDDEN), (KV, HIDDEN), (HIDDEN, HIDDEN), (INTERMEDIATE, HIDDEN),
          (INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)]  # (out, in) of q, k, v, o, gate, up, down


def base_products(kernel, repeats: int) -> None:
    """Part 1: a decoding step's base products by MKL, oneDNN and the kernel, at 1, 8 and 16 rows."""
    generator = torch.Generator().manual_seed(1)
    weights = [torch.randn(o, i, generator=generator) * 0.02 for _ in range(LAYERS) for o, i in SHAPES]
    weights.append(torch.randn(VOCAB, HIDDEN, generator=generator) * 0.02)
    panels = [kernel.pack(w) for w in weights]
    megabytes = sum(w.numel() for w in weights) * 4 / 1e6
    print(f"base products: {len(weights)} linear layers, {megabytes:.0f} MB of weights per step")
    linear = torch.ops.mkldnn._linear_pointwise
    for rows in (1, 8, 16):
        packed = [torch.ops.mkldnn._reorder_linear_weight(w, rows) for w in weights]
        inputs = {size: torch.randn(rows, size, generator=generator) for size in (HIDDEN, INTERMEDIATE)}

        def step(variant: str) -> None:
            for weight, onednn, panel in zip(weights, packed, panels):
                x = inputs[weight.shape[1]]
                if variant == "mkl":
                    torch.nn.functional.linear(x, weight)
                elif variant == "onednn":
                    linear(x, onednn, None, "none", [], "")
                else:
                    kernel.linear(x, panel, weight.shape[0], None)

        with torch.inference_mode():
            x = inputs[HIDDEN]
            torch.testing.assert_close(kernel.linear(x, panels[-1], VOCAB, None), x @ weights[-1].T, rtol=1e-4, atol=1e-4)
            times = interleaved(step, ["mkl", "onednn", "kernel"], repeats)
        medians = {v: statistics.median(t) for v, t in times.items()}
        figures = ", ".join(f"{v} {1e3 * m:.1f} ms ({megabytes / 1e3 / m:.1f} GB/s)" for v, m in medians.items())
        print(f"  {rows:2d} rows: {figures}; kernel / onednn time {medians['kernel'] / medians['onednn']:.2f}")


def interleaved(step, variants: list[str], repeats: int) -> dict[str, list[float]]:
    """One warm-up step per variant, then ``repeats`` rounds of one timed step each, variants alternating."""
    for variant in variants:
        step(variant)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for variant in variants:
            started = time.perf_counter()
            step(variant)
            times[variant].append(time.perf_counter() - started)
    return times


def main() -> None:
    from bench_generate import machine  # the sibling script's description of the machine

    from oikyo.serve.engine.cpu_kernels import TokenPlan, load_kernels

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kernel = load_kernels()
    if kernel is None:
        raise SystemExit("the native CPU kernels are not available here (no C compiler?); nothing to compare")
    print(f"machine: {machine()}")
    base_products(kernel, args.repeats)
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
                kernel.lora_add(x, out, pointers, plan)
            elif variant == "read":
                a_cat.sum()
                bt_cat.sum()

    with torch.inference_mode():
        packed, a_cat, bt_cat, pointers = layers[-1]
        x = inputs[INTERMEDIATE]
        by_torch = linear(x, packed, None, "none", [], "").addmm_(torch.nn.functional.linear(x, a_cat) * mask, bt_cat)
        by_kernel = linear(x, packed, None, "none", [], "")
        kernel.lora_add(x, by_kernel, pointers, plan)
        torch.testing.assert_close(by_kernel, by_torch, rtol=1e-4, atol=1e-5)
        variants = ["base", "torch", "kernel", "read"]
        times = interleaved(step, variants, args.repeats)
    adapter_mb = sum(a.numel() + b.numel() for _, a, b, _ in layers) * 4 / 1e6
    print(f"LoRA terms: {len(layers)} linear layers, {ROWS} rows, {ADAPTERS} adapters of rank {RANK}: {adapter_mb:.0f} MB of adapters per step")
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
