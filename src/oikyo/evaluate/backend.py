"""One loaded model for evaluation: batched generation through the shared engine, and teacher-forced loss.

Generation goes through :class:`oikyo.serve.engine.core.GenerationEngine` (continuous batching, many LoRA
adapters on one base model), the same engine that serves models, so an evaluated answer is what a
deployment would answer. Prompts come from the one chat template
(:func:`oikyo.models.chat_template.encode_prompt`). The teacher-forced pass runs on the engine's
model too (no second copy of the weights), with the adapter applied by a
:class:`oikyo.serve.engine.lora.MultiLoRA` of its own, and computes the loss exactly as the training recipe
does (:func:`oikyo.train.runner.target_logprobs`: assistant tokens only)::

    backend = ModelBackend(model_dir)
    backend.add_adapter("model", adapter_dir)
    texts = backend.generate(prompts, adapter="model", settings=GenerationSettings(max_new_tokens=64))
    nll, tokens = backend.nll(encoded_examples, adapter="model")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

Progress = Callable[[int], None]  # called with how many items just finished
CHUNK = 64  # prompts handed to the engine at once: progress and cancellation are checked between chunks


class Stopped(Exception):
    """The caller asked to stop (a cancelled job, a worker shutting down)."""


@dataclass
class GenerationSettings:
    """How answers are generated: greedy (temperature 0) by default, so an evaluation is reproducible."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 16
    ignore_eos: bool = False  # generate exactly max_new_tokens (benchmarks); evaluations stop at end of turn

    def to_dict(self) -> dict:
        return {**asdict(self), "decoding": "greedy" if self.temperature == 0 else "sampled",
                "engine": "oikyo.serve.engine"}


class ModelBackend:
    """A base model (or full fine-tuned model) loaded once, with named LoRA adapters."""

    def __init__(self, model_dir: str | Path, *, batch_size: int = 16, device: str = "auto"):
        from oikyo.serve.engine.core import GenerationEngine
        from oikyo.serve.engine.lora import MultiLoRA

        self.model_dir = Path(model_dir)
        self.engine = GenerationEngine(model_dir, max_batch_size=batch_size, device=device)
        self.tokenizer = self.engine.tokenizer
        self.model = self.engine.model
        self._lora = MultiLoRA(self.model)  # our own hooks: active only inside nll()

    def add_adapter(self, name: str, adapter_dir: str | Path) -> None:
        self.engine.add_adapter(name, adapter_dir)
        self._lora.load(name, adapter_dir)

    def generate(self, prompts: list[list[int]], *, adapter: str | None, settings: GenerationSettings,
                 progress: Progress | None = None, should_stop: Callable[[], bool] | None = None) -> list[str]:
        """The answer text of each prompt (token ids), in order."""
        return [result.text for result in self.generate_results(prompts, adapter=adapter, settings=settings,
                                                                progress=progress, should_stop=should_stop)]

    def generate_results(self, prompts: list[list[int]], *, adapter: str | None, settings: GenerationSettings,
                         progress: Progress | None = None, should_stop: Callable[[], bool] | None = None) -> list:
        """The engine's whole result of each prompt (text, finish_reason "stop" or "length", token counts), in order."""
        from oikyo.serve.engine.requests import GenerationRequest

        texts: list = []
        for start in range(0, len(prompts), CHUNK):
            if should_stop is not None and should_stop():
                raise Stopped()
            chunk = prompts[start:start + CHUNK]
            requests = [GenerationRequest(prompt_ids=list(ids), max_new_tokens=settings.max_new_tokens,
                                          temperature=settings.temperature, top_p=settings.top_p,
                                          seed=settings.seed + start + k, adapter=adapter,
                                          stop_token_ids=[] if settings.ignore_eos else None)
                        for k, ids in enumerate(chunk)]
            results = self.engine.generate(requests)
            texts += results
            if progress is not None:
                progress(len(chunk))
        return texts

    def nll(self, examples: list, *, adapter: str | None, batch_size: int = 8, progress: Progress | None = None,
            should_stop: Callable[[], bool] | None = None) -> tuple[list[float], list[int]]:
        """Summed negative log-likelihood and target-token count of each encoded example (labels set)."""
        import torch

        from oikyo.train.data import collate, eval_plan
        from oikyo.train.runner import target_logprobs

        nll = [0.0] * len(examples)
        tokens = [0] * len(examples)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(self.model.parameters()).device
        for batch_rows in eval_plan([len(e) for e in examples], batch_size):
            if should_stop is not None and should_stop():
                raise Stopped()
            batch = {k: v.to(device) for k, v in collate([examples[i] for i in batch_rows], pad).items()}
            self._lora.set_batch([adapter] * len(batch_rows) if adapter else None)
            try:
                with torch.inference_mode():
                    logp, rows = target_logprobs(self.model, batch)  # (N,), (N,): one per target token
            finally:
                self._lora.set_batch(None)
            sums = torch.zeros(len(batch_rows), dtype=torch.float64).index_add_(0, rows, -logp.double())
            counts = torch.bincount(rows, minlength=len(batch_rows))
            for k, i in enumerate(batch_rows):
                nll[i], tokens[i] = float(sums[k]), int(counts[k])
            if progress is not None:
                progress(len(batch_rows))
        return nll, tokens
