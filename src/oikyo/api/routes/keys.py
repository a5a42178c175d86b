"""REST routes: API keys for the serving endpoints (:mod:`oikyo.serve.gateway.keys`, as `oikyo keys ...`).

A new key's secret is in the 201 answer and nowhere else: the store keeps only its hash.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from oikyo.api.refs import check_ref
from oikyo.serve.gateway import keys

router = APIRouter(tags=["keys"])


@router.get("/keys")
def list_keys() -> list[dict]:
    """Every key, newest first, with its shown prefix and state (never a secret: none is stored)."""
    return [keys.describe(k) for k in keys.list_keys()]


class NewKey(BaseModel):
    name: str | None = Field(None, max_length=100, description="A label to recognise the key by.")


@router.post("/keys", status_code=201)
def create_key(body: NewKey | None = None) -> dict:
    """Create a key: the answer holds its ``secret``, shown this once."""
    name = check_ref(body.name, "key name") if body and body.name else None
    record, secret = keys.create(name)
    return {**keys.describe(record), "secret": secret}


@router.delete("/keys/{ref}")
def revoke_key(ref: str) -> dict:
    """Revoke a key (by id, name or shown prefix): requests with it are refused from now on."""
    return keys.describe(keys.revoke(check_ref(ref, "key id")))
