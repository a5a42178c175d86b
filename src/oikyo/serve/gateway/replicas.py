"""Replica pools: the worker processes behind a router, kept alive, health-checked and scaled.

A pool is the set of replicas that load one model folder (every variant and adapter on that
folder shares it). The router asks a pool for a replica per request (:meth:`ReplicaPool.acquire`:
the ready one with the fewest requests in flight, waiting while none is ready); the
:class:`Supervisor` ticks every half second and, per pool:

1. reaps replica processes that exited; one that was not asked to stop is replaced (a crash, an
   out-of-memory kill, SIGKILL). A replica that dies before ever becoming ready counts as a failed
   start; after ``MAX_START_FAILURES`` in a row the pool is marked failed (no endless crash loop),
   and restarts back off exponentially meanwhile. One that exits with ``SETTINGS_EXIT`` before it
   was ready refused its settings, which no retry mends: the pool fails at once;
2. health-checks starting replicas (``GET /health``) and reads ready ones' engine stats
   (``GET /stats``: queue depth, batch occupancy), marking one that refuses connections suspect;
3. decides the replica count (fixed, or :mod:`oikyo.serve.gateway.autoscale`) and starts or drains replicas.

A replica process gets a TCP socket the router bound on 127.0.0.1 (inherited file descriptor, so
there is no window in which another process could take the port) and a shared secret to trust.
Draining sends SIGTERM: the replica stops accepting, finishes its requests in flight, then exits.
:class:`StaticPool` serves replicas started elsewhere (in-process tests, external servers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field

import httpx

from oikyo.errors import OikyoError
from oikyo.serve.gateway.autoscale import AutoscalePolicy, Observation, decide
from oikyo.serve.gateway.openai_api import ApiError
from oikyo.serve.gateway.served_models import ModelSpec

log = logging.getLogger("oikyo.serve.gateway.replicas")

MAX_START_FAILURES = 3
START_TIMEOUT_S = 900.0  # a replica not ready by then is killed and counts as a failed start
# A replica that exits with this code before it was ready refused its own settings (oikyo's replica
# when its engine cannot run them, e.g. --weights float16 without the kernel; argparse for bad
# arguments, in oikyo's and vLLM's servers alike): trying again cannot help, so the pool fails at once.
SETTINGS_EXIT = 2
HEALTH_TIMEOUT_S = 3.0


@dataclass
class PoolSpec:
    """What a pool's replicas load: ``load_dir``, answering for ``models`` (+ adapters on that base)."""

    name: str
    load_dir: str
    models: list[ModelSpec]

    def to_json(self) -> str:
        return json.dumps({"load_dir": self.load_dir, "models": [m.to_dict() for m in self.models]})


@dataclass
class Replica:
    """One replica: where it listens and how it is doing (``state``: starting, ready, suspect, draining)."""

    id: str
    url: str
    process: subprocess.Popen | None = None
    state: str = "starting"
    in_flight: int = 0
    stats: dict = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    ready_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


