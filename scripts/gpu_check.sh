#!/usr/bin/env bash
# On the GPU machine: build with every core, run the whole suite (the CUDA tests included), and compare a
# bf16 CUDA forward of MobileLLM-125M with the fp32 CPU forward. Logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/gpu_env.sh
OUT=${OUT:-/tmp/deepthin-gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
DEEPTHIN_JOBS=${DEEPTHIN_JOBS:-16} scripts/setup.sh > "$OUT/setup.log" 2>&1 || { tail -40 "$OUT/setup.log"; exit 1; }
grep -E "^(DEEPTHIN_CUDA|Torch_DIR)" build/CMakeCache.txt
(cd build && ctest -j8 --output-on-failure > "$OUT/ctest.log" 2>&1)
rc=$?
grep -E "tests passed|Total Test time" "$OUT/ctest.log"
if [ $rc -ne 0 ]; then
  grep -E "\((Failed|SEGFAULT|Timeout|Subprocess aborted)\)" "$OUT/ctest.log" | head -20
  first=$(grep -oE "[0-9]+ - [A-Za-z0-9_./]+ \((Failed|SEGFAULT)" "$OUT/ctest.log" | head -1 | awk '{print $3}')
  if [ -n "$first" ] && command -v cuda-gdb >/dev/null; then
    echo "== backtrace of $first =="
    cuda-gdb -batch -ex run -ex bt --args build/tests/deepthin_tests --gtest_filter="$first" 2>&1 | tail -30
  fi
fi
build/tests/deepthin_tests --gtest_filter='Cuda.*' 2>&1 | grep -E "125M|OK \]|FAILED|SKIPPED"
exit $rc
