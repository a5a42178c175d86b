#!/usr/bin/env bash
# Installs Ray (ray[default] 2.x from PyPI, the `ray` extra of oikyo) into .venv for the Ray executor's tests
# (tests/jobs/test_ray_executor.py: a local `ray start --head` cluster on free ports that trains queued runs).
# Does nothing when Ray is there; without it those tests skip, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/ray ] && .venv/bin/python -c "import ray" >/dev/null 2>&1; then
  exit 0
fi
echo "Installing ray[default] into .venv (for the Ray executor's tests)..." >&2
.venv/bin/python -m pip install --quiet "ray[default]>=2.9,<3"
