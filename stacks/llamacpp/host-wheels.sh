#!/usr/bin/env bash
# Wheels PyPI has only as source: llama-cpp-python ships an sdist alone, so scripts/stacks.sh runs this on
# the host (gcc, g++, cmake; the host is the base image's Debian, so the wheel's glibc matches) and keeps the
# wheel in the stack's wheel cache: built once per machine (minutes on 2 cores), then reused.
#   stacks/llamacpp/host-wheels.sh WHEEL_DIR
set -euo pipefail
dir=$1
spec=llama-cpp-python==0.3.36
ls "$dir"/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 && exit 0
for tool in gcc g++ cmake; do
  command -v "$tool" >/dev/null || { echo "host-wheels: $tool is needed to build $spec (apt-get install build-essential cmake)" >&2; exit 1; }
done
# A portable CPU build: no -march=native (the wheel runs on other machines), AVX2/FMA/F16C (x86-64-v3),
# no OpenMP (the base image has no libgomp; ggml's own thread pool), no tools, tests or examples.
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_OPENMP=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
echo "host-wheels: building $spec from source (once per machine)" >&2
python3 -m pip wheel -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python -w "$dir" "$spec"
