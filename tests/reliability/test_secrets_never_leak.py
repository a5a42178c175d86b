"""Secrets never appear in logs, events or error bodies (issue 22).

The secrets: the platform's login token, a serving API key made with the CLI, a wrong key sent by a
client, a PostgreSQL password in ``OIKYO_DATABASE_URL``, an S3 secret key for the shared artifact store.
The test drives the CLI (keys, a dataset import against an unreachable database and an unreachable S3),
the platform API (wrong tokens and keys on many routes, the login form, Alertmanager's webhook with an
API key, whose alerts become deployment events) and then greps every file of the workspace (the
SQLite database with its events table and its WAL included, but the ``ui-token`` file, which holds the
login token by design), every log record, every CLI output and every response body for each secret.
The one place a secret may appear is the output that creates it (``oikyo keys create``, ``POST /keys``).
"""

from __future__ import annotations

import logging
import secrets as random

import pytest

API = "/api/v1"


@pytest.fixture
def secrets_seen(caplog):
    caplog.set_level(logging.DEBUG)
    return []


def _cli(*args, env=None) -> tuple[int, str]:
    from typer.testing import CliRunner

    from oikyo.cli.main import app

    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, (result.stdout or "") + (getattr(result, "stderr", "") or "") + repr(result.exception or "")


def test_secrets_never_reach_logs_events_or_error_bodies(workspace, tmp_path, monkeypatch, caplog, secrets_seen):
    from fastapi.testclient import TestClient

    from oikyo.api.app import create_app
    from oikyo.store import artifacts, db

    login_token = "login-" + random.token_urlsafe(24)
    wrong_key = "oik-" + random.token_urlsafe(32)
    pg_password = "pgpass-" + random.token_hex(12)
    s3_secret = "s3secret-" + random.token_hex(16)
    seen: list[tuple[str, str]] = []  # (where, text) to grep

    # The CLI: a key is created (its secret is printed there, once), listed and used.
    code, created = _cli("keys", "create", "--name", "app")
    assert code == 0, created
    api_key = next(line.strip() for line in created.splitlines() if line.strip().startswith("oik-"))
    code, listed = _cli("keys", "list", "--json")
    assert code == 0 and "key-" in listed
    seen.append(("oikyo keys list", listed))

    # The platform API: wrong credentials on many routes, the login form, the webhook.
    app = create_app(login_token)
    body = {"version": "4", "status": "firing", "receiver": "oikyo", "alerts": [
        {"status": "firing", "labels": {"alertname": "HighLatency", "deployment": "bot", "severity": "warning"},
         "annotations": {"summary": "p95 latency high"}, "startsAt": "2026-12-07T00:00:00Z"}]}
    with TestClient(app) as client:
        for bad in (wrong_key, login_token + "x", api_key + "x", pg_password, s3_secret):
            for method, path in (("GET", "/datasets"), ("POST", "/keys"), ("DELETE", "/keys/key-1"),
                                 ("GET", "/deployments/bot/logs"), ("POST", "/alerts/alertmanager")):
                response = client.request(method, API + path, headers={"Authorization": f"Bearer {bad}"},
                                          json=body if "alerts" in path else {})
                assert response.status_code == 401, (path, response.text)
                seen.append((f"{method} {path} with a wrong token", response.text + str(response.headers)))
            response = client.post(f"{API}/login", json={"token": bad})
            assert response.status_code == 401
            seen.append(("login with a wrong token", response.text + str(response.headers)))
        response = client.post(f"{API}/alerts/alertmanager", json=body, headers={"Authorization": f"Bearer {api_key}"})
        assert response.status_code == 200, response.text
        events = client.get(f"{API}/deployments/bot/events", headers={"Authorization": f"Bearer {login_token}"})
        assert events.status_code in (200, 404), events.text
        seen.append(("deployment events", events.text))
        created_by_api = client.post(f"{API}/keys", json={"name": "second"},
                                     headers={"Authorization": f"Bearer {login_token}"}).json()
        second_key = max((v for v in created_by_api.values() if isinstance(v, str) and v.startswith("oik-")), key=len)
        assert len(second_key) > 40, created_by_api  # the secret, not its shown prefix
        for path in ("/keys", "/me", "/deployments", "/datasets"):
            response = client.get(API + path, headers={"Authorization": f"Bearer {login_token}"})
            assert response.status_code == 200
            seen.append((f"GET {path}", response.text))

    # A database URL with a password, unreachable: the CLI fails, saying so without the password.
    monkeypatch.setenv("OIKYO_DATABASE_URL", f"postgresql+psycopg://oikyo:{pg_password}@127.0.0.1:1/oikyo")
    db.reset_engine()
    code, output = _cli("keys", "list")
    assert code != 0
    seen.append(("oikyo keys list with an unreachable database", output))
    monkeypatch.delenv("OIKYO_DATABASE_URL")
    db.reset_engine()

    # An S3 store with a secret key, unreachable: the import fails without the secret.
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "hello"}\n{"text": "there"}\n')
    for name, value in {"OIKYO_ARTIFACTS_URL": "s3://oikyo-bucket/prefix", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
                        "AWS_SECRET_ACCESS_KEY": s3_secret, "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(name, value)
    artifacts._filesystem.cache_clear()
    code, output = _cli("data", "import", str(data), "--name", "s3data")
    seen.append(("oikyo data import with an unreachable S3 store", output))
    monkeypatch.delenv("OIKYO_ARTIFACTS_URL")
    artifacts._filesystem.cache_clear()

    # Now grep: every workspace file (the database, its WAL, logs), every log record, every output.
    secrets = {"login token": login_token, "API key": api_key, "API key made over HTTP": second_key,
               "wrong key": wrong_key, "PostgreSQL password": pg_password, "S3 secret": s3_secret}
    files = [p for p in workspace.rglob("*") if p.is_file() and p.name != "ui-token"]
    assert any(p.name == "oikyo.db" for p in files)
    for path in files:
        seen.append((str(path.relative_to(workspace)), path.read_bytes().decode("latin-1")))
    seen.append(("log records", "\n".join(f"{r.name}: {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)))
    leaks = [f"{what} in {where}" for where, text in seen for what, secret in secrets.items() if secret in text]
    print(f"secrets sweep: {len(secrets)} secrets grepped in {len(seen)} outputs and files "
          f"({len(files)} workspace files, {len(caplog.records)} log records)")
    assert not leaks, leaks
