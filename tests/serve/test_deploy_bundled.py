"""Slow: deploy the real bundled SmolLM2-135M-Instruct and get a sensible answer through the openai client."""

from __future__ import annotations

import pytest
from openai import OpenAI

from oikyo.serve.gateway import deployments, keys


@pytest.mark.slow
def test_deploy_the_bundled_model_and_ask_it(bundled_in_workspace):
    from oikyo.models.catalog import BUNDLED_NAME

    port = deployments._free_port()
    try:
        info = deployments.deploy(BUNDLED_NAME, name="smol", port=port, wait_s=300)
        _, secret = keys.create("slow-test")
        client = OpenAI(base_url=info["url"], api_key=secret, max_retries=0, timeout=120)
        answer = client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=24, temperature=0)
        assert "Paris" in answer.choices[0].message.content
        streamed = client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=24, temperature=0, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == \
            answer.choices[0].message.content
    finally:
        deployments.stop("smol")


@pytest.mark.slow
def test_serve_and_ask_for_the_quickstart(bundled_in_workspace, tmp_path):
    """``serve_and_ask`` deploys, asks once through the openai client, and stops (no process left running)."""
    from peft import LoraConfig, get_peft_model

    from oikyo.models.catalog import BUNDLED_NAME
    from oikyo.models.loading import load_model
    from oikyo.serve.gateway.ask import serve_and_ask
    from oikyo.store import db
    from oikyo.store.models import ModelVersion, utcnow

    # A freshly initialised LoRA adapter (B = 0) answers exactly like its base model.
    adapter = tmp_path / "adapter"
    get_peft_model(load_model(bundled_in_workspace), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                task_type="CAUSAL_LM")).save_pretrained(adapter)
    with db.session() as s:
        s.add(ModelVersion(id="mv-quick001", run_id=None, base_model=BUNDLED_NAME, kind="adapter", path=str(adapter),
                           lineage={}, created_at=utcnow()))
    lines: list[str] = []
    answer = serve_and_ask("mv-quick001", [{"role": "user", "content": "What is the capital of France?"}], lines.append)
    assert "Paris" in answer
    assert any("answer" in line for line in lines)
    [record] = deployments.list_deployments()
    assert record["status"] == "stopped"
    assert not any(k.revoked_at is None for k in keys.list_keys())
