"""The OpenAI-compatible API through the official ``openai`` client: chat, streaming, completions, n, stop, seed.

The replica app runs in a thread over one shared engine (see serving_fixtures.py); every answer
is checked against what the engine generates for the same prompt, so a wrong template, adapter or
choice order shows.
"""

from __future__ import annotations

import httpx
import pytest
from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import BASE_ID, chat, wait_for

from oikyo.models.chat_template import encode_prompt
from oikyo.serve.engine.requests import GenerationRequest

QUESTION = "What is the capital of France?"


def _prompt(engine, content=QUESTION):
    return encode_prompt(engine.tokenizer, [{"role": "user", "content": content}])


def test_chat_answer_equals_greedy_generation_with_usage(replica):
    client = replica.client()
    response = chat(client, BASE_ID, max_tokens=16)
    prompt = _prompt(replica.engine)
    [expected] = replica.engine.generate([GenerationRequest(prompt, max_new_tokens=16)])
    assert response.object == "chat.completion" and response.id.startswith("chatcmpl-")
    assert response.model == BASE_ID
    [choice] = response.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == expected.text and len(set(expected.token_ids)) > 3
    assert choice.finish_reason == "length"
    assert response.usage.prompt_tokens == len(prompt)
    assert response.usage.completion_tokens == 16
    assert response.usage.total_tokens == len(prompt) + 16


def test_stream_chunks_reassemble_to_the_greedy_answer(replica):
    client = replica.client()
    whole = chat(client, BASE_ID, max_tokens=20).choices[0].message.content
    chunks = list(chat(client, BASE_ID, max_tokens=20, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 3  # streamed piece by piece, not in one go
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20  # the include_usage chunk


def test_stream_wire_format_ends_with_done(replica):
    body = {"model": BASE_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "stream": True,
            "temperature": 0}
    with httpx.stream("POST", f"{replica.url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {replica.key}"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_text_completions_with_several_prompts_and_n(replica):
    client = replica.client()
    response = client.completions.create(model=BASE_ID, prompt=["Once upon a time", "The sea"], max_tokens=6, n=2,
                                         temperature=0)
    assert response.object == "text_completion"
    assert [c.index for c in response.choices] == [0, 1, 2, 3]
    tokenizer = replica.engine.tokenizer
    for i, prompt in enumerate(["Once upon a time", "The sea"]):
        ids = tokenizer(prompt)["input_ids"]
        [expected] = replica.engine.generate([GenerationRequest(ids, max_new_tokens=6)])
        assert response.choices[2 * i].text == expected.text == response.choices[2 * i + 1].text
    assert response.usage.completion_tokens == 24
    single = client.completions.create(model=BASE_ID, prompt="Once upon a time", max_tokens=6, temperature=0)
    assert single.choices[0].text == response.choices[0].text


def test_models_lists_the_base_and_every_adapter_version(replica, versions):
    ids = {m.id for m in replica.client().models.list()}
    assert ids == {BASE_ID, *versions.values()}


def test_n_choices_sample_differently_and_reproducibly(replica):
    client = replica.client()
    first = chat(client, BASE_ID, max_tokens=12, temperature=1.0, n=3, seed=11)
    again = chat(client, BASE_ID, max_tokens=12, temperature=1.0, n=3, seed=11)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert len(set(texts)) == 3  # choice j samples with seed + j
    assert texts == [c.message.content for c in again.choices]
    assert first.usage.completion_tokens == 36


def test_seed_reproduces_and_another_seed_differs(replica):
    client = replica.client()
    runs = [chat(client, BASE_ID, max_tokens=16, temperature=0.9, top_p=0.95, seed=seed).choices[0].message.content
            for seed in (5, 5, 6)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_stop_string_ends_the_answer_before_it(replica):
    client = replica.client()
    full = chat(client, BASE_ID, max_tokens=30).choices[0].message.content
    stop = full[len(full) // 2: len(full) // 2 + 3]
    assert stop.strip()
    cut = chat(client, BASE_ID, max_tokens=30, stop=[stop, "never-appears"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == full[: full.index(stop)]
    streamed = chat(client, BASE_ID, max_tokens=30, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == full[: full.index(stop)]


def test_client_disconnect_mid_stream_cancels_the_generation(replica):
    engine = replica.engine
    before = engine.stats()["requests_cancelled"]
    stream = chat(replica.client(), BASE_ID, max_tokens=1500, stream=True)
    received = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received += 1
        if received >= 3:
            break
    stream.close()  # the client goes away mid-stream
    wait_for(lambda: engine.stats()["requests_cancelled"] > before, timeout=10)
    wait_for(lambda: engine.stats()["active_sequences"] == 0 and engine.stats()["queue_depth"] == 0, timeout=10)


@pytest.mark.parametrize("stream", [False, True])
def test_tools_and_multi_turn_messages_are_accepted(replica, stream):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": [{"type": "text", "text": "Weather?"}]}]
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}]
    response = replica.client().chat.completions.create(model=BASE_ID, messages=messages, tools=tools, max_tokens=4,
                                                        temperature=0, stream=stream)
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in response if c.choices) is not None
    else:
        assert response.usage.completion_tokens == 4
