"""Path traversal sweep over the platform API (issue 22): every path parameter, every string query
parameter and every string field of a JSON or form body, read from the app's own OpenAPI document, gets
each hostile value (``../``, ``..\\``, ``%2e%2e%2f``, double encoding, absolute paths, NUL bytes, file
URLs, UNC paths); then symlinks planted inside the workspace's artifact store point outside it.

Whatever is answered, nothing outside the workspace is written (no new file under the test's folder
outside the workspace, an outside "drop" folder stays empty) or read (a canary file outside keeps its
content and its access time, which a read would advance: see the control), no answer is a 5xx or holds
the canary's text, and a hostile path parameter is always refused (400 or 404).

Sizes: a few values per field in the suite; every value under ``scripts/reliability.sh``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from battery import size
from rawasgi import raw_request

API = "/api/v1"
CANARY_TEXT = "canary: not for the platform's eyes"
SKIP = {"/api/v1/login", "/api/v1/logout", "/api/v1/health", "/api/v1/alerts/alertmanager"}


def hostile_values(outside: Path) -> list[str]:
    canary = outside / "canary.txt"
    values = []
    for depth in (1, 2, 4):
        up = "../" * depth
        values += [f"{up}outside/canary.txt", f"{up.replace('/', chr(92))}outside{chr(92)}canary.txt",
                   quote(f"{up}outside/canary.txt", safe=""), quote(quote(f"{up}outside/canary.txt", safe=""), safe="")]
    values += [str(canary), str(outside), f"{canary}\x00.jsonl", "x\x00y", "%00", "/etc/passwd", "....//....//outside",
               "..", ".", "~/../../etc/passwd", f"file://{canary}", "C:\\Windows\\win.ini", "\\\\server\\share\\x",
               "..%c0%af..%c0%afetc", "..%2F..%2Foutside", "%2e%2e", "%252e%252e%252f", f"{outside}/../outside/canary.txt"]
    return values


@pytest.fixture
def token() -> str:
    return "sweep-login-token-0123456789"


@pytest.fixture
def app(token):
    from oikyo.api.app import create_app

    return create_app(token)


@pytest.fixture
def api(app, token):
    from fastapi.testclient import TestClient

    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


@pytest.fixture
def fenced(tmp_path, monkeypatch, workspace):
    """An outside folder with a canary (its access time set before its modification time, so any read
    advances it, also under relatime) and an empty drop folder; the server runs from an empty cwd. On
    exit: nothing new outside the workspace, the canary unread and unchanged."""
    outside = tmp_path / "outside"
    (outside / "drop").mkdir(parents=True)
    canary = outside / "canary.txt"
    canary.write_text(CANARY_TEXT)
    (outside / "config.json").write_text('{"model_type": "llama"}')  # a bait model folder
    (outside / "data.jsonl").write_text('{"text": "%s"}\n' % CANARY_TEXT)  # a bait dataset
    cwd = tmp_path / "server-cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    def backdate():
        for path in (canary, outside / "data.jsonl", outside / "config.json"):
            stat = path.stat()
            os.utime(path, (stat.st_mtime - 3600, stat.st_mtime))

    backdate()
    control = outside / "control.txt"
    control.write_text("x")
    stat = control.stat()
    os.utime(control, (stat.st_mtime - 3600, stat.st_mtime))
    control.read_text()
    atime_works = control.stat().st_atime > stat.st_mtime - 3600
    control.unlink()
    atimes = {p: p.stat().st_atime for p in outside.iterdir() if p.is_file()}

    def listing():
        return {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                if not str(p.relative_to(tmp_path)).startswith(workspace.name)}

    before = listing()
    yield outside
    assert listing() == before, f"files appeared outside the workspace: {sorted(listing() - before)}"
    assert not any((outside / "drop").iterdir())
    if atime_works:  # before the content check below, which reads the canary
        read = [p.name for p, atime in atimes.items() if p.stat().st_atime != atime]
        assert not read, f"files outside the workspace were read: {read}"
    else:
        print("this filesystem does not update access times: the read check was skipped")
    assert canary.read_text() == CANARY_TEXT


def _targets(spec: dict) -> list[tuple[str, str, str, str, dict]]:
    """(method, path, where, field, operation) for every string input of every operation."""
    found = []
    schemas = spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        if path in SKIP:
            continue
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                kinds = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
                if parameter["in"] in ("path", "query") and kinds & {"string", None} and not kinds & {"integer", "number", "boolean"}:
                    found.append((method.upper(), path, parameter["in"], parameter["name"], operation))
            for content_type, content in operation.get("requestBody", {}).get("content", {}).items():
                schema = content["schema"]
                schema = schemas.get(schema.get("$ref", "").split("/")[-1], schema)
                for name, prop in schema.get("properties", {}).items():
                    kinds = {prop.get("type")} | {s.get("type") for s in prop.get("anyOf", [])}
                    if "string" in kinds and prop.get("format") != "binary":
                        where = "form" if content_type.startswith("multipart") else "json"
                        found.append((method.upper(), path, where, name, operation))
    return found


def _fill(path: str, field: str | None = None, value: str | None = None) -> str:
    def one(match):
        name = match.group(1)
        return quote(value, safe="") if name == field else "x1"

    return re.sub(r"\{([^}]+)\}", one, path)


def test_every_input_refuses_traversal_and_nothing_outside_is_touched(api, app, fenced):
    spec = api.get(f"{API}/openapi.json").json()
    targets = _targets(spec)
    values = hostile_values(fenced)
    values = size(values[::6] + [str(fenced / "canary.txt"), "x\x00y"], values)
    # A real dataset, so that routes naming one reach their handlers with the other fields hostile.
    rows = b'{"text": "hello there"}\n{"text": "general kenobi"}\n{"text": "third"}\n'
    assert api.post(f"{API}/datasets", files={"file": ("t.jsonl", rows)}, data={"name": "t"}).status_code == 201
    wrong, sent = {}, 0
    for method, path, where, field, _ in targets:
        for value in values:
            url, params, json_body, form = _fill(path), None, None, None
            if where == "path":  # httpx drops a bare '.' or '..' segment; the raw sweep below sends those
                url = _fill(path, field, {".": "%2e", "..": "%2e%2e"}.get(value, value))
            elif where == "query":
                params = {field: value}
                url = _fill(path).replace("/x1", "/t", 1) if "/datasets/" in path else _fill(path)
            elif where == "json":
                json_body = {field: value, "start_worker": False}
            else:
                form = {field: value}
            if where == "form":
                response = api.request(method, API + url[len(API):], data=form,
                                       files={"file": ("t.jsonl", rows)})
            else:
                response = api.request(method, url, params=params, json=json_body)
            sent += 1
            key = f"{method} {path} {where}:{field}={value!r}"
            if response.status_code >= 500 or CANARY_TEXT in response.text:
                wrong[key] = f"{response.status_code} {response.text[:200]}"
            elif where == "path" and response.status_code not in (400, 404, 405):
                wrong[key] = f"{response.status_code} (a hostile path parameter must be refused)"
    print(f"traversal sweep: {len(targets)} inputs x {len(values)} values = {sent} requests "
          f"({len({(m, p) for m, p, *_ in targets})} operations)")
    assert len(targets) >= 60
    assert not wrong, f"{len(wrong)} answers let a hostile value through:\n" + "\n".join(
        f"{k}: {v}" for k, v in list(wrong.items())[:30])


def _raw(app, method: str, raw_path: bytes, token: str) -> int:
    return raw_request(app, method, raw_path, [(b"authorization", f"Bearer {token}".encode())])[0]


def test_unencoded_traversal_in_every_path_parameter_is_refused(api, app, token, fenced):
    spec = api.get(f"{API}/openapi.json").json()
    templates = [(m.upper(), p) for p, ops in spec["paths"].items() if "{" in p for m in ops]
    raws = size([b"../../outside/canary.txt", b"..\\..\\outside", b"%2e%2e/%2e%2e/outside", b"a%00b"],
                [b"../../outside/canary.txt", b"..\\..\\outside", b"%2e%2e/%2e%2e/outside", b"a%00b", b"..",
                 b"%252e%252e%252f", b"/etc/passwd", b"..%5c..%5coutside", b"....//....//x"])
    wrong = {}
    for method, template in templates:
        for raw in raws:
            path = re.sub(rb"\{[^}]+\}", lambda m: raw, template.encode(), count=1)
            path = re.sub(rb"\{[^}]+\}", b"x1", path)
            status = _raw(app, method, path, token)
            if status not in (400, 404, 405):
                wrong[f"{method} {path!r}"] = status
    print(f"raw path sweep: {len(templates)} routes x {len(raws)} values")
    assert len(templates) >= 30 and not wrong, wrong


def test_symlinks_planted_in_the_artifact_store_are_not_followed_outside(api, fenced, workspace):
    """A dataset's blob replaced by a symlink to a file outside, and a store folder that is a symlink to
    a folder outside: reads are refused (nothing read), writes are refused (nothing written)."""
    from oikyo.errors import OikyoError
    from oikyo.store import artifacts

    rows = b'{"text": "hello there"}\n{"text": "general kenobi"}\n'
    created = api.post(f"{API}/datasets", files={"file": ("t.jsonl", rows)}, data={"name": "t"})
    assert created.status_code == 201, created.text
    blobs = [p for p in (workspace / "artifacts").rglob("*") if p.is_file()]
    assert blobs
    for blob in blobs:
        blob.unlink()
        blob.symlink_to(fenced / "canary.txt")
    for route in ("/datasets/t/rows", "/datasets/t/export", "/datasets/t"):
        response = api.get(API + route)
        assert response.status_code < 500 and CANARY_TEXT not in response.text, (route, response.text[:300])
    key = str(blobs[0].relative_to(workspace / "artifacts"))
    with pytest.raises(OikyoError, match="outside"):
        artifacts.path_of(key)
    # A store folder that leads outside: a new blob whose key falls in it is refused, not written there.
    data = b"a new blob " + str(time.time()).encode()
    digest = hashlib.sha256(data).hexdigest()
    folder = workspace / "artifacts" / "sha256" / digest[:2]
    if folder.exists():
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
    folder.symlink_to(fenced / "drop", target_is_directory=True)
    with pytest.raises(OikyoError, match="outside"):
        artifacts.put_bytes(data)
    assert not any((workspace / "tmp").iterdir()) if (workspace / "tmp").exists() else True
