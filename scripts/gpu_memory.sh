#!/usr/bin/env bash
# On the GPU machine: the big presets with activation checkpointing — MobileLLM-1B at the paper's
# micro-batch 32 × 2048, 1.5B, and the cost of checkpointing against none where both fit. Prints
# tokens/s and peak memory per run (deepthin bench, the step `deepthin train` runs). The build must exist.
#   RUNS="1b:32:full 1b:16:none" scripts/gpu_memory.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/gpu_env.sh
OUT=${OUT:-/tmp/deepthin-gpu}
mkdir -p "$OUT"
RUNS=${RUNS:-"1b:32:full 1b:16:none 1b:16:selective 1b:16:full 1.5b:32:full"}
echo "| model | micro-batch × 2048 | activation checkpointing | tokens/s | step | peak memory |"
echo "|---|---|---|---|---|---|"
for run in $RUNS; do
  IFS=: read -r m mb ck <<< "$run"
  f="$OUT/mem_${m}_${mb}_${ck}.json"
  if build/deepthin bench configs/pretrain/mobilellm-$m.yaml --set train.device=cuda \
      --set train.micro_batch_size=$mb --set train.activation_checkpointing=$ck \
      --step-only --steps 3 --warmup 1 > "$f" 2> "${f%.json}.err"; then
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"| {sys.argv[2].upper()} | {sys.argv[3]} | {sys.argv[4]} | {d['tokens_per_s']/1e3:.1f}K | {d['step_ms']:.0f} ms | {d['peak_mem_gb']:.1f} GB |\")" "$f" "$m" "$mb" "$ck"
  else
    echo "| ${m^^} | $mb | $ck | failed: $(grep -m1 -oE 'out of memory|error.*' "${f%.json}.err" | head -c 80) | | |"
  fi
done
