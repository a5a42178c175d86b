#!/usr/bin/env bash
# Runs the whole test suite (slow real-model tests and PostgreSQL tests included) in .venv,
# installing first when .venv is missing. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/oikyo ] || bash scripts/install.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
