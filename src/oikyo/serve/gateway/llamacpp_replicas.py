"""``--engine llamacpp``: replicas that run llama.cpp's OpenAI-compatible server on GGUF exports.

A replica is llama.cpp's own C++ server, ``llama-server`` (parallel slots, continuous batching), when
the llama.cpp environment has one (``.venv-llamacpp/bin/llama-server``: scripts/install-llamacpp.sh
builds it from the same llama.cpp sources as the bindings; or ``OIKYO_LLAMA_SERVER=PATH``); otherwise
llama-cpp-python's server, ``PYTHON -m llama_cpp.server --config_file FILE``, from that environment
(``OIKYO_LLAMA_SERVER=python`` chooses it). The environment is found as for ``oikyo models export``:
``--llamacpp-python`` / ``OIKYO_LLAMACPP_PYTHON``, else ``.venv-llamacpp``. The router stays the same
(keys, splits, metrics, logging); only the replicas change.

Before the first replica starts, the pool's base model is converted to GGUF by llama.cpp's own
converter at the deployment's ``gguf_quant`` (f16 by default; f32, bf16, q8_0, q4_k_m), and every
adapter version on that base to a GGUF LoRA adapter (f16; f32 or bf16 when the base is). The files
are cached under the workspace's ``cache/gguf`` by a key of the source folder's files (names, sizes,
modification times) and the quantization, so a restart converts nothing.

The router's shared secret is the server's API key, in a file of mode 0600 in the deployment's
folder (never in the process list).

- ``llama-server``: one process holds the base and every adapter (``--lora``, not applied by
  default); the router names the adapter a request is for in its ``lora`` field (scale 1, the others
  0), so requests for different adapters share the replica. ``max_batch_size`` parallel slots of
  ``CONTEXT_TOKENS`` each; ``/health`` (public) says when it is ready.
- llama-cpp-python's server (the fallback): one model entry per served name in its config file,
  ``interrupt_requests`` off. It answers one request at a time per replica (the others wait) and holds
  one of its models at a time, so alternating between adapters reloads the model; it has no
  ``/health`` or ``/stats``, so a replica is ready when ``/v1/models`` answers with the key.

Neither reports queue figures to the autoscaler, which sees the router's own queue only.
Differences from the native engine are said in docs/deployment.md.
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


SERVER_ENV = "OIKYO_LLAMA_SERVER"  # a llama-server program, or "python" for llama-cpp-python's server


@dataclass(frozen=True)
class LlamaCppInstall:
    """llama.cpp's environment (converters and Python), the llama-cpp-python release it has, and the
    ``llama-server`` program the replicas run (None: llama-cpp-python's server)."""

    tools: object  # oikyo.models.export_gguf.Toolchain
    version: str
    server: str | None = None

    @property
    def python(self) -> str:
        return str(self.tools.python)


def check_available(python: str | None = None) -> LlamaCppInstall:
    """The llama.cpp environment at ``python`` (see :func:`oikyo.models.export_gguf.toolchain`); a clear
    OikyoError unless its converters are there and its server imports."""
    from oikyo.models import export_gguf

    tools = export_gguf.toolchain(python)
    server = server_program(Path(tools.python))
    imports = "import llama_cpp" if server else "import llama_cpp\nimport llama_cpp.server.app"
    found = ask_interpreter(str(tools.python), imports, "{'version': llama_cpp.__version__}",
                            what="llama.cpp's server", timeout_s=PROBE_TIMEOUT_S)
    if "error" in found:
        raise OikyoError(f"--engine llamacpp needs llama.cpp's server in {tools.python}, which cannot import it "
                         f"({found['error']}); run `bash scripts/install-llamacpp.sh` again (it adds the "
                         "server's packages), or use --engine native")
    return LlamaCppInstall(tools=tools, version=str(found["version"]), server=server)


def server_program(python: Path) -> str | None:
    """The ``llama-server`` the replicas run: ``OIKYO_LLAMA_SERVER`` (a path; ``python`` for
    llama-cpp-python's server), else ``llama-server`` beside the environment's Python; None when there
    is none (llama-cpp-python's server is used)."""
    chosen = os.environ.get(SERVER_ENV, "").strip()
    if chosen == "python":
        return None
    if chosen:
        if not (os.path.isfile(chosen) and os.access(chosen, os.X_OK)):
            raise OikyoError(f"{SERVER_ENV}={chosen} is not an executable llama-server program (or say "
                             f"{SERVER_ENV}=python for llama-cpp-python's server)")
        return os.path.abspath(chosen)
    beside = python.parent / "llama-server"  # not resolved: the venv's bin, not the base interpreter's
    return str(beside.absolute()) if beside.is_file() and os.access(beside, os.X_OK) else None


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


def llama_server_command(program: str, base: Path, loras: dict[str, Path], *, port: int, key_file: Path,
                         threads: int, slots: int) -> list[str]:
    """``llama-server``'s command line for one replica: loopback, the key from a file, ``slots`` parallel
    slots of CONTEXT_TOKENS each, the adapters loaded but not applied (a request names its own)."""
    command = [program, "--model", str(base), "--host", "127.0.0.1", "--port", str(port),
               "--api-key-file", str(key_file), "--threads", str(threads), "--threads-batch", str(threads),
               "--parallel", str(slots), "--ctx-size", str(CONTEXT_TOKENS * slots), "--cont-batching",
               "--no-webui", "--jinja"]
    if loras:
        # llama-server's prompt cache (a slot's earlier prompt, and its copies in RAM) keeps KV values
        # without the adapter they were computed under: a request for one adapter would reuse another's
        # (seen: concurrent requests for the base and two adapters answered with a mix). Off with adapters.
        command += ["--lora", ",".join(str(path) for path in loras.values()), "--lora-init-without-apply",
                    "--no-cache-prompt", "--cache-ram", "0"]
    return command


def _private_file(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


class LlamaCppPool(ProcessPool):
    """A pool whose replicas are llama.cpp servers over GGUF conversions of its base and adapters."""

    stamps_responses = False  # llama.cpp names its responses itself: the router puts in its own id and the variant

    def __init__(self, spec, *, install: LlamaCppInstall, quant: str, config_dir: Path, threads: int,
                 **kwargs):
        super().__init__(spec, **kwargs)
        from oikyo.serve.gateway.served_models import adapters_on

        self.install = install
        self.config_dir = Path(config_dir)
        self.threads = threads
        self.base_names = [m.id for m in spec.models if m.adapter_dir is None] or [os.path.basename(spec.load_dir)]
        self.base_gguf, self.lora_ggufs = gguf_files(spec.load_dir, adapters_on(spec.load_dir), quant, install)
        self.server = install.server
        # llama-server answers /health without a key once loaded; llama-cpp-python's server has no
        # /health, and its /v1/models answers (with the key) once the model is loaded.
        self.health_path, self.health_needs_key = ("/health", False) if self.server else ("/v1/models", True)
        self.lora_ids = {name: number for number, name in enumerate(self.lora_ggufs)}

    def upstream_body(self, body: dict) -> dict:
        """llama-server serves every model of the pool from one process: the request names its adapter
        (scale 1; every other adapter 0, the base none) in llama.cpp's ``lora`` field."""
        if self.server and self.lora_ids:
            number = self.lora_ids.get(body.get("model"))
            # cache_prompt off whatever the client asks: see llama_server_command.
            body = {**body, "lora": [] if number is None else [{"id": number, "scale": 1.0}], "cache_prompt": False}
        return body

    def spawn(self) -> Replica:
        self._serial += 1
        replica_id = f"{self.name}-l{self._serial}"
        from oikyo.serve.gateway.deployments import _free_port

        port = _free_port()  # llama.cpp binds its own port: take a free one (a small race, as vLLM)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        # The pool's name may be a model folder's path: files are named by a digest of it.
        stem = f"llamacpp-{hashlib.sha256(self.name.encode()).hexdigest()[:12]}-{self._serial}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if self.server:
            key_file = self.config_dir / f"{stem}.key"
            _private_file(key_file, self.token + "\n")
            command = llama_server_command(self.server, self.base_gguf, self.lora_ggufs, port=port,
                                           key_file=key_file, threads=self.threads, slots=self.capacity)
        else:
            command = self._python_server(port, self.config_dir / f"{stem}.json")
            env.pop("CONFIG_FILE", None)  # llama.cpp's server would read that file instead
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=env)
        replica = Replica(id=replica_id, url=f"http://127.0.0.1:{port}", process=process)
        self.replicas.append(replica)
        log.info("started %s replica %s (pid %d) on port %d", "llama-server" if self.server else
                 "llama-cpp-python server", replica_id, process.pid, port)
        return replica

    def _python_server(self, port: int, path: Path) -> list[str]:
        config = server_config(self.base_gguf, self.base_names, self.lora_ggufs, port=port, api_key=self.token,
                               threads=self.threads)
        _private_file(path, json.dumps(config))
        return [self.install.python, "-m", "llama_cpp.server", "--config_file", str(path)]
