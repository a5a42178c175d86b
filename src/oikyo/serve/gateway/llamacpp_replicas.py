"""``--engine llamacpp``: replicas that run llama.cpp's OpenAI-compatible server on GGUF exports.

Each replica is ``PYTHON -m llama_cpp.server --config_file FILE`` from llama.cpp's own environment
(``.venv-llamacpp``, made by ``scripts/install-llamacpp.sh``, with the server's extras; found as for
``oikyo models export``: ``--llamacpp-python`` / ``OIKYO_LLAMACPP_PYTHON``, else ``.venv-llamacpp``).
The router stays the same (keys, splits, metrics, logging); only the replicas change.

Before the first replica starts, the pool's base model is converted to GGUF by llama.cpp's own
converter at the deployment's ``gguf_quant`` (f16 by default; f32, bf16, q8_0, q4_k_m), and every
adapter version on that base to a GGUF LoRA adapter (f16; f32 or bf16 when the base is). The files
are cached under the workspace's ``cache/gguf`` by a key of the source folder's files (names, sizes,
modification times) and the quantization, so a restart converts nothing.

The server's config file (mode 0600, in the deployment's folder) holds the loopback address, the
router's shared secret as the server's API key (never in the process list), and one model entry per
served name: the base under each base model id, and the base with ``lora_path`` under each adapter
version's id. Differences from the native engine, said in docs/deployment.md: llama.cpp's Python
server answers one request at a time per replica (the others wait; ``interrupt_requests`` is off, so
none is cut short) and holds one of its models at a time, so alternating between adapters reloads the
model; it has no ``/health`` or ``/stats``, so a replica is ready when ``/v1/models`` answers with the
key, and the autoscaler sees the router's own queue only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from oikyo.errors import OikyoError
from oikyo.serve.gateway.replicas import ProcessPool, Replica, ask_interpreter

log = logging.getLogger(__name__)

DEFAULT_QUANT = "f16"
CONTEXT_TOKENS = 2048  # llama.cpp's context per replica (its own default)
PROBE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LlamaCppInstall:
    """llama.cpp's environment (converters and Python) and the llama-cpp-python release it has."""

    tools: object  # oikyo.models.export_gguf.Toolchain
    version: str

    @property
    def python(self) -> str:
        return str(self.tools.python)


def check_available(python: str | None = None) -> LlamaCppInstall:
    """The llama.cpp environment at ``python`` (see :func:`oikyo.models.export_gguf.toolchain`); a clear
    OikyoError unless its converters are there and its server imports."""
    from oikyo.models import export_gguf

    tools = export_gguf.toolchain(python)
    found = ask_interpreter(str(tools.python), "import llama_cpp\nimport llama_cpp.server.app",
                            "{'version': llama_cpp.__version__}", what="llama.cpp's server",
                            timeout_s=PROBE_TIMEOUT_S)
    if "error" in found:
        raise OikyoError(f"--engine llamacpp needs llama.cpp's server in {tools.python}, which cannot import it "
                         f"({found['error']}); run `bash scripts/install-llamacpp.sh` again (it adds the "
                         "server's packages), or use --engine native")
    return LlamaCppInstall(tools=tools, version=str(found["version"]))


def check_quant(quant: str | None) -> str:
    """The GGUF quantization a deployment's base models are served at (``--gguf-quant``)."""
    from oikyo.models import export_gguf

    quant = quant or DEFAULT_QUANT
    if quant not in export_gguf.QUANTS:
        raise OikyoError(f"--gguf-quant must be one of {', '.join(export_gguf.QUANTS)}, not {quant!r}")
    return quant


def _folder_key(folder: str, quant: str) -> str:
    """A cache key for ``folder`` at ``quant``: its files' names, sizes and modification times."""
    digest = hashlib.sha256(f"{Path(folder).resolve()}\0{quant}".encode())
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"\0{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def gguf_files(load_dir: str, adapters: dict[str, str], quant: str,
               install: LlamaCppInstall) -> tuple[Path, dict[str, Path]]:
    """The GGUF file of the base model in ``load_dir`` at ``quant`` and a GGUF LoRA file per adapter
    (name -> PEFT folder), converted by llama.cpp once and then taken from the workspace's cache."""
    from oikyo import workspace
    from oikyo.models import export_gguf

    cache = workspace.subdir("cache") / "gguf"
    base = cache / f"{_folder_key(load_dir, quant)}-{quant}.gguf"
    if not base.is_file():
        log.info("converting %s to GGUF (%s) with llama.cpp", load_dir, quant)
        export_gguf.convert(Path(load_dir), base, quant, install.tools)
    lora_quant = quant if quant in ("f32", "bf16") else "f16"
    loras = {}
    for name, folder in adapters.items():
        target = cache / f"{_folder_key(folder, lora_quant)}-lora-{lora_quant}.gguf"
        if not target.is_file():
            log.info("converting adapter %s to a GGUF LoRA adapter (%s) with llama.cpp", name, lora_quant)
            export_gguf.convert_lora(Path(folder), Path(load_dir), target, lora_quant, install.tools)
        loras[name] = target
    return base, loras


def server_config(base: Path, base_names: list[str], loras: dict[str, Path], *, port: int, api_key: str,
                  threads: int) -> dict:
    """llama.cpp's server configuration for one replica: loopback, the key, one model per served name."""
    common = {"model": str(base), "n_threads": threads, "n_threads_batch": threads, "n_ctx": CONTEXT_TOKENS,
              "verbose": False}
    models = [{**common, "model_alias": name} for name in base_names]
    models += [{**common, "model_alias": name, "lora_path": str(path)} for name, path in loras.items()]
    return {"host": "127.0.0.1", "port": port, "api_key": api_key, "interrupt_requests": False, "models": models}


class LlamaCppPool(ProcessPool):
    """A pool whose replicas are llama.cpp servers over GGUF conversions of its base and adapters."""

    stamps_responses = False  # llama.cpp names its responses itself: the router puts in its own id and the variant
    health_path = "/v1/models"  # llama.cpp's server has no /health; this answers once the model is loaded
    health_needs_key = True

    def __init__(self, spec, *, install: LlamaCppInstall, quant: str, config_dir: Path, threads: int,
                 **kwargs):
        super().__init__(spec, **kwargs)
        from oikyo.serve.gateway.served_models import adapters_on

        self.install = install
        self.config_dir = Path(config_dir)
        self.threads = threads
        self.base_names = [m.id for m in spec.models if m.adapter_dir is None] or [os.path.basename(spec.load_dir)]
        self.base_gguf, self.lora_ggufs = gguf_files(spec.load_dir, adapters_on(spec.load_dir), quant, install)

    def spawn(self) -> Replica:
        self._serial += 1
        replica_id = f"{self.name}-l{self._serial}"
        from oikyo.serve.gateway.deployments import _free_port

        port = _free_port()  # llama.cpp binds its own port: take a free one (a small race, as vLLM)
        config = server_config(self.base_gguf, self.base_names, self.lora_ggufs, port=port, api_key=self.token,
                               threads=self.threads)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        # The pool's name may be a model folder's path: the file is named by a digest of it.
        path = self.config_dir / f"llamacpp-{hashlib.sha256(self.name.encode()).hexdigest()[:12]}-{self._serial}.json"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(config, handle)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.pop("CONFIG_FILE", None)  # llama.cpp's server would read that file instead
        process = subprocess.Popen([self.install.python, "-m", "llama_cpp.server", "--config_file", str(path)],
                                   stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=env)
        replica = Replica(id=replica_id, url=f"http://127.0.0.1:{port}", process=process)
        self.replicas.append(replica)
        return replica
