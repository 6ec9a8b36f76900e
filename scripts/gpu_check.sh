#!/usr/bin/env bash
# On the GPU machine: build with every core, run the whole suite (the CUDA tests included), and compare a
# bf16 CUDA score of MobileLLM-125M with the fp32 CPU score through the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/deepthin-gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
DEEPTHIN_JOBS=${DEEPTHIN_JOBS:-16} scripts/setup.sh 2>&1 | tail -5
grep -E "^(DEEPTHIN_CUDA|Torch_DIR)" build/CMakeCache.txt || true
(cd build && ctest -j8 --output-on-failure 2>&1 | tee "$OUT/ctest.log" | tail -15)
build/tests/deepthin_tests --gtest_filter='Cuda.*' 2>&1 | grep -E "125M|OK|FAILED|SKIPPED"
