"""Deployments as real processes: a router and replica processes on loopback, driven through the CLI and openai.

- a replica killed with SIGKILL is replaced, and requests keep succeeding (only those in flight
  on it may fail);
- the record outlives its processes: a killed router shows as ``gone`` and `deploy --name` starts
  it again with its recorded settings; a client that disconnects mid-stream cancels the generation
  in the replica; stopping lets the requests in flight finish.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import httpx
import pytest
from openai import OpenAI
from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import chat, wait_for
from typer.testing import CliRunner

from oikyo.cli.main import app
from oikyo.serve.gateway import deployments, keys


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def started():
    """Names of deployments a test started; all are stopped afterwards, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            deployments.stop(name, timeout_s=30)
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass


def _health(info) -> dict:
    return httpx.get(info["url"].removesuffix("/v1") + "/health", timeout=5).json()


def _replica_pids(name: str) -> list[int]:
    pools = deployments.show(name).get("replica_processes") or {}
    return [r["pid"] for replicas in pools.values() for r in replicas if r["state"] == "ready"]


def _metric(info, secret: str, needle: str) -> float:
    text = httpx.get(info["url"].removesuffix("/v1") + "/metrics", headers={"Authorization": f"Bearer {secret}"}).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(needle)]
    return sum(values)


def test_a_killed_replica_is_replaced_and_requests_keep_succeeding(versions, started):
    model = versions["support"]
    started.append("ha")
    info = deployments.deploy(model, name="ha", port=_free_port(), replicas=2, wait_s=240)
    wait_for(lambda: _health(info)["pools"][model]["ready"] == 2, timeout=120, interval=0.25)
    pids = wait_for(lambda: len(_replica_pids("ha")) == 2 and _replica_pids("ha"), timeout=10)
    _, secret = keys.create("ha")
    client = OpenAI(base_url=info["url"], api_key=secret, max_retries=0, timeout=60)
    outcomes: list[tuple[float, float, bool]] = []
    stop = threading.Event()

    def traffic(i: int) -> None:
        while not stop.is_set():
            begun = time.monotonic()
            try:
                if i % 2:
                    list(chat(client, "ha", max_tokens=24, stream=True, user=f"u{i}"))
                else:
                    chat(client, "ha", max_tokens=24, user=f"u{i}")
                ok = True
            except Exception:  # noqa: BLE001 - a failed request is what this test counts
                ok = False
            outcomes.append((begun, time.monotonic(), ok))

    threads = [threading.Thread(target=traffic, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(outcomes) >= 8, timeout=60)
        killed_at = time.monotonic()
        os.kill(pids[0], signal.SIGKILL)
        replacement = wait_for(lambda: (p := _replica_pids("ha")) and len(p) == 2 and pids[0] not in p and p,
                               timeout=120, interval=0.25)
        recovered_at = time.monotonic()
        wait_for(lambda: sum(1 for o in outcomes if o[0] > recovered_at) >= 8, timeout=60)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    failures = [o for o in outcomes if not o[2]]
    assert len(failures) <= 4  # at most the requests in flight on the killed replica (4 clients)
    assert all(begun <= killed_at <= ended for begun, ended, _ in failures)
    after_kill = [o for o in outcomes if o[0] > killed_at]
    assert after_kill and all(ok for _, _, ok in after_kill)  # every request sent after the kill succeeded
    assert pids[1] in replacement
    assert _metric(info, secret, "oikyo_replica_restarts_total") == 1


def test_the_record_survives_a_dead_router_and_restarts_by_name(versions, started):
    runner = CliRunner()
    model = versions["sales"]
    port = _free_port()
    started.append("keep")
    result = runner.invoke(app, ["deploy", model, "--name", "keep", "--port", str(port), "--detach", "--log-requests"])
    assert result.exit_code == 0, result.output
    info = deployments.show("keep")
    assert info["status"] == "running" and info["url"] == f"http://127.0.0.1:{port}/v1"
    _, secret = keys.create("keep")
    client = OpenAI(base_url=info["url"], api_key=secret, max_retries=0, timeout=60)
    first = chat(client, "keep", max_tokens=8).choices[0].message.content

    # A client that disconnects mid-stream cancels its generation inside the replica.
    stream = chat(client, "keep", max_tokens=1500, stream=True)
    for i, _chunk in enumerate(stream):
        if i >= 3:
            break
    stream.close()
    wait_for(lambda: _metric(info, secret, 'oikyo_engine{counter="requests_cancelled"') >= 1, timeout=15)
    wait_for(lambda: _metric(info, secret, 'oikyo_engine{counter="active_sequences"') == 0, timeout=15)

    # The router dies: the record still says running, and is shown as gone; its replica exits by itself.
    router_pid = deployments.get("keep").pid
    replica_pids = _replica_pids("keep")
    os.kill(router_pid, signal.SIGKILL)
    wait_for(lambda: deployments.status(deployments.get("keep")) == "gone", timeout=10)
    listed = runner.invoke(app, ["deployments", "list"])
    assert listed.exit_code == 0 and "gone" in listed.output
    wait_for(lambda: not any(deployments._alive(p, "oikyo.serve.gateway.replica") for p in replica_pids), timeout=20)

    # Started again by name, with its recorded settings.
    result = runner.invoke(app, ["deploy", "--name", "keep", "--detach"])
    assert result.exit_code == 0, result.output
    record = deployments.get("keep")
    assert record.state == "running" and record.pid != router_pid and record.log_requests
    assert chat(client, "keep", max_tokens=8).choices[0].message.content == first

    # Stopping drains: a request in flight when the stop arrives still completes.
    done: dict = {}
    slow = threading.Thread(target=lambda: done.update(r=chat(client, "keep", max_tokens=400)))
    slow.start()
    time.sleep(0.5)
    result = runner.invoke(app, ["deployments", "stop", "keep"])
    slow.join(60)
    assert result.exit_code == 0, result.output
    assert done["r"].usage.completion_tokens == 400
    assert deployments.status(deployments.get("keep")) == "stopped"
    assert not deployments._alive(record.pid, "oikyo")
    with pytest.raises(Exception):
        chat(client, "keep", max_tokens=2)
    shown = runner.invoke(app, ["deployments", "show", "keep"])
    assert shown.exit_code == 0 and "stopped" in shown.output
    logs = runner.invoke(app, ["deployments", "logs", "keep", "--lines", "200"])
    assert "is ready" in logs.output
