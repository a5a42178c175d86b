"""The batched generation engine shared by evaluation and serving: one base model, many LoRA adapters.

Offline (evaluation): generate a list of requests with continuous batching and return the results
in order::

    engine = GenerationEngine(model_dir)                      # loads the base model once
    engine.add_adapter("support-v2", adapter_dir)             # a peft LoRA folder; loaded on demand
    prompt = encode_prompt(engine.tokenizer, messages)        # THE chat template
    results = engine.generate([GenerationRequest(prompt, max_new_tokens=64, adapter="support-v2")])

Serving: a background thread steps the batch while requests arrive::

    engine.start()
    handle = engine.submit(GenerationRequest(prompt, max_new_tokens=256, temperature=0.7, seed=1))
    for delta in handle: ...                                  # or `async for delta in handle.astream()`
    engine.stop(drain=True)                                   # finish what was submitted, then stop

How a step works. Up to ``max_batch_size`` sequences are in flight, each owning a slot of a
preallocated KV cache (:mod:`oikyo.serve.engine.kv_cache`) with its own positions, so no sequence is
padded to another's length. Each step (1) admits waiting requests into free slots with one
prefill forward of their right-padded prompts, sampling their first token (logits are computed
only at each prompt's last position); (2) runs one decode forward over every active sequence
(input ``(n, 1)``, logits ``(n, vocab)``); (3) moves finished sequences out at once, so their slot is
free for the next step. A request submitted while others generate therefore joins at the next
step instead of waiting for the batch to drain. With oikyo's own forward, a step that admits
newcomers while others decode runs (1) and (2) as one mixed forward (the decoding rows, then the
prompts), so the weights are read once for both; the newcomers' second token comes at the next step
(``OIKYO_ENGINE_MIXED_STEPS=0`` keeps the two forwards apart). Each row uses its own LoRA adapter
in the same forward (:mod:`oikyo.serve.engine.lora`).

Adapters are registered by name and loaded when a request first needs them; beyond
``max_adapters`` the least recently used one that no running sequence uses is evicted (a request
whose adapter cannot be loaded yet waits in the queue).

Greedy decoding equals Hugging Face ``model.generate(do_sample=False)`` for the same prompt run
alone (tested on a tiny model and on the bundled one). The engine applies only the request's own
settings: temperature and top-p, and when asked, logit bias, presence/frequency penalties and a
JSON grammar (:mod:`oikyo.serve.engine.logits`, :mod:`oikyo.serve.engine.grammar`); no repetition
penalty or other logits processors from the model's generation config. Everything runs in
``torch.inference_mode`` in the model's dtype; nothing is quantized. On CPU the linear layers use
prepacked float32 weights by default, computed by oikyo's native kernel with one torch thread and
by oneDNN with several (:mod:`oikyo.serve.engine.linear_layers`; ``packed_weights=False`` turns
that off), which changes only the order of float32 additions. For Llama-family models on the CPU the
decoding steps and prefills call the model's layers directly instead of its ``forward``
(:mod:`oikyo.serve.engine.decoder`; the ``forward`` statistic says which).
``engine.model`` is the model with those serving layers: use it for inference only.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import torch

from oikyo.serve.engine.decoder import DecoderForward
from oikyo.serve.engine.detokenize import TextTracker
from oikyo.serve.engine.grammar import Grammars, GrammarError
from oikyo.serve.engine.kv_cache import SlotKVCache
from oikyo.serve.engine.lora import AdapterError, MultiLoRA, read_adapter_config
from oikyo.serve.engine.logits import RowLogits
from oikyo.serve.engine.requests import (GenerationHandle, GenerationRequest, GenerationResult, InvalidRequest,
                                         TokenLogprob)
from oikyo.serve.engine.sampling import RowSampling, choose_tokens, make_generator

log = logging.getLogger(__name__)

WEIGHTS = ("float32", "float16")  # what the engine's decoding steps read (see GenerationEngine)
MIXED_STEPS_ENV = "OIKYO_ENGINE_MIXED_STEPS"  # "0": a step's prefill and decode stay two forwards

Progress = Callable[[int, int], None]


class _Sequence:
    """Engine-side state of one request in flight."""

    def __init__(self, request: GenerationRequest, max_new: int, stop_ids: set[int], tracker: TextTracker, sampling):
        self.request = request
        self.handle = GenerationHandle(request)
        self.prompt_len = len(request.prompt_ids)
        self.max_new = max_new
        self.stop_ids = stop_ids
        self.tracker = tracker
        self.sampling: RowSampling = sampling
        self.adapter = request.adapter
        self.length = 0  # tokens of this sequence in the KV cache
        self.pending = -1  # the last sampled token, fed at the next decode step
        self.output_ids: list[int] = []
        self.logprobs: list[TokenLogprob] | None = [] if request.logprobs is not None else None
        self.unsent_logprobs: list[TokenLogprob] = []  # streamed with the next text delta
        self.prompt_logprobs: list[TokenLogprob | None] | None = None  # set by the prefill when asked
        self.finish_reason: str | None = None
        self.submitted = time.perf_counter()
        self.first_token_at: float | None = None
        self.admitted_step: int | None = None
        self.on_done: Callable[[], None] | None = None


class GenerationEngine:
    """Batched, continuously batched generation over one base model with many LoRA adapters.

    ``device``: "auto" (CUDA when available, else CPU), "cpu", "cuda", ... ``dtype``: None gives
    float32 on CPU and bfloat16 on CUDA devices that support it natively (a torch dtype or its
    name). ``max_batch_size`` sequences decode together; ``max_adapters`` adapters stay loaded
    (least recently used ones are evicted). ``max_prefill_tokens`` caps the padded prompt tokens
    admitted in one step (one request is always admitted), bounding the pause a long prompt
    causes to the sequences already decoding. ``num_threads`` sets torch's CPU threads.
    ``packed_weights`` (None: on for float32 on CPU when available) computes the linear layers
    with prepacked weights (:mod:`oikyo.serve.engine.linear_layers`): same float32 math, faster.
    ``linear_products`` says which form was chosen. ``weights``: "float32" (the model's own), or
    "float16": decoding steps read float16 copies of the linear weights (half the bytes of a
    memory-bound step; products and sums stay float32), where the native kernel with F16C runs
    (ValueError elsewhere); greedy answers may then differ from the float32 model's after some tokens.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "auto",
        dtype=None,
        max_batch_size: int = 16,
        max_adapters: int = 8,
        max_prefill_tokens: int = 4096,
        num_threads: int | None = None,
        packed_weights: bool | None = None,
        weights: str = "float32",
    ):
        from oikyo.models.loading import context_length, load_model, load_tokenizer

        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = _resolve_device(device)
        self.dtype = _resolve_dtype(dtype, self.device)
        self.model_dir = Path(model_dir)
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_model(model_dir, dtype=self.dtype, device=self.device)
        if weights == "float16" and packed_weights is False:
            raise ValueError("weights='float16' needs packed weights (the native kernel's float16 panels)")
        self.weights = weights
        self.linear_products = _prepare_layers(self.model, packed_weights, max_batch_size, weights == "float16")
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens
        self.context_length = context_length(model_dir)
        self.eos_token_ids = _eos_ids(self.model, self.tokenizer)
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self._cache = SlotKVCache(_num_layers(self.model), max_batch_size, 256, _attention(self.model))
        self._lora = MultiLoRA(self.model, max_adapters)
        # Forward passes: oikyo's own for the model families it knows, else the model's forward.
        self._own_forward = DecoderForward.build(self.model)
        self.forward = "oikyo" if self._own_forward is not None else "transformers"
        # Prefill and decode in one forward where the own forward runs prefills (see the module docstring).
        self.mixed_steps = self._own_forward is not None and self._own_forward.prefills \
            and os.environ.get(MIXED_STEPS_ENV, "1").strip() != "0"
        self._adapter_paths: dict[str, Path] = {}
        self._active: list[_Sequence] = []  # active[i] occupies KV slot i
        self._queue: deque[_Sequence] = deque()
        self._lock = threading.Lock()  # guards the queue, adapter paths and the thread state
        self._wakeup = threading.Condition(self._lock)
        self._step_lock = threading.Lock()  # one thread steps the batch at a time
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._admitting: list[_Sequence] = []  # taken off the queue this step, maybe not yet active
        self._vocab_size = self.model.get_input_embeddings().num_embeddings
        self._grammars = Grammars(self.tokenizer, self._vocab_size, self.eos_token_ids)
        self._token_texts: dict[int, str] = {}
        self._counters = dict.fromkeys(
            ("steps", "mixed_steps", "prompt_tokens", "tokens_generated", "requests_finished", "requests_cancelled",
             "requests_failed", "adapter_loads", "adapter_evictions"),
            0,
        )

    # ------------------------------------------------------------------ adapters

    def add_adapter(self, name: str, adapter_dir: str | Path) -> None:
        """Register a peft LoRA folder under ``name``; its weights load when a request first names it.

        Re-adding a name points it at the new folder (sequences already running keep the old weights).
        """
        read_adapter_config(adapter_dir)  # fail now, not at the first request
        with self._lock:
            self._adapter_paths[name] = Path(adapter_dir)

    def remove_adapter(self, name: str) -> None:
        """Forget an adapter; its weights are dropped once no running sequence uses it."""
        with self._lock:
            self._adapter_paths.pop(name, None)

    @property
    def adapters(self) -> dict[str, Path]:
        """Registered adapters: name -> folder."""
        with self._lock:
            return dict(self._adapter_paths)

    @property
    def loaded_adapters(self) -> list[str]:
        """Adapters whose weights are in memory, least recently used first."""
        return list(self._lora.loaded)

    # ------------------------------------------------------------------ public API

    def generate(self, requests: list[GenerationRequest], progress: Progress | None = None) -> list[GenerationResult]:
        """Generate every request (continuously batched) and return their results in order.

        ``progress(finished, total)`` is called each time a request finishes. Runs in the calling
        thread, or through the background thread when :meth:`start` has been called.
        """
        sequences = [self._prepare(request) for request in requests]
        if progress is not None:
            counter = {"finished": 0}
            counter_lock = threading.Lock()

            def tick() -> None:
                with counter_lock:
                    counter["finished"] += 1
                    finished = counter["finished"]
                progress(finished, len(sequences))

            for sequence in sequences:
                sequence.on_done = tick
        self._enqueue(sequences)
        while not all(s.handle.done for s in sequences):
            if self.running:
                _wait_any(sequences)
            else:
                self._run_step()
        return [s.handle.result() for s in sequences]

    def start(self) -> None:
        """Start the background scheduler thread (serving); a no-op when it runs already."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._serve, name="oikyo-generation", daemon=True)
            self._thread.start()

    def submit(self, request: GenerationRequest) -> GenerationHandle:
        """Queue a request for the running scheduler; it joins the batch at the next step."""
        if not self.running:
            raise RuntimeError("the engine is not running: call engine.start() first (or use generate())")
        sequence = self._prepare(request)
        self._enqueue([sequence])
        return sequence.handle

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the scheduler. ``drain``: finish every submitted request first; else cancel them."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._stopping = True
            if not drain:
                for sequence in list(self._queue) + list(self._active):
                    sequence.handle.cancel()
            self._wakeup.notify_all()
        thread.join(timeout)
        with self._lock:
            if not thread.is_alive():
                self._thread = None

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopping

    @property
    def packed_weights(self) -> bool:
        """Whether the linear layers use a packed copy of their weights (native kernel or oneDNN)."""
        return self.linear_products != "pytorch"

    def stats(self) -> dict:
        """Numbers for monitoring: gauges (queue_depth, active_sequences, adapters_loaded) and counters
        since start-up (steps, mixed_steps: those that admitted and decoded in one forward, prompt_tokens,
        tokens_generated, requests_*, adapter_loads/evictions),
        ``linear_products``: how the linear layers' base products are computed ("native kernel",
        "onednn" or "pytorch"; see :mod:`oikyo.serve.engine.linear_layers`), and ``lora_products``: how
        adapters' terms are computed ("native kernel" or "pytorch", None until an adapter is
        loaded; see :mod:`oikyo.serve.engine.cpu_kernels`), and ``forward``: "oikyo" when decoding
        steps and prefills run oikyo's own forward (:mod:`oikyo.serve.engine.decoder`), else "transformers"."""
        with self._lock:
            queue_depth = len(self._queue)
        return {
            "queue_depth": queue_depth,
            "active_sequences": len(self._active),
            "max_batch_size": self.max_batch_size,
            "adapters_loaded": len(self._lora.loaded),
            "linear_products": self.linear_products,
            "weights": self.weights,
            "lora_products": self._lora.products,
            "forward": self.forward,
            "running": self.running,
            **self._counters,
        }

    def token_text(self, token_id: int) -> str:
        """One token's text, special tokens included (the ``token`` of log-probability entries)."""
        text = self._token_texts.get(token_id)
        if text is None:
            text = self._token_texts[token_id] = self.tokenizer.decode([token_id])
        return text

    # ------------------------------------------------------------------ requests in

    def _prepare(self, request: GenerationRequest) -> _Sequence:
        request.validate()
        if min(request.prompt_ids) < 0 or max(request.prompt_ids) >= self._vocab_size:
            raise ValueError(f"prompt_ids must be token ids in [0, {self._vocab_size})")
        if len(request.prompt_ids) >= self.context_length:
            raise ValueError(
                f"prompt of {len(request.prompt_ids)} tokens leaves no room in the context ({self.context_length})"
            )
        if request.adapter is not None and request.adapter not in self.adapters:
            raise ValueError(f"unknown adapter {request.adapter!r}; add it with engine.add_adapter()")
        stop_ids = self.eos_token_ids if request.stop_token_ids is None else set(request.stop_token_ids)
        max_new = min(request.max_new_tokens, self.context_length - len(request.prompt_ids))
        sampling = RowSampling(request.temperature, request.top_p)
        if request.processes_logits:
            sampling.logits = self._row_logits(request)
        if not sampling.greedy:
            sampling.generator = make_generator(request.seed, self.device)
        return _Sequence(request, max_new, stop_ids, TextTracker(self.tokenizer, request.stop), sampling)

    def _row_logits(self, request: GenerationRequest) -> RowLogits:
        bias = request.logit_bias or {}
        if any(not 0 <= token < self._vocab_size for token in bias):
            raise InvalidRequest(f"logit_bias keys must be token ids in [0, {self._vocab_size})", "logit_bias")
        grammar = None
        if request.grammar is not None:
            try:
                grammar = self._grammars.matcher(request.grammar)
            except GrammarError as error:
                raise InvalidRequest(str(error), "response_format") from None
        return RowLogits(logit_bias=bias, presence_penalty=request.presence_penalty,
                         frequency_penalty=request.frequency_penalty, grammar=grammar, top_logprobs=request.logprobs,
                         token_text=self.token_text)

    def _enqueue(self, sequences: list[_Sequence]) -> None:
        with self._lock:
            for sequence in sequences:
                if sequence.max_new == 0:
                    self._finalize(sequence, "length")
                else:
                    self._queue.append(sequence)
            self._wakeup.notify_all()

    # ------------------------------------------------------------------ scheduler

    def _serve(self) -> None:
        """Background loop: step while there is work; exit once stopping and everything is done."""
        while True:
            with self._lock:
                while not self._queue and not self._active and not self._stopping:
                    self._wakeup.wait()
                if self._stopping and not self._queue and not self._active:
                    return
            self._run_step()

    def _run_step(self) -> None:
        with self._step_lock, torch.inference_mode():
            try:
                self._step()
            except Exception as error:  # a failed forward must not hang every client: fail the batch
                log.exception("generation step failed")
                failed = self._active + [s for s in self._admitting if s not in self._active]
                for sequence in failed:
                    if not sequence.handle.done:
                        self._counters["requests_failed"] += 1
                        sequence.handle._fail(error)
                self._active.clear()
            finally:
                self._admitting = []

    def _step(self) -> None:
        self._drop_cancelled()
        self._admitting = newcomers = self._admit()
        if newcomers and self._active and self.mixed_steps \
                and all(s.request.prompt_logprobs is None for s in newcomers):
            self._mixed(newcomers)
            self._release_finished()
            self._counters["mixed_steps"] += 1
        else:
            if newcomers:
                self._prefill(newcomers)
                self._release_finished()
            if self._active:
                self._decode()
                self._release_finished()
        self._counters["steps"] += 1

    def _drop_cancelled(self) -> None:
        for sequence in self._active:
            if sequence.handle.cancelled and sequence.finish_reason is None:
                sequence.finish_reason = "cancelled"
        self._release_finished()

    def _admit(self) -> list[_Sequence]:
        """Waiting requests for the free slots, FIFO, within the prefill token budget.

        A request whose adapter cannot be loaded yet (every adapter slot is used by running
        sequences) keeps its place and later requests may go first.
        """
        with self._lock:
            cancelled = [s for s in self._queue if s.handle.cancelled]
            for sequence in cancelled:
                self._queue.remove(sequence)
            waiting = list(self._queue)
        for sequence in cancelled:
            self._finalize(sequence, "cancelled")
        free = self.max_batch_size - len(self._active)
        chosen, leaving, widest = [], [], 0
        pinned = {s.adapter for s in self._active if s.adapter is not None}
        registered = self.adapters
        for name in list(self._lora.loaded):  # removed adapters go once nothing running uses them
            if name not in registered and name not in pinned:
                self._lora.unload(name)
        for sequence in waiting:
            if len(chosen) >= free:
                break
            widest_if = max(widest, sequence.prompt_len)
            if chosen and widest_if * (len(chosen) + 1) > self.max_prefill_tokens:
                break
            try:
                if sequence.adapter is not None and not self._ensure_adapter(sequence.adapter, pinned):
                    continue
            except (AdapterError, OSError) as error:
                leaving.append(sequence)
                self._counters["requests_failed"] += 1
                sequence.handle._fail(error)
                continue
            if sequence.adapter is not None:
                pinned.add(sequence.adapter)
            chosen.append(sequence)
            widest = widest_if
        with self._lock:
            for sequence in chosen + leaving:
                self._queue.remove(sequence)
        return chosen

    def _ensure_adapter(self, name: str, pinned: set[str]) -> bool:
        """Load ``name`` (evicting unpinned least recently used adapters); False when it must wait."""
        path = self.adapters.get(name)
        if path is None:
            raise AdapterError(f"adapter {name!r} was removed before its request started")
        if name in self._lora and self._lora.loaded[name] == path:
            self._lora.touch(name)
            return True
        if name in pinned:  # re-added with a new folder while running sequences use the old one
            return False
        if name not in self._lora and len(self._lora.loaded) >= self._lora.max_adapters:
            if not self._lora.evictable(pinned):
                return False
        evicted = self._lora.load(name, path, pinned)
        self._counters["adapter_loads"] += 1
        self._counters["adapter_evictions"] += len(evicted)
        return True

    # ------------------------------------------------------------------ forward passes

    def _forward(self, input_ids, mask, position_ids, logits_to_keep, adapters: list[str | None]) -> torch.Tensor:
        """The model's logits: (rows, vocab) at each row's last kept position; (rows, q, vocab) at every
        position when ``logits_to_keep`` is 0. oikyo's own forward runs where the model's family has one
        (:mod:`oikyo.serve.engine.decoder`), else the model's forward (always when scoring a prompt)."""
        self._lora.set_batch(adapters)
        try:
            own, kind = self._own_forward, self._cache.step.kind
            if own is not None and kind == "decode":
                return own.decode(input_ids, position_ids[:, 0], mask, self._cache)
            if own is not None and kind == "prefill" and own.prefills and isinstance(logits_to_keep, torch.Tensor):
                return own.prefill(input_ids, logits_to_keep[:, 0] + 1, self._cache)  # keep: each prompt's last index
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position_ids,
                use_cache=True,
                logits_to_keep=logits_to_keep,
                **{self._cache_arg: self._cache},
            )
        finally:
            self._lora.set_batch(None)
        return out.logits if isinstance(logits_to_keep, int) and logits_to_keep == 0 else out.logits[:, -1]

    def _prefill(self, sequences: list[_Sequence]) -> None:
        """One forward over the newcomers' prompts, right-padded to the longest: (k, q) tokens.

        They take slots n..n+k-1 after the n active sequences; each row's logits are computed at
        its last prompt token only, and its first token is sampled from them. When a newcomer asks for
        its prompt's log-probabilities, the logits of every position are kept for this forward.
        """
        first_slot, k = len(self._active), len(sequences)
        input_ids, lengths_t = self._prompts(sequences)
        q = input_ids.shape[1]
        slots = torch.arange(first_slot, first_slot + k, device=self.device)
        mask = self._cache.prefill(slots, lengths_t, q, self.dtype)
        position_ids = torch.arange(q, device=self.device).expand(k, q)
        scoring = any(s.request.prompt_logprobs is not None for s in sequences)
        keep = 0 if scoring else (lengths_t - 1)[:, None]
        logits = self._forward(input_ids, mask, position_ids, keep, [s.adapter for s in sequences])
        if scoring:
            for row, sequence in enumerate(sequences):
                if sequence.request.prompt_logprobs is not None:
                    sequence.prompt_logprobs = self._prompt_logprobs(logits[row, : sequence.prompt_len - 1],
                                                                     sequence.request)
            logits = logits[torch.arange(k, device=self.device), lengths_t - 1]
        self._activate(sequences)
        tokens = choose_tokens(logits, [s.sampling for s in sequences])
        for sequence, token in zip(sequences, tokens):
            self._accept(sequence, token)

    def _prompts(self, sequences: list[_Sequence]) -> tuple[torch.Tensor, torch.Tensor]:
        """The newcomers' prompts right-padded to the longest, (k, q), and their lengths (k,), with room
        in the cache for them in the slots after the active sequences."""
        lengths = [s.prompt_len for s in sequences]
        self._cache.reserve(len(self._active) + len(sequences), max(s.prompt_len + s.max_new for s in sequences))
        input_ids = torch.full((len(sequences), max(lengths)), self._pad_id, dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, : sequence.prompt_len] = torch.tensor(sequence.request.prompt_ids)
        return input_ids.to(self.device), torch.tensor(lengths, device=self.device)

    def _activate(self, sequences: list[_Sequence]) -> None:
        """Prefilled newcomers join the batch, in the slots after the active sequences, in order."""
        for sequence in sequences:
            sequence.length = sequence.prompt_len
            sequence.admitted_step = self._counters["steps"]
            self._counters["prompt_tokens"] += sequence.prompt_len
            self._active.append(sequence)

    def _mixed(self, sequences: list[_Sequence]) -> None:
        """One forward of oikyo's own (:meth:`DecoderForward.mixed`): each active sequence's pending token,
        then the newcomers' right-padded prompts in the slots after them; samples a token for each."""
        active, n, k = list(self._active), len(self._active), len(sequences)
        prompt_ids, lengths = self._prompts(sequences)
        q = prompt_ids.shape[1]
        input_ids = torch.tensor([s.pending for s in active], device=self.device)  # (n,)
        positions = torch.tensor([s.length for s in active], device=self.device)  # (n,)
        self._cache.mixed(positions, torch.arange(n, n + k, device=self.device))
        # One adapter entry per token: the decoding rows', then each prompt's for each of its q columns.
        self._lora.set_batch([s.adapter for s in active] + [s.adapter for s in sequences for _ in range(q)])
        try:
            logits = self._own_forward.mixed(input_ids, positions, prompt_ids, lengths, self._cache)
        finally:
            self._lora.set_batch(None)
        for sequence in active:
            sequence.length += 1
        self._activate(sequences)
        everyone = active + sequences
        tokens = choose_tokens(logits, [s.sampling for s in everyone])
        for sequence, token in zip(everyone, tokens):
            self._accept(sequence, token)

    def _prompt_logprobs(self, logits: torch.Tensor, request: GenerationRequest) -> list[TokenLogprob | None]:
        """Each prompt token's entry under the raw distribution of the position before it: ``logits`` is
        (prompt_len - 1, vocab); the first token gets None."""
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        ids = request.prompt_ids
        chosen = logprobs.gather(1, torch.tensor(ids[1:], device=logprobs.device)[:, None])[:, 0].tolist()
        k = request.prompt_logprobs
        top_values, top_ids = logprobs.topk(k, dim=-1) if k else (logprobs[:, :0], logprobs[:, :0].long())
        entries: list[TokenLogprob | None] = [None]
        for position, token in enumerate(ids[1:]):
            top = [TokenLogprob(t, self.token_text(t), v)
                   for t, v in zip(top_ids[position].tolist(), top_values[position].tolist())]
            entries.append(TokenLogprob(token, self.token_text(token), chosen[position], top))
        return entries

    def _decode(self) -> None:
        """One forward feeding each active sequence its pending token: input (n, 1), logits (n, vocab)."""
        active = self._active
        input_ids = torch.tensor([[s.pending] for s in active], device=self.device)  # (n, 1)
        positions = torch.tensor([s.length for s in active], device=self.device)  # (n,)
        mask = self._cache.decode(positions, self.dtype)
        logits = self._forward(input_ids, mask, positions[:, None], 1, [s.adapter for s in active])
        for sequence in active:
            sequence.length += 1
        tokens = choose_tokens(logits, [s.sampling for s in active])
        for sequence, token in zip(active, tokens):
            self._accept(sequence, token)

    # ------------------------------------------------------------------ tokens out

    def _accept(self, sequence: _Sequence, token: int) -> None:
        """Record a sampled token: stream its text and decide whether the sequence is finished."""
        if sequence.first_token_at is None:
            sequence.first_token_at = time.perf_counter()
        sequence.output_ids.append(token)
        sequence.pending = token
        self._counters["tokens_generated"] += 1
        tracker = sequence.tracker
        processing = sequence.sampling.logits
        entry = processing.accept(token) if processing is not None else None
        if token in sequence.stop_ids:
            sequence.finish_reason = "stop"
            if sequence.request.prompt_logprobs is None:  # scoring (echo) counts one entry per generated token
                entry = None  # a final stop token is not part of the answer: no log-probability entry
        elif tracker.add(token) or (processing is not None and processing.complete):
            sequence.finish_reason = "stop"
        elif len(sequence.output_ids) >= sequence.max_new:
            sequence.finish_reason = "length"
        if entry is not None:
            sequence.logprobs.append(entry)
            sequence.unsent_logprobs.append(entry)
        if sequence.finish_reason is not None:
            tracker.flush()
        delta = tracker.take_delta(final=sequence.finish_reason is not None)
        if delta or (sequence.finish_reason is not None and sequence.unsent_logprobs):
            sequence.handle._emit(delta, sequence.unsent_logprobs)
            sequence.unsent_logprobs = []

    def _release_finished(self) -> None:
        """Take finished sequences out of the batch; the last active sequence moves into each freed slot."""
        finished = [i for i, s in enumerate(self._active) if s.finish_reason is not None]
        for i in reversed(finished):  # descending: the last sequence is never one still to be removed
            sequence, last = self._active[i], len(self._active) - 1
            if i != last:
                self._cache.move(last, i, self._active[last].length)
                self._active[i] = self._active[last]
            self._active.pop()
            self._finalize(sequence, sequence.finish_reason)

    def _finalize(self, sequence: _Sequence, reason: str) -> None:
        sequence.finish_reason = reason
        key = "requests_cancelled" if reason == "cancelled" else "requests_finished"
        self._counters[key] += 1
        now = time.perf_counter()
        first = sequence.first_token_at
        sequence.handle._finish(
            GenerationResult(
                token_ids=list(sequence.output_ids),
                text=sequence.tracker.text,
                finish_reason=reason,
                prompt_tokens=sequence.prompt_len,
                completion_tokens=len(sequence.output_ids),
                time_to_first_token=None if first is None else first - sequence.submitted,
                total_time=now - sequence.submitted,
                adapter=sequence.adapter,
                admitted_step=sequence.admitted_step,
                finished_step=self._counters["steps"],
                logprobs=None if sequence.logprobs is None else list(sequence.logprobs),
                prompt_logprobs=sequence.prompt_logprobs,
            )
        )
        if sequence.on_done is not None:
            sequence.on_done()


