"""Deployments: records in the store, and the router process that serves each one.

A deployment is a name for "these model versions, split this way, served here": a row in the
``deployments`` table holding the variants, host, port, replica bounds, engine and settings, and
the state its router process last wrote (starting, running, stopped, failed) with that process's
pid. Because the record outlives the processes, a deployment survives a restart of the machine or
the platform: one recorded as running whose router is gone is shown as ``gone`` and starts again
with :func:`start` (``oikyo deploy --name N`` or ``oikyo deployments start N``)::

    from oikyo.serve.gateway import deployments
    info = deployments.deploy("mv-1a2b", name="support", port=8000)          # starts, waits until ready
    deployments.deploy("mv-1a2b", name="ab", split="mv-1a2b=90,mv-3c4d=10", replicas="auto")
    deployments.list_deployments(); deployments.show("support"); deployments.tail_log("support")
    deployments.set_weights("ab", {"mv-1a2b": 80, "mv-3c4d": 20})           # live: the router follows, no restart
    deployments.set_split("ab", "mv-1a2b=50,mv-3c4d=50")                    # other models: a running one restarts
    deployments.stop("support")                                              # drains, then stops

Files of a deployment live in ``$OIKYO_HOME/deployments/<name>/``: ``deployment.log`` (router and
replicas) and ``replicas.json`` (the replica pids, so a stop can clean up after a killed router).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sqlalchemy import select

from oikyo import workspace
from oikyo.errors import OikyoError
from oikyo.serve.gateway.ab import Variant, parse_split, reweight
from oikyo.serve.gateway.autoscale import AutoscalePolicy
from oikyo.serve.gateway.served_models import ModelSpec, ServedNames, resolve
from oikyo.store import db
from oikyo.store.models import Deployment, utcnow

Log = Callable[[str], None]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ACTIVE = ("starting", "running", "stopping")
ENGINES = ("native", "vllm", "llamacpp")
WEIGHTS = ("float32", "float16")  # the native engine's --weights (oikyo.serve.engine.core.WEIGHTS, without torch)
DEFAULT_PORT = 8000
SPLIT_CHANGED = "split_changed"  # the DeploymentEvent kind recorded for every change of variants or weights
DEFAULT_AUTO_MAX = 2
DEFAULT_SETTINGS = {
    "max_batch_size": 16,  # sequences decoded together per replica
    "max_adapters": 8,  # LoRA adapters kept loaded per replica (least recently used evicted)
    "threads": None,  # torch CPU threads per replica (None: the machine's cores shared among replicas)
    "device": "auto",  # auto | cpu | cuda | cuda:1 ...
    "weights": "float32",  # native engine: float16 makes decoding steps read float16 copies of the linear weights
    "queue_timeout_s": 120.0,  # how long a request may wait for a ready replica
    "graceful_timeout_s": 120.0,  # how long stopping waits for requests in flight
    "rate_limit_rpm": None,  # requests per minute per API key (None: no limit); over it: 429 + Retry-After
    "rate_limit_burst": None,  # requests a key may send at once (None: rate_limit_rpm)
    "vllm_python": None,  # --engine vllm: the interpreter with vLLM (None: $OIKYO_VLLM_PYTHON or oikyo's own)
    "vllm_args": None,  # --engine vllm: extra vLLM server flags, shell-quoted
}


# ----------------------------------------------------------------------------- records


def get(name: str) -> Deployment:
    with db.session() as s:
        record = s.get(Deployment, name)
    if record is None:
        raise OikyoError(f"no deployment named {name!r}; `oikyo deployments list` shows them")
    return record


def mark(name: str, state: str, **fields) -> None:
    """Record a state change (and any other column given) of deployment ``name``."""
    with db.session() as s:
        record = s.get(Deployment, name)
        if record is None:
            return
        record.state = state
        now = utcnow()
        if state == "starting":
            record.started_at, record.hostname = now, socket.gethostname()
        if state in ("stopped", "failed"):
            record.stopped_at = now
        for key, value in fields.items():
            setattr(record, key, value)


def deploy_dir(name: str) -> Path:
    path = workspace.subdir("deployments") / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_path(name: str) -> Path:
    return deploy_dir(name) / "deployment.log"


def status(record: Deployment) -> str:
    """The recorded state, or ``gone`` when it says active but its router process no longer runs."""
    if record.state in ACTIVE and record.hostname == socket.gethostname() and not _alive(record.pid, "oikyo"):
        return "gone"
    return record.state


def url(record: Deployment) -> str:
    host = "127.0.0.1" if record.host in ("0.0.0.0", "") else ("[::1]" if record.host == "::" else record.host)
    return f"http://{host}:{record.port}/v1"


def describe(record: Deployment) -> dict:
    def iso(value):
        return value.isoformat() if value else None

    return {"name": record.name, "model": record.model, "status": status(record), "url": url(record),
            "variants": record.variants, "host": record.host, "port": record.port,
            "replicas": "auto" if (record.settings or {}).get("autoscale") else record.replicas_min,
            "replicas_min": record.replicas_min, "replicas_max": record.replicas_max,
            "engine": record.engine, "log_requests": record.log_requests, "settings": record.settings,
            "pid": record.pid, "error": record.error, "created_at": iso(record.created_at),
            "started_at": iso(record.started_at), "stopped_at": iso(record.stopped_at)}


def list_deployments() -> list[dict]:
    with db.session() as s:
        records = list(s.scalars(select(Deployment).order_by(Deployment.created_at)))
    return [describe(r) for r in records]


def for_model_version(model_version_id: str) -> list[dict]:
    """The deployments (in any state) that serve ``model_version_id``, as their model or in an A/B split."""
    return [d for d in list_deployments()
            if d["model"] == model_version_id or any(v.get("model") == model_version_id for v in d["variants"] or [])]


def show(name: str) -> dict:
    """The record, plus live readiness from the router and the replica processes when it runs."""
    info = describe(get(name))
    info["log"] = str(log_path(name))
    registry = deploy_dir(name) / "replicas.json"
    if info["status"] in ("starting", "running") and registry.is_file():
        try:
            info["replica_processes"] = json.loads(registry.read_text()).get("pools", {})
        except ValueError:
            pass
    if info["status"] in ("starting", "running"):
        info["health"] = _health(info["url"].removesuffix("/v1"))
    return info


def tail_log(name: str, lines: int = 100) -> str:
    get(name)
    path = log_path(name)
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 256 * lines))
        return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])


# ----------------------------------------------------------------------------- options


def parse_replicas(value: str | int) -> tuple[int, int, bool]:
    """``"2"`` -> (2, 2, False); ``"auto"`` -> (1, 2, True); ``"auto:1-4"`` -> (1, 4, True)."""
    text = str(value).strip().lower()
    if text.isdigit() and int(text) >= 1:
        return int(text), int(text), False
    match = re.fullmatch(r"auto(?::(\d+)-(\d+))?", text)
    if match is None:
        raise OikyoError(f"--replicas must be a number >= 1, 'auto' or 'auto:MIN-MAX', not {value!r}")
    low, high = (int(match[1]), int(match[2])) if match[1] else (1, DEFAULT_AUTO_MAX)
    if not 1 <= low <= high:
        raise OikyoError(f"--replicas auto:{low}-{high}: need 1 <= MIN <= MAX")
    return low, high, True


def make_variants(model: str | None, split: str | None) -> list[Variant]:
    """Variants labelled by resolved model id: the split's, or the one model at weight 100."""
    if split:
        items = parse_split(split)
        if model is not None and resolve(model).id not in {resolve(m).id for m, _ in items}:
            raise OikyoError(f"{model} is not one of the --split variants ({split}); name it in the split")
    elif model:
        items = [(model, 100.0)]
    else:
        raise OikyoError("say what to deploy: a model version id, a base model, or --split")
    variants = []
    for ref, weight in items:
        spec = resolve(ref)
        variants.append(Variant(label=spec.id, model=spec.id, weight=weight))
    return variants


