"""Datasets over the REST API: upload (good, bad, too large), show, report, rows, split, export."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest

API = "/api/v1"

CHAT = b"".join(json.dumps({"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                                          {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]}).encode() + b"\n"
                for i in range(30))
BAD = (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
       b'{"messages": [{"role": "wizard", "content": "hi"}]}\n'
       b"not json at all\n"
       b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
       b'{"messages": [{"role": "robot", "content": "hi"}]}\n')


def upload(client, content: bytes, filename: str = "data.jsonl", **fields):
    return client.post(f"{API}/datasets", files={"file": (filename, content)}, data=fields)


def _scratch_empty(workspace) -> bool:
    scratch = workspace / "tmp"
    return not scratch.exists() or not any(scratch.iterdir())


@pytest.mark.parametrize("filename, kind, fmt", [
    ("alpaca_en_demo.json", "conversations", "alpaca"),
    ("identity.json", "conversations", "alpaca"),
    ("c4_demo.jsonl", "text", "text"),
    ("dpo_en_demo.json", "preference", "preference"),
])
def test_upload_the_shared_sample_files(api, shared_datasets, workspace, filename, kind, fmt):
    content = (shared_datasets / filename).read_bytes()
    response = upload(api, content, filename)
    assert response.status_code == 201, response.text
    body = response.json()
    version = body["version"]
    assert version["kind"] == kind and body["detected_format"] == fmt and body["existed"] is False
    assert version["rows"] > 0 and version["name"] == filename.split(".")[0]
    assert version["lineage"]["options"]["upload"] == {"filename": filename, "size": len(content)}
    assert _scratch_empty(workspace)
    # The same content again is the same version.
    again = upload(api, content, filename).json()
    assert again["existed"] is True and again["version"]["id"] == version["id"]
    assert [v["id"] for v in api.get(f"{API}/datasets").json()] == [version["id"]]


def test_a_bad_file_gets_every_problem_with_its_line_and_nothing_is_stored(api, workspace):
    response = upload(api, BAD, "bad.jsonl")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "ImportFailed" and error["stored"] is False
    problems = {(p["line"], p["error_class"]) for p in error["problems"]}
    assert problems == {(2, "unknown_role"), (3, "invalid_json"), (5, "unknown_role")}
    roles = [p for p in error["problems"] if p["error_class"] == "unknown_role"]
    assert roles[0]["field"] == "messages[0].role" and "wizard" in roles[0]["message"]
    assert error["counts"] == {"unknown_role": 2, "invalid_json": 1}
    assert api.get(f"{API}/datasets").json() == []
    assert not (workspace / "artifacts").exists() or not any((workspace / "artifacts").rglob("*.parquet"))
    assert _scratch_empty(workspace)


def test_skip_mode_keeps_the_valid_rows_and_lists_the_dropped(api):
    response = upload(api, BAD, "bad.jsonl", on_error="skip", name="partly")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["version"]["rows"] == 2 and body["dropped"] == 3
    assert body["counts"] == {"unknown_role": 2, "invalid_json": 1}
    dropped = api.get(f"{API}/datasets/partly", params={"dropped": "true"}).json()["dropped_rows"]
    assert sorted(d["line"] for d in dropped) == [2, 3, 5]


def test_an_ambiguous_csv_asks_and_a_mapping_answers(api):
    csv = b"question,answer\nWhat is 1+1?,2\nWhat is 2+2?,4\nWhat is 3+3?,6\n"
    asked = upload(api, csv, "qa.csv")
    assert asked.status_code == 422
    assert asked.json()["error"]["question"]
    mapped = upload(api, csv, "qa.csv", format="alpaca", map="instruction=question\noutput=answer")
    assert mapped.status_code == 201, mapped.text
    assert mapped.json()["version"]["rows"] == 3
    first = api.get(f"{API}/datasets/qa/rows", params={"limit": 1}).json()["rows"][0]
    assert first["messages"][0]["content"] == "What is 1+1?"


@pytest.mark.parametrize("fields, words", [
    ({"format": "nonsense"}, "unknown format"), ({"on_error": "maybe"}, "on-error"),
    ({"map": "no-equals-sign"}, "field=column"), ({"name": "bad name!"}, "invalid dataset name"),
])
def test_bad_options_are_a_400_with_a_message(api, fields, words):
    response = upload(api, CHAT, **fields)
    assert response.status_code == 400
    assert words in response.json()["error"]["message"]


def test_requests_without_a_file(api):
    assert api.post(f"{API}/datasets", data={"name": "x"}, files={"other": ("x", b"")}).status_code == 400
    assert api.post(f"{API}/datasets", json={"file": "x"}).status_code == 415


def test_uploads_over_the_limit_get_413_and_leave_nothing(token, workspace):
    from fastapi.testclient import TestClient

    from oikyo.api.app import create_app

    app = create_app(token, max_upload_bytes=1000)
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        small = b"".join(CHAT.splitlines(keepends=True)[:7])
        assert len(small) < 1000
        assert upload(client, small, "small.jsonl").status_code == 201  # under the limit: fine
        big = CHAT * 4  # ~8 KB: refused from its Content-Length, before reading the body
        response = upload(client, big, "big.jsonl")
        assert response.status_code == 413
        assert "limit" in response.json()["error"]["message"]
        # Without a Content-Length (chunked), the limit is enforced while streaming.
        boundary = "b0undary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()

        def chunks():
            yield head
            for i in range(0, len(big), 500):
                yield big[i:i + 500]
            yield f"\r\n--{boundary}--\r\n".encode()

        response = client.post(f"{API}/datasets", content=chunks(),
                               headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "http_error"
        assert len(client.get(f"{API}/datasets").json()) == 1
    assert _scratch_empty(workspace)


def test_the_upload_is_streamed_to_disk_in_pieces(app, token, monkeypatch, workspace):
    """The file part is written as the body arrives: one write per received piece, never the whole file.

    (TestClient gathers a request body before sending it, so the body is fed to the ASGI app in
    pieces here, as a server does.)
    """
    import anyio

    from oikyo.api import uploads

    sizes = []
    real_open = open

    class Recorder:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            sizes.append(len(data))
            return self.handle.write(data)

        def close(self):
            self.handle.close()

    monkeypatch.setattr(uploads, "open", lambda *a, **k: Recorder(real_open(*a, **k)), raising=False)
    content = CHAT * 40  # ~140 KB
    boundary = "xyz"
    head = f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.jsonl\"\r\n\r\n".encode()
    pieces = [head] + [content[i:i + 4096] for i in range(0, len(content), 4096)] + [f"\r\n--{boundary}--\r\n".encode()]
    headers = [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode()),
               (b"content-type", f"multipart/form-data; boundary={boundary}".encode())]
    status = anyio.run(_asgi_post, app, f"{API}/datasets", headers, pieces)
    assert status == 201
    assert sum(sizes) == len(content) and len(sizes) >= len(content) // 4096 and max(sizes) <= 4096


async def _asgi_post(app, path: str, headers: list, pieces: list[bytes]) -> int:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": headers,
             "server": ("testserver", 80), "client": ("127.0.0.1", 1234)}
    queue = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]
    sent = []

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return next(m for m in sent if m["type"] == "http.response.start")["status"]


def test_show_rows_and_paging(api):
    from oikyo.data import versions

    version = upload(api, CHAT, "sums.jsonl").json()["version"]
    shown = api.get(f"{API}/datasets/sums").json()
    assert shown["id"] == version["id"] and shown["rows"] == 30 and shown["children"] == []
    assert api.get(f"{API}/datasets/sums@{version['id'][:6]}").json()["id"] == version["id"]
    everything = list(versions.iter_rows(versions.resolve(version["id"])))
    page = api.get(f"{API}/datasets/sums/rows", params={"offset": 5, "limit": 7}).json()
    assert page["total"] == 30 and page["rows"] == everything[5:12]
    tail = api.get(f"{API}/datasets/sums/rows", params={"offset": 28, "limit": 50}).json()
    assert tail["rows"] == everything[28:]
    assert api.get(f"{API}/datasets/sums/rows", params={"limit": 201}).status_code == 422
    assert api.get(f"{API}/datasets/sums/rows", params={"offset": -1}).status_code == 422
    # Asking for a split of an unsplit dataset says what to do.
    unsplit = api.get(f"{API}/datasets/sums/rows", params={"split": "train"})
    assert unsplit.status_code == 400 and "split" in unsplit.json()["error"]["message"]


def test_rows_page_across_parquet_row_groups(tmp_path):
    """page_rows skips whole row groups; it must agree with reading every row."""
    from oikyo.data import versions
    from oikyo.data.ingest import ROW_GROUP_ROWS

    path = tmp_path / "many.jsonl"
    n = ROW_GROUP_ROWS + 100
    path.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(n)))
    version = versions.import_dataset(path, name="many").version
    assert pq.ParquetFile(versions.parquet_path(version)).num_row_groups >= 2
    page = versions.page_rows(version, offset=ROW_GROUP_ROWS - 3, limit=6)
    assert [r["text"] for r in page] == [f"row {i}" for i in range(ROW_GROUP_ROWS - 3, ROW_GROUP_ROWS + 3)]


def test_split_then_rows_of_one_split(api):
    upload(api, CHAT, "sums.jsonl")
    response = api.post(f"{API}/datasets/sums/split", json={"validation": 0.2, "test": 0.1, "seed": 3})
    assert response.status_code == 201, response.text
    split = response.json()
    assert split["existed"] is False and sum(split["version"]["splits"].values()) == 30
    assert split["version"]["parent"] == api.get(f"{API}/datasets").json()[-1]["id"]
    again = api.post(f"{API}/datasets/{split['version']['parent']}/split", json={"validation": 0.2, "test": 0.1, "seed": 3})
    assert again.json()["existed"] is True and again.json()["version"]["id"] == split["version"]["id"]
    validation = api.get(f"{API}/datasets/{split['version']['id']}/rows", params={"split": "validation"}).json()
    assert validation["total"] == split["version"]["splits"]["validation"] == len(validation["rows"])
    assert all(r["split"] == "validation" for r in validation["rows"])
    parent = api.get(f"{API}/datasets/{split['version']['parent']}").json()
    assert parent["children"] == [split["version"]["id"]]
    bad = api.post(f"{API}/datasets/sums/split", json={"validation": 0.7, "test": 0.5})
    assert bad.status_code == 400


def test_report_is_the_cli_report(api):
    from oikyo.data import versions

    version = upload(api, CHAT, "sums.jsonl").json()["version"]
    report = api.get(f"{API}/datasets/sums/report")
    assert report.status_code == 200
    body = report.json()
    expected = versions.quality_report(versions.resolve(version["id"]))
    body.pop("seconds"), expected.pop("seconds")
    assert body == json.loads(json.dumps(expected))
    assert body["rows"] == 30 and "histograms" in body


@pytest.mark.parametrize("to", ["openai", "sharegpt", "alpaca", "jsonl"])
def test_export_streams_a_jsonl_file(api, workspace, to):
    upload(api, CHAT, "sums.jsonl")
    response = api.get(f"{API}/datasets/sums/export", params={"to": to})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert f".{to}.jsonl" in response.headers["content-disposition"]
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) == 30
    if to == "openai":
        assert lines[0]["messages"][1] == {"role": "assistant", "content": "0 plus 0 is 0."}
    assert _scratch_empty(workspace)  # the temporary export is removed once sent


def test_export_parquet_and_one_split(api):
    upload(api, CHAT, "sums.jsonl")
    split = api.post(f"{API}/datasets/sums/split", json={"validation": 0.2, "test": 0.0}).json()["version"]
    response = api.get(f"{API}/datasets/{split['id']}/export", params={"to": "parquet", "split": "validation"})
    assert response.status_code == 200
    table = pq.read_table(io.BytesIO(response.content))
    assert table.num_rows == split["splits"]["validation"]


@pytest.mark.parametrize("method, path", [
    ("GET", "/datasets/nope"), ("GET", "/datasets/nope/report"), ("GET", "/datasets/nope/rows"),
    ("GET", "/datasets/nope/export"), ("POST", "/datasets/nope/split"), ("GET", "/datasets/abcd1234"),
])
def test_unknown_refs_are_404(api, method, path):
    response = api.request(method, API + path, json={} if method == "POST" else None)
    assert response.status_code == 404
    assert "no dataset version matches" in response.json()["error"]["message"]


def test_browser_upload_needs_the_csrf_header(browser_client):
    files = {"file": ("sums.jsonl", CHAT)}
    assert browser_client.post(f"{API}/datasets", files=files).status_code == 403
    response = browser_client.post(f"{API}/datasets", files=files, headers={"X-CSRF-Token": browser_client.csrf})
    assert response.status_code == 201


def test_split_with_the_defaults(api):
    upload(api, CHAT, "sums.jsonl")
    response = api.post(f"{API}/datasets/sums/split")
    assert response.status_code == 201, response.text
    assert set(response.json()["version"]["splits"]) == {"train", "validation", "test"}


def test_upload_keeps_and_drops_columns_and_kto_flags_are_flags(api):
    rows = b"".join(json.dumps({"id": i, "url": "x", "messages": [{"role": "user", "content": f"q{i}"},
                                                                  {"role": "assistant", "content": f"a{i}"}],
                                "label": i % 2 == 0}).encode() + b"\n" for i in range(6))
    refused = upload(api, rows, "kto.jsonl")
    assert refused.status_code == 422
    assert any(p["field"] == "id" and "--keep id" in p["message"] for p in refused.json()["error"]["problems"])
    response = upload(api, rows, "kto.jsonl", keep="id", drop="url")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["detected_format"] == "kto" and body["version"]["kind"] == "unpaired_preference"
    assert body["version"]["lineage"]["options"]["keep"] == ["id"]
    first = api.get(f"{API}/datasets/{body['version']['id']}/rows", params={"limit": 1}).json()["rows"][0]
    assert first["desirable"] is True and json.loads(first["metadata"]) == {"id": 0}


@pytest.mark.parametrize("failure", ["enospc", "erofs", "sqlite_full"])
def test_a_full_or_read_only_disk_is_a_507_that_says_so(api, monkeypatch, workspace, failure):
    # The real disk faults run in tests/reliability/test_disk_faults.py (tmpfs mounts, through the CLI);
    # here the API's wording of the same errors, raised where the import writes.
    import errno

    from sqlalchemy.exc import OperationalError

    from oikyo.data import versions

    def full(*_args, **_kwargs):
        if failure == "sqlite_full":
            raise OperationalError("INSERT INTO dataset_versions", {}, Exception("database or disk is full"))
        code = errno.ENOSPC if failure == "enospc" else errno.EROFS
        raise OSError(code, "disk trouble", str(workspace / "tmp" / "x.parquet"))

    monkeypatch.setattr(versions, "import_dataset", full)
    response = upload(api, CHAT)
    assert response.status_code == 507, response.text
    error = response.json()["error"]
    message = error["message"]
    assert error["type"] == "DiskError"
    assert ("read-only" if failure == "erofs" else "no space is left") in message
    assert "nothing was stored" in message and _scratch_empty(workspace)
