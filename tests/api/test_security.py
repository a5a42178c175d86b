"""Traversal attempts: '..', encoded and absolute paths in refs, names, key ids and upload filenames.

Each is refused (400, or 404 where the router cannot even match the path) and nothing appears outside
the workspace: the tests compare the files under the test's temporary folder (which holds the
workspace and the server's working directory) before and after.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rawasgi import raw_request

API = "/api/v1"

BAD_REFS = [
    "%2e%2e", "%2E%2E", "..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e%2fx", "%252e%252e", "%252e%252e%252fx",
    "..%5c..%5cx", "%5c%5cserver%5cshare", "%2fetc%2fpasswd", "a%00b", "%00", "x..y", "..", "%2e",
]
RESOURCE_PATHS = [
    ("GET", "/datasets/{}"), ("GET", "/datasets/{}/report"), ("GET", "/datasets/{}/rows"),
    ("GET", "/datasets/{}/export"), ("POST", "/datasets/{}/split"), ("GET", "/models/{}"),
    ("GET", "/model-versions/{}"), ("DELETE", "/keys/{}"),
]


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def guarded(tmp_path, monkeypatch, workspace):
    """Run the server's code from an empty working directory; check afterwards that nothing was
    created anywhere under the test's temporary folder except inside the workspace."""
    cwd = tmp_path / "server-cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    (tmp_path / "secret.txt").write_text("do not touch")
    before = {p for p in _snapshot(tmp_path) if not p.startswith(workspace.name)}
    yield tmp_path
    after = {p for p in _snapshot(tmp_path) if not p.startswith(workspace.name)}
    assert after == before, f"files appeared outside the workspace: {sorted(after - before)}"
    assert (tmp_path / "secret.txt").read_text() == "do not touch"
    scratch = workspace / "tmp"
    assert not scratch.exists() or not any(scratch.iterdir()), "uploads or exports were left in tmp/"


@pytest.mark.parametrize("method, template", RESOURCE_PATHS)
def test_bad_refs_in_paths_are_refused(api, guarded, method, template):
    for ref in BAD_REFS:
        response = api.request(method, API + template.format(ref), json={} if method == "POST" else None)
        assert response.status_code in (400, 404), (ref, response.status_code, response.text)
        assert "error" in response.json()
        if "%" in ref and any(bad in ref.lower() for bad in ("%2e", "%2f", "%5c", "%00", "%25")):
            assert response.status_code == 400, (ref, response.text)


def test_unencoded_dot_segments_are_refused_before_routing(app, guarded):
    """httpx normalizes '/../' away, so send raw paths to the ASGI app as a server would."""
    for raw in (b"/api/v1/datasets/../../etc/passwd", b"/api/v1/datasets/..", b"/api/v1/keys/.",
                b"/api/v1/datasets/a\\..\\b", b"/api/v1/models/%2e%2e%2fx"):
        status, body = raw_request(app, "GET", raw)
        assert status == 400, raw
        assert json.loads(body)["error"]["type"] == "invalid_path"


@pytest.mark.parametrize("query", [
    "/datasets?name=..%2f..%2fx", "/datasets?name=%2fetc%2fpasswd", "/model-versions?run=..%2fx",
    "/model-versions?base=%2e%2e", "/datasets/x/report?model=..%2f..%2fmodels",
])
def test_bad_refs_in_query_parameters_are_refused(api, guarded, query):
    response = api.get(API + query)
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("filename", [
    "../../x.jsonl", "..\\..\\x.jsonl", "/tmp/x.jsonl", "%2e%2e%2fx.jsonl", "....//....//x.jsonl",
    "C:\\Windows\\x.jsonl", "x.jsonl\x00.sh", "..",
])
def test_upload_filenames_never_become_paths(api, guarded, workspace, filename):
    rows = b'{"text": "hello there"}\n{"text": "general kenobi"}\n'
    response = api.post(f"{API}/datasets", files={"file": (filename, rows)}, data={"name": "safe"})
    assert response.status_code == 201, response.text
    version = response.json()["version"]
    uploaded_as = version["lineage"]["options"]["upload"]["filename"]
    assert "/" not in uploaded_as and "\\" not in uploaded_as and ".." not in uploaded_as
    assert not Path("/tmp/x.jsonl").exists() or Path("/tmp/x.jsonl").stat().st_size != len(rows)
    # The uploaded file itself is gone from the workspace's tmp/ (the dataset lives in the artifact store).
    assert list((workspace / "tmp").iterdir()) == []


