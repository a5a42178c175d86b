"""Input embedding drift: the served base model's own hidden states, compared by MMD.

An input's embedding is the mean over its tokens of the base model's last hidden state (the
transformer body only, no language-model head): the model's own view of what it is asked, so a
change it would "notice" shows, in any language it reads. :class:`Embedder` loads the model once
(in the drift check's process, never in the router or a replica) and embeds in batches of similar
length. Reference embeddings are cached on disk per (model, texts) in
``$OIKYO_HOME/monitor/embeddings/`` as plain ``.npy`` arrays (read with ``allow_pickle=False``).

Yielding the CPU to serving: embedding is the check's only heavy work (about 1.5 s of one core per 20
new requests with the bundled model), and on a machine whose cores serve requests it would take them
from the replicas, whose threads wait for each other at every step. ``Embedder(..., nice=N)`` embeds
in a worker process of its own session at priority ``N`` (the drift command uses 19): the worker gets
the cores that serving leaves idle. Its own session matters on Linux: with autogroups (on by default
in most distributions) the scheduler shares the cores between sessions first and uses nice only
between the processes of one session, and the router and replicas run in sessions of their own; so
the worker also lowers its session's priority (``/proc/self/autogroup``). Measured on 2 cores beside
a 2-thread torch loop in another session, a busy process got 3.0 CPU-s of 6 s at nice 0, 3.1 at nice
19 alone and 0.1 at nice 19 in a session of its own. The checking process keeps its priority for
the rest (reading and writing the store: a starved writer would hold the store's lock).

:class:`MMD` is the two-sample statistic. Embeddings are first standardized per dimension with the
reference's mean and spread (a few hidden dimensions of a language model carry most of the norm and
would otherwise decide alone). The kernel is ``k(x, y) = exp(-|x - y|^2 / h)`` with ``h`` the median
squared distance between reference points (the median heuristic). For a window ``X`` (``W`` points)
and the comparison half ``R`` of the reference::

    MMD^2 = mean_{i != j} k(x_i, x_j) + mean_{a != b} k(r_a, r_b) - 2 mean_{i, a} k(x_i, r_a)

Its null distribution comes from bootstrap windows of the calibration half ``C``
(:mod:`oikyo.monitor.calibration`), computed from one Gram matrix of ``C``: a window's within term
is a sub-matrix average (pairs of the same drawn row left out, as two fresh requests are never the
same point), its cross term an average of precomputed row means. The witness function
``f(x) = mean_i k(x, x_i) - mean_a k(x, r_a)`` is largest on the inputs most typical of the window
and least typical of the reference: those are shown as examples.

Usage::

    embedder = Embedder(model_dir)                   # loads the model once (~1 s for the bundled model)
    vectors = embedder.embed(["Hello", "Bonjour"])   # (2, hidden) float32
    embedder = Embedder(model_dir, nice=19)          # the same, in a worker that yields the CPU
    embedder.close()                                 # stops the worker (it also stops when this process ends)
    mmd = MMD(reference_vectors, pool_vectors)
    value, witness = mmd.raw(window_vectors)
    null = mmd.null_raw(index_windows)               # (B,) values on bootstrap windows of the pool
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from oikyo import workspace

MAX_TOKENS = 256  # an input's first tokens are enough to say what it is about
BATCH = 16
MEDIAN_SAMPLE = 400
NULL_CHUNK = 32
# The check runs beside the replicas on the same machine: one thread keeps it from taking their cores
# (and on a busy machine, more threads mostly wait on each other).
THREADS = 1
MEMO = 20000  # texts whose embeddings a checking process keeps (about 45 MB at hidden size 576)


class EmbeddingError(RuntimeError):
    """The embedding worker could not load the model or embed (its error, as text)."""


class Embedder:
    """Mean-pooled last hidden states of a model folder's transformer body.

    ``nice`` 0 embeds in this process; N > 0 in a worker process at that lower priority, in a session
    of its own (see the module docstring). Either way the tokenizer is loaded here (token counts).
    """

    def __init__(self, model_dir: str | Path, *, max_tokens: int = MAX_TOKENS, batch_size: int = BATCH,
                 threads: int = THREADS, nice: int = 0):
        from oikyo.models.loading import load_tokenizer

        self.model_dir = str(Path(model_dir).resolve())
        self.max_tokens, self.batch_size, self.threads = max_tokens, batch_size, threads
        self.tokenizer = load_tokenizer(self.model_dir)
        self._worker = None
        if nice > 0:
            self._worker = _Worker(self.model_dir, nice, max_tokens=max_tokens, batch_size=batch_size, threads=threads)
            return
        import torch

        from oikyo.models.loading import load_model

        model = load_model(self.model_dir)
        # The body alone: its last hidden state, without computing vocabulary logits.
        self.body = getattr(model, model.base_model_prefix, model)
        self._torch = torch
        # Periodic checks see overlapping windows and repeated requests: each text is embedded once.
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def key(self) -> str:
        """What identifies this model's embeddings: its folder and its config and weights' sizes/times."""
        folder = Path(self.model_dir)
        stamps = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.glob("*.safetensors"))
        return f"{self.model_dir}|{stamps}|{self.max_tokens}"

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), hidden) float32: each text's mean-pooled last hidden state."""
        if self._worker is not None:
            return self._worker.embed(list(texts))
        torch = self._torch
        out: list[np.ndarray | None] = [self._memo.get(t) for t in texts]
        missing = [i for i, v in enumerate(out) if v is None]
        order = sorted(missing, key=lambda i: len(texts[i]))  # similar lengths batch with little padding
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            self._embed(texts, order, out)
        finally:
            torch.set_num_threads(before)
        for i in missing:
            self._memo[texts[i]] = out[i]
        while len(self._memo) > MEMO:
            self._memo.popitem(last=False)
        return np.stack(out).astype(np.float32) if texts else np.zeros((0, 1), np.float32)

    def _embed(self, texts: list[str], order: list[int], out: list) -> None:
        torch = self._torch
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                batch = self.tokenizer([texts[i] or " " for i in chunk], return_tensors="pt", padding=True,
                                       truncation=True, max_length=self.max_tokens, add_special_tokens=False)
                hidden = self.body(input_ids=batch["input_ids"],
                                   attention_mask=batch["attention_mask"]).last_hidden_state  # (b, t, h)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, t, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (b, h)
                for row, i in enumerate(chunk):
                    out[i] = pooled[row].float().numpy()

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    @property
    def worker_pid(self) -> int | None:
        """The worker process's id (None when embedding in this process)."""
        return self._worker.pid if self._worker is not None else None

    def close(self) -> None:
        """Stop the worker, if any (an in-process embedder holds nothing to release)."""
        if self._worker is not None:
            self._worker.close()


