#!/usr/bin/env bash
# Builds llama.cpp's llama-server (the anchor of bench/llm.py) from the llama.cpp source that
# llama-cpp-python's sdist vendors, with this machine's compiler and CPU features (GGML_NATIVE).
# Output: bench/.llama.cpp/build/bin/llama-server (git-ignored). Takes ~10 min on 2 cores.
#   LLAMA_CPP_PYTHON_VERSION  the sdist to build from (default: the one pinned in the bench extra)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
work="$here/.llama.cpp"
python="${PYTHON:-$here/../.venv/bin/python}"
mkdir -p "$work"
if [ ! -d "$work/src/vendor/llama.cpp" ]; then
    "$python" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work"
    rm -rf "$work/src" && mkdir -p "$work/src"
    tar xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work/src" --strip-components=1
fi
cmake -S "$work/src/vendor/llama.cpp" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON
cmake --build "$work/build" --target llama-server -j "$(nproc)"
echo "built: $work/build/bin/llama-server"