def check_engine(engine: str, settings: dict | None = None):
    """A clear OikyoError unless ``engine`` can run here with these settings (their ``weights``; for vllm
    and llamacpp: their interpreter and flags); returns the install found
    (:class:`~oikyo.serve.gateway.vllm_replicas.VllmInstall`,
    :class:`~oikyo.serve.gateway.llamacpp_replicas.LlamaCppInstall`), None for the native engine."""
    if engine not in ENGINES:
        raise OikyoError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    check_weights(engine, (settings or {}).get("weights"))
    if engine == "vllm":
        from oikyo.serve.gateway.vllm_replicas import check_available, extra_args

        extra_args((settings or {}).get("vllm_args"))
        return check_available((settings or {}).get("vllm_python"))
    if engine == "llamacpp":
        from oikyo.serve.gateway import llamacpp_replicas

        llamacpp_replicas.check_quant((settings or {}).get("gguf_quant"))
        return llamacpp_replicas.check_available((settings or {}).get("llamacpp_python"))
    return None


def check_weights(engine: str, weights: str | None) -> None:
    """A clear OikyoError unless ``weights`` (None: the default) is float32 or float16, and float16
    goes with the native engine: vLLM and llama.cpp choose their own precision."""
    if weights is None:
        return
    if weights not in WEIGHTS:
        raise OikyoError(f"--weights must be one of {', '.join(WEIGHTS)}, not {weights!r}")
    if weights == "float16" and engine != "native":
        own = {"vllm": 'vLLM chooses its own precision (--vllm-args "--dtype float16")',
               "llamacpp": "llama.cpp chooses its own precision (--gguf-quant f16, its default)"}[engine]
        raise OikyoError(f"--weights float16 is the native engine's; {own}. "
                         f"Pass --weights float32 with --engine {engine}")


