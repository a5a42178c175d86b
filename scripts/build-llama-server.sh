#!/usr/bin/env bash
# Builds llama.cpp's own OpenAI-compatible server (`llama-server`) and its quantizer (`llama-quantize`)
# from the llama.cpp sources vendored in the llama-cpp-python source distribution, the one that
# scripts/install-llamacpp.sh builds the bindings from, so both are one llama.cpp commit.
#   bash scripts/build-llama-server.sh            (cmake, 15-20 minutes on 2 cores; re-running is cheap)
#   bash scripts/build-llama-server.sh --cached   (prints the folder only if it is built; exit 1 if not)
# It prints the folder that holds the two programs, cached outside the repository (one build per
# machine, release and build flags, under ~/.cache/oikyo/llama-server-VERSION-KEY/bin). Its users:
# - scripts/install-llamacpp.sh copies llama-server into .venv-llamacpp/bin, where
#   `oikyo deploy --engine llamacpp` finds it and runs it as its replicas;
# - bench/bench_serve.py --llama-server DIR measures llama-server as the peer (issue 21).
set -euo pipefail
VERSION=${OIKYO_LLAMACPP_VERSION:-0.3.36}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/oikyo
# CPU only, tuned for this machine's instruction set (as the bindings are built); no curl (the
# benchmark serves local files), no tests or examples. Without AMX's int8 code on x86-64: on an
# Intel Xeon with AMX, this llama.cpp's AMX path crashed (segmentation fault) decoding a q8_0 file,
# in llama-server and in the bindings alike; f32/f16 never use it, and without it q8_0 and q4 files
# run on AVX-512 as on other CPUs.
CPU_FLAGS=()
if [ "$(uname -m)" = x86_64 ]; then
    CPU_FLAGS=(-DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8)
fi
ARGS=(-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=OFF "${CPU_FLAGS[@]}"
      -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
      -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF)
# The folder is named by what the build depends on: the version, these arguments and the CPU's
# instruction set (GGML_NATIVE).
KEY=$( { echo "$VERSION"; echo "${ARGS[*]}"; grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m; } \
       | sha256sum | cut -c1-16)
OUT="$CACHE/llama-server-$VERSION-$KEY"
if [ -x "$OUT/bin/llama-server" ] && [ -x "$OUT/bin/llama-quantize" ]; then
    echo "$OUT/bin"
    exit 0
fi
if [ "${1:-}" = --cached ]; then
    exit 1
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
cmake -S "$SRC" -B "$WORK/build" "${ARGS[@]}" >&2
cmake --build "$WORK/build" --target llama-server llama-quantize -j "$(nproc)" >&2
mkdir -p "$OUT.tmp/bin"
cp "$WORK/build/bin/llama-server" "$WORK/build/bin/llama-quantize" "$OUT.tmp/bin/"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "$OUT/bin"
