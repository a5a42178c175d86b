#!/usr/bin/env bash
# Installs llama.cpp into .venv-llamacpp, an environment of its own: the llama-cpp-python bindings
# built from source for this CPU, llama.cpp's own GGUF converters (convert_hf_to_gguf.py,
# convert_lora_to_gguf.py) and what they import (torch, transformers, sentencepiece), llama.cpp's own
# server (llama-server, built by scripts/build-llama-server.sh and cached per machine), which
# `oikyo deploy --engine llamacpp` runs as its replicas, and the packages of llama-cpp-python's server,
# the engine's fallback where llama-server cannot be built.
# `oikyo models export --to gguf|ollama` runs those converters and llama.cpp's quantizer there, and
# the test suite checks exported GGUF files by decoding them with llama.cpp.
#   bash scripts/install-llamacpp.sh     (compiles for 25-35 minutes on 2 cores, llama-server included;
#                                         re-running is cheap, and so is a new checkout on the same
#                                         machine: both builds are cached under ~/.cache/oikyo)
# The source distribution is taken from OIKYO_LLAMACPP_SDIST (a .tar.gz) or the cache folder
# ~/.cache/oikyo, where pip downloads it on first use. It vendors llama.cpp: the converters, their
# conversion/ package and gguf-py/ are copied from it into .venv-llamacpp/share/llama.cpp, where
# oikyo looks for them, so the converters and the compiled library come from one llama.cpp commit.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${OIKYO_LLAMACPP_VERSION:-0.3.36}
VENV=.venv-llamacpp
SHARE="$VENV/share/llama.cpp"
PY="$VENV/bin/python"
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/oikyo
# llama.cpp's own server, from the same sources; without it (no cmake, a failed build, or
# OIKYO_LLAMA_SERVER_BUILD=0) the llamacpp engine runs llama-cpp-python's server, which answers one
# request at a time. OIKYO_LLAMA_SERVER_BUILD=0 skips the 15-20 minute build but still copies a build
# that scripts/build-llama-server.sh cached on this machine: scripts/test.sh sets it, since building
# llama-server belongs to the benchmark (bench/bench_serve.py --llama-server), not to CI.
install_server() {
    if [ -x "$VENV/bin/llama-server" ]; then
        return 0
    fi
    if [ "${OIKYO_LLAMA_SERVER_BUILD:-1}" = 0 ]; then
        if SERVER_DIR=$(OIKYO_LLAMACPP_VERSION="$VERSION" bash scripts/build-llama-server.sh --cached); then
            cp "$SERVER_DIR/llama-server" "$VENV/bin/llama-server"
        else
            echo "note: llama-server not built (OIKYO_LLAMA_SERVER_BUILD=0); --engine llamacpp will run llama-cpp-python's server" >&2
        fi
    elif SERVER_DIR=$(OIKYO_LLAMACPP_SDIST="$SDIST" OIKYO_LLAMACPP_VERSION="$VERSION" bash scripts/build-llama-server.sh); then
        cp "$SERVER_DIR/llama-server" "$VENV/bin/llama-server"
    else
        echo "warning: llama-server could not be built; --engine llamacpp will run llama-cpp-python's server" >&2
    fi
}
SDIST=${OIKYO_LLAMACPP_SDIST:-$CACHE/llama_cpp_python-$VERSION.tar.gz}
if [ -x "$PY" ] && [ -f "$SHARE/convert_hf_to_gguf.py" ] \
    && "$PY" -c "import llama_cpp, llama_cpp.server.app, torch, transformers, sentencepiece" 2>/dev/null; then
    install_server
    echo "llama.cpp is already installed in $VENV"
    exit 0
fi
if [ ! -f "$SDIST" ]; then
    mkdir -p "$CACHE"
    "${PYTHON:-python3}" -m pip download --quiet --no-deps --no-binary :all: \
        "llama-cpp-python==$VERSION" -d "$CACHE"
fi
[ -x "$PY" ] || "${PYTHON:-python3}" -m venv "$VENV"
PIP="$PY -m pip"
if ! "$PY" -c "import llama_cpp" 2>/dev/null; then
    # CPU only, tuned for this machine's instruction set; the multimodal (llava/mtmd) library is
    # not needed for text models and would double the build time. Without AMX's int8 code on x86-64,
    # as scripts/build-llama-server.sh says why (this llama.cpp's AMX path crashed decoding q8_0).
    NO_AMX=""
    if [ "$(uname -m)" = x86_64 ]; then
        NO_AMX="-DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8 "
    fi
    export CMAKE_ARGS=${CMAKE_ARGS:-"$NO_AMX-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"}
    # The compiled wheel is kept per machine, as llama-server is: a new environment on the same
    # machine (a fresh checkout, CI) installs it in seconds instead of compiling for 10-15 minutes.
    # Its folder is named by what the build depends on: the version, the Python, the build
    # arguments and the CPU's instruction set (GGML_NATIVE).
    KEY=$( { echo "$VERSION"; "$PY" -c "import sys; print(sys.version)"; echo "$CMAKE_ARGS";
             grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m; } | sha256sum | cut -c1-16)
    WHEELS="$CACHE/llama-cpp-python-wheel-$VERSION-$KEY"
    if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
        rm -rf "$WHEELS.tmp"
        $PIP wheel --quiet --no-deps --wheel-dir "$WHEELS.tmp" "$SDIST"
        rm -rf "$WHEELS"
        mv "$WHEELS.tmp" "$WHEELS"
    fi
    $PIP install --quiet "$WHEELS"/llama_cpp_python-*.whl
fi
# The converters' imports; torch pinned as scripts/install.sh pins it (the CPU build here). Then the
# packages of llama-cpp-python's OpenAI-compatible server (its [server] extra), which
# `oikyo deploy --engine llamacpp` runs as its replicas.
$PIP install --quiet "${OIKYO_TORCH_SPEC:-torch==2.13.0}" transformers sentencepiece \
    uvicorn fastapi pydantic-settings sse-starlette starlette-context PyYAML
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
tar xzf "$SDIST" -C "$TMP"
SRC=$(echo "$TMP"/llama_cpp_python-*/vendor/llama.cpp)
rm -rf "$SHARE"
mkdir -p "$SHARE"
cp -r "$SRC/convert_hf_to_gguf.py" "$SRC/convert_lora_to_gguf.py" "$SRC/conversion" "$SRC/gguf-py" "$SHARE/"
install_server
"$PY" -c "import llama_cpp; print(f'llama-cpp-python {llama_cpp.__version__} installed in $VENV')"
