"""A deployment's loop page (`/deployments/{name}/loop`), rendered in-process from seeded loop records:
the policy, the cycle in progress, the cycles with their links and figures, the decisions."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from browserhelpers import TOKEN
from fastapi.testclient import TestClient

CHAMPION, CHALLENGER, FAILED = "mv-aaaa1111", "mv-bbbb2222", "mv-cccc3333"


@pytest.fixture
def client(workspace):
    from oikyo.api.app import create_app

    with TestClient(create_app(TOKEN)) as logged_in:
        assert logged_in.post("/api/v1/login", json={"token": TOKEN}).status_code == 200
        yield logged_in


def _deployment(name: str) -> None:
    from oikyo.store import db
    from oikyo.store.models import Deployment

    with db.session() as s:
        s.add(Deployment(name=name, model=CHALLENGER, variants=[{"label": CHALLENGER, "model": CHALLENGER, "weight": 100}],
                         host="127.0.0.1", port=8999, state="stopped"))


@pytest.fixture
def seeded(workspace) -> dict:
    """Deployment "bot" with a policy, a promoted cycle (dataset from 37 requests, gate passed, canary
    verdict recorded), a cycle that failed its gate, and one in training now."""
    from oikyo.loop import policy, records
    from oikyo.store import db
    from oikyo.store.models import DatasetVersion, LoopCycle, utcnow

    _deployment("bot")
    _deployment("quiet")  # a deployment without a policy
    records.apply(policy.parse({"deployment": "bot", "triggers": {"new_examples": 50, "drift": True},
                                "train": {"config": {}, "replay": 0.3}, "gate": {"dataset": "gate-set"},
                                "canary": {"share": 0.25}}))
    now = utcnow()
    with db.session() as s:
        s.add(DatasetVersion(id="d7a1f00d0001", content_hash="d7a1f00d0001" + "0" * 52, name="bot-traffic",
                             kind="conversations", rows=37, artifact="sha256/none",
                             lineage={"operation": "from_traffic", "deployment": "bot", "model_versions": [CHAMPION],
                                      "request_ids": [f"req-{i}" for i in range(37)]}))
        s.add(LoopCycle(id="lc-00000001", deployment="bot", state="promoted", trigger="new_examples",
                        reason="52 usable examples", champion=CHAMPION, challenger=CHALLENGER,
                        dataset_version_id="d7a1f00d0001", run_id="run-1a2b3c4d",
                        eval_jobs={"challenger": "run-e0000001", "champion": "run-e0000002"},
                        details={"gate": {"passed": True, "metric": "exact_match", "challenger": 0.71,
                                          "champion": 0.64, "gain": 0.07, "gain_low": 0.012, "forgetting": 0.01,
                                          "reason": "exact_match 0.71 against the champion's 0.64"}},
                        canary_started_at=now - timedelta(hours=3), created_at=now - timedelta(hours=4),
                        updated_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=2)))
        s.add(LoopCycle(id="lc-00000002", deployment="bot", state="gate_failed", trigger="drift",
                        reason="drift alarm", champion=CHALLENGER, challenger=FAILED, run_id="run-5e6f7a8b",
                        details={"gate": {"passed": False, "metric": "exact_match", "challenger": 0.5,
                                          "champion": 0.71, "gain": -0.21, "gain_low": -0.3}},
                        created_at=now - timedelta(hours=1), updated_at=now - timedelta(minutes=30),
                        finished_at=now - timedelta(minutes=30)))
        s.add(LoopCycle(id="lc-00000003", deployment="bot", state="training", trigger="manual",
                        reason="started by hand", champion=CHALLENGER, run_id="run-9c0d1e2f",
                        created_at=now - timedelta(minutes=5), updated_at=now))
    records.decide("bot", "lc-00000001", "promote", "the challenger is at least as good (within 0.02) after 120 "
                   "requests", key="verdict",
                   details={"action": "promote", "champion_requests": 360, "challenger_requests": 120,
                            "champion_bad": 14, "challenger_bad": 3, "likelihood_ratio": 0.0421, "threshold": 20.0})
    records.decide("bot", "lc-00000002", "gate_failed", "possibly worse by more than 0.02: exact_match 0.5",
                   key="gate")
    records.decide("bot", "lc-00000003", "train", "training run run-9c0d1e2f queued", key="train")
    return {"deployment": "bot"}


def _rows(html: str, section: str) -> dict[str, str]:
    """The rows of a section's table by their data-cycle id."""
    body = html.split(f'id="{section}"', 1)[1].split("</section>", 1)[0]
    return dict(re.findall(r'<tr data-cycle="([^"]+)"[^>]*>(.*?)</tr>', body, re.S))


