#!/usr/bin/env bash
# The whole suite: setup (idempotent) then every C++ and Python test through ctest.
#   scripts/test.sh                 # all
#   scripts/test.sh -R Config       # extra arguments go to ctest
#   DEEPTHIN_SANITIZE=address,undefined scripts/test.sh   # the suite under ASan + UBSan (clang, build-san/)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${DEEPTHIN_SANITIZE:-}" ]; then
  export DEEPTHIN_BUILD_DIR=build-san
  export DEEPTHIN_CMAKE_ARGS="-DDEEPTHIN_SANITIZE=$DEEPTHIN_SANITIZE -DDEEPTHIN_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ ${DEEPTHIN_CMAKE_ARGS:-}"
  # LibTorch's own allocations at exit are not ours to report; every other finding aborts the test.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:strict_string_checks=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
scripts/setup.sh
cd "${DEEPTHIN_BUILD_DIR:-build}"
start=$(date +%s)
ctest --output-on-failure -j "${DEEPTHIN_JOBS:-$(nproc)}" "$@"
echo "[test] suite finished in $(( $(date +%s) - start )) s"
