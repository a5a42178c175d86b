"""GET /api/v1/deployments/{name}/requests/{response_id}/lineage: a served answer's lineage over HTTP
(what `oikyo deployments trace --json` prints), and 404 for what does not exist."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loop"))

from traceseed import seed  # noqa: E402

API = "/api/v1"


def test_the_lineage_of_an_answer(api):
    ids = seed()
    answer = api.get(f"{API}/deployments/bot/requests/{ids['answer']}/lineage")
    assert answer.status_code == 200, answer.text
    info = answer.json()
    assert info["request"]["id"] == ids["answer"] and info["request"]["verdict"] == "corrected"
    assert [hop["model_version"]["id"] for hop in info["chain"]] == [ids["child"], ids["parent"]]
    child = info["chain"][0]
    assert child["run"]["id"] == ids["child_run"] and child["cycle"]["id"] == ids["cycle"]
    assert child["dataset"]["traffic"]["requests"] == 12
    assert child["dataset"]["traffic"]["request_ids"] == ids["traffic_ids"][:5]
    assert info["chain"][1]["dataset"]["id"] == ids["imported"] and info["base_model"] == ids["base"]

    from oikyo.loop.trace import trace

    assert info == trace("bot", ids["answer"])  # the route adds nothing and leaves nothing out


def test_unknown_deployment_or_response_is_404(api, anon):
    ids = seed()
    for path in (f"{API}/deployments/nosuch/requests/{ids['answer']}/lineage",
                 f"{API}/deployments/bot/requests/chatcmpl-nope/lineage"):
        answer = api.get(path)
        assert answer.status_code == 404, answer.text
        assert "no " in answer.json()["error"]["message"]
    assert api.get(f"{API}/deployments/bot/requests/..%2Fetc/lineage").status_code in (400, 404)
    assert anon.get(f"{API}/deployments/bot/requests/{ids['answer']}/lineage").status_code == 401
