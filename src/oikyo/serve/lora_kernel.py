"""A small native CPU kernel for LoRA terms: every decoding step, and prefills that mix adapters.

Why: decoding multiplies a few rows (one token each) by every adapter's small matrices at every
layer. PyTorch's products (MKL, or oneDNN with prepacked weights alike) handle these shapes (8
rows, rank 64 in or out) poorly when the matrices come from memory rather than cache. On the
2-core test machine, four rank-16 adapters on every linear layer of SmolLM2-135M added about 15 ms
to a 34 ms decoding step in a micro-benchmark, where a plain read of their 78 MB takes about 5 ms.
The kernel in ``lora_kernel.c`` takes each adapter's matrices once, in memory order, only for the
tokens that use it, and added about 7 ms (the serving benchmarks' figures are in BENCHMARKS.md).
With one adapter it adds 1.6 ms a step at 1 row and 3.7 ms at 8, where PyTorch's products add 3.7
and 6.0. Prefills of a mixed batch use it too, in place of a gather, per-adapter products and a
scatter; a prefill of one adapter keeps PyTorch's product (many tokens: compute-bound, threaded).

How it is built: the C source next to this file (plain C99 over float pointers; no Python or torch
headers) is compiled on first use with the system C compiler (``$CC``, else ``cc``/``gcc``/``clang``)
into ``$OIKYO_HOME/kernels/``, under a name derived from the source, the compiler and the CPU, and
loaded with ctypes (which releases the GIL during the call). Compiling takes well under a second;
later processes reuse the file. Without a compiler, or when the build fails, :func:`load_kernel`
returns None and serving keeps the PyTorch products (the same float32 arithmetic up to the order
of additions), saying so once in the log. ``OIKYO_LORA_KERNEL=torch`` chooses the PyTorch products
anyway.
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

SOURCE = Path(__file__).with_name("lora_kernel.c")
SYMBOL = "oikyo_lora_add"
ENV = "OIKYO_LORA_KERNEL"
MAX_TOKENS_THREADED = 512  # the most tokens per forward given to the kernel when torch has several threads
# -march=native: vectorize for this CPU (the file's name includes the CPU's flags); retried without
# it for compilers that do not know it. -fopenmp-simd honours the loops' simd pragmas only.
_FLAG_SETS = (["-O3", "-march=native", "-fopenmp-simd"], ["-O3", "-fopenmp-simd"], ["-O3"])

_lock = threading.Lock()
_loaded: dict[str, LoRAKernel | None] = {}


class LoRAKernel:
    """The compiled ``oikyo_lora_add``: ``kernel(x, out, weights, plan)`` adds each token's LoRA term to ``out``."""

    def __init__(self, library: ctypes.CDLL, path: Path):
        self.path = path
        self._fn = getattr(library, SYMBOL)
        pointer, integer = ctypes.c_void_p, ctypes.c_int64
        self._fn.argtypes = [pointer, integer, pointer, integer, pointer, pointer, integer, pointer, pointer, pointer, pointer]
        self._fn.restype = None

    @staticmethod
    def accepts(*tensors: torch.Tensor) -> bool:
        """True when every tensor is a contiguous float32 CPU tensor (what the C code reads and writes)."""
        return all(t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous() for t in tensors)

    @staticmethod
    def suits(tokens: int) -> bool:
        """Whether the kernel beats PyTorch for a forward of ``tokens`` tokens.

        The kernel runs on one thread. With one torch thread it was as fast or faster at every size
        measured (8 to 2048 tokens); with several, PyTorch's threaded products win on long prefills
        (2048 tokens, 2 threads: 2.6 ms against the kernel's 4.0 for a 1536 -> 576 layer), so
        those go to PyTorch.
        """
        return tokens <= MAX_TOKENS_THREADED or torch.get_num_threads() == 1

    def __call__(self, x: torch.Tensor, out: torch.Tensor, weights: tuple[int, int], plan: TokenPlan) -> None:
        """``out`` (tokens, out) += each token's adapter term. x: (tokens, in); ``weights``: the data
        pointers of a layer's stacked A and transposed B; every tensor must pass :meth:`accepts`."""
        self._fn(x.data_ptr(), x.shape[1], out.data_ptr(), out.shape[1], *weights, *plan.args)


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


def load_kernel() -> LoRAKernel | None:
    """The compiled kernel, built on first use (None: use the PyTorch products; see the module docstring)."""
    choice = os.environ.get(ENV, "auto").strip().lower()
    if choice == "torch":
        return None
    if choice != "auto":
        log.warning("%s=%r is not 'auto' or 'torch'; using 'auto'", ENV, choice)
    with _lock:
        if "kernel" not in _loaded:
            _loaded["kernel"] = _build_and_load()
        return _loaded["kernel"]


def _compilers() -> list[str]:
    names = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    return [path for path in (shutil.which(name) for name in names) if path]


def _cpu_fingerprint() -> str:
    """The CPU's model and flags (the kernel is compiled for them with -march=native)."""
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


def _build_and_load() -> LoRAKernel | None:
    if platform.system() == "Windows":
        log.info("no native LoRA kernel on Windows; adapters use PyTorch's products")
        return None
    compilers = _compilers()
    if not compilers:
        log.info("no C compiler found (set CC); serving adapters with PyTorch's products, which is slower")
        return None
    try:
        source = SOURCE.read_bytes()
        folder = workspace.subdir("kernels")
    except OSError as error:
        log.warning("could not build the native LoRA kernel (%s); serving adapters with PyTorch's products", error)
        return None
    cpu = _cpu_fingerprint().encode()
    errors = []
    for compiler in compilers:
        for flags in _FLAG_SETS:
            key = hashlib.sha256(source + compiler.encode() + " ".join(flags).encode() + cpu)
            target = folder / f"lora_kernel-{key.hexdigest()[:16]}.so"
            try:
                if not target.is_file():
                    _compile(compiler, flags, target)
                kernel = LoRAKernel(ctypes.CDLL(str(target)), target)
                log.info("adapters use the native LoRA kernel %s", target)
                return kernel
            except (OSError, subprocess.SubprocessError, AttributeError) as error:
                errors.append(f"{Path(compiler).name} {' '.join(flags)}: {str(error).strip()[:300]}")
    log.warning("could not build the native LoRA kernel; serving adapters with PyTorch's products. %s", "; ".join(errors))
    return None


def _compile(compiler: str, flags: list[str], target: Path) -> None:
    """Compile into a temporary file next to ``target``, then rename it into place (concurrent builds are safe)."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".build-", suffix=".so")
    os.close(handle)
    try:
        result = subprocess.run(
            [compiler, *flags, "-std=c99", "-shared", "-fPIC", "-o", temporary, str(SOURCE)],
            capture_output=True, text=True, timeout=120,
        )
        if result.returncode != 0:
            raise subprocess.SubprocessError(result.stderr or f"exit status {result.returncode}")
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
