#!/usr/bin/env bash
# The export runtimes, in their own virtual environment .venv-export (the project's .venv keeps its
# torch and transformers untouched): torch 2.13.0 (CPU), ExecuTorch 1.5.1 with torchao 0.18 (the .pte
# exporter and runtime), gguf 0.19 (llama.cpp's own GGUF reader) and llama-cpp-python 0.3.36 (llama.cpp,
# compiled from PyPI's source distribution: no binary wheel exists). The compiled llama-cpp-python wheel
# is kept in ~/.cache/deepthin/wheels, so a machine builds it once (about 9 minutes on 2 cores).
#
#   scripts/setup_export.sh        # idempotent; prints where the interpreter is
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1;34m[setup-export]\033[0m %s\n' "$*" >&2; }
VENV=.venv-export
PY=$VENV/bin/python
CACHE=${DEEPTHIN_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deepthin/wheels}
LLAMA_VERSION=0.3.36
PIP=(-q --disable-pip-version-check)
t0=$(date +%s)
if [ ! -x $PY ]; then
  log "creating $VENV"
  python3 -m venv $VENV
fi
if ! $PY -c 'import torch, executorch, torchao, gguf, safetensors, sentencepiece, numpy' >/dev/null 2>&1; then
  log "installing torch 2.13.0 (CPU), executorch 1.5.1, torchao 0.18.0, gguf 0.19.0"
  $VENV/bin/pip install "${PIP[@]}" torch==2.13.0
  $VENV/bin/pip install "${PIP[@]}" executorch==1.5.1 torchao==0.18.0 gguf==0.19.0 safetensors numpy \
    sentencepiece
fi
if ! $PY -c "import llama_cpp; assert llama_cpp.__version__ == '$LLAMA_VERSION'" >/dev/null 2>&1; then
  wheel=$(ls "$CACHE"/llama_cpp_python-$LLAMA_VERSION-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ]; then
    log "compiling llama-cpp-python $LLAMA_VERSION (llama.cpp from source; once per machine)"
    mkdir -p "$CACHE"
    $VENV/bin/pip install "${PIP[@]}" scikit-build-core cmake ninja
    launcher=""
    command -v ccache >/dev/null && launcher="-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF $launcher" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
      $VENV/bin/pip wheel "${PIP[@]}" --no-deps --no-build-isolation -w "$CACHE" \
      llama-cpp-python==$LLAMA_VERSION
    wheel=$(ls "$CACHE"/llama_cpp_python-$LLAMA_VERSION-*.whl | head -1)
  fi
  log "installing $wheel"
  $VENV/bin/pip install "${PIP[@]}" "$wheel" typing-extensions diskcache jinja2
fi
log "ready: $PY ($(( $(date +%s) - t0 )) s)"
