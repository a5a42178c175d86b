"""Path traversal on the serving API (issue 22): hostile model names (the router's and the replica's
``model`` field, which names model versions and adapters), response ids (``/v1/feedback``) and user
ids are refused (400/404 in OpenAI's shape, never a 5xx), and nothing outside the workspace is read:
a bait model folder and adapter outside keep their access times, and no file appears beside them."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from serving_fixtures import *  # noqa: F401,F403


def _values(outside: Path) -> list[str]:
    out = []
    for depth in (1, 3, 6):
        up = "../" * depth
        out += [f"{up}outside/model", f"{up.replace('/', chr(92))}outside", quote(f"{up}outside/model", safe=""),
                quote(quote(f"{up}outside/model", safe=""), safe="")]
    return out + [str(outside / "model"), str(outside / "adapter"), f"{outside}/model\x00", "x\x00y", "/etc/passwd",
                  "..", ".", f"file://{outside}/model", "\\\\server\\share", "mv-../../x", "bot/../../x"]


@pytest.fixture
def bait(tmp_path, api_model_dir, api_adapter_dirs):
    """A copy of the served model and an adapter outside the workspace, access times backdated."""
    import shutil

    outside = tmp_path / "outside"
    shutil.copytree(api_model_dir, outside / "model")
    shutil.copytree(api_adapter_dirs["support"], outside / "adapter")
    files = [p for p in outside.rglob("*") if p.is_file()]
    for path in files:
        stat = path.stat()
        os.utime(path, (stat.st_mtime - 3600, stat.st_mtime))
    atimes = {p: p.stat().st_atime for p in files}
    yield outside
    assert sorted(p for p in outside.rglob("*") if p.is_file()) == sorted(files), "files appeared outside"
    read = [str(p.relative_to(outside)) for p, atime in atimes.items() if p.stat().st_atime != atime]
    assert not read, f"files outside the workspace were read: {read}"


@pytest.mark.parametrize("server", ["routed", "replica"])
def test_hostile_model_names_response_ids_and_users_are_refused(server, request, bait):
    served = request.getfixturevalue(server)
    values = _values(bait)
    headers = {"Authorization": f"Bearer {served.key}"}
    wrong, sent = {}, 0
    with httpx.Client(base_url=served.url, headers=headers, timeout=60) as client:
        for value in values:
            attempts = [
                ("/v1/chat/completions", {"model": value, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
                ("/v1/completions", {"model": value, "prompt": "hi", "max_tokens": 1}),
            ]
            if server == "routed":
                attempts.append(("/v1/feedback", {"response_id": value, "rating": 1}))
            for path, body in attempts:
                response = client.post(path, json=body)
                sent += 1
                error = response.json().get("error") or {}
                if response.status_code not in (400, 404) or not error.get("message"):
                    wrong[f"{path} {value!r}"] = f"{response.status_code} {response.text[:150]}"
            if value not in values[::5]:
                continue
            # A hostile user id or header only steers the A/B choice: served, nothing read.
            response = client.post("/v1/chat/completions", headers={"X-User-Id": value.replace("\x00", "")},
                                   json={"model": "bot" if server == "routed" else "tiny-base", "user": value,
                                         "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
            sent += 1
            if response.status_code != 200:
                wrong[f"user {value!r}"] = f"{response.status_code} {response.text[:150]}"
    print(f"serving traversal sweep ({server}): {len(values)} values, {sent} requests")
    assert not wrong, wrong