def test_the_loop_page_shows_policy_cycles_figures_and_decisions(client, seeded):
    page = client.get("/deployments/bot/loop")
    assert page.status_code == 200, page.text
    html = page.text
    assert "Traceback" not in html and "script-src 'self'" in page.headers["content-security-policy"]
    assert 'badge state-active">active' in html
    policy = html.split('id="loop-policy"', 1)[1].split("</section>", 1)[0]
    assert "50 new examples" in policy and "drift alarm" in policy and "25.0% of traffic" in policy
    assert 'href="/datasets/gate-set"' in policy and "replay 0.3" in policy

    current = html.split('id="loop-current"', 1)[1].split("</section>", 1)[0]
    assert "lc-00000003" in current and "training" in current and 'href="/runs/run-9c0d1e2f"' in current

    rows = _rows(html, "loop-cycles")
    assert list(rows) == ["lc-00000003", "lc-00000002", "lc-00000001"]  # newest first
    promoted = rows["lc-00000001"]
    assert 'href="/datasets/d7a1f00d0001"' in promoted and "bot-traffic@d7a1f00d0001" in promoted
    assert "from 37 requests of deployment" in promoted
    assert 'href="/runs/run-1a2b3c4d"' in promoted
    assert f'href="/models#{CHAMPION}"' in promoted and f'href="/models#{CHALLENGER}"' in promoted
    assert 'href="/runs/run-e0000001"' in promoted and 'href="/runs/run-e0000002"' in promoted
    assert f'href="/compare?a={CHALLENGER}&amp;b={CHAMPION}"' in promoted
    assert "passed" in promoted and "0.71 vs 0.64" in promoted and "forgetting 0.01" in promoted
    assert "challenger 3/120 bad" in promoted and "champion 14/360 bad" in promoted and "LR 0.0421" in promoted
    assert "<b>promote</b>" in promoted and "state-promoted" in promoted

    failed = rows["lc-00000002"]
    assert "state-gate_failed" in failed and 'state-failed">failed' in failed and "0.5 vs 0.71" in failed
    assert "possibly worse by more than 0.02" in failed
    assert " bad ·" not in failed  # it never reached a canary

    decisions = html.split('id="loop-decisions"', 1)[1].split("</section>", 1)[0]
    for text in ("policy_applied", "promote", "gate_failed", "training run run-9c0d1e2f queued"):
        assert text in decisions
    assert decisions.index("train") < decisions.index("policy_applied")  # newest first

    assert 'data-loop-action="pause"' in html and "cancel" in html
    assert re.search(r'data-loop-action="trigger" disabled', html)  # a cycle is running: no second one


def test_a_running_canary_shows_its_figures_so_far(client, seeded):
    from oikyo.loop import records
    from oikyo.store import db
    from oikyo.store.models import ServedRequest, utcnow

    started = utcnow() - timedelta(minutes=2)
    records.update_cycle("lc-00000003", state="canary", challenger=FAILED, canary_started_at=started)
    with db.session() as s:  # 8 champion answers (1 an error), 4 challenger answers (2 empty)
        for i in range(12):
            model = CHALLENGER if i < 8 else FAILED
            s.add(ServedRequest(id=f"req-{i}", deployment="bot", variant=model, model=model, endpoint="chat",
                                status=500 if i == 0 else 200, latency_s=0.1,
                                quality={"empty": i >= 10}, created_at=started + timedelta(seconds=i + 1)))
    html = client.get("/deployments/bot/loop").text
    current = html.split('id="loop-current"', 1)[1].split("</section>", 1)[0]
    assert "state-canary" in current
    assert "challenger 2/4 bad" in current and "champion 1/8 bad" in current and "so far" in current
    assert "so far" in _rows(html, "loop-cycles")["lc-00000003"]


