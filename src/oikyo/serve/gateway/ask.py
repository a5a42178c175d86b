"""Deploy a model, ask it one question through the official ``openai`` client, stop it (the quickstart's last step).

    answer = serve_and_ask("mv-1a2b", [{"role": "user", "content": "My order never arrived"}], print)

It runs exactly what a user would: a deployment on a free loopback port (router + one replica
process), a fresh API key, one chat completion through ``openai.OpenAI(base_url=..., api_key=...)``;
then the deployment is stopped (its record stays in the store, as stopped) and the key revoked.
Without the ``openai`` package (a dev extra), the same request is sent with httpx.
"""

from __future__ import annotations

import secrets
from typing import Callable

Log = Callable[[str], None]


def serve_and_ask(model_version_id: str, question_messages: list[dict], log: Log, *, max_tokens: int = 128,
                  wait_s: float = 600.0) -> str:
    """Deploy ``model_version_id``, send ``question_messages`` (greedy), log and return the answer."""
    from oikyo.serve.gateway import deployments, keys

    name = f"quickstart-{secrets.token_hex(3)}"
    port = deployments._free_port()
    log(f"      deploying {model_version_id} as {name} on http://127.0.0.1:{port}/v1 (router + 1 replica)")
    info = deployments.deploy(model_version_id, name=name, port=port, replicas=1, detach=True, wait_s=wait_s)
    key, secret = keys.create(name=f"{name} (quickstart)")
    try:
        answer = _ask(info["url"], secret, name, question_messages, max_tokens)
        log(f"      asked: {question_messages[-1]['content']!r}")
        log(f"      answer: {answer!r}")
        return answer
    finally:
        deployments.stop(name)
        keys.revoke(key.id)
        log(f"      stopped {name} and revoked its key")


def _ask(base_url: str, secret: str, model: str, messages: list[dict], max_tokens: int) -> str:
    try:
        from openai import OpenAI
    except ImportError:
        import httpx

        response = httpx.post(f"{base_url}/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                              json={"model": model, "messages": messages, "max_tokens": max_tokens,
                                    "temperature": 0}, timeout=600, trust_env=False)
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]
    client = OpenAI(base_url=base_url, api_key=secret, max_retries=2, timeout=600)
    completion = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)
    return completion.choices[0].message.content
