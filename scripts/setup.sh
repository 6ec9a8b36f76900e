#!/usr/bin/env bash
# Idempotent setup: system packages (when apt can reach its registry), a Python with torch for LibTorch
# and the cross-checks, then configure and build into build/. After it the binary is build/deepthin.
#
#   scripts/setup.sh            # everything
#   DEEPTHIN_BUILD_TYPE=Debug scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

# 1. System packages. Missing ones are installed when we are root (or have sudo) and apt reaches its
#    registry; otherwise we say what is missing and let CMake report precisely what it cannot find.
APT_PKGS=(cmake ninja-build ccache g++ pkg-config libyaml-cpp-dev libspdlog-dev libgtest-dev
          libsentencepiece-dev sentencepiece clang-format libgloo-dev nlohmann-json3-dev
          libssl-dev)
# Sanitized builds (DEEPTHIN_SANITIZE) and the fuzz targets use clang and its sanitizer runtimes.
[ -n "${DEEPTHIN_SANITIZE:-}${DEEPTHIN_FUZZ:-}" ] && APT_PKGS+=(clang libclang-rt-14-dev)
missing=()
if command -v dpkg >/dev/null; then
  for p in "${APT_PKGS[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
fi
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo -n"
  if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; } &&
     timeout 120 $SUDO apt-get update -qq >/dev/null 2>&1; then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null ||
      log "apt-get could not install all of: ${missing[*]} (continuing; CMake will say what is missing)"
  else
    log "apt registry unreachable; not installing: ${missing[*]}"
  fi
fi

# 2. The export runtimes (ExecuTorch, llama.cpp, gguf) in .venv-export, set up in the background while
#    steps 3 and 4 run (on a fresh machine it downloads and compiles llama.cpp, the longest part of a
#    first setup); DEEPTHIN_NO_EXPORT=1 skips them (the export tests then fail: they run only in the
#    real runtimes).
export_pid=""
export_log=${TMPDIR:-/tmp}/deepthin-setup-export.$$.log
if [ -z "${DEEPTHIN_NO_EXPORT:-}" ]; then
  scripts/setup_export.sh > "$export_log" 2>&1 &
  export_pid=$!
  trap 'kill "$export_pid" 2>/dev/null || true' EXIT  # a failed step below does not leave it running
fi

# 3. Python with torch. Prefer an existing .venv; else a machine python3 that already has torch (the GPU
#    machine); else create .venv with the CPU wheel of torch 2.13.0 and the cross-check packages.
have_py() { "$1" -c 'import torch, transformers, safetensors, numpy, tensorboard, matplotlib, sentencepiece, google.protobuf, lm_eval, pyarrow' >/dev/null 2>&1; }
# lm-eval: deepthin eval's parity test runs lm-evaluation-harness itself.
# pyarrow: the Arrow C++ library and headers deepthin reads parquet and compressed JSONL with
# (CMakeLists.txt), and the parity test's writer of those files.
PY_PKGS=(transformers safetensors numpy tensorboard matplotlib sentencepiece protobuf "lm-eval[hf]==0.4.13" pyarrow)
if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
  PY=$ROOT/.venv/bin/python
  # Packages added since the venv was made.
  have_py "$PY" || .venv/bin/pip install -q --disable-pip-version-check "${PY_PKGS[@]}" ||
    log "warning: could not install ${PY_PKGS[*]} into .venv"
elif command -v python3 >/dev/null && python3 -c 'import torch' >/dev/null 2>&1; then
  PY=$(command -v python3)
  have_py "$PY" || log "warning: $PY lacks one of ${PY_PKGS[*]}; the cross-check tests or report plots will fail"
else
  log "creating .venv with torch==2.13.0 and ${PY_PKGS[*]}"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
  .venv/bin/pip install -q --disable-pip-version-check "${PY_PKGS[@]}"
  PY=$ROOT/.venv/bin/python
fi
log "python: $PY (torch $("$PY" -c 'import torch; print(torch.__version__)'))"

# 4. Configure and build, into build/ (or DEEPTHIN_BUILD_DIR).
B=${DEEPTHIN_BUILD_DIR:-build}
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
if [ -f "$B/CMakeCache.txt" ] && ! grep -q "^CMAKE_GENERATOR:INTERNAL=${GEN[1]:-Unix Makefiles}$" "$B/CMakeCache.txt"; then
  rm -rf "$B"  # generator changed
fi
JOBS=${DEEPTHIN_JOBS:-$(nproc)}
cmake -S . -B "$B" "${GEN[@]}" -DDEEPTHIN_PYTHON="$PY" \
  -DCMAKE_BUILD_TYPE="${DEEPTHIN_BUILD_TYPE:-RelWithDebInfo}" ${DEEPTHIN_CMAKE_ARGS:-} >/dev/null
log "building $B with $JOBS jobs"
cmake --build "$B" -j "$JOBS" ${DEEPTHIN_BUILD_TARGET:+--target "$DEEPTHIN_BUILD_TARGET"}
if [ -n "$export_pid" ]; then
  log "waiting for the export runtimes (scripts/setup_export.sh, log: $export_log)"
  if wait "$export_pid"; then
    grep -F "[setup-export]" "$export_log" >&2 || true
    rm -f "$export_log"
  else
    tail -20 "$export_log" >&2
    log "warning: scripts/setup_export.sh failed (log: $export_log); the export tests will fail"
  fi
fi
log "ready: $B/deepthin"
