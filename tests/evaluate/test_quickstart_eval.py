"""The quickstart's evaluation step shows forgetting: it runs the general-ability probe, not only the task."""

from __future__ import annotations

from oikyo import quickstart


def test_the_quickstart_evaluation_runs_the_forgetting_probe(monkeypatch):
    calls = []

    def fake_evaluate_against_base(model_version_id, dataset_id, **kwargs):
        calls.append((model_version_id, dataset_id, kwargs))
        return {"evaluations": {"model": "ev-1", "base": "ev-2"}}

    monkeypatch.setattr("oikyo.evaluate.evaluate_against_base", fake_evaluate_against_base)
    lines = []
    assert quickstart._evaluate("mv-1", "ds-1", lines.append) == {"model": "ev-1", "base": "ev-2"}
    [(model, dataset, kwargs)] = calls
    assert (model, dataset, kwargs["split"], kwargs["probe"]) == ("mv-1", "ds-1", "test", True)
    assert "forgetting" in lines[0]

