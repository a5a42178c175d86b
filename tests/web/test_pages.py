"""The dashboard's pages without a browser (an in-process client): the login guard, empty stores,
refs that could be read as paths, paging, and the run form mapping one-to-one onto the YAML config."""

from __future__ import annotations

import pytest
from browserhelpers import TOKEN
from fastapi.testclient import TestClient

PAGES = ["/", "/datasets", "/runs", "/compare", "/rate", "/models", "/deployments"]


@pytest.fixture
def app():
    from oikyo.api.app import create_app

    return create_app(TOKEN)


@pytest.fixture
def client(app):
    with TestClient(app) as logged_in:
        assert logged_in.post("/api/v1/login", json={"token": TOKEN}).status_code == 200
        yield logged_in


def test_pages_need_a_session_and_send_the_user_back_after_login(app):
    with TestClient(app, follow_redirects=False) as anon:
        for path in PAGES + ["/runs?state=failed", "/datasets/anything"]:
            response = anon.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/login?next=%2F"), path
        assert anon.get("/login").status_code == 200
        assert anon.get("/static/api.js").status_code == 200  # assets are public (nothing secret in them)
        anon.cookies.set("oikyo_session", "abc.def")
        assert anon.get("/").status_code == 303  # a cookie not signed with the token's key is no session
        anon.cookies.clear()
        assert 'value="prefilled"' in anon.get("/login?token=prefilled").text
        assert 'value="/runs"' in anon.get("/login?next=/runs").text
        assert 'value="/"' in anon.get("/login?next=//evil.example").text  # never another site


def test_every_page_renders_an_empty_state_with_an_empty_store(client):
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200, path
        assert 'class="empty"' in response.text, f"{path} has no empty state"
        assert "Traceback" not in response.text
        assert "script-src 'self'" in response.headers["content-security-policy"]  # no inline or foreign scripts


@pytest.mark.parametrize("ref", ["..%2F..%2Fetc", "%2e%2e", "%252e%252e", "a%00b", "name%5C..", "x" * 300])
def test_refs_that_could_be_paths_touch_nothing(client, workspace, ref):
    client.get("/compare")  # the workspace's own folders exist (models/ is made on first use)
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*") if "oikyo.db" not in p.name)
    for page in ("/datasets/", "/runs/"):
        response = client.get(page + ref)
        assert response.status_code in (400, 404), (page, ref)
    assert client.get(f"/compare?a={ref}&b=run-1").status_code == 200  # shown as a problem on the page
    after = sorted(p.relative_to(workspace) for p in workspace.rglob("*") if "oikyo.db" not in p.name)
    assert after == before


def test_runs_are_paged_and_filtered(client, tmp_path):
    from jobhelpers import make_dataset, make_model_dir, submit

    dataset = make_dataset(tmp_path)
    model = make_model_dir(tmp_path / "model")
    runs = [submit(dataset, model, name=f"run-number-{i}") for i in range(3)]
    from oikyo.web import pages

    pages.RUNS_PER_PAGE, saved = 2, pages.RUNS_PER_PAGE
    try:
        first, second = client.get("/runs").text, client.get("/runs?page=2").text
    finally:
        pages.RUNS_PER_PAGE = saved
    assert "page 1 of 2" in first and "page 2 of 2" in second
    shown = [r.name for r in runs if r.name in first], [r.name for r in runs if r.name in second]
    assert len(shown[0]) == 2 and len(shown[1]) == 1 and not set(shown[0]) & set(shown[1])
    assert "run-number-0" not in client.get("/runs?state=failed").text
    detail = client.get(f"/runs/{runs[0].id}")
    assert detail.status_code == 200 and "queued" in detail.text and '"live": true' in detail.text


def _leaves(model, prefix=""):
    for name, field in model.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None)
        if sub is not None:
            yield from _leaves(field.annotation, prefix + name + ".")
        else:
            yield prefix + name


def test_the_run_form_has_one_input_per_config_key_with_its_default(client):
    from oikyo.train.config import TrainConfig
    from oikyo.web.runform import form_groups

    fields = {f["path"]: f for group in form_groups() for f in group["fields"]}
    assert sorted(fields) == sorted(_leaves(TrainConfig))
    defaults = TrainConfig().model_dump()
    for path, field in fields.items():
        group, key = path.split(".")
        expected = defaults[group][key]
        shown = ", ".join(expected) if field["kind"] == "list" and isinstance(expected, list) else expected
        assert field["default"] == shown, path
        assert field["description"], f"{path} has no description to show"
    assert fields["train.scheduler"]["kind"] == "choice" and fields["train.scheduler"]["choices"] == ["cosine", "linear", "constant"]
    assert fields["train.max_steps"]["kind"] == "int" and fields["train.max_steps"]["nullable"]
    assert fields["train.lr"]["kind"] == "float" and fields["train.lr"]["max"] == 1
    assert fields["data.packing"]["kind"] == "bool" and fields["lora.target_modules"]["kind"] == "list"
    assert fields["train.report_to"]["kind"] == "multi" and "tensorboard" in fields["train.report_to"]["choices"]
    page = client.get("/runs").text
    for path in fields:
        assert f'data-path="{path}"' in page
