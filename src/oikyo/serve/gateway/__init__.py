"""The serving gateway: deployments, the router and its replicas, and everything around the engine.

A deployment (``oikyo deploy``) is a router process (``python -m oikyo.serve.gateway.router NAME``)
in front of pools of replica processes (``python -m oikyo.serve.gateway.replica``), each driving
one :mod:`oikyo.serve.engine` engine, or a vLLM server with ``--engine vllm``, or llama.cpp's server
with ``--engine llamacpp``.

Modules:

- ``deployments``: deployment records in the store; start, stop, list (the service API that the
  CLI, the REST API and the dashboard adapt).
- ``router``: the public endpoint: authenticate, choose the variant, forward to a replica, record.
- ``replicas``: replica pools behind a router: spawn, health-check, replace, scale.
- ``replica``: one replica process: the OpenAI-compatible API over one engine.
- ``vllm_replicas``: ``--engine vllm``: pools whose replicas are vLLM's OpenAI server.
- ``llamacpp_replicas``: ``--engine llamacpp``: pools whose replicas are llama.cpp's OpenAI server
  over GGUF conversions of the base model and its adapters.
- ``autoscale``: how many replicas a pool should run (``--replicas auto``).
- ``served_models``: which model a name in a request means, and what an engine must load for it.
- ``openai_api``: the OpenAI wire format: request schemas, engine requests, response bodies.
- ``httpapi``: OpenAI-shaped errors and bearer-token authentication, shared by router and replica.
- ``keys``: API keys (stored as hashes, revocable).
- ``ab``: A/B traffic splits (sticky per user) and the report comparing variants.
- ``metrics``: the router's Prometheus metrics (``GET /metrics``).
- ``request_log``: one row per served request, feedback, export as a dataset.
- ``traffic``: a deployment's requests, errors and latency over time, for dashboards.
- ``ask``: deploy, ask one question through the ``openai`` client, stop (the quickstart).
"""
