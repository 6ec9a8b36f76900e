#!/usr/bin/env bash
# The whole suite: setup (idempotent) then every C++ and Python test through ctest.
#   scripts/test.sh                 # all
#   scripts/test.sh -R Config       # extra arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd build
start=$(date +%s)
ctest --output-on-failure -j "${DEEPTHIN_JOBS:-$(nproc)}" "$@"
echo "[test] suite finished in $(( $(date +%s) - start )) s"
