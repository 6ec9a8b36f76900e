#!/usr/bin/env bash
# On one GPU: the tiny ablations end to end — depth_vs_width_tiny, layer_sharing_schemes_tiny (two
# seeds each) and kd_tiny — then their reports. Needs .carry/ (corpus.jsonl.gz, tokenizer-32k.model).
# BUILD=1 builds first. Results (results.md, plots) are copied to $OUT.
#   scripts/gpu_sweeps.sh [PARALLEL]
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/gpu_env.sh
PARALLEL=${1:-4}
OUT=${OUT:-/tmp/deepthin-gpu}
BIN=${BIN:-build/deepthin}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "== [$(($(date +%s) - t0)) s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "${BUILD:-0}" = 1 ]; then
  stamp "build"
  DEEPTHIN_BUILD_TARGET=deepthin DEEPTHIN_JOBS=${DEEPTHIN_JOBS:-16} scripts/setup.sh > "$OUT/setup.log" 2>&1 || { tail -40 "$OUT/setup.log"; exit 1; }
fi
stamp "data"
mkdir -p data/tokenizer-32k
cp .carry/tokenizer-32k.model data/tokenizer-32k/tokenizer.model  # where the experiments' configs look
carried_shards data/corpus/corpus.jsonl data/shards/corpus-32k $BIN
for spec in ${EXPERIMENTS:-depth_vs_width_tiny:150 layer_sharing_schemes_tiny:110 kd_tiny:150}; do
  exp=${spec%%:*}; limit=${spec##*:}
  stamp "sweep $exp (at most $limit s)"
  timeout -s TERM -k 30 "$limit" $BIN sweep experiments/$exp.yaml --gpus 0 --parallel "$PARALLEL" 2>&1 |
    grep -E "sweep|done in|FAILED|error" | tail -30
  $BIN report runs/$exp > /dev/null 2> "$OUT/$exp.report.err"
  cat runs/$exp/results.md
  cp runs/$exp/results.md "$OUT/$exp.results.md"
  cp runs/$exp/val_loss.png "$OUT/$exp.val_loss.png" 2>/dev/null
done
cp runs/depth_vs_width_tiny/loss_curves.png "$OUT/depth_vs_width_tiny.loss_curves.png" 2>/dev/null
stamp "done"
