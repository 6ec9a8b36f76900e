#!/usr/bin/env bash
# On the GPU machine: where a MobileLLM-125M training step's time goes (deepthin bench), at the issue's
# micro-batch 16 × 2048 in bf16, plus a few variants. The build must exist (scripts/gpu_check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
B=build/deepthin
for args in "configs/pretrain/mobilellm-125m.yaml" \
            "configs/pretrain/mobilellm-125m.yaml --set train.loss_chunk_tokens=16384" \
            "configs/pretrain/mobilellm-125m-ls.yaml" \
            "configs/pretrain/mobilellm-350m.yaml"; do
  echo "== $args =="
  $B bench $args --set train.micro_batch_size=16 --set train.device=cuda --steps 10 --warmup 3 |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print("  ".join(f"{k}={v:.4g}" if isinstance(v,float) else f"{k}={v}" for k,v in d.items()))'
done
