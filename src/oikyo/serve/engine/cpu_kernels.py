"""oikyo's native CPU kernels for decoding steps: the linear layers' base product and the LoRA terms.

Why: decoding multiplies a few rows (one token per sequence) by every weight matrix at every step,
so a step's time is the time to stream the weights from memory. PyTorch's products (MKL, or oneDNN
with prepacked weights) stream them well below the memory's speed at these shapes once each cache
line also carries several rows' arithmetic. The kernels in ``cpu_kernels.c`` read each matrix once,
in memory order, with software prefetches ahead of the arithmetic (which alone took the base
product at 8 rows from 57 to 42 ms in a first test). Measured on the 2-core Intel Xeon test machine
with one thread (figures in BENCHMARKS.md):

- the base product of SmolLM2-135M's 211 linear layers at 8 rows: 44.7 ms a step against 56.0 ms
  for prepacked oneDNN and 92.1 for MKL (one row: 35.2 against 42.6);
- the LoRA terms of four rank-16 adapters on every layer (78 MB) add 8.6 ms to a step, what a plain
  read of those matrices costs (8.4), against 13.0 ms for PyTorch's products. With one adapter the
  kernel added 1.6 ms a step at 1 row and 3.7 ms at 8, where PyTorch's products add 3.7 and 6.0
  (AMD EPYC, an earlier session).

Threads. The LoRA kernel runs on one thread; with several torch threads, PyTorch's threaded products
win on long prefills, so :meth:`CPUKernels.suits` sends those to PyTorch. The base product runs on
torch's thread count (``torch.get_num_threads()``) when it is built with OpenMP (``-fopenmp``) and the
process has one OpenMP runtime, the libgomp that torch loaded, which the kernel then shares
(``threaded``; :func:`_one_openmp_runtime` checks the process's mapped libraries). Otherwise it is
used with one torch thread only: single-threaded, it lost to oneDNN's threaded product on 2 threads
(36.9 ms a step at 8 rows against 47.5). Threaded, on the 2-core AVX2-only AMD EPYC at 2 threads, the
engine's offline decode of the bundled model made about 100 tokens/s at 8 rows against 81 with
oneDNN, and 129-143 against 114-124 at 16 rows (4 alternating runs each; BENCHMARKS.md). The base
product is used only when the kernels were built with AVX or AVX-512 vectors (``linear_available``),
the forms measured faster than oneDNN (on an AVX2-only AMD EPYC, one thread, 65.5 against 95.8 ms a
step at 8 rows).

Float16 weights (opt-in: ``GenerationEngine(weights="float16")``, ``oikyo deploy --weights float16``):
``CPUKernels.pack(weight, half=True)`` gives :meth:`CPUKernels.linear` panels of IEEE halves, widened by F16C as they are read, so a memory-bound decoding step streams half the
bytes; where the build has no F16C (``half_available`` False) the engine refuses float16.

How it is built: the C source next to this file (plain C99 with GCC/Clang vector types; no Python
or torch headers) is compiled on first use with the system C compiler (``$CC``, else
``cc``/``gcc``/``clang``) into ``$OIKYO_HOME/kernels/``, under a name derived from the source, the
compiler and the CPU, and loaded with ctypes (which releases the GIL during the calls). Compiling
takes well under a second; later processes reuse the file. Without a compiler, or when the build
fails, :func:`load_kernels` returns None and serving keeps PyTorch's products (the same float32
arithmetic up to the order of additions), saying so once in the log. ``OIKYO_CPU_KERNELS=torch``
chooses PyTorch's products anyway.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from oikyo import workspace

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_kernels.c")
ENV = "OIKYO_CPU_KERNELS"
MAX_TOKENS_THREADED = 512  # the most tokens per forward given to the LoRA kernel when torch has several threads
MAX_LINEAR_ROWS = 16  # the most rows given to the base-product kernel on one thread (more: MKL, see linear_suits)
MAX_LINEAR_ROWS_THREADED = 320  # ... and on several threads, threaded (more: MKL): decoding steps and most prefills
# -march=native: vectorize for this CPU (the file's name includes the CPU's flags); retried without
# it for compilers that do not know it. -fopenmp threads the base product (see the module docstring);
# -fopenmp-simd honours the loops' simd pragmas only, for compilers without an OpenMP runtime.
# -ffp-contract=fast: fused multiply-adds (-std=c99 alone turns them off; measured on an AVX2 EPYC at
# 2 threads, the base product at 16-32 rows went from 64-98 to 84-118 GFLOP/s; no change at 8 rows).
_FLAG_SETS = (["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp"],
              ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp-simd"],
              ["-O3", "-ffp-contract=fast", "-fopenmp-simd"], ["-O3"])
OPENMP_RUNTIMES = ("libgomp", "libiomp", "libomp")  # library names of OpenMP runtimes (GNU, Intel, LLVM)

_lock = threading.Lock()
_loaded: dict[str, CPUKernels | None] = {}


class CPUKernels:
    """The compiled kernels: :meth:`lora_add` (each token's LoRA term) and :meth:`linear` (a base product)."""

    def __init__(self, library: ctypes.CDLL, path: Path):
        self.path = path
        pointer, integer = ctypes.c_void_p, ctypes.c_int64
        self._lora_add = library.oikyo_lora_add
        self._lora_add.argtypes = [pointer, integer, pointer, integer, pointer, pointer, integer, pointer, pointer, pointer, pointer]
        self._lora_add.restype = None
        self._pack = library.oikyo_pack_panels
        self._pack.argtypes = [pointer, integer, integer, pointer]
        self._pack.restype = None
        self._linear = library.oikyo_linear_rows
        self._linear.argtypes = [pointer, integer, integer, pointer, integer, pointer, pointer, integer]
        self._linear.restype = None
        self._pack_half = library.oikyo_pack_panels_half
        self._pack_half.argtypes = [pointer, integer, integer, pointer]
        self._pack_half.restype = None
        self._linear_half = library.oikyo_linear_rows_half
        self._linear_half.argtypes = [pointer, integer, integer, pointer, integer, pointer, pointer, integer]
        self._linear_half.restype = None
        self._attention = library.oikyo_decode_attention
        self._attention.argtypes = [pointer, integer, integer, integer, integer, pointer, pointer, integer, pointer,
                                    integer, ctypes.c_float, pointer, pointer, integer]
        self._attention.restype = None
        self._add_rms_norm = library.oikyo_add_rms_norm
        self._add_rms_norm.argtypes = [pointer, pointer, integer, integer, pointer, ctypes.c_float, pointer]
        self._add_rms_norm.restype = None
        self._rope_cache = library.oikyo_rope_cache
        self._rope_cache.argtypes = [pointer, pointer, pointer, integer, integer, integer, integer, pointer, pointer,
                                     pointer, pointer, pointer, pointer, integer]
        self._rope_cache.restype = None
        for name in ("oikyo_vector_lanes", "oikyo_panel_width", "oikyo_threaded", "oikyo_half"):
            getattr(library, name).restype = integer
        self.lanes = library.oikyo_vector_lanes()  # floats per vector in this build (16: AVX-512)
        self.panel = library.oikyo_panel_width()  # output columns per packed panel
        # The base product is built with -march=native, so it has the CPU's own vectors, as oneDNN
        # does. It was measured faster than oneDNN with AVX-512 on an Intel Xeon (8 rows: 43.7 ms a
        # step against 57.1) and with AVX2 on an AVX2-only AMD EPYC (65.5 against 95.8). (Forced to
        # AVX2 on the Xeon it lost to oneDNN's AVX-512, 64.3: a build -march=native never makes.)
        # The 4-lane form (SSE, NEON) was never measured against oneDNN: it is not used.
        self.linear_available = self.lanes >= 8
        # The base product on torch's threads: built with OpenMP, and its runtime is torch's own.
        self.threaded = bool(library.oikyo_threaded()) and _one_openmp_runtime()
        # Half-precision panels (float16 weights widened by F16C as they are read): the base product's
        # vectors and the CPU's F16C (every x86 CPU with AVX2 has it).
        self.half_available = self.linear_available and bool(library.oikyo_half())

    @staticmethod
    def accepts(*tensors: torch.Tensor) -> bool:
        """True when every tensor is a contiguous float32 CPU tensor (what the C code reads and writes)."""
        return all(t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous() for t in tensors)

    # ------------------------------------------------------------------ LoRA terms

    @staticmethod
    def suits(tokens: int) -> bool:
        """Whether the LoRA kernel beats PyTorch for a forward of ``tokens`` tokens.

        The kernel runs on one thread. With one torch thread it was as fast or faster at every size
        measured (8 to 2048 tokens); with several, PyTorch's threaded products win on long prefills
        (2048 tokens, 2 threads: 2.6 ms against the kernel's 4.0 for a 1536 -> 576 layer), so
        those go to PyTorch.
        """
        return tokens <= MAX_TOKENS_THREADED or torch.get_num_threads() == 1

    def lora_add(self, x: torch.Tensor, out: torch.Tensor, weights: tuple[int, int], plan: TokenPlan) -> None:
        """``out`` (tokens, out) += each token's adapter term. x: (tokens, in); ``weights``: the data
        pointers of a layer's stacked A and transposed B; every tensor must pass :meth:`accepts`."""
        self._lora_add(x.data_ptr(), x.shape[1], out.data_ptr(), out.shape[1], *weights, *plan.args)

    # ------------------------------------------------------------------ base products

    def linear_suits(self, rows: int) -> bool:
        """Whether the base-product kernel beats PyTorch for ``rows`` rows (a decoding step).

        With several torch threads only when the kernel is :attr:`threaded`: on one thread it lost to
        oneDNN's threaded product on two (36.9 ms a step at 8 rows on the test machine, against the
        kernel's 47.5, same ad-hoc run). On one thread, up to ``MAX_LINEAR_ROWS`` rows: rows beyond
        go to MKL on the plain weight (the one packed copy is the kernel's), which from about 24 rows
        on is as fast (prefills). At 16 rows the kernel is 15% faster than MKL and 5-7% slower than
        oneDNN; at 1 to 8 rows 17-20% faster than oneDNN. Threaded on two threads (AVX2 EPYC, the
        engine's decode of the bundled model), up to ``MAX_LINEAR_ROWS_THREADED``: at 32 rows the
        kernel made 148-173 tokens/s against oneDNN's 133-168, where MKL for those rows made 121-144.
        Prefills too (the bundled model's chat prompts, 2 threads, AVX2 EPYC, alternated): one prompt
        of 37 tokens to its first token in 129-130 ms against 181-196 with MKL's product, 2 prompts
        (75 tokens) 197-214 against 278-292, 4 (146) 324-372 against 432-466, 8 (299) 643-726 against
        772-814; so up to 320 rows (more, a long prompt, stays with MKL: not measured).
        """
        if torch.get_num_threads() == 1:
            return rows <= MAX_LINEAR_ROWS
        return self.threaded and rows <= MAX_LINEAR_ROWS_THREADED

    def pack(self, weight: torch.Tensor, half: bool = False) -> torch.Tensor:
        """``weight`` (out, in), float32 on CPU, reordered into the panels :meth:`linear` reads (a copy);
        ``half``: the panels in IEEE half precision (float16, rounded to nearest even; needs
        :attr:`half_available`)."""
        weight = weight.detach().contiguous()
        out_features, in_features = weight.shape
        panels = torch.empty(-(-out_features // self.panel) * self.panel * in_features,
                             dtype=torch.float16 if half else torch.float32)
        (self._pack_half if half else self._pack)(weight.data_ptr(), out_features, in_features, panels.data_ptr())
        return panels

    def linear(self, x: torch.Tensor, panels: torch.Tensor, out_features: int, bias: torch.Tensor | None) -> torch.Tensor:
        """x (rows, in) @ weight.T (+ bias): (rows, out_features), from :meth:`pack`'s panels (half ones are
        widened to float32 as they are read; the products and sums are float32 either way).
        ``x`` and ``bias`` must pass :meth:`accepts`."""
        out = torch.empty((x.shape[0], out_features), dtype=torch.float32)
        product = self._linear_half if panels.dtype == torch.float16 else self._linear
        product(x.data_ptr(), x.shape[0], x.shape[1], panels.data_ptr(), out_features,
                None if bias is None else bias.data_ptr(), out.data_ptr(), self._team())
        return out

    def _team(self) -> int:
        """The OpenMP threads a threaded kernel runs on: torch's thread count when :attr:`threaded`, else 1."""
        return torch.get_num_threads() if self.threaded else 1

    # ------------------------------------------------------------------ attention

    def decode_attention(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor,
                         max_len: int, scale: float) -> torch.Tensor:
        """One decoding step's attention over the slot KV cache (see ``cpu_kernels.c``, part 3).

        q: (n, kv_heads, group, dim); keys, values: the cache's (slots, kv_heads, capacity, dim)
        buffers, row b reading slot b; lengths: (n,) int64, each row's key count (at least 1, at most
        ``max_len``). Returns (n, kv_heads, group, dim). Every tensor must pass :meth:`accepts`
        (lengths: contiguous int64)."""
        n, kv_heads, group, dim = q.shape
        out = torch.empty_like(q)
        scores = torch.empty(n * kv_heads * group * max_len, dtype=torch.float32)
        self._attention(q.data_ptr(), n, kv_heads, group, dim, keys.data_ptr(), values.data_ptr(), keys.shape[2],
                        lengths.data_ptr(), max_len, scale, scores.data_ptr(), out.data_ptr(),
                        self._team())
        return out

    # ------------------------------------------------------------------ between the products

    def add_rms_norm(self, h: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """``h`` (rows, dim) += ``delta`` in place (skipped when None); returns the RMS norm of ``h``
        times ``weight`` (dim,), a new tensor. Every tensor must pass :meth:`accepts`."""
        out = torch.empty_like(h)
        self._add_rms_norm(h.data_ptr(), None if delta is None else delta.data_ptr(), h.shape[0], h.shape[1],
                           weight.data_ptr(), eps, out.data_ptr())
        return out

    def rope_cache(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   slots: torch.Tensor, positions: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Rotate q (n, heads, dim) in place; rotate k and copy v (n, kv_heads, dim) into the cache
        buffers ``keys``/``values`` (slots, kv_heads, capacity, dim) at column ``positions[b]`` of slot
        ``slots[b]``, for each of the n tokens. cos, sin: (n, dim); slots, positions: (n,) int64; every
        tensor contiguous (:meth:`accepts`)."""
        n, heads, dim = q.shape
        self._rope_cache(q.data_ptr(), k.data_ptr(), v.data_ptr(), n, heads, k.shape[1], dim, cos.data_ptr(),
                         sin.data_ptr(), slots.data_ptr(), positions.data_ptr(), keys.data_ptr(), values.data_ptr(),
                         keys.shape[2])


def _one_openmp_runtime() -> bool:
    """Whether this process has mapped exactly one OpenMP runtime (the kernels, loaded after torch,
    then share torch's: the dynamic loader gives a library whose name is already loaded to both).
    Two (say torch's Intel runtime beside the system's libgomp) would be two thread teams fighting
    for the cores; unknown (no /proc) counts as two."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    found = {os.path.realpath(line.split()[-1]) for line in maps.splitlines()
             if line.count(" ") >= 5 and any(name in line.rsplit("/", 1)[-1] for name in OPENMP_RUNTIMES)}
    return len(found) == 1


class TokenPlan:
    """Which tokens use which adapter's rows of one stacking layout, as the arrays the kernel reads.

    ``layout``: ((name, start, end, scaling), ...); ``rows``: each batch row's adapter name or None;
    each row has ``tokens_per_row`` consecutive tokens. Tokens whose adapter is not in the layout
    (it does not target this layer) get no term.
    """

    def __init__(self, layout: tuple, rows: list[str | None], tokens_per_row: int = 1):
        members: dict[str, list[int]] = {}
        for i, name in enumerate(rows):
            if name is not None:
                members.setdefault(name, []).extend(range(i * tokens_per_row, (i + 1) * tokens_per_row))
        groups, scales, order, scratch = [], [], [], 1
        for name, start, end, scaling in layout:
            if name in members:
                groups.append((start, end, len(order), len(members[name])))
                scales.append(scaling)
                scratch = max(scratch, (end - start) * len(members[name]))
                order.extend(members[name])
        # Kept as attributes: the kernel reads them through the pointers in ``args``.
        self.groups = torch.tensor(groups or [(0, 0, 0, 0)], dtype=torch.int64)
        self.scales = torch.tensor(scales or [0.0], dtype=torch.float32)
        self.tokens = torch.tensor(order or [0], dtype=torch.int64)
        self.low = torch.empty(scratch, dtype=torch.float32)
        tensors = (self.groups, self.scales, self.tokens, self.low)
        self.args = (len(groups), *(t.data_ptr() for t in tensors))


def load_kernels() -> CPUKernels | None:
    """The compiled kernels, built on first use (None: use PyTorch's products; see the module docstring)."""
    choice = os.environ.get(ENV, "auto").strip().lower()
    if choice == "torch":
        return None
    if choice != "auto":
        log.warning("%s=%r is not 'auto' or 'torch'; using 'auto'", ENV, choice)
    with _lock:
        if "kernels" not in _loaded:
            _loaded["kernels"] = _build_and_load()
        return _loaded["kernels"]


def _compilers() -> list[str]:
    names = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    return [path for path in (shutil.which(name) for name in names) if path]


def _cpu_fingerprint() -> str:
    """The CPU's model and flags (the kernels are compiled for them with -march=native)."""
    text = platform.machine() + platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags", "Features")):
                text += line
                if line.startswith(("flags", "Features")):
                    break
    except OSError:
        pass
    return text


def _build_and_load() -> CPUKernels | None:
    if platform.system() == "Windows":
        log.info("no native CPU kernels on Windows; decoding uses PyTorch's products")
        return None
    compilers = _compilers()
    if not compilers:
        log.info("no C compiler found (set CC); decoding uses PyTorch's products, which is slower")
        return None
    try:
        source = SOURCE.read_bytes()
        folder = workspace.subdir("kernels")
    except OSError as error:
        log.warning("could not build the native CPU kernels (%s); decoding uses PyTorch's products", error)
        return None
    cpu = _cpu_fingerprint().encode()
    errors = []
    for compiler in compilers:
        for flags in _FLAG_SETS:
            key = hashlib.sha256(source + compiler.encode() + " ".join(flags).encode() + cpu)
            target = folder / f"cpu_kernels-{key.hexdigest()[:16]}.so"
            try:
                if not target.is_file():
                    _compile(compiler, flags, target)
                kernels = CPUKernels(ctypes.CDLL(str(target)), target)
                log.info("decoding steps use oikyo's native CPU kernels %s", target)
                return kernels
            except (OSError, subprocess.SubprocessError, AttributeError) as error:
                errors.append(f"{Path(compiler).name} {' '.join(flags)}: {str(error).strip()[:300]}")
    log.warning("could not build the native CPU kernels; decoding uses PyTorch's products. %s", "; ".join(errors))
    return None


def _compile(compiler: str, flags: list[str], target: Path) -> None:
    """Compile into a temporary file next to ``target``, then rename it into place (concurrent builds are safe)."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".build-", suffix=".so")
    os.close(handle)
    try:
        result = subprocess.run(
            [compiler, *flags, "-std=c99", "-shared", "-fPIC", "-o", temporary, str(SOURCE), "-lm"],
            capture_output=True, text=True, timeout=120,
        )
        if result.returncode != 0:
            raise subprocess.SubprocessError(result.stderr or f"exit status {result.returncode}")
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
