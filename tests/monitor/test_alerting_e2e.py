"""End to end, with the real components a user runs: a deployment of a tiny model, Debian's Prometheus
scraping the router's /metrics with an API key and evaluating oikyo's shipped rules, Debian's
Alertmanager delivering to oikyo's webhook on a real `oikyo ui` server, and the alert shown by
`oikyo deployments show`.

The fault is a slow replica: SIGSTOP freezes the replica process for a few seconds while requests
are waiting on it (the router still sees it as ready: its port accepts connections), so those
requests take seconds instead of milliseconds and the p99 latency rule (OikyoHighLatency, with the
deployment's threshold set to 2 s) fires. The shipped rule waits 10 minutes (``for: 10m``) before
firing; only that wait is shortened here, the expression and the recording rule it reads are the
shipped ones. Everything binds 127.0.0.1 on free ports; Alertmanager's cluster port is off.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))

from serving_fixtures import *  # noqa: E402,F401,F403
from serving_fixtures import chat, wait_for  # noqa: E402

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
ALERT = "OikyoHighLatency"
NAME = "e2e"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (os.access(PROMETHEUS, os.X_OK) and os.access(ALERTMANAGER, os.X_OK)),
                       reason="needs Debian's prometheus and prometheus-alertmanager (scripts/install-prometheus.sh)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """The servers a test started (by their Popen handles), stopped afterwards whatever happened."""

    def __init__(self, folder: Path):
        self.folder, self.started = folder, []

    def start(self, name: str, command: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.folder)
        self.started.append((name, process, log))
        return process

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for _name, process, log in reversed(self.started):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            log.close()


@pytest.fixture
def processes(tmp_path):
    found = Processes(tmp_path)
    yield found
    found.stop()


@pytest.fixture
def deployed(versions):
    from oikyo.serve.gateway import deployments

    try:
        yield deployments.deploy(versions["support"], name=NAME, port=_free_port(), replicas=1, wait_s=240)
    finally:
        try:
            deployments.stop(NAME, timeout_s=30)
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass


def _up(url: str, timeout: float, process: subprocess.Popen, processes: Processes, name: str) -> None:
    def ready():
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}:\n{processes.log(name)}")
        try:
            return httpx.get(url, timeout=1, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, timeout=timeout, interval=0.2)


def _rules(folder: Path) -> Path:
    """The shipped rules for the deployment (thresholds from its settings), ALERT's wait shortened."""
    from oikyo.monitor import alerts

    rules = yaml.safe_load(alerts.export(NAME))
    found = [rule for group in rules["groups"] for rule in group["rules"] if rule.get("alert") == ALERT]
    assert len(found) == 1, f"the shipped rules have no single {ALERT}"
    found[0]["for"] = "0s"
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def _prometheus_alerts(base: str) -> list[dict]:
    answer = httpx.get(f"{base}/api/v1/alerts", timeout=5, trust_env=False).json()
    return [a for a in answer["data"]["alerts"] if a["labels"].get("alertname") == ALERT]


