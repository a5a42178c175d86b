"""``--engine vllm``: replicas that run vLLM's OpenAI-compatible server instead of oikyo's engine.

Only where vLLM is installed and a CUDA GPU is present; elsewhere :func:`check_available` raises a
clear error before anything starts. The router stays the same (keys, splits, metrics, logging);
each replica is ``python -m vllm.entrypoints.openai.api_server`` on a loopback port with the
router's shared secret as its API key, the pool's models as served names and every adapter
version on the base model as a LoRA module. Differences from the native engine: adapters
registered after the replica started are not picked up until it restarts, the response body
carries no ``variant`` field (the ``X-Oikyo-Variant`` header still tags it), and the autoscaler
sees the router's own queue only. This path is not exercised by the CPU test suite.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from oikyo.errors import OikyoError
from oikyo.serve.replicas import ProcessPool, Replica

# The values vLLM accepts for --max-lora-rank (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# vLLM keeps this many adapters on the GPU at once (--max-loras); the rest wait in CPU memory.
MAX_GPU_LORAS = 8


def check_available() -> None:
    """Raise a clear OikyoError unless vLLM is installed and CUDA is present."""
    if importlib.util.find_spec("vllm") is None:
        raise OikyoError("--engine vllm needs the vllm package (pip install vllm) on a machine with a CUDA GPU; "
                         "use --engine native (the default) here")
    import torch

    if not torch.cuda.is_available():
        raise OikyoError("--engine vllm needs a CUDA GPU, and none is available here; use --engine native")


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


def command(load_dir: str, served_names: list[str], adapters: dict[str, str], *, port: int, api_key: str) -> list[str]:
    """The vLLM server command line for one replica: the base model under ``served_names``, each adapter
    (name -> peft folder) as a LoRA module, loopback only, ``api_key`` required."""
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", load_dir,
           "--host", "127.0.0.1", "--port", str(port), "--api-key", api_key,
           "--served-model-name", *served_names]
    # vLLM's request log is off by default (its --disable-log-requests flag is deprecated).
    if adapters:
        cmd += ["--enable-lora", "--max-loras", str(min(len(adapters), MAX_GPU_LORAS)),
                "--max-lora-rank", str(max_lora_rank(adapters)),
                "--lora-modules", *(f"{name}={path}" for name, path in adapters.items())]
    return cmd


def check_ranks(load_dirs) -> None:
    """Raise a clear OikyoError before anything starts when an adapter on one of ``load_dirs`` (base
    model folders) has a rank vLLM cannot serve."""
    from oikyo.serve.served_models import adapters_on

    for load_dir in load_dirs:
        max_lora_rank(adapters_on(load_dir))


def pool_command(pool: ProcessPool, port: int) -> list[str]:
    """:func:`command` for one replica of ``pool``: its models and every adapter version on its base."""
    from oikyo.serve.served_models import adapters_on

    names = [m.id for m in pool.spec.models if m.adapter_dir is None] or [os.path.basename(pool.spec.load_dir)]
    return command(pool.spec.load_dir, names, adapters_on(pool.spec.load_dir), port=port, api_key=pool.token)


class VllmPool(ProcessPool):
    """A pool whose replicas are vLLM servers."""

    def spawn(self) -> Replica:
        self._serial += 1
        replica_id = f"{self.name}-v{self._serial}"
        with socket.socket() as sock:  # vLLM binds its own port: take a free one (a small race, unlike native)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        process = subprocess.Popen(pool_command(self, port), stdin=subprocess.DEVNULL, stdout=self.log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ))
        replica = Replica(id=replica_id, url=f"http://127.0.0.1:{port}", process=process)
        self.replicas.append(replica)
        return replica
