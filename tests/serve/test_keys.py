"""API keys: the secret is shown once and never stored (only its sha256), revocation is immediate."""

from __future__ import annotations

import hashlib

import pytest
from typer.testing import CliRunner

from oikyo.cli.main import app
from oikyo.errors import OikyoError
from oikyo.serve.gateway import keys
from oikyo.store import db
from oikyo.store.models import ApiKey


def _database_bytes(workspace) -> bytes:
    db.reset_engine()  # close connections so the WAL is checkpointed into the file
    return b"".join(p.read_bytes() for p in workspace.glob("oikyo.db*"))


def test_only_the_hash_is_stored_never_the_secret(workspace):
    record, secret = keys.create("app")
    assert secret.startswith("oik-") and len(secret) > 40
    with db.session() as s:
        stored = s.get(ApiKey, record.id)
        columns = [str(getattr(stored, c.name)) for c in ApiKey.__table__.columns]
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert all(secret not in value for value in columns)
    assert secret.encode() not in _database_bytes(workspace)
    assert stored.prefix == secret[:10]


def test_verify_and_revoke(workspace):
    record, secret = keys.create("app")
    other, other_secret = keys.create("other")
    assert keys.verify(secret).id == record.id
    assert keys.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert keys.verify(None) is None and keys.verify("sk-openai-style") is None
    keys.revoke("app")  # by name
    assert keys.verify(secret) is None
    assert keys.verify(other_secret).id == other.id
    keys.revoke(other.prefix)  # by the shown prefix
    assert keys.verify(other_secret) is None
    assert [k.revoked_at is not None for k in keys.list_keys()] == [True, True]
    with pytest.raises(OikyoError, match="no API key"):
        keys.revoke("nope")


def test_bearer_token_parsing():
    assert keys.bearer_token("Bearer abc") == "abc"
    assert keys.bearer_token("bearer   abc ") == "abc"
    assert keys.bearer_token("Basic abc") is None
    assert keys.bearer_token("Bearer ") is None
    assert keys.bearer_token(None) is None


def test_cli_create_list_revoke(workspace):
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--name", "ci", "--quiet"])
    assert created.exit_code == 0, created.output
    secret = created.output.strip()
    assert keys.verify(secret) is not None
    listed = runner.invoke(app, ["keys", "list", "--json"])
    assert listed.exit_code == 0 and secret not in listed.output and '"name": "ci"' in listed.output
    revoked = runner.invoke(app, ["keys", "revoke", "ci"])
    assert revoked.exit_code == 0, revoked.output
    assert keys.verify(secret) is None
    missing = runner.invoke(app, ["keys", "revoke", "nope"])
    assert missing.exit_code == 2 and "no API key" in missing.output
