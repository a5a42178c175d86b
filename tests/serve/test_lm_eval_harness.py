"""lm-evaluation-harness, a real third-party client, against a served model on a task whose data is local.

Its ``local-completions`` model scores each multiple-choice answer through ``/v1/completions`` with
``echo`` and ``logprobs`` (the log-likelihood of the continuation after the context); its
``local-chat-completions`` model generates through ``/v1/chat/completions``. Each log-likelihood the
harness logged is checked against a plain Hugging Face forward of the same model, and each generated
answer against the engine's own greedy answer. lm-eval lives in its own environment
(``scripts/install-lmeval.sh`` -> ``.venv-lmeval``); without it this test skips, saying why.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import BASE_ID

REPO = Path(__file__).resolve().parents[2]
LM_EVAL = REPO / ".venv-lmeval" / "bin" / "lm_eval"

QUESTIONS = [
    {"question": "The sky on a clear day is", "choices": ["blue", "green", "red"], "answer": 0},
    {"question": "Two plus two equals", "choices": ["three", "four", "five"], "answer": 1},
    {"question": "Water freezes at zero degrees", "choices": ["Kelvin", "Fahrenheit", "Celsius"], "answer": 2},
    {"question": "The capital of France is", "choices": ["Paris", "Rome"], "answer": 0},
]
MC_TASK = """task: oikyo_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""
GEN_TASK = """task: oikyo_local_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{choices[answer]}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
"""


def _run_lm_eval(tmp_path: Path, served, model: str, route: str, task: str, extra: list[str]) -> list[dict]:
    """Run lm_eval on ``task`` (from ``tmp_path/tasks``) and return its logged samples."""
    out = tmp_path / f"out-{model}"
    env = {**os.environ, "OPENAI_API_KEY": served.key, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / f"datasets-cache-{model}"),
           "HF_HOME": str(tmp_path / f"hf-home-{model}")}  # one cache each: the two runs may go at once
    args = f"base_url={served.url}/v1/{route},model={BASE_ID},tokenizer={served.model_dir}," \
           "tokenizer_backend=huggingface,num_concurrent=2,max_retries=1,timeout=120"
    command = [str(LM_EVAL), "--model", model, "--model_args", args, "--tasks", task,
               "--include_path", str(tmp_path / "tasks"), "--output_path", str(out), "--log_samples", *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"lm_eval failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    [samples] = list(out.rglob(f"samples_{task}_*.jsonl"))
    return [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]


@pytest.fixture
def harness(tmp_path, replica, api_model_dir):
    if not LM_EVAL.exists():
        pytest.skip(f"{LM_EVAL} is missing: run `bash scripts/install-lmeval.sh` (lm-evaluation-harness)")
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "oikyo_local_mc.yaml").write_text(MC_TASK.format(data=data))
    (tasks / "oikyo_local_gen.yaml").write_text(GEN_TASK.format(data=data))
    replica.model_dir = api_model_dir
    return replica


def _continuation_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context) the way the harness splits the pair (trailing spaces move over)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    start = len(tokenizer(context, add_special_tokens=False).input_ids)
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].float(), dim=-1)
    return float(sum(logprobs[i - 1, whole[i]] for i in range(start, len(whole))))


@pytest.mark.timeout(1800)
def test_lm_eval_harness_scores_and_generates_through_the_api(tmp_path, harness, api_model_dir):
    from oikyo.models.chat_template import encode_prompt
    from oikyo.models.loading import load_model
    from oikyo.serve.engine.requests import GenerationRequest

    # The two harness runs are independent (their own output and caches): they go at once, and most of
    # each is the harness starting up.
    with ThreadPoolExecutor(2) as pool:
        scoring = pool.submit(_run_lm_eval, tmp_path, harness, "local-completions", "completions", "oikyo_local_mc", [])
        generating = pool.submit(_run_lm_eval, tmp_path, harness, "local-chat-completions", "chat/completions",
                                 "oikyo_local_gen", ["--apply_chat_template"])
        scored, generated = scoring.result(), generating.result()
    assert len(scored) == len(QUESTIONS)
    model = load_model(api_model_dir).eval()
    tokenizer = harness.engine.tokenizer
    checked = 0
    for sample in scored:
        for argument, response in zip(sample["arguments"].values(), sample["resps"]):
            context, continuation = argument["arg_0"], argument["arg_1"]
            logprob = float(response[0][0])
            expected = _continuation_logprob(model, tokenizer, context, continuation)
            assert math.isclose(logprob, expected, abs_tol=2e-3), (context, continuation, logprob, expected)
            checked += 1
        chosen = max(range(len(sample["resps"])), key=lambda i: float(sample["resps"][i][0][0]))
        assert sample["acc"] == float(chosen == int(sample["target"]))  # the harness logs the target as text
    assert checked == sum(len(q["choices"]) for q in QUESTIONS)

    assert len(generated) == len(QUESTIONS)
    for sample in generated:
        question = sample["doc"]["question"]
        prompt = encode_prompt(tokenizer, [{"role": "user", "content": question}])
        [own] = harness.engine.generate([GenerationRequest(prompt, max_new_tokens=6)])
        assert sample["resps"][0][0] == own.text.split("\n")[0]  # the harness stops at a newline
