"""Replica pool supervision without real processes: replacement, crash loops, autoscaling, routing choice."""

from __future__ import annotations

import asyncio
import itertools
import signal

import pytest

from oikyo.serve.gateway.autoscale import AutoscalePolicy
from oikyo.serve.gateway.openai_api import ApiError
from oikyo.serve.gateway.replicas import MAX_START_FAILURES, SETTINGS_EXIT, PoolSpec, ProcessPool, Replica

_pids = itertools.count(1000)


class FakeProcess:
    """Stands in for a replica process: ``code`` None while it runs."""

    def __init__(self):
        self.pid = next(_pids)
        self.code = None
        self.signals: list[int] = []

    def poll(self):
        return self.code

    def send_signal(self, sig):
        self.signals.append(sig)
        self.code = 0  # a drained replica exits once idle

    def kill(self):
        self.code = -9

    def wait(self):
        return self.code


def _pool(**kwargs) -> ProcessPool:
    pool = ProcessPool(PoolSpec("p", "/models/base", []), token="t", log_file=None, **kwargs)

    def spawn():
        replica = Replica(id=f"p-r{len(pool.replicas)}", url="http://127.0.0.1:9", process=FakeProcess())
        pool.replicas.append(replica)
        return replica

    pool.spawn = spawn
    return pool


def _ready(pool: ProcessPool) -> None:
    for replica in pool.replicas:
        if replica.state == "starting":
            replica.state, replica.ready_at = "ready", 1.0


def test_a_dead_replica_is_replaced():
    pool = _pool(min_replicas=2, max_replicas=2)
    pool._scale()
    pool._scale()
    _ready(pool)
    assert len(pool.ready()) == 2
    victim = pool.replicas[0]
    victim.process.code = -9  # SIGKILL
    pool._reap()
    assert victim not in pool.replicas and pool.restarts == 1
    pool._scale()
    assert len(pool.replicas) == 2 and pool.replicas[-1].state == "starting"


def test_a_replica_that_keeps_dying_while_loading_fails_the_pool_instead_of_looping():
    pool = _pool()
    for attempt in range(MAX_START_FAILURES):
        pool._next_spawn_at = 0.0  # skip the back-off wait
        pool._scale()
        assert len(pool.replicas) == 1
        pool.replicas[0].process.code = 1
        pool._reap()
        if attempt == 0:
            pool._scale()
            assert pool.replicas == []  # backing off before the next try
    assert pool.failed and "exited 3 times" in pool.failed
    pool._next_spawn_at = 0.0
    pool._scale()
    assert pool.replicas == []
    with pytest.raises(ApiError) as caught:
        asyncio.run(pool.acquire(0.1))
    assert caught.value.status == 503


def test_a_replica_that_refuses_its_settings_fails_the_pool_at_once():
    """Exit code 2 before ready (the engine refused its settings, or bad arguments): no retry can help."""
    pool = _pool()
    pool._scale()
    pool.replicas[0].process.code = SETTINGS_EXIT
    pool._reap()
    assert pool.failed and "refused its settings" in pool.failed
    pool._next_spawn_at = 0.0
    pool._scale()
    assert pool.replicas == []  # not started again


def test_a_replica_that_cannot_even_be_started_fails_the_pool_instead_of_looping():
    pool = _pool()

    def spawn():
        raise FileNotFoundError(2, "No such file or directory", "/no/such/python")

    pool.spawn = spawn
    for _ in range(MAX_START_FAILURES):
        pool._next_spawn_at = 0.0  # skip the back-off wait
        pool._scale()
        assert pool.replicas == []
    assert pool.failed and "could not start a replica" in pool.failed and "/no/such/python" in pool.failed


def test_autoscale_adds_a_replica_under_queue_and_drains_one_when_idle():
    policy = AutoscalePolicy(min_replicas=1, max_replicas=2, target_queue_per_replica=2, scale_up_cooldown_s=0,
                             scale_down_cooldown_s=0)
    pool = _pool(min_replicas=1, max_replicas=2, policy=policy)
    pool._scale()
    _ready(pool)
    pool.replicas[0].stats = {"queue_depth": 10}
    pool._scale()
    assert pool.target == 2 and len(pool.replicas) == 2
    _ready(pool)
    for replica in pool.replicas:
        replica.stats = {"queue_depth": 0}
    pool._scale()
    assert pool.target == 1
    drained = [r for r in pool.replicas if r.state == "draining"]
    assert len(drained) == 1 and drained[0].process.signals == [signal.SIGTERM]
    pool._reap()
    assert len(pool.replicas) == 1 and pool.restarts == 0  # a drained replica is not a crash


def test_requests_go_to_the_ready_replica_with_the_fewest_in_flight():
    pool = _pool(min_replicas=3, max_replicas=3)
    for _ in range(3):
        pool._scale()
    _ready(pool)
    pool.replicas[0].in_flight, pool.replicas[1].in_flight, pool.replicas[2].in_flight = 3, 1, 2
    pool.suspect(pool.replicas[1])  # a refused connection: skipped until a health check passes

    async def pick():
        return await pool.acquire(1.0)

    chosen = asyncio.run(pick())
    assert chosen is pool.replicas[2] and chosen.in_flight == 3
    pool.release(chosen)
    assert chosen.in_flight == 2


def test_a_request_waits_for_a_replica_to_become_ready():
    pool = _pool()
    pool._scale()

    async def scenario():
        waiter = asyncio.create_task(pool.acquire(5.0))
        await asyncio.sleep(0.2)
        assert not waiter.done() and pool.queue_depth() == 1
        _ready(pool)
        return await waiter

    assert asyncio.run(scenario()) is pool.replicas[0]


def test_a_replica_whose_engine_refuses_its_settings_exits_with_the_reason_in_its_log(monkeypatch, caplog):
    """E.g. --weights float16 where the native kernel cannot run: one log line and a failed start, no traceback."""
    import os
    import socket

    from oikyo.serve.engine import core
    from oikyo.serve.engine.linear_layers import HALF_UNAVAILABLE
    from oikyo.serve.gateway import replica

    asked = {}

    def refusing_engine(model_dir, **kwargs):
        asked.update(kwargs)
        raise ValueError(HALF_UNAVAILABLE)

    monkeypatch.setattr(core, "GenerationEngine", refusing_engine)
    monkeypatch.setenv(replica.TOKEN_ENV, "secret")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        code = replica.main(["--spec", '{"load_dir": "/models/base", "models": []}', "--fd", str(os.dup(sock.fileno())),
                             "--weights", "float16"])
    assert code != 0 and asked["weights"] == "float16"
    assert f"cannot start the engine: {HALF_UNAVAILABLE}" in caplog.text
    with pytest.raises(SystemExit):  # argparse: only the engine's choices
        replica.main(["--spec", "{}", "--fd", "0", "--weights", "float8"])