def test_default_dataset_name_from_a_hostile_filename_is_sanitized(api, guarded):
    response = api.post(f"{API}/datasets", files={"file": ("../../../etc/evil name.jsonl", b'{"text": "hi"}\n')})
    assert response.status_code == 201, response.text
    assert response.json()["version"]["name"] == "evil-name"


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "a\\b", "%2e%2e"])
def test_bad_dataset_names_in_uploads_are_refused(api, guarded, name):
    response = api.post(f"{API}/datasets", files={"file": ("x.jsonl", b'{"text": "hi"}\n')}, data={"name": name})
    assert response.status_code == 400, response.text
    assert api.get(f"{API}/datasets").json() == []


@pytest.mark.parametrize("body, status", [
    ({"source": "../models/x"}, 400), ({"source": "relative/folder"}, 400), ({"source": "/tmp/../etc"}, 400),
    ({"source": "/no/such/model/folder"}, 404), ({"source": "owner/hub-model"}, 400),
    ({"source": "/tmp\x00/x"}, 400), ({"source": "C:\\models\\x"}, 400),
])
def test_model_sources_must_be_plain_absolute_paths(api, guarded, body, status):
    response = api.post(f"{API}/models", json=body)
    assert response.status_code == status, response.text
    assert [m["source"] for m in api.get(f"{API}/models").json()] == ["bundled"]


def test_model_names_with_traversal_are_refused(api, guarded, tmp_path):
    folder = tmp_path / "server-cwd"  # exists; the name is what is wrong
    for name in ("../evil", "..", "a/b", "x\\y"):
        response = api.post(f"{API}/models", json={"source": str(folder), "name": name})
        assert response.status_code == 400, (name, response.text)


def test_key_names_with_traversal_are_refused(api, guarded):
    assert api.post(f"{API}/keys", json={"name": "../../k"}).status_code == 400
    assert api.get(f"{API}/keys").json() == []


def test_export_format_and_split_are_checked(api, guarded):
    api.post(f"{API}/datasets", files={"file": ("t.jsonl", b'{"text": "a"}\n{"text": "b"}\n')}, data={"name": "t"})
    assert api.get(f"{API}/datasets/t/export", params={"to": "../../x"}).status_code == 422
    assert api.get(f"{API}/datasets/t/export", params={"to": "jsonl", "split": "../x"}).status_code == 422


def test_ref_checks_unit():
    from oikyo.api.refs import path_problem, ref_problem

    for good in ("support", "support@1a2b3c", "1a2b3c4d", "mv-1a2b", "key-0011", "data.v2_final", "ds:train"):
        assert ref_problem(good) is None, good
    for bad in ("..", ".", "a/../b", "/etc/passwd", "a\\b", "a\x00b", "%2e%2e", "%252e%252e%252f", "x" * 201, ""):
        assert ref_problem(bad), bad
    assert path_problem("/api/v1/datasets/a%2Fb")
    assert path_problem("/api/v1/datasets/%2e%2e/x")
    assert path_problem("/api/v1/datasets/support@1a2b") is None


def test_upload_filename_sanitizing_unit():
    from oikyo.api.uploads import safe_filename, safe_suffix

    assert safe_filename("../../x.jsonl") == "x.jsonl"
    assert safe_filename("..\\..\\x.csv") == "x.csv"
    assert safe_filename("/etc/passwd") == "passwd"
    assert safe_filename("..") == ""
    assert safe_filename("a b;rm -rf.json") == "a-b-rm-rf.json"
    assert safe_suffix("data.JSONL.GZ") == ".jsonl.gz"
    assert safe_suffix("x.sh") == "" and safe_suffix("x.jsonl.sh") == ""
