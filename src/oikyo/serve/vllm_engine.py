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
import os
import socket
import subprocess
import sys

from oikyo.errors import OikyoError
from oikyo.serve.replicas import ProcessPool, Replica


def check_available() -> None:
    """Raise a clear OikyoError unless vLLM is installed and CUDA is present."""
    if importlib.util.find_spec("vllm") is None:
        raise OikyoError("--engine vllm needs the vllm package (pip install vllm) on a machine with a CUDA GPU; "
                         "use --engine native (the default) here")
    import torch

    if not torch.cuda.is_available():
        raise OikyoError("--engine vllm needs a CUDA GPU, and none is available here; use --engine native")


def command(pool: ProcessPool, port: int) -> list[str]:
    """The vLLM server command line for one replica of ``pool``."""
    from oikyo.serve.served_models import adapters_on

    names = [m.id for m in pool.spec.models if m.adapter_dir is None] or [os.path.basename(pool.spec.load_dir)]
    adapters = adapters_on(pool.spec.load_dir)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", pool.spec.load_dir,
           "--host", "127.0.0.1", "--port", str(port), "--api-key", pool.token,
           "--served-model-name", *names, "--disable-log-requests"]
    if adapters:
        cmd += ["--enable-lora", "--max-loras", str(min(len(adapters), 8)), "--max-lora-rank", "64",
                "--lora-modules", *(f"{name}={path}" for name, path in adapters.items())]
    return cmd


class VllmPool(ProcessPool):
    """A pool whose replicas are vLLM servers."""

    def spawn(self) -> Replica:
        self._serial += 1
        replica_id = f"{self.name}-v{self._serial}"
        with socket.socket() as sock:  # vLLM binds its own port: take a free one (a small race, unlike native)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        process = subprocess.Popen(command(self, port), stdin=subprocess.DEVNULL, stdout=self.log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ))
        replica = Replica(id=replica_id, url=f"http://127.0.0.1:{port}", process=process)
        self.replicas.append(replica)
        return replica