class ReplicaPool:
    """Replicas of one model; requests go to the ready replica with the fewest in flight."""

    # Whether replicas put the router's response id (X-Oikyo-Response-Id) and the variant into their
    # bodies themselves (oikyo's engine does); if not, the router stamps them (vLLM's server).
    stamps_responses = True
    # Where a starting replica says it is ready (200), and whether that path needs the router's key.
    health_path = "/health"
    health_needs_key = False

    def __init__(self, spec: PoolSpec, *, capacity: int = 16, latency_window_s: float = 60.0):
        self.spec = spec
        self.name = spec.name
        self.capacity = capacity
        self.replicas: list[Replica] = []
        self.waiting = 0  # requests the router holds because no replica is ready
        self.failed: str | None = None
        self.restarts = 0
        self.latency_window_s = latency_window_s
        self._latencies: deque[tuple[float, float]] = deque()

    # ------------------------------------------------------------------ routing side

    def upstream_body(self, body: dict) -> dict:
        """The request body as this pool's replicas take it (the same, but for engines that need more)."""
        return body

    def ready(self) -> list[Replica]:
        return [r for r in self.replicas if r.state == "ready"]

    async def acquire(self, timeout_s: float) -> Replica:
        """A ready replica (its in-flight count taken); waits up to ``timeout_s`` while none is ready."""
        deadline = time.monotonic() + timeout_s
        self.waiting += 1
        try:
            while True:
                if self.failed:
                    raise ApiError(503, f"model {self.name} cannot be served: {self.failed}", type="server_error")
                ready = self.ready()
                if ready:
                    replica = min(ready, key=lambda r: r.in_flight)
                    replica.in_flight += 1
                    return replica
                if time.monotonic() >= deadline:
                    raise ApiError(503, f"no replica of {self.name} is ready; retry shortly", type="server_error",
                                   code="no_replica")
                await asyncio.sleep(0.05)
        finally:
            self.waiting -= 1

    def release(self, replica: Replica) -> None:
        replica.in_flight = max(0, replica.in_flight - 1)

    def suspect(self, replica: Replica) -> None:
        """A connection to ``replica`` failed: send nothing more its way until a health check passes."""
        if replica.state == "ready":
            replica.state = "suspect"

    def observe_latency(self, seconds: float) -> None:
        now = time.monotonic()
        self._latencies.append((now, seconds))
        while self._latencies and self._latencies[0][0] < now - self.latency_window_s:
            self._latencies.popleft()

    def p95_latency(self) -> float | None:
        from oikyo.serve.gateway.ab import percentile

        return percentile([s for _, s in self._latencies], 95)

    def queue_depth(self) -> float:
        return self.waiting + sum(r.stats.get("queue_depth", 0) for r in self.replicas if r.state == "ready")

    def engine_totals(self) -> dict[str, float]:
        """The numeric engine counters of the ready replicas, summed (their last readings)."""
        totals: dict[str, float] = {}
        for replica in self.replicas:
            for key, value in replica.stats.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
        return totals

    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas)

    def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.replicas:
            counts[r.state] = counts.get(r.state, 0) + 1
        return counts

    def describe(self) -> dict:
        return {"name": self.name, "load_dir": self.spec.load_dir, "ready": len(self.ready()),
                "replicas": [{"id": r.id, "state": r.state, "pid": r.pid, "in_flight": r.in_flight,
                              "url": r.url} for r in self.replicas],
                "restarts": self.restarts, "failed": self.failed}

    # ------------------------------------------------------------------ supervision

    async def check(self, client: httpx.AsyncClient, token: str | None) -> None:
        """Health-check starting and suspect replicas; read ready ones' engine stats."""
        await asyncio.gather(*(self._check_one(client, r, token) for r in self.replicas
                               if r.state in ("starting", "ready", "suspect")))

    async def _check_one(self, client: httpx.AsyncClient, replica: Replica, token: str | None) -> None:
        try:
            if replica.state == "ready":
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                response = await client.get(f"{replica.url}/stats", headers=headers, timeout=HEALTH_TIMEOUT_S)
                if response.status_code == 200:
                    replica.stats = response.json()
                return
            headers = {"Authorization": f"Bearer {token}"} if token and self.health_needs_key else {}
            response = await client.get(f"{replica.url}{self.health_path}", headers=headers,
                                        timeout=HEALTH_TIMEOUT_S)
        except httpx.ConnectError:
            if replica.state == "ready":
                replica.state = "suspect"
            return
        except httpx.HTTPError:
            return  # slow to answer under load is not dead; the process check decides that
        if response.status_code == 200 and replica.state in ("starting", "suspect"):
            if replica.ready_at is None:
                log.info("replica %s is ready (%.1f s)", replica.id, time.monotonic() - replica.started_at)
            replica.state, replica.ready_at = "ready", replica.ready_at or time.monotonic()

    async def tick(self, client: httpx.AsyncClient, token: str | None) -> None:
        await self.check(client, token)

    async def stop(self, timeout_s: float) -> None:
        self.replicas.clear()


