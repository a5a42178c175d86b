#!/usr/bin/env bash
# Builds llama.cpp's own OpenAI-compatible server (`llama-server`) and its quantizer (`llama-quantize`)
# from the llama.cpp sources vendored in the llama-cpp-python source distribution, the one that
# scripts/install-llamacpp.sh builds the bindings from, so both are one llama.cpp commit.
#   bash scripts/build-llama-server.sh      (cmake, 15-20 minutes on 2 cores; re-running is cheap)
# It prints the folder that holds the two programs, cached outside the repository (one build per
# machine and release, under ~/.cache/oikyo/llama-server-VERSION/bin). Its users:
# - scripts/install-llamacpp.sh copies llama-server into .venv-llamacpp/bin, where
#   `oikyo deploy --engine llamacpp` finds it and runs it as its replicas;
# - bench/bench_serve.py --llama-server DIR measures llama-server as the peer (issue 21).
set -euo pipefail
VERSION=${OIKYO_LLAMACPP_VERSION:-0.3.36}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/oikyo
OUT="$CACHE/llama-server-$VERSION"
if [ -x "$OUT/bin/llama-server" ] && [ -x "$OUT/bin/llama-quantize" ]; then
    echo "$OUT/bin"
    exit 0
fi
SDIST=${OIKYO_LLAMACPP_SDIST:-$CACHE/llama_cpp_python-$VERSION.tar.gz}
if [ ! -f "$SDIST" ]; then
    mkdir -p "$CACHE"
    "${PYTHON:-python3}" -m pip download --quiet --no-deps --no-binary :all: \
        "llama-cpp-python==$VERSION" -d "$CACHE" >&2
fi
command -v cmake >/dev/null || { echo "cmake is needed to build llama-server" >&2; exit 2; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
tar xzf "$SDIST" -C "$WORK"
SRC=$(echo "$WORK"/llama_cpp_python-*/vendor/llama.cpp)
# CPU only, tuned for this machine's instruction set (as the bindings are built); no curl (the
# benchmark serves local files), no tests or examples.
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$WORK/build" --target llama-server llama-quantize -j "$(nproc)" >&2
mkdir -p "$OUT.tmp/bin"
cp "$WORK/build/bin/llama-server" "$WORK/build/bin/llama-quantize" "$OUT.tmp/bin/"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "$OUT/bin"
