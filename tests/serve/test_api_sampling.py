"""logprobs, logit_bias and presence/frequency penalties on both routes, through the official client.

Every figure is checked against a plain Hugging Face forward of the same model: log-probabilities
are the raw distribution's ``log_softmax``, and greedy decoding with bias and penalties follows
OpenAI's definition (``logit -= presence * (count > 0) + frequency * count``) step by step.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import BASE_ID

from oikyo.models.chat_template import encode_prompt
from oikyo.serve.engine.logits import RowLogits
from oikyo.serve.engine.requests import GenerationRequest
from oikyo.serve.engine.sampling import RowSampling, choose_tokens

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def hf_model(api_model_dir):
    from oikyo.models.loading import load_model

    return load_model(api_model_dir).eval()


def _raw_logprobs(model, prompt: list[int], generated: list[int]) -> torch.Tensor:
    """(len(generated), vocab): log_softmax of the model's logits before each generated token."""
    ids = torch.tensor([prompt + generated])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : len(prompt) + len(generated) - 1]
    return torch.log_softmax(logits.float(), dim=-1)


def _greedy_with_processing(model, prompt, steps, bias, presence, frequency) -> list[int]:
    """Greedy decoding with OpenAI's logit bias and penalties, the plain way: a full forward per step."""
    out: list[int] = []
    counts = torch.zeros(model.config.vocab_size)
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + out])).logits[0, -1].float()
        for token, value in bias.items():
            logits[token] += value
        logits -= presence * (counts > 0) + frequency * counts
        token = int(logits.argmax())
        out.append(token)
        counts[token] += 1
    return out


def test_chat_logprobs_are_the_raw_distribution_with_top_alternatives(replica, hf_model):
    client = replica.client()
    response = client.chat.completions.create(model=BASE_ID, messages=[{"role": "user", "content": QUESTION}],
                                              max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = response.choices[0].logprobs.content
    tokenizer = replica.engine.tokenizer
    prompt = encode_prompt(tokenizer, [{"role": "user", "content": QUESTION}])
    ids = replica.engine.generate([GenerationRequest(prompt, max_new_tokens=6)])[0].token_ids
    assert [e.token for e in content] == [tokenizer.decode([i]) for i in ids]
    assert len(content) == response.usage.completion_tokens == 6
    assert "".join(e.token for e in content) == response.choices[0].message.content
    reference = _raw_logprobs(hf_model, prompt, ids)
    for step, entry in enumerate(content):
        assert entry.bytes == list(entry.token.encode("utf-8"))
        assert math.isclose(entry.logprob, float(reference[step, ids[step]]), abs_tol=1e-3)
        values, top_ids = reference[step].topk(3)
        assert [t.token for t in entry.top_logprobs] == [tokenizer.decode([i]) for i in top_ids.tolist()]
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(values.tolist(), abs=1e-3)
        assert entry.top_logprobs[0].token == entry.token  # greedy picks the most likely token
    plain = client.chat.completions.create(model=BASE_ID, messages=[{"role": "user", "content": QUESTION}],
                                           max_tokens=2, temperature=0)
    assert plain.choices[0].logprobs is None


def test_streamed_logprobs_add_up_to_the_whole_answer(replica):
    client = replica.client()
    params = {"model": BASE_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 12, "temperature": 0,
              "logprobs": True, "top_logprobs": 2}
    whole = client.chat.completions.create(**params).choices[0].logprobs.content
    streamed = [e for chunk in client.chat.completions.create(**params, stream=True)
                if chunk.choices and chunk.choices[0].logprobs for e in chunk.choices[0].logprobs.content]
    assert [(e.token, round(e.logprob, 5)) for e in streamed] == [(e.token, round(e.logprob, 5)) for e in whole]
    text = {"model": BASE_ID, "prompt": "Once upon", "max_tokens": 10, "temperature": 0, "logprobs": 2}
    legacy = client.completions.create(**text).choices[0].logprobs
    chunks = [c.choices[0].logprobs for c in client.completions.create(**text, stream=True) if c.choices[0].logprobs]
    assert [t for c in chunks for t in c.tokens] == legacy.tokens
    assert [o for c in chunks for o in c.text_offset] == legacy.text_offset


def test_completion_logprobs_have_the_legacy_shape(replica):
    choice = replica.client().completions.create(model=BASE_ID, prompt="The sea is", max_tokens=8, temperature=0,
                                                 logprobs=3).choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 8
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(8)]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert logprob <= 0 and top[token] == logprob  # the chosen token is always among them
        assert 3 <= len(top) <= 4 and max(top.values()) == logprob  # greedy: the chosen one is the most likely


