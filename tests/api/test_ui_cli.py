"""`oikyo ui`: help, what it prints, where it listens (uvicorn is replaced by a recorder)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from oikyo.cli.main import app


def test_ui_help_in_a_fresh_process():
    result = subprocess.run([sys.executable, "-m", "oikyo.cli.main", "ui", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for option in ("--host", "--port", "--new-token", "--max-upload-mb"):
        assert option in text
    assert "8420" in text and "127.0.0.1" in text


@pytest.fixture
def served(monkeypatch):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    return calls


def test_ui_prints_url_and_token_and_binds_localhost(served, workspace):
    from oikyo.api.auth import load_or_create_token

    result = CliRunner().invoke(app, ["ui"])
    assert result.exit_code == 0, result.output
    token = load_or_create_token()
    assert "http://127.0.0.1:8420/" in result.output and token in result.output
    assert "warning" not in result.output.lower()
    server_app, options = served[0]
    assert options["host"] == "127.0.0.1" and options["port"] == 8420
    assert server_app.state.max_upload_bytes == 1024 << 20
    assert server_app.state.auth.token_ok(token)


def test_ui_options(served, workspace):
    from oikyo.api.auth import load_or_create_token

    old = load_or_create_token()
    result = CliRunner().invoke(app, ["ui", "--host", "0.0.0.0", "--port", "9001", "--new-token", "--max-upload-mb", "5"])
    assert result.exit_code == 0, result.output
    assert "warning" in result.output.lower() and "0.0.0.0" in result.output
    new = load_or_create_token()
    assert new != old and new in result.output
    server_app, options = served[0]
    assert options["host"] == "0.0.0.0" and options["port"] == 9001
    assert server_app.state.max_upload_bytes == 5 << 20