def _wait_any(sequences: list[_Sequence]) -> None:
    """Block until the first unfinished sequence finishes (the background thread does the work)."""
    for sequence in sequences:
        if not sequence.handle.done:
            try:
                sequence.handle.result()
            except Exception:  # its error is raised again when the results are collected
                pass
            return


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _resolve_dtype(dtype, device: str) -> torch.dtype:
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is not None:
        return dtype
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _prepare_layers(model, wanted: bool | None, batch_hint: int, half: bool = False) -> str:
    """Swap in serving linear layers, packed when asked (None: when on CPU in float32 and possible);
    returns how their products are computed ("native kernel", "native kernel, float16 weights",
    "onednn" or "pytorch"). ``half``: float16 panels (ValueError where they cannot be used)."""
    from oikyo.serve.engine.linear_layers import HALF_UNAVAILABLE, packing_available, prepare_linear_layers

    param = next(model.parameters())
    cpu_float32 = param.device.type == "cpu" and param.dtype == torch.float32
    possible = cpu_float32 and packing_available()
    if wanted and not possible:
        raise ValueError("packed_weights needs a float32 model on CPU and a torch build with oneDNN")
    if half and not cpu_float32:
        raise ValueError(HALF_UNAVAILABLE)
    pack = (possible or half) if wanted is None else bool(wanted)
    return prepare_linear_layers(model, pack, batch_hint, half)


def _num_layers(model) -> int:
    config = model.config
    config = getattr(config, "text_config", None) or config
    return config.num_hidden_layers


def _attention(model) -> str:
    """The attention implementation, switched to SDPA when it is one that ignores 4-D masks (flash)."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl not in ("sdpa", "eager"):
        model.set_attn_implementation("sdpa")
        impl = "sdpa"
    return impl


def _eos_ids(model, tokenizer) -> set[int]:
    """End-of-sequence tokens: the generation config's (what ``generate`` stops on) and the tokenizer's."""
    ids: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return ids