# ----------------------------------------------------------------------------- the low-priority worker


def lower_priority(nice: int) -> None:
    """Run this process at priority ``nice`` in a session of its own, so that it also yields to other sessions.

    Call it in a process that does not lead a process group (a spawned child): ``os.setsid`` refuses a
    leader. Without autogroups (other systems, kernels without them) nice alone orders the processes.
    """
    os.setsid()
    os.nice(nice)
    try:
        Path("/proc/self/autogroup").write_text(str(nice))  # the session's weight among sessions
    except OSError:
        pass


class _Worker:
    """An in-process :class:`Embedder` in a spawned child at low priority, fed texts over a pipe."""

    def __init__(self, model_dir: str, nice: int, **options):
        import multiprocessing

        # spawn: a fresh interpreter, not a fork of this process's threads and open store connections.
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, model_dir, nice, options), daemon=True,
                                        name="oikyo-embedder")
        self._process.start()
        self.pid = self._process.pid
        child.close()
        self._answer()  # the model loaded, or its error raised here

    def embed(self, texts: list[str]) -> np.ndarray:
        self._conn.send(texts)
        return self._answer()

    def _answer(self):
        try:
            status, value = self._conn.recv()
        except EOFError:
            raise EmbeddingError(f"the embedding worker exited ({self._process.exitcode})") from None
        if status == "error":
            raise EmbeddingError(value)
        return value

    def close(self) -> None:
        self._conn.close()  # the worker sees the end of its input and exits
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()


