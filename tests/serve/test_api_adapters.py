"""Many LoRA adapters on one base model: each adapter model version answers as itself, from one engine."""

from __future__ import annotations

import threading

import httpx

from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import BASE_ID, ThreadServer, chat, register_version

from oikyo.models.chat_template import encode_prompt
from oikyo.serve.engine.requests import GenerationRequest


def test_each_adapter_version_gives_its_own_output_without_loading_the_base_again(replica, versions):
    client = replica.client()
    engine = replica.engine
    answers = {name: chat(client, mv, max_tokens=16).choices[0].message.content for name, mv in versions.items()}
    base = chat(client, BASE_ID, max_tokens=16).choices[0].message.content
    assert len({answers["support"], answers["sales"], base}) == 3
    prompt = encode_prompt(engine.tokenizer, [{"role": "user", "content": "What is the capital of France?"}])
    for name, mv in versions.items():
        [expected] = engine.generate([GenerationRequest(prompt, max_new_tokens=16, adapter=mv)])
        assert answers[name] == expected.text
    # The base model was not loaded again: one engine object serves all three, with both adapters in it.
    assert replica.app.state.engine is engine
    assert set(versions.values()) <= set(engine.loaded_adapters)


def test_adapters_answer_concurrently_in_shared_batches(replica, versions):
    client = replica.client()
    expected = {mv: chat(client, mv, max_tokens=10).choices[0].message.content for mv in versions.values()}
    steps_before = replica.engine.stats()["steps"]
    results: dict = {}

    def ask(i: int, mv: str) -> None:
        results[i] = (mv, chat(client, mv, max_tokens=10).choices[0].message.content)

    threads = [threading.Thread(target=ask, args=(i, mv)) for i, mv in enumerate(list(versions.values()) * 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    assert all(text == expected[mv] for mv, text in results.values())
    # Six requests of ten tokens alone would take ~60 engine steps; batched together they take far fewer.
    assert replica.engine.stats()["steps"] - steps_before < 50
    # The mixed batches went through the native kernel (CI's machine has a C compiler), and the
    # replica says so.
    stats = httpx.get(f"{replica.url}/stats", headers={"Authorization": f"Bearer {replica.key}"}).json()
    assert stats["lora_products"] == "native kernel"


def test_a_version_registered_after_start_is_served_on_demand(replica, api_adapter_dirs, api_model_dir):
    client = replica.client()
    late = register_version(api_adapter_dirs["support"], str(api_model_dir))
    assert chat(client, late, max_tokens=8).model == late
    assert late in {m.id for m in client.models.list()}


def test_adapters_beyond_the_bound_are_evicted_lru_and_still_answer(api_model_dir, versions):
    from oikyo.serve.engine.core import GenerationEngine
    from oikyo.serve.gateway import keys
    from oikyo.serve.gateway.httpapi import store_keys
    from oikyo.serve.gateway.replica import create_replica_app
    from oikyo.serve.gateway.served_models import ServedNames

    engine = GenerationEngine(api_model_dir, max_batch_size=4, max_adapters=1, num_threads=1)
    engine.start()
    server = ThreadServer(create_replica_app(engine, ServedNames(str(api_model_dir), []), authenticate=store_keys()))
    try:
        from openai import OpenAI

        client = OpenAI(base_url=f"{server.url}/v1", api_key=keys.create()[1], max_retries=0)
        first = {mv: chat(client, mv, max_tokens=8).choices[0].message.content for mv in versions.values()}
        again = {mv: chat(client, mv, max_tokens=8).choices[0].message.content for mv in reversed(versions.values())}
        assert first == again and len(set(first.values())) == 2
        assert len(engine.loaded_adapters) == 1
    finally:
        server.stop()
        engine.stop(drain=False)
