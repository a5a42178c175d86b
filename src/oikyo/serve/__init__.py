"""oikyo.serve: deploying model versions, in two layers.

- :mod:`oikyo.serve.engine` generates: one base model, many LoRA adapters, continuous batching,
  streamed text. Evaluation, GRPO rollouts and replay-set building use it directly, with no HTTP.
- :mod:`oikyo.serve.gateway` serves: the OpenAI-compatible HTTP API, the router in front of replica
  processes, A/B splits, API keys, Prometheus metrics, request logs, autoscaling and the deployment
  records. Each native replica process drives one engine; ``--engine vllm`` replicas run vLLM's
  server instead.

The gateway drives an engine; the engine never imports the gateway (tests/serve/test_layers.py
checks it). Import the module you need by its full path (``from oikyo.serve.engine.core import
GenerationEngine``, ``from oikyo.serve.gateway import deployments``): the packages re-export nothing,
so importing a light gateway module (the router, the keys) never loads torch.
"""