def _default_name(model: str | None, variants: list[Variant]) -> str:
    base = variants[0].model if variants else model
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(base).name if os.sep in base else base).strip("-.")[:100]
    return name or "deployment"


# ----------------------------------------------------------------------------- deploy / start / stop


def deploy(model: str | None = None, *, name: str | None = None, host: str | None = None, port: int | None = None,
           replicas: str | int | None = None, split: str | None = None, log_requests: bool | None = None,
           engine: str | None = None, settings: dict | None = None, detach: bool = True, wait_s: float = 600.0,
           log: Log | None = None) -> dict:
    """Create (or update) deployment ``name`` and start it. Options left None keep the recorded ones.

    ``detach``: run the router in the background and return once it serves; otherwise serve in
    this process until interrupted.
    """
    existing = _find(name) if name else None
    if existing is not None and status(existing) in ("starting", "running"):
        raise OikyoError(f"deployment {name!r} is already {status(existing)} at {url(existing)}; "
                         f"stop it first (`oikyo deployments stop {name}`)")
    if existing is None and not model and not split:
        raise OikyoError(f"no deployment named {name!r}: give a model to deploy" if name
                         else "say what to deploy: a model version id or a base model")
    variants = make_variants(model, split) if (model or split) else None
    if settings:
        from oikyo.serve.gateway.ratelimit import check_settings

        check_settings(settings.get("rate_limit_rpm"), settings.get("rate_limit_burst"))
    recorded = {**((existing.settings or {}) if existing else {}), **(settings or {})}
    if engine is not None or existing is None:
        check_engine(engine or "native", recorded)
    else:
        check_weights(existing.engine, recorded.get("weights"))
    if existing is None:
        name = name or _default_name(model, variants)
        if not NAME_RE.match(name):
            raise OikyoError(f"invalid deployment name {name!r}: use letters, digits, '.', '_' or '-'")
        if _find(name) is not None:
            raise OikyoError(f"a deployment named {name!r} exists; pass --name to pick another, or "
                             f"`oikyo deploy --name {name}` to start it again")
    _save(name, existing, variants=variants, host=host, port=port, replicas=replicas, log_requests=log_requests,
          engine=engine, settings=settings)
    return start(name, detach=detach, wait_s=wait_s, log=log, engine_checked=engine is not None or existing is None)


