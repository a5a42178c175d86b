"""API keys over the REST API: the secret is shown once and stored only as a hash; revoking works."""

from __future__ import annotations

import hashlib

API = "/api/v1"


def test_create_shows_the_secret_once_and_stores_only_its_hash(api, workspace):
    from oikyo.serve.gateway import keys
    from oikyo.store import db
    from oikyo.store.models import ApiKey

    response = api.post(f"{API}/keys", json={"name": "my-app"})
    assert response.status_code == 201
    created = response.json()
    secret = created["secret"]
    assert secret.startswith("oik-") and len(secret) > 40
    assert created["name"] == "my-app" and created["active"] is True and secret.startswith(created["prefix"])

    listed = api.get(f"{API}/keys").json()
    assert [k["id"] for k in listed] == [created["id"]]
    assert "secret" not in listed[0] and secret not in api.get(f"{API}/keys").text

    with db.session() as s:
        record = s.get(ApiKey, created["id"])
        assert record.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in {str(v) for v in vars(record).values()}
    assert secret.encode() not in (workspace / "oikyo.db").read_bytes()
    assert keys.verify(secret).id == created["id"]  # the serving endpoints accept it


def test_create_without_a_body_or_a_name(api):
    assert api.post(f"{API}/keys").status_code == 201
    assert api.post(f"{API}/keys", json={}).json()["name"] is None
    assert api.post(f"{API}/keys", json={"name": "x" * 101}).status_code == 422


def test_revoke_by_id_and_by_name(api):
    from oikyo.serve.gateway import keys

    first = api.post(f"{API}/keys", json={"name": "first"}).json()
    second = api.post(f"{API}/keys", json={"name": "second"}).json()
    revoked = api.delete(f"{API}/keys/{first['id']}")
    assert revoked.status_code == 200 and revoked.json()["active"] is False and revoked.json()["revoked_at"]
    assert keys.verify(first["secret"]) is None
    assert keys.verify(second["secret"]) is not None
    assert api.delete(f"{API}/keys/second").json()["id"] == second["id"]
    assert keys.verify(second["secret"]) is None
    states = {k["id"]: k["active"] for k in api.get(f"{API}/keys").json()}
    assert states == {first["id"]: False, second["id"]: False}


def test_revoking_an_unknown_key_is_404(api):
    response = api.delete(f"{API}/keys/key-nope")
    assert response.status_code == 404 and "no API key matches" in response.json()["error"]["message"]


def test_browser_needs_csrf_to_create_or_revoke(browser_client):
    assert browser_client.post(f"{API}/keys", json={"name": "web"}).status_code == 403
    assert browser_client.get(f"{API}/keys").json() == []
    csrf = {"X-CSRF-Token": browser_client.csrf}
    created = browser_client.post(f"{API}/keys", json={"name": "web"}, headers=csrf).json()
    assert browser_client.delete(f"{API}/keys/{created['id']}").status_code == 403
    assert browser_client.delete(f"{API}/keys/{created['id']}", headers=csrf).json()["active"] is False