def test_a_slow_replica_fires_an_alert_that_reaches_oikyo(tmp_path, workspace, deployed, processes):
    from openai import OpenAI
    from typer.testing import CliRunner

    from oikyo.api.auth import load_or_create_token, token_path
    from oikyo.cli.main import app
    from oikyo.monitor import alerts, events
    from oikyo.serve.gateway import deployments, keys

    router = deployed["url"].removesuffix("/v1")
    model = deployed["model"]
    wait_for(lambda: httpx.get(f"{router}/health", timeout=5).json()["pools"][model]["ready"] == 1, timeout=120)
    alerts.set_thresholds(NAME, {"p99_latency_s": 2})
    _record, secret = keys.create("prometheus")

    # oikyo's REST server, on the test's workspace (same store), with its login token as the webhook's credential
    load_or_create_token()
    ui_port, am_port, prom_port = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "OIKYO_HOME": str(workspace)}
    ui = processes.start("oikyo-ui", [sys.executable, "-m", "oikyo.cli.main", "ui", "--host", "127.0.0.1",
                                      "--port", str(ui_port)], env=env)

    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump({
        "route": {"receiver": "oikyo", "group_by": ["alertname", "deployment"], "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "oikyo", "webhook_configs": [{
            "url": f"http://127.0.0.1:{ui_port}/api/v1/alerts/alertmanager", "send_resolved": True,
            "http_config": {"authorization": {"credentials_file": str(token_path())}}}]}]}))
    am = processes.start("alertmanager", [ALERTMANAGER, "--config.file=alertmanager.yml", "--storage.path=am-data",
                                          f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="])

    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(_rules(tmp_path))],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": "oikyo", "honor_labels": True, "authorization": {"credentials": secret},
                            "static_configs": [{"targets": [router.removeprefix("http://")],
                                                "labels": {"deployment": NAME}}]}]}))
    prom_base = f"http://127.0.0.1:{prom_port}"
    prom = processes.start("prometheus", [PROMETHEUS, "--config.file=prometheus.yml", "--storage.tsdb.path=prom-data",
                                          f"--web.listen-address=127.0.0.1:{prom_port}", "--rules.alert.resend-delay=1s"])
    # the three servers start at the same time; each is waited for once all are launched
    _up(f"http://127.0.0.1:{ui_port}/api/v1/health", 60, ui, processes, "oikyo-ui")
    _up(f"http://127.0.0.1:{am_port}/-/ready", 60, am, processes, "alertmanager")
    _up(f"{prom_base}/-/ready", 60, prom, processes, "prometheus")

    # Prometheus scrapes the router with the key
    def scraped():
        targets = httpx.get(f"{prom_base}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return targets and targets[0]["health"] == "up"

    wait_for(scraped, timeout=30, interval=0.5)

    client = OpenAI(base_url=deployed["url"], api_key=secret, max_retries=0, timeout=120)
    for i in range(20):  # normal traffic: fast answers
        chat(client, NAME, max_tokens=4, user=f"u{i}")
    time.sleep(3)  # a few scrapes and evaluations of the fast traffic
    assert not [a for a in _prometheus_alerts(prom_base) if a["state"] == "firing"], "fired before the fault"

    # the fault: the replica freezes for 5 s while three requests wait on it
    pid = next(r["pid"] for replicas in deployments.show(NAME)["replica_processes"].values() for r in replicas)
    slow = [threading.Thread(target=chat, args=(client, NAME), kwargs={"max_tokens": 4, "user": f"s{i}"})
            for i in range(3)]
    os.kill(pid, signal.SIGSTOP)
    try:
        for thread in slow:
            thread.start()
        time.sleep(5)
    finally:
        os.kill(pid, signal.SIGCONT)
    for thread in slow:
        thread.join(60)

    # Prometheus' own API: the alert fires
    fired = wait_for(lambda: [a for a in _prometheus_alerts(prom_base) if a["state"] == "firing"], timeout=60,
                     interval=0.5)
    assert fired[0]["labels"]["deployment"] == NAME and fired[0]["labels"]["severity"] == "page"

    # Alertmanager delivered it to oikyo's webhook: an event on the deployment, firing
    def recorded():
        return [e for e in events.firing(NAME) if e.details.get("alertname") == ALERT]

    try:
        [event] = wait_for(recorded, timeout=60, interval=0.5)
    except Exception:
        raise AssertionError(f"no event recorded; alertmanager log:\n{processes.log('alertmanager')}\n"
                             f"oikyo ui log:\n{processes.log('oikyo-ui')}") from None
    assert event.source == "alertmanager" and event.severity == "page"
    assert event.details["labels"]["deployment"] == NAME

    shown = CliRunner().invoke(app, ["deployments", "show", NAME])
    assert shown.exit_code == 0, shown.output
    assert "firing" in shown.output and ALERT in shown.output