def set_split(name: str, split: str, *, wait_s: float = 600.0, log: Log | None = None) -> dict:
    """Give deployment ``name`` a new traffic split (``"mv-a=90,mv-b=10"``); returns its description
    with ``restarted``.

    When the split names the deployment's current variants (in any order) and only weights change,
    this is :func:`set_weights`: a running router follows within about a second, with no restart.
    Otherwise (other models), a running deployment is stopped (requests in flight finish) and
    started again with the new split, since its router loads its models when it starts; a stopped
    one keeps it for its next start. The split is checked before anything stops.
    """
    record = get(name)
    variants = make_variants(None, split)
    current = [Variant(**v) for v in record.variants]
    if sorted((v.label, v.model) for v in variants) == sorted((v.label, v.model) for v in current):
        return {**set_weights(name, {v.label: v.weight for v in variants}), "restarted": False}
    running = status(record) in ("starting", "running")
    if running:
        stop(name)
    _save(name, get(name), variants=variants, host=None, port=None, replicas=None, log_requests=None, engine=None,
          settings=None)
    _record_split_change(name, current, variants, live=False)
    if not running:
        return {**describe(get(name)), "restarted": False}
    return {**start(name, wait_s=wait_s, log=log), "restarted": True}


def set_weights(name: str, weights: dict[str, float]) -> dict:
    """Give deployment ``name``'s variants new traffic weights, live; returns its description.

    ``weights`` maps a variant's label or model to its weight (relative, >= 0, with a positive
    total); variants left out keep their weight. A weight of 0 keeps the variant loaded but sends
    it none of the requests that name the deployment (sticky users included); requests naming the
    variant or its model still reach it. Only weights change here: same variants, same models.
    A running router reads the record on its supervisor tick and swaps the weights in place within
    about a second, with no restart; its ``GET /v1/models`` shows the weights in force and when it
    applied them. Each change is recorded as a ``split_changed`` event (source ``oikyo``). Unknown
    names or bad weights raise OikyoError and change nothing.
    """
    with db.session() as s:
        record = s.get(Deployment, name)
        if record is None:
            raise OikyoError(f"no deployment named {name!r}; `oikyo deployments list` shows them")
        before = [Variant(**v) for v in record.variants]
        after = reweight(before, weights)
        if after != before:
            record.variants = [v.to_dict() for v in after]
    if after != before:
        _record_split_change(name, before, after, live=True)
    return describe(get(name))


def recorded_variants(name: str) -> list[dict] | None:
    """The recorded variants of deployment ``name`` (None if it has no record): one small read, which
    the router makes on each supervisor tick to follow :func:`set_weights`."""
    with db.session() as s:
        return s.scalar(select(Deployment.variants).where(Deployment.name == name))


def _record_split_change(name: str, before: list[Variant], after: list[Variant], *, live: bool) -> None:
    from oikyo.monitor import events

    def text(variants):
        return ", ".join(f"{v.label}={v.weight:g}" for v in variants)

    how = "weights changed live" if live else "split changed (restart)"
    events.record(name, SPLIT_CHANGED, "oikyo", f"{how}: {text(after)} (was {text(before)})"[:500],
                  details={"live": live, "before": [v.to_dict() for v in before],
                           "after": [v.to_dict() for v in after]})


def update_setting(name: str, key: str, value) -> dict:
    """Set one entry of deployment ``name``'s settings (e.g. ``monitoring``: its alert thresholds, which
    :mod:`oikyo.monitor.alerts` reads when it writes rules) and return the settings. A running router
    keeps the settings it started with; only entries read outside it take effect at once."""
    with db.session() as s:
        record = s.get(Deployment, name)
        if record is None:
            raise OikyoError(f"no deployment named {name!r}; `oikyo deployments list` shows them")
        record.settings = {**(record.settings or {}), key: value}
        return dict(record.settings)


