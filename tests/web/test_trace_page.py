"""A served answer's lineage page (`/deployments/{name}/requests/{response_id}`), rendered in-process from
seeded records, and the loop page's form that leads there."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from browserhelpers import TOKEN
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loop"))

from traceseed import seed  # noqa: E402


@pytest.fixture
def client(workspace):
    from oikyo.api.app import create_app

    with TestClient(create_app(TOKEN)) as logged_in:
        assert logged_in.post("/api/v1/login", json={"token": TOKEN}).status_code == 200
        yield logged_in


def _section(html: str, section_id: str) -> str:
    return html.split(f'id="{section_id}"', 1)[1].split("</section>", 1)[0]


def test_the_page_draws_the_chain_with_links(client):
    ids = seed()
    page = client.get(f"/deployments/bot/requests/{ids['answer']}")
    assert page.status_code == 200, page.text
    html = page.text
    assert "Traceback" not in html and "script-src 'self'" in page.headers["content-security-policy"]

    request = _section(html, "trace-request")
    assert f'href="/models#{ids["child"]}"' in request and 'data-verdict="corrected"' in request
    assert "rated 1" in request and "“close”" in request

    child = _section(html, f"hop-{ids['child']}")
    assert "Answered by" in child and f'href="#hop-{ids["parent"]}"' in child and "(continue)" in child
    assert f'href="/runs/{ids["child_run"]}"' in child
    assert f'href="/datasets/{ids["traffic"]}"' in child and f"bot-traffic@{ids['traffic']}" in child
    assert "from 12 requests of deployment" in child and 'href="/deployments/bot/loop"' in child
    for rid in ids["traffic_ids"][:5]:  # the first request ids, each leading to its own lineage
        assert f'href="/deployments/bot/requests/{rid}"' in child
    assert ids["traffic_ids"][5] not in child and "and 7 more" in child
    assert f'data-cycle="{ids["cycle"]}"' in child and "state-promoted" in child and "0.7 vs 0.6" in child

    parent = _section(html, f"hop-{ids['parent']}")
    assert "Trained from" in parent and f'href="/runs/{ids["parent_run"]}"' in parent
    assert f'href="/datasets/{ids["imported"]}"' in parent and "data-traffic" not in parent
    assert "data-cycle" not in parent
    assert html.index(f'id="hop-{ids["child"]}"') < html.index(f'id="hop-{ids["parent"]}"')
    assert "tiny-base" in _section(html, "trace-base")


def test_unknown_ids_are_404_pages(client):
    ids = seed()
    assert client.get("/deployments/bot/requests/chatcmpl-nope").status_code == 404
    assert client.get(f"/deployments/nosuch/requests/{ids['answer']}").status_code == 404
    assert client.get("/deployments/bot/requests/..%2Fetc").status_code in (400, 404)


def test_the_loop_page_form_leads_to_the_trace(client):
    ids = seed()
    loop = client.get("/deployments/bot/loop").text  # bot has no policy: the form is there all the same
    form = _section(loop, "loop-trace")
    assert 'action="/deployments/bot/requests"' in form and 'name="id"' in form
    landed = client.get("/deployments/bot/requests", params={"id": ids["answer"]}, follow_redirects=False)
    assert landed.status_code == 303 and landed.headers["location"] == f"/deployments/bot/requests/{ids['answer']}"
    assert f'id="hop-{ids["child"]}"' in client.get("/deployments/bot/requests", params={"id": ids["answer"]}).text
    empty = client.get("/deployments/bot/requests", follow_redirects=False)
    assert empty.status_code == 303 and empty.headers["location"] == "/deployments/bot/loop"


def test_the_page_needs_a_session(workspace):
    from oikyo.api.app import create_app

    with TestClient(create_app(TOKEN), follow_redirects=False) as anon:
        answer = anon.get("/deployments/bot/requests/chatcmpl-x")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=")