class StaticPool(ReplicaPool):
    """Replicas started elsewhere, at fixed URLs (health-checked, never spawned or replaced)."""

    def __init__(self, spec: PoolSpec, urls: list[str], **kwargs):
        super().__init__(spec, **kwargs)
        self.replicas = [Replica(id=f"{spec.name}-{i}", url=url.rstrip("/"), state="ready")
                         for i, url in enumerate(urls)]


def ask_interpreter(python: str, imports: str, answer: str, *, what: str, timeout_s: float) -> dict:
    """What another Python (an engine's own environment) has: it runs ``imports`` and prints ``answer``
    (an expression giving a dict) as JSON, or ``{"error": ...}`` when the imports fail. An OikyoError when
    that Python cannot be run or says nothing readable."""
    body = "\n".join("    " + line for line in imports.strip().splitlines())
    script = (f"import json\ntry:\n{body}\nexcept Exception as exc:\n"
              "    print(json.dumps({'error': f'{type(exc).__name__}: {exc}'}))\n"
              f"else:\n    print(json.dumps({answer}))\n")
    try:
        done = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OikyoError(f"cannot ask {python} for {what} ({exc})") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise OikyoError(f"cannot ask {python} for {what}: {tail[0]}") from None


class ProcessPool(ReplicaPool):
    """Replicas as child processes: started, replaced when they die, scaled, drained on stop."""

    def __init__(self, spec: PoolSpec, *, token: str, log_file, min_replicas: int = 1, max_replicas: int = 1,
                 policy: AutoscalePolicy | None = None, replica_args: list[str] | None = None,
                 on_change=None, **kwargs):
        super().__init__(spec, **kwargs)
        self.token = token
        self.log_file = log_file
        self.policy = policy
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.target = min_replicas
        self.replica_args = replica_args or []
        self.on_change = on_change  # called after replicas start or exit (the router records pids)
        self._serial = 0
        self._start_failures = 0
        self._next_spawn_at = 0.0
        self._last_change_at = time.monotonic()
        self.stopping = False

    def spawn(self) -> Replica:
        """Start one replica process on a fresh loopback socket that this process binds and hands over."""
        self._serial += 1
        replica_id = f"{self.name}-r{self._serial}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        command = [sys.executable, "-m", "oikyo.serve.gateway.replica", "--spec", self.spec.to_json(),
                   "--fd", str(sock.fileno()), "--name", replica_id, "--parent", str(os.getpid()),
                   *self.replica_args]
        from oikyo.serve.gateway.replica import TOKEN_ENV

        env = {**os.environ, TOKEN_ENV: self.token}
        try:
            process = subprocess.Popen(command, pass_fds=[sock.fileno()], stdin=subprocess.DEVNULL,
                                       stdout=self.log_file, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True, close_fds=True)
        finally:
            sock.close()
        replica = Replica(id=replica_id, url=f"http://127.0.0.1:{port}", process=process)
        self.replicas.append(replica)
        log.info("started replica %s (pid %d) on port %d", replica_id, process.pid, port)
        return replica

    def drain(self, replica: Replica) -> None:
        """Stop routing to ``replica`` and ask it to exit once its requests in flight are done."""
        replica.state = "draining"
        if replica.process and replica.process.poll() is None:
            replica.process.send_signal(signal.SIGTERM)

    def _reap(self) -> None:
        """Forget replicas whose process exited; replacements are started by :meth:`_scale`."""
        for replica in list(self.replicas):
            code = replica.process.poll() if replica.process else None
            if code is None:
                continue
            self.replicas.remove(replica)
            if replica.state == "draining" or self.stopping:
                log.info("replica %s exited after draining", replica.id)
                continue
            self.restarts += 1
            if replica.ready_at is None and code == SETTINGS_EXIT:
                log.error("replica %s refused its settings (exit code %d): not started again", replica.id, code)
                self.failed = "its replica refused its settings (see `oikyo deployments logs`: its last lines say why)"
            elif replica.ready_at is None:
                self._start_failed(f"replica {replica.id} exited with code {code} before it was ready",
                                   f"its replica exited {self._start_failures + 1} times while loading")
            else:
                self._start_failures = 0
                log.warning("replica %s exited with code %s; starting a replacement", replica.id, code)

    def _start_failed(self, what: str, failed: str | None = None) -> None:
        """Count a failed start: the next one waits (2, 4, 8... up to 30 s); after MAX_START_FAILURES the pool fails."""
        self._start_failures += 1
        self._next_spawn_at = time.monotonic() + min(30.0, 2.0 ** self._start_failures)
        log.error("%s (failure %d of %d)", what, self._start_failures, MAX_START_FAILURES)
        if self._start_failures >= MAX_START_FAILURES:
            self.failed = f"{failed or what} (see `oikyo deployments logs`)"

    def _scale(self) -> None:
        """Start or drain one replica toward the target count (one change per tick)."""
        now = time.monotonic()
        live = [r for r in self.replicas if r.state != "draining"]
        for replica in live:
            if replica.state == "starting" and now - replica.started_at > START_TIMEOUT_S:
                log.error("replica %s was not ready after %.0f s; killing it", replica.id, START_TIMEOUT_S)
                replica.process.kill()
        if self.policy is not None:
            observation = Observation(replicas=len(live), queue_depth=self.queue_depth(), in_flight=self.in_flight(),
                                      p95_latency_s=self.p95_latency(), capacity_per_replica=self.capacity)
            target = decide(self.policy, observation, now, self._last_change_at)
            if target != self.target:
                log.info("autoscale %s: %d -> %d replicas (queue %.0f, in flight %d, p95 %s)", self.name, self.target,
                         target, observation.queue_depth, observation.in_flight, observation.p95_latency_s)
                self.target, self._last_change_at = target, now
        if len(live) < self.target and not self.failed and now >= self._next_spawn_at:
            try:
                self.spawn()
            except OSError as error:  # the process could not even start: a failed start, with the same backoff
                self._start_failed(f"could not start a replica ({error})")
        elif len(live) > self.target:
            self.drain(min(live, key=lambda r: (r.state == "ready", r.in_flight)))

    async def tick(self, client: httpx.AsyncClient, token: str | None) -> None:
        before = [(r.id, r.state) for r in self.replicas]
        self._reap()
        await self.check(client, token)
        if not self.stopping:
            self._scale()
        if self.on_change and before != [(r.id, r.state) for r in self.replicas]:
            self.on_change()

    async def stop(self, timeout_s: float) -> None:
        """Drain every replica and wait for them to exit (killing those still alive after ``timeout_s``)."""
        self.stopping = True
        for replica in self.replicas:
            self.drain(replica)
        deadline = time.monotonic() + timeout_s
        while any(r.process.poll() is None for r in self.replicas) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for replica in self.replicas:
            if replica.process.poll() is None:
                log.warning("replica %s did not exit in %.0f s; killing it", replica.id, timeout_s)
                replica.process.kill()
                replica.process.wait()
        self.replicas.clear()
        if self.on_change:
            self.on_change()


class Supervisor:
    """Ticks every pool: health, stats, replacement, scaling; reports through ``on_tick``."""

    def __init__(self, pools: dict[str, ReplicaPool], *, token: str | None, interval_s: float = 0.5,
                 on_tick=None):
        self.pools = pools
        self.token = token
        self.interval_s = interval_s
        self.on_tick = on_tick
        self._task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._client = httpx.AsyncClient(trust_env=False)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for pool in self.pools.values():
                try:
                    await pool.tick(self._client, self.token)
                except Exception:  # one bad tick must not end supervision
                    log.exception("supervising pool %s failed", pool.name)
            if self.on_tick:
                try:
                    await self.on_tick()
                except Exception:
                    log.exception("supervisor callback failed")
            await asyncio.sleep(self.interval_s)

    async def stop(self, timeout_s: float = 60.0) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await asyncio.gather(*(pool.stop(timeout_s) for pool in self.pools.values()))
        if self._client is not None:
            await self._client.aclose()