def _find(name: str) -> Deployment | None:
    with db.session() as s:
        return s.get(Deployment, name)


def _save(name: str, existing: Deployment | None, *, variants, host, port, replicas, log_requests, engine,
          settings) -> None:
    with db.session() as s:
        record = s.get(Deployment, name)
        if record is None:
            record = Deployment(name=name, model=variants[0].model, variants=[v.to_dict() for v in variants],
                                host=host or "127.0.0.1", port=DEFAULT_PORT if port is None else port,
                                replicas_min=1, replicas_max=1, engine=engine or "native",
                                log_requests=bool(log_requests), settings=dict(DEFAULT_SETTINGS), state="stopped",
                                created_at=utcnow())
            s.add(record)
        if variants is not None:
            record.model, record.variants = variants[0].model, [v.to_dict() for v in variants]
        if host is not None:
            record.host = host
        if port is not None:
            record.port = port
        if engine is not None:
            record.engine = engine
        if log_requests is not None:
            record.log_requests = log_requests
        record.settings = _merged_settings(record, replicas, settings)


def _merged_settings(record: Deployment, replicas, settings: dict | None) -> dict:
    """The record's settings updated with ``settings``; ``settings["autoscale"]`` knobs (e.g.
    ``max_p95_latency_s``) update the recorded autoscaling policy rather than replace it."""
    settings = dict(settings or {})
    knobs = settings.pop("autoscale", None) or {}
    previous = (record.settings or {}).get("autoscale") or {}
    merged = {**DEFAULT_SETTINGS, **(record.settings or {}), **settings}
    if replicas is not None:
        low, high, auto = parse_replicas(replicas)
        record.replicas_min, record.replicas_max = low, high
        policy = {**previous, **knobs, "min_replicas": low, "max_replicas": high}
        merged["autoscale"] = AutoscalePolicy(**policy).to_dict() if auto else None
    elif previous and knobs:
        merged["autoscale"] = AutoscalePolicy(**{**previous, **knobs}).to_dict()
    return merged


def start(name: str, *, detach: bool = True, wait_s: float = 600.0, log: Log | None = None,
          engine_checked: bool = False) -> dict:
    """Start a recorded deployment's router (detached: wait until it serves). ``engine_checked``: the
    caller has just run :func:`check_engine` with the recorded settings (asking vLLM takes seconds)."""
    record = get(name)
    if status(record) in ("starting", "running"):
        raise OikyoError(f"deployment {name!r} is already {status(record)} at {url(record)}")
    _cleanup_replicas(name)
    if record.port == 0:
        with db.session() as s:
            s.get(Deployment, name).port = _free_port(record.host)
        record = get(name)
    if not _port_free(record.host, record.port):
        raise OikyoError(f"port {record.port} on {record.host} is in use; deploy with --port P (another port)")
    if record.engine == "vllm":
        from oikyo.serve.gateway.vllm_replicas import check_ranks

        if not engine_checked:
            check_engine("vllm", record.settings)
        check_ranks(plan(name).pool_specs)
    if record.engine == "llamacpp" and not engine_checked:
        check_engine("llamacpp", record.settings)
    if log:
        log(f"Starting deployment {name} ({', '.join(v['label'] for v in record.variants)}) at {url(record)}")
    if not detach:
        from oikyo.serve.gateway import router

        code = router.run(name)
        if code != 0:
            raise OikyoError(f"deployment {name} stopped with an error: {get(name).error}")
        return describe(get(name))
    with open(log_path(name), "ab") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "oikyo.serve.gateway.router", name], stdin=subprocess.DEVNULL,
                                   stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                   env=dict(os.environ))
    _wait_ready(name, process, wait_s, log)
    return describe(get(name))