def test_echo_scores_the_prompt_as_scoring_harnesses_read_it(replica, hf_model):
    # lm-evaluation-harness's local-completions model sends token ids, echo, logprobs 1 and max_tokens 1,
    # then sums token_logprobs[context:-1] and checks each token against its top alternative.
    tokenizer = replica.engine.tokenizer
    context, continuation = tokenizer("The sea is")["input_ids"], tokenizer(" blue and deep")["input_ids"]
    ids = context + continuation
    client = replica.client()
    choice = client.completions.create(model=BASE_ID, prompt=[ids], max_tokens=1, temperature=0, logprobs=1,
                                       echo=True).choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(ids) + 1
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert choice.text.startswith(tokenizer.decode(ids)) and "".join(lp.tokens) == choice.text
    reference = _raw_logprobs(hf_model, ids[:1], ids[1:])  # the model's distribution before each prompt token
    for position in range(1, len(ids)):
        expected = float(reference[position - 1, ids[position]])
        assert math.isclose(lp.token_logprobs[position], expected, abs_tol=1e-3)
        top_value = float(reference[position - 1].max())
        assert max(lp.top_logprobs[position].values()) == pytest.approx(top_value, abs=1e-3)
    score = sum(lp.token_logprobs[len(context):-1])
    assert math.isclose(score, float(sum(reference[p - 1, ids[p]] for p in range(len(context), len(ids)))),
                        abs_tol=1e-3)
    # A text prompt comes back as sent; max_tokens 0 returns the prompt alone.
    only = client.completions.create(model=BASE_ID, prompt="The sea is", max_tokens=0, echo=True, logprobs=0)
    assert only.choices[0].text == "The sea is" and only.usage.completion_tokens == 0
    assert len(only.choices[0].logprobs.tokens) == len(context)
    plain = client.completions.create(model=BASE_ID, prompt="The sea is", max_tokens=2, echo=True)
    assert plain.choices[0].text.startswith("The sea is") and plain.choices[0].logprobs is None


def test_bias_and_penalties_follow_openais_definition(replica, hf_model):
    client = replica.client()
    prompt = encode_prompt(replica.engine.tokenizer, [{"role": "user", "content": QUESTION}])
    plain = _greedy_with_processing(hf_model, prompt, 8, {}, 0.0, 0.0)
    bias = {plain[0]: -100.0, plain[3]: 4.0}
    expected = _greedy_with_processing(hf_model, prompt, 8, bias, 0.7, 0.9)
    assert expected != plain  # the settings change the answer, so ignoring them would fail
    response = client.completions.create(model=BASE_ID, prompt=prompt, max_tokens=8, temperature=0,
                                         logit_bias={str(k): v for k, v in bias.items()}, presence_penalty=0.7,
                                         frequency_penalty=0.9)
    assert response.choices[0].text == replica.engine.tokenizer.decode(expected, skip_special_tokens=True)


def test_processed_rows_leave_plain_rows_of_the_batch_alone():
    logits = torch.tensor([[0.0, 1.0, 3.0, 2.0], [0.0, 1.0, 3.0, 2.0]])
    banned = RowSampling(logits=RowLogits(logit_bias={2: -100.0}, frequency_penalty=2.0, top_logprobs=1))
    assert choose_tokens(logits, [RowSampling(), banned]) == [2, 3]
    entry = banned.logits.accept(3)
    assert entry.logprob == pytest.approx(float(torch.log_softmax(logits[1], -1)[3]))  # raw, before the bias
    assert [t.token_id for t in entry.top] == [2]
    assert choose_tokens(logits, [RowSampling(), banned]) == [2, 1]  # token 3: 2.0 - 2 * 1 < 1.0
    assert torch.equal(logits, torch.tensor([[0.0, 1.0, 3.0, 2.0], [0.0, 1.0, 3.0, 2.0]]))  # input untouched


def test_the_router_forwards_the_sampling_parameters_unchanged(routed):
    # The router passes bodies through as they are (what lets vLLM replicas take these parameters natively).
    response = routed.client().chat.completions.create(
        model="bot", messages=[{"role": "user", "content": "Hi"}], max_tokens=40, temperature=0, logprobs=True,
        top_logprobs=1, frequency_penalty=0.5, logit_bias={"198": -100},
        response_format={"type": "json_schema", "json_schema": {"name": "yes", "schema": {
            "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
            "additionalProperties": False}}})
    choice = response.choices[0]
    assert set(json.loads(choice.message.content)) == {"ok"}
    assert "".join(e.token for e in choice.logprobs.content) == choice.message.content
