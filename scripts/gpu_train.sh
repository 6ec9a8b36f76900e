#!/usr/bin/env bash
# On the GPU machine: MobileLLM-125M at micro-batch 16 × 2048 in bf16 on real tokens (the offline corpus
# tokenised with the 32k tokenizer), stopped with a checkpoint at step STOP and resumed to STEPS.
# Carry .carry/ (corpus.jsonl.gz, tokenizer-32k.model); the build must exist (scripts/gpu_check.sh).
#   scripts/gpu_train.sh [STEPS] [STOP]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/gpu_env.sh
STEPS=${1:-300}
STOP=${2:-150}
OUT=${OUT:-/tmp/deepthin-gpu}
W=/tmp/dt-train
mkdir -p "$OUT" $W
carried_shards $W/corpus.jsonl $W/shards build/deepthin
rm -rf $W/runs
common=(configs/pretrain/mobilellm-125m.yaml --set run.root=$W/runs --set run.name=125m
  --set data.path=$W/shards --set data.tokenizer=.carry/tokenizer-32k.model
  --set train.micro_batch_size=16 --set train.max_steps=$STEPS --set optimizer.lr=1.0e-3
  --set schedule.warmup_steps=50 --set eval.every=50 --set eval.batches=10
  --set checkpoint.every=100 --set log.every=10)
echo "== train to step $STOP, then stop with a checkpoint =="
build/deepthin train "${common[@]}" --until-step "$STOP" 2>&1 | grep -vE "^\s*$" | tail -25
echo "== resume to step $STEPS =="
build/deepthin train --resume $W/runs/125m 2>&1 | tail -25
cp $W/runs/125m/metrics.jsonl $W/runs/125m/train.log "$OUT/"
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