def test_a_paused_loop_and_a_deployment_without_a_policy(client, seeded):
    from oikyo.loop import records

    records.set_paused("bot", True)
    html = client.get("/deployments/bot/loop").text
    assert 'badge state-paused">paused' in html and 'data-loop-action="resume"' in html

    quiet = client.get("/deployments/quiet/loop")
    assert quiet.status_code == 200 and 'class="empty"' in quiet.text
    assert "oikyo loop apply POLICY.yaml" in quiet.text and "loop-cycles" not in quiet.text

    assert client.get("/deployments/nosuch/loop").status_code == 404
    assert client.get("/deployments/..%2Fetc/loop").status_code in (400, 404)


def test_links_to_the_loop_page_and_traffic_lineage(client, seeded):
    deployments = client.get("/deployments").text
    assert 'href="/deployments/bot/loop"' in deployments and 'href="/deployments/quiet/loop"' in deployments
    bot_card = deployments.split('id="dep-bot"', 1)[1].split("</section>", 1)[0]
    assert "state-active" in bot_card
    assert "no policy" in deployments.split('id="dep-quiet"', 1)[1].split("</section>", 1)[0]

    dataset = client.get("/datasets/d7a1f00d0001").text  # a version built from traffic says from what
    traffic = re.search(r"<dd data-traffic>(.*?)</dd>", dataset, re.S).group(1)
    assert "37 requests of deployment" in traffic and 'href="/deployments/bot/loop"' in traffic
    assert f'href="/models#{CHAMPION}"' in traffic

    from oikyo.store import db
    from oikyo.store.models import ModelVersion

    with db.session() as s:  # the models page has the anchor those links land on
        s.add(ModelVersion(id=CHAMPION, base_model="tiny", kind="adapter", path="/nowhere",
                           lineage={"dataset_version": "d7a1f00d0001"}))
    assert f'<tr id="{CHAMPION}">' in client.get("/models").text


def test_the_loop_page_needs_a_session(workspace):
    from oikyo.api.app import create_app

    with TestClient(create_app(TOKEN), follow_redirects=False) as anon:
        answer = anon.get("/deployments/bot/loop")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=")


@pytest.mark.browser
def test_in_a_browser_the_loop_page_pauses_cancels_and_traces(dash, seeded):
    """The manual actions act on the store and the page draws them; the trace form leads to an answer's page."""
    from oikyo.loop import records
    from oikyo.store import db
    from oikyo.store.models import ServedRequest, utcnow

    with db.session() as s:
        s.add(ServedRequest(id="chatcmpl-trace01", deployment="bot", variant=CHALLENGER, model=CHALLENGER,
                            endpoint="chat", status=200, latency_s=0.2, created_at=utcnow()))
    page = dash.page
    dash.login("/deployments/bot/loop")
    assert page.locator("#loop-cycles tbody tr").count() == 3
    page.click('[data-loop-action="pause"]')
    page.wait_for_selector('[data-loop-action="resume"]')
    assert records.get_record("bot").paused is True
    assert "paused" in page.inner_text("h1").lower()
    dash.shot("paused")
    page.click('[data-loop-action="resume"]')
    page.wait_for_selector('[data-loop-action="pause"]')
    assert records.get_record("bot").paused is False
    assert "active" in page.inner_text("h1").lower()

    page.once("dialog", lambda dialog: dialog.accept())  # "Cancel the cycle in progress?"
    page.click('[data-loop-action="cancel"]')
    page.locator("#loop-decisions", has_text="cancelled by the user").wait_for()  # drawn again after the action
    assert records.open_cycle("bot") is None and records.get_cycle("lc-00000003").state == "cancelled"
    assert page.locator('[data-loop-action="cancel"]').is_disabled()

    page.fill('#trace-form input[name="id"]', "chatcmpl-trace01")
    page.click('#trace-form button[type="submit"]')
    page.wait_for_url(f"{dash.url}/deployments/bot/requests/chatcmpl-trace01")
    assert CHALLENGER in page.inner_text("main")
    dash.shot("trace")