def _wait_ready(name: str, process: subprocess.Popen, wait_s: float, log: Log | None) -> None:
    record = get(name)
    base = url(record).removesuffix("/v1")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            error = get(name).error or f"the router exited with code {code}"
            mark(name, "failed", pid=None, error=error)
            raise OikyoError(f"deployment {name} failed to start: {error}\n--- last log lines ---\n"
                             f"{tail_log(name, 15)}")
        health = _health(base)
        # Ready, and recorded so: the router writes "running" on its next supervisor tick.
        if health.get("status") == "ready" and get(name).state != "starting":
            return
        if health.get("status") == "failed":
            stop(name)
            raise OikyoError(f"deployment {name} failed to start\n--- last log lines ---\n{tail_log(name, 15)}")
        time.sleep(0.25)
    stop(name)
    raise OikyoError(f"deployment {name} was not ready after {wait_s:.0f} s (stopped it); "
                     f"see `oikyo deployments logs {name}`")


def stop(name: str, timeout_s: float = 120.0) -> dict:
    """Stop a deployment: SIGTERM its router (it finishes requests in flight and drains its replicas)."""
    record = get(name)
    pid = record.pid
    if pid and record.hostname == socket.gethostname() and _alive(pid, "oikyo"):
        mark(name, "stopping")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid, "oikyo") and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid, "oikyo"):
            os.kill(pid, signal.SIGKILL)
    _cleanup_replicas(name)
    with db.session() as s:
        current = s.get(Deployment, name)
        if current.state != "failed" or current.pid is not None:
            current.state = "stopped"
        current.pid, current.stopped_at = None, utcnow()
    return describe(get(name))


def _cleanup_replicas(name: str, timeout_s: float = 10.0) -> None:
    """Stop replica processes a killed router left behind (they also exit on their own once it is gone)."""
    registry = deploy_dir(name) / "replicas.json"
    if not registry.is_file():
        return
    try:
        pools = json.loads(registry.read_text()).get("pools", {})
    except ValueError:
        pools = {}
    pids = [r["pid"] for replicas in pools.values() for r in replicas if r.get("pid")]
    alive = [pid for pid in pids if _replica_alive(pid)]
    for pid in alive:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(_replica_alive(pid) for pid in alive) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive:
        if _replica_alive(pid):
            os.kill(pid, signal.SIGKILL)
    registry.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- what the router runs


