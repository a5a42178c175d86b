"""Lineage of a served answer (oikyo.loop.trace and `oikyo deployments trace`): from a response id through
each model version, its run and dataset version, back to the traffic and the base model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))

from traceseed import seed  # noqa: E402


def test_every_hop_from_the_answer_to_the_base_model(workspace):
    from oikyo.loop.trace import trace

    ids = seed()
    info = trace("bot", ids["answer"])

    request = info["request"]
    assert request["id"] == ids["answer"] and request["model"] == ids["child"] and request["status"] == 200
    assert request["variant"] == ids["child"] and request["created_at"] and not request["logged_content"]
    assert [(f["rating"], f["corrected"], f["comment"]) for f in request["feedback"]] == [
        (1, False, "close"), (None, True, None)]
    assert request["verdict"] == "corrected"

    assert [hop["model_version"]["id"] for hop in info["chain"]] == [ids["child"], ids["parent"]]
    assert info["base_model"] == ids["base"] and info["truncated"] is False

    child = info["chain"][0]
    assert child["model_version"]["kind"] == "adapter" and child["model_version"]["base_model"] == ids["base"]
    assert child["model_version"]["parent"] == ids["parent"] and child["model_version"]["operation"] == "continue"
    assert child["run"]["id"] == ids["child_run"] and child["run"]["state"] == "succeeded"
    dataset = child["dataset"]
    assert (dataset["id"], dataset["name"], dataset["rows"], dataset["format"]) == (
        ids["traffic"], "bot-traffic", 12, "openai")
    traffic = dataset["traffic"]
    assert traffic["deployment"] == "bot" and traffic["requests"] == 12 and traffic["feedback"] == 3
    assert traffic["request_ids"] == ids["traffic_ids"][:5]  # the first few; the count says how many
    assert traffic["model_versions"] == [ids["parent"]]
    assert traffic["time_range"]["first_request"] < traffic["time_range"]["last_request"]
    cycle = child["cycle"]
    assert (cycle["id"], cycle["trigger"], cycle["state"], cycle["champion"]) == (
        ids["cycle"], "new_examples", "promoted", ids["parent"])
    assert cycle["gate"]["passed"] is True and cycle["gate"]["challenger"] == 0.7

    parent = info["chain"][1]
    assert parent["model_version"]["parent"] is None and parent["cycle"] is None
    assert parent["run"]["id"] == ids["parent_run"]
    assert parent["dataset"]["id"] == ids["imported"] and parent["dataset"]["traffic"] is None
    json.dumps(info)  # what the CLI and the API print as it is


def test_an_answer_of_the_base_model_and_a_failed_one(workspace):
    from oikyo.loop.trace import trace

    seed()
    info = trace("bot", "chatcmpl-base0001")
    assert info["chain"] == [] and info["base_model"] == "tiny-base"
    assert info["request"]["status"] == 500 and info["request"]["error"] == "engine down"
    assert info["request"]["feedback"] == [] and info["request"]["verdict"] == "unrated"


def test_unknown_deployment_and_response_ids(workspace):
    from oikyo.errors import OikyoError
    from oikyo.loop.trace import trace
    from oikyo.store import db
    from oikyo.store.models import Deployment

    ids = seed()
    with db.session() as s:
        s.add(Deployment(name="other", model="tiny-base", variants=[], host="127.0.0.1", port=9000, state="stopped"))
    with pytest.raises(OikyoError, match="no deployment named 'nosuch'"):
        trace("nosuch", ids["answer"])
    with pytest.raises(OikyoError, match="no response 'chatcmpl-nope' in deployment 'bot'"):
        trace("bot", "chatcmpl-nope")
    with pytest.raises(OikyoError, match="no response"):  # an answer of another deployment is not this one's
        trace("other", ids["answer"])


def test_a_missing_record_ends_the_chain_and_a_loop_is_cut(workspace):
    from oikyo.loop import trace as trace_mod
    from oikyo.store import db
    from oikyo.store.models import ModelVersion, ServedRequest

    ids = seed()
    with db.session() as s:
        s.get(ModelVersion, ids["parent"]).lineage = {"parent_model_version": "mv-gone0001"}
    info = trace_mod.trace("bot", ids["answer"])
    assert [hop["model_version"]["id"] for hop in info["chain"]] == [ids["child"], ids["parent"], "mv-gone0001"]
    assert info["chain"][-1]["missing"] is True and info["base_model"] is None and not info["truncated"]

    with db.session() as s:  # a lineage that names itself again further down: cut, not followed forever
        s.get(ModelVersion, ids["parent"]).lineage = {"parent_model_version": ids["child"]}
    info = trace_mod.trace("bot", ids["answer"])
    assert [hop["model_version"]["id"] for hop in info["chain"]] == [ids["child"], ids["parent"]]
    assert info["truncated"] is True and info["base_model"] is None

    with db.session() as s:  # a long honest chain stops at MAX_DEPTH
        previous = "tiny-base"
        for i in range(trace_mod.MAX_DEPTH + 5):
            mv_id = f"mv-deep{i:04d}"
            s.add(ModelVersion(id=mv_id, base_model="tiny-base", kind="adapter", path="/m",
                               lineage={"parent_model_version": previous} if previous.startswith("mv-") else {}))
            previous = mv_id
        s.add(ServedRequest(id="chatcmpl-deep", deployment="bot", model=previous, endpoint="chat", status=200,
                            latency_s=0.1))
    info = trace_mod.trace("bot", "chatcmpl-deep")
    assert len(info["chain"]) == trace_mod.MAX_DEPTH and info["truncated"] is True


def test_the_cli_prints_one_block_per_hop(workspace):
    from oikyo.cli.main import app

    ids = seed()
    runner = CliRunner()
    result = runner.invoke(app, ["deployments", "trace", "bot", ids["answer"]])
    assert result.exit_code == 0, result.output
    text = result.output
    for expected in (f"response {ids['answer']}", f"answered by {ids['child']}", f"from {ids['parent']}",
                     "run-child001", "bot-traffic@bbbb00000002: 12 rows", "12 requests of deployment bot",
                     "chatcmpl-old0000", "(+7)", "lc-trace001", "gate passed", "support-chats@aaaa00000001",
                     "base model tiny-base", "corrected"):
        assert expected in text, (expected, text)
    assert text.index(ids["child"]) < text.index(f"from {ids['parent']}") < text.index("base model")

    as_json = runner.invoke(app, ["deployments", "trace", "bot", ids["answer"], "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.output)["chain"][1]["model_version"]["id"] == ids["parent"]

    unknown = runner.invoke(app, ["deployments", "trace", "bot", "chatcmpl-nope"])
    assert unknown.exit_code != 0 and "no response 'chatcmpl-nope'" in unknown.output
    assert "Traceback" not in unknown.output

    helped = runner.invoke(app, ["deployments", "trace", "--help"])
    assert helped.exit_code == 0 and "response_id" in helped.output.lower() and "chatcmpl" in helped.output
