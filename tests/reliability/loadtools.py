"""Helpers of the contention and load checks: the platform server as a real process, latency figures, RSS.

- :func:`platform_server`: ``oikyo ui`` started as a child process on a free loopback port in the
  current workspace (``OIKYO_HOME``); yields ``(url, token, process)`` and stops it afterwards.
- :func:`percentiles`: count, p50, p99 and max of a list of latencies (seconds).
- :class:`RssSampler`: the resident memory of a process, sampled every second in a thread;
  :func:`summed` adds several up, :func:`window_means` compares the first and last seconds.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    """Poll ``url`` until it answers 200; fail at once if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def stop(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGINT (uvicorn's graceful stop), then SIGKILL if it is still there after ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def platform_server(log: Path):
    """``oikyo ui --no-loop`` in this workspace as a child process; yields (url, token, process)."""
    from oikyo.api.auth import load_or_create_token

    token = load_or_create_token()  # the server reads the same workspace file
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "oikyo.cli.main", "ui", "--port", str(port), "--no-loop"],
                                   stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/api/v1/health", process)
        yield url, token, process
    finally:
        stop(process)


def percentiles(latencies: list[float]) -> dict:
    """{"count", "p50_ms", "p99_ms", "max_ms"} of ``latencies`` in seconds (nearest-rank percentiles)."""
    if not latencies:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(latencies)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000

    return {"count": len(ordered), "p50_ms": round(rank(50), 1), "p99_ms": round(rank(99), 1),
            "max_ms": round(ordered[-1] * 1000, 1)}


def rss_mb(pid: int) -> float | None:
    """The resident set size of ``pid`` in MiB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """Samples :func:`rss_mb` of ``pid`` every ``every_s`` seconds from :meth:`start` to :meth:`stop`."""

    def __init__(self, pid: int, every_s: float = 1.0):
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "RssSampler":
        self._begun = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_mb(self.pid)
            if value is not None:
                self.samples.append((time.monotonic() - self._begun, value))
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def summed(samplers: list[RssSampler]) -> list[tuple[float, float]]:
    """The samplers' samples added up second by second (the memory of a router and its replicas)."""
    length = min(len(sampler.samples) for sampler in samplers)
    return [(samplers[0].samples[i][0], sum(sampler.samples[i][1] for sampler in samplers)) for i in range(length)]


def window_means(samples: list[tuple[float, float]], seconds: float) -> tuple[float, float]:
    """Mean RSS (MiB) of the first and of the last ``seconds`` of ``samples`` ((time, MiB) pairs)."""
    end = samples[-1][0]
    first = [mb for t, mb in samples if t <= seconds]
    last = [mb for t, mb in samples if t >= end - seconds]
    return sum(first) / len(first), sum(last) / len(last)
