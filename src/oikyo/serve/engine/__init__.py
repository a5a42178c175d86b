"""The generation engine: batched generation from one base model with many LoRA adapters.

It knows nothing of HTTP, deployments or the store (it never imports :mod:`oikyo.serve.gateway`)::

    from oikyo.serve.engine.core import GenerationEngine
    from oikyo.serve.engine.requests import GenerationRequest

    engine = GenerationEngine(model_dir)
    results = engine.generate([GenerationRequest(prompt_ids, max_new_tokens=64)])

Modules:

- ``core``: :class:`~oikyo.serve.engine.core.GenerationEngine`, the continuous-batching loop
  (offline ``generate`` and a background thread for serving: ``submit`` / ``start``).
- ``requests``: what a caller hands the engine and gets back (request, result, stream handle).
- ``sampling``: the next token of every row (greedy, or temperature / top-p with per-request seeds).
- ``logits``: per-request logit bias, presence/frequency penalties, log-probabilities.
- ``grammar``: structured outputs (JSON schemas) with llguidance token masks.
- ``detokenize``: generated tokens to streamed text deltas, with stop strings.
- ``kv_cache``: the slot KV cache (one preallocated row per sequence in flight).
- ``lora``: many LoRA adapters on one base model, each batch row with its own adapter.
- ``linear_layers``: the engine's ``nn.Linear`` replacement (prepacked CPU weights, LoRA terms).
- ``cpu_kernels`` (+ ``cpu_kernels.c``): native CPU kernels for decoding steps, compiled on first use.

This package re-exports nothing, so ``import oikyo.serve.engine.requests`` stays free of torch.
"""
