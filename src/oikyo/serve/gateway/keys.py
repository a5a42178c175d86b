"""API keys for the serving endpoints: created once, stored only as a hash, revocable.

A key's secret is ``oik-`` followed by 43 random URL-safe characters (256 bits). The store keeps
its sha256 (and its first characters, so a person can tell keys apart), never the secret itself:
:func:`create` returns the secret once and nobody can read it back. A request authenticates with
``Authorization: Bearer <secret>``; :func:`verify` hashes what it was given and looks the hash up.
A plain, unsalted sha256 is right here (unlike passwords): the secret is random and long, so there
is nothing to guess, and the lookup by hash needs no per-key salt::

    from oikyo.serve.gateway import keys
    record, secret = keys.create("my-app")     # show `secret` to the user now; it is not stored
    keys.verify(secret)                        # the ApiKey record, or None (unknown or revoked)
    keys.revoke(record.id)
"""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import datetime

from sqlalchemy import select, update

from oikyo.errors import OikyoError
from oikyo.store import db
from oikyo.store.models import ApiKey, utcnow

SECRET_PREFIX = "oik-"
SHOWN_PREFIX = 10  # characters of the secret kept for display: "oik-" + 6
LAST_USED_EVERY_S = 60.0  # write last_used_at at most this often per key (not once per request)

_last_used: dict[str, float] = {}


def hash_secret(secret: str) -> str:
    """The sha256 hex digest the store keeps for a secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create(name: str | None = None) -> tuple[ApiKey, str]:
    """A new key: its record (hash only) and the secret, which is shown now and never again."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(id=f"key-{secrets.token_hex(4)}", name=name, prefix=secret[:SHOWN_PREFIX],
                    secret_hash=hash_secret(secret), created_at=utcnow())
    with db.session() as s:
        s.add(record)
    return record, secret


def list_keys(include_revoked: bool = True) -> list[ApiKey]:
    """Keys, newest first."""
    query = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    with db.session() as s:
        return list(s.scalars(query))


def _find(ref: str, s) -> ApiKey:
    """A key by id, by name, or by the shown prefix of its secret."""
    ref = ref.strip()
    found = list(s.scalars(select(ApiKey).where((ApiKey.id == ref) | (ApiKey.name == ref) | (ApiKey.prefix == ref))))
    if not found:
        raise OikyoError(f"no API key matches {ref!r}; `oikyo keys list` shows them")
    if len(found) > 1:
        raise OikyoError(f"{ref!r} matches several keys ({', '.join(k.id for k in found)}); give the key id")
    return found[0]


def revoke(ref: str) -> ApiKey:
    """Revoke a key (by id, name or shown prefix): requests with it are refused from now on."""
    with db.session() as s:
        key = _find(ref, s)
        if key.revoked_at is None:
            key.revoked_at = utcnow()
        return key


def verify(secret: str | None) -> ApiKey | None:
    """The active key whose secret this is, or None (missing, unknown or revoked)."""
    if not secret or not secret.startswith(SECRET_PREFIX):
        return None
    digest = hash_secret(secret)
    with db.session() as s:
        key = s.scalars(select(ApiKey).where(ApiKey.secret_hash == digest)).first()
        if key is None or key.revoked_at is not None:
            return None
        now = time.monotonic()
        if now - _last_used.get(key.id, -LAST_USED_EVERY_S) >= LAST_USED_EVERY_S:
            _last_used[key.id] = now
            s.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=utcnow()))
        return key


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value (None when absent or malformed)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def describe(key: ApiKey) -> dict:
    """A JSON-serializable view of a key (never the secret: it is not stored)."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {"id": key.id, "name": key.name, "prefix": key.prefix, "created_at": iso(key.created_at),
            "revoked_at": iso(key.revoked_at), "last_used_at": iso(key.last_used_at),
            "active": key.revoked_at is None}