def _serve(conn, model_dir: str, nice: int, options: dict) -> None:
    """The worker: lower its priority, load the model, then embed each list of texts it receives."""
    lower_priority(nice)
    try:
        embedder = Embedder(model_dir, **options)
    except Exception as error:  # noqa: BLE001 - sent to the checking process, which raises it
        conn.send(("error", f"{error.__class__.__name__}: {error}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            texts = conn.recv()
        except (EOFError, OSError):
            return  # the checking process closed the pipe or is gone
        try:
            answer = ("ok", embedder.embed(texts))
        except Exception as error:  # noqa: BLE001
            answer = ("error", f"{error.__class__.__name__}: {error}")
        try:
            conn.send(answer)
        except (BrokenPipeError, OSError):
            return


def cache_dir() -> Path:
    path = workspace.subdir("monitor") / "embeddings"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_embed(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """``embedder.embed(texts)``, read from the cache when the same model embedded the same texts before."""
    digest = hashlib.sha256(embedder.key.encode())
    for text in texts:
        digest.update(text.encode("utf-8", "replace") + b"\0")
    path = cache_dir() / f"{digest.hexdigest()[:32]}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    vectors = embedder.embed(texts)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors, allow_pickle=False)
    tmp.replace(path)  # atomic: a concurrent check never reads half a file
    return vectors


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


class MMD:
    """The RBF-kernel MMD² between windows and a reference, with bootstrap nulls from a calibration pool."""

    def __init__(self, reference: np.ndarray, pool: np.ndarray, seed: int = 0):
        both = np.concatenate([reference, pool]).astype(np.float64)
        self.mean = both.mean(0)
        self.scale = both.std(0) + 1e-6
        self.ref = self._standard(reference)
        self.pool = self._standard(pool)
        rng = np.random.default_rng(seed)
        sample = self.ref[rng.permutation(len(self.ref))[:MEDIAN_SAMPLE]]
        d = _sq_dists(sample, sample)
        self.h = float(np.median(d[np.triu_indices(len(sample), 1)])) or 1.0  # the median heuristic
        k_rr = self.kernel(self.ref, self.ref)
        m = len(self.ref)
        self.rr = float((k_rr.sum() - np.trace(k_rr)) / max(1, m * (m - 1)))
        self.gram = self.kernel(self.pool, self.pool)  # (|C|, |C|)
        self.pool_to_ref = self.kernel(self.pool, self.ref).mean(1)  # (|C|,)

    def _standard(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.scale

    def kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-_sq_dists(a, b) / self.h)

    def raw(self, window: np.ndarray) -> tuple[float, np.ndarray]:
        """MMD² of a window of embeddings (W, hidden) against the reference, and the witness at each point."""
        x = self._standard(window)
        n = len(x)
        k_xx = self.kernel(x, x)
        k_xr = self.kernel(x, self.ref)
        within = (k_xx.sum(1) - np.diag(k_xx)) / max(1, n - 1)  # (W,) mean similarity to the rest of the window
        to_ref = k_xr.mean(1)  # (W,)
        value = float(within.mean() + self.rr - 2 * to_ref.mean())
        return value, within - to_ref

    def null_raw(self, windows: np.ndarray) -> np.ndarray:
        """MMD² of each bootstrap window of pool indices (B, W): (B,)."""
        values = np.empty(len(windows))
        for start in range(0, len(windows), NULL_CHUNK):
            idx = windows[start:start + NULL_CHUNK]  # (b, W)
            sub = self.gram[idx[:, :, None], idx[:, None, :]]  # (b, W, W)
            distinct = idx[:, :, None] != idx[:, None, :]
            within = (sub * distinct).sum((1, 2)) / np.maximum(distinct.sum((1, 2)), 1)
            values[start:start + len(idx)] = within + self.rr - 2 * self.pool_to_ref[idx].mean(1)
        return values
