#!/usr/bin/env bash
# Installs lm-evaluation-harness (lm-eval[api] from PyPI) into .venv-lmeval, an environment of its own
# (it pins its own datasets, evaluate and scoring packages). The test suite runs its local-completions
# and local-chat-completions models against a deployment on a local task
# (tests/serve/test_lm_eval_harness.py); without it that test skips, saying why.
#   bash scripts/install-lmeval.sh      (a few minutes; re-running is cheap)
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=${OIKYO_LMEVAL_SPEC:-lm-eval[api]==0.4.13}
VENV=.venv-lmeval
if [ -x "$VENV/bin/lm_eval" ] && "$VENV/bin/python" -c "import lm_eval, transformers" 2>/dev/null; then
    echo "lm-evaluation-harness is already installed in $VENV"
    exit 0
fi
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
# torch first, pinned (the CPU build on a machine without CUDA), as scripts/install.sh does.
$PIP install --quiet "${OIKYO_TORCH_SPEC:-torch==2.13.0}"
# transformers: the harness tokenizes with the served model's own tokenizer (tokenizer_backend=huggingface).
$PIP install --quiet "$SPEC" transformers
"$VENV/bin/python" -c "import lm_eval; print(f'lm-evaluation-harness {lm_eval.__version__} installed in $VENV')"