@dataclass
class Plan:
    """A deployment resolved for its router: variants, pools of replicas, settings."""

    name: str
    host: str
    port: int
    engine: str
    variants: list[Variant]
    pool_specs: dict = field(default_factory=dict)  # load_dir -> PoolSpec
    variant_pools: dict = field(default_factory=dict)  # variant label -> load_dir
    replicas_min: int = 1
    replicas_max: int = 1
    settings: dict = field(default_factory=dict)
    log_requests: bool = False
    engine_install: object = None  # --engine vllm or llamacpp: the install found by probe_engine()

    def probe_engine(self) -> None:
        """For --engine vllm or llamacpp: find the engine in its interpreter (a clear OikyoError if it has none)."""
        self.engine_install = check_engine(self.engine, self.settings)

    @property
    def queue_timeout_s(self) -> float:
        return float(self.settings.get("queue_timeout_s") or 120.0)

    @property
    def graceful_timeout_s(self) -> float:
        return float(self.settings.get("graceful_timeout_s") or 120.0)

    def rate_limiter(self):
        """The per-key rate limiter the settings ask for (None: no limit)."""
        from oikyo.serve.gateway.ratelimit import from_settings

        return from_settings(self.settings)

    def served_names(self) -> dict[str, ServedNames]:
        return {load_dir: ServedNames(load_dir, spec.models) for load_dir, spec in self.pool_specs.items()}

    def threads(self) -> int:
        """CPU threads per replica: the setting, else the machine's cores shared among the replicas."""
        threads = self.settings.get("threads")
        if not threads:
            threads = max(1, (os.cpu_count() or 1) // max(1, self.replicas_max * len(self.pool_specs)))
        return int(threads)

    def replica_args(self) -> list[str]:
        threads = self.threads()
        return ["--max-batch-size", str(self.settings.get("max_batch_size") or 16),
                "--max-adapters", str(self.settings.get("max_adapters") or 8), "--threads", str(threads),
                "--device", str(self.settings.get("device") or "auto"),
                "--weights", str(self.settings.get("weights") or "float32"),
                "--graceful-timeout", str(self.graceful_timeout_s)]

    def process_pools(self, *, token: str, log_file, on_change) -> dict:
        from oikyo.serve.gateway.replicas import ProcessPool

        pool_class, options = ProcessPool, {"replica_args": self.replica_args()}
        if self.engine != "native" and self.engine_install is None:
            self.probe_engine()
        if self.engine == "vllm":
            from oikyo.serve.gateway.vllm_replicas import VllmPool, extra_args

            pool_class, options = VllmPool, {"install": self.engine_install,
                                             "replica_args": extra_args(self.settings.get("vllm_args"))}
        elif self.engine == "llamacpp":
            from oikyo.serve.gateway.llamacpp_replicas import LlamaCppPool, check_quant

            pool_class, options = LlamaCppPool, {"install": self.engine_install,
                                                 "quant": check_quant(self.settings.get("gguf_quant")),
                                                 "config_dir": deploy_dir(self.name), "threads": self.threads()}
        auto = self.settings.get("autoscale")
        pools = {}
        for load_dir, spec in self.pool_specs.items():
            policy = AutoscalePolicy(**auto) if auto else None
            pools[load_dir] = pool_class(spec, token=token, log_file=log_file, min_replicas=self.replicas_min,
                                         max_replicas=self.replicas_max, policy=policy, on_change=on_change,
                                         capacity=int(self.settings.get("max_batch_size") or 16), **options)
        return pools

    def write_registry(self, pools: dict) -> None:
        """Replica pids on disk, so `stop` can clean up if this router is killed."""
        data = {"router_pid": os.getpid(),
                "pools": {p.name: [{"id": r.id, "pid": r.pid, "url": r.url, "state": r.state} for r in p.replicas]
                          for p in pools.values()}}
        path = deploy_dir(self.name) / "replicas.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)


def plan(name: str) -> Plan:
    """Resolve a recorded deployment's variants to model folders and group them into pools."""
    from oikyo.serve.gateway.replicas import PoolSpec

    record = get(name)
    variants = [Variant(**v) for v in record.variants]
    result = Plan(name=name, host=record.host, port=record.port, engine=record.engine, variants=variants,
                  replicas_min=record.replicas_min, replicas_max=record.replicas_max,
                  settings=dict(record.settings or {}), log_requests=record.log_requests)
    specs: dict[str, list[ModelSpec]] = {}
    for variant in variants:
        spec = resolve(variant.model)
        specs.setdefault(spec.load_dir, []).append(spec)
        result.variant_pools[variant.label] = spec.load_dir
    for load_dir, members in specs.items():
        result.pool_specs[load_dir] = PoolSpec(name=members[0].id, load_dir=load_dir, models=members)
    return result


# ----------------------------------------------------------------------------- processes and ports


# What a replica's command line holds, per engine (native, vllm, llamacpp): guards pid reuse.
REPLICA_MARKERS = ("oikyo.serve.gateway.replica", "vllm.entrypoints.openai.api_server", "llama_cpp.server",
                   "llama-server")


def _replica_alive(pid: int | None) -> bool:
    return any(_alive(pid, marker) for marker in REPLICA_MARKERS)


def _alive(pid: int | None, marker: str) -> bool:
    """Whether ``pid`` runs (not a zombie) and its command line mentions ``marker`` (guards pid reuse)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            if "\nState:\tZ" in (proc / "status").read_text():
                return False
            return marker in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            return False
    return True


def _port_free(host: str, port: int) -> bool:
    from oikyo.serve.gateway.router import bind

    try:
        bind(host, port).close()
        return True
    except OSError:
        return False


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _health(base_url: str) -> dict:
    import httpx

    try:
        return httpx.get(f"{base_url}/health", timeout=2.0, trust_env=False).json()
    except (httpx.HTTPError, ValueError):
        return {}
