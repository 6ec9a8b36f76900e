#!/usr/bin/env bash
# Data-parallel scaling at the paper's per-GPU batch (micro-batch 32 × 2048) on the GPUs of one machine:
# MobileLLM-125M on 1 GPU (accumulating to the same global batch) and on N GPUs with and without ZeRO-1,
# then MobileLLM-1B. Throughput runs: no final checkpoint. Needs .carry/ (corpus, tokenizer).
#   scripts/gpu_scaling.sh [NGPUS] [STEPS] [STEPS_1B] [MICRO_1B]
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/gpu_env.sh
N=${1:-2}; STEPS=${2:-100}; STEPS_1B=${3:-20}; MICRO_1B=${4:-8}
OUT=${OUT:-/tmp/deepthin-gpu}
W=/tmp/dt-scale
BIN=${BIN:-build/deepthin}
mkdir -p "$OUT" $W
t0=$(date +%s)
stamp() { echo "== [$(($(date +%s) - t0)) s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "${BUILD:-0}" = 1 ]; then
  stamp "build"
  DEEPTHIN_BUILD_TARGET=deepthin DEEPTHIN_JOBS=${DEEPTHIN_JOBS:-16} scripts/setup.sh > "$OUT/setup.log" 2>&1 ||
    { tail -40 "$OUT/setup.log"; exit 1; }
fi
TORCHRUN=$(python3 -c 'import shutil,sys,os; print(shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable),"torchrun"))')
stamp "data"
carried_shards $W/corpus.jsonl $W/shards $BIN
common=(--set run.root=$W/runs --set data.path=$W/shards --set data.tokenizer=.carry/tokenizer-32k.model
  --set optimizer.lr=1.0e-3 --set schedule.warmup_steps=20 --set eval.every=0 --set eval.batches=4
  --set checkpoint.every=0 --set checkpoint.at_end=false --set log.every=10)
keep() { grep -E "data parallel|step ($1)/|error|Error|out of memory|OutOfMemory" | grep -v "^$" | head -8; }
run1() {  # name steps extra...
  local name=$1 steps=$2; shift 2
  timeout 200 $BIN train "$@" "${common[@]}" --set run.name=$name --set train.max_steps=$steps 2>&1 | keep "$steps"
}
runN() {
  local name=$1 steps=$2; shift 2
  timeout 200 "$TORCHRUN" --nproc-per-node=$N --master-port=$((29650 + RANDOM % 100)) --no-python $BIN train "$@" \
    "${common[@]}" --set run.name=$name --set train.max_steps=$steps 2>&1 | keep "$steps"
}
c125=(configs/pretrain/mobilellm-125m.yaml --set train.micro_batch_size=32)
[ "${SKIP_1GPU:-0}" = 1 ] ||
  { stamp "125M, 1 GPU, accumulation $N"; run1 125m-1gpu $STEPS "${c125[@]}" --set train.grad_accum_steps=$N; }
stamp "125M, $N GPUs"; runN 125m-${N}gpu $STEPS "${c125[@]}"
stamp "125M, $N GPUs, ZeRO-1"; runN 125m-${N}gpu-zero $STEPS "${c125[@]}" --set distributed.zero1=true
if [ "${SKIP_1B:-0}" = 1 ]; then
  for r in 125m-${N}gpu 125m-${N}gpu-zero; do echo "$r: $(grep '"step":'$STEPS',' $W/runs/$r/metrics.jsonl)"; done
  stamp "done"; exit 0
fi
c1b=(configs/pretrain/mobilellm-1b.yaml)
stamp "1B at micro-batch 32, $N GPUs, ZeRO-1 (memory probe, 3 steps)"
runN 1b-probe 3 "${c1b[@]}" --set train.micro_batch_size=32 --set distributed.zero1=true
stamp "1B at micro-batch $MICRO_1B, $N GPUs"; runN 1b-${N}gpu $STEPS_1B "${c1b[@]}" --set train.micro_batch_size=$MICRO_1B
stamp "1B at micro-batch $MICRO_1B, $N GPUs, ZeRO-1"
runN 1b-${N}gpu-zero $STEPS_1B "${c1b[@]}" --set train.micro_batch_size=$MICRO_1B --set distributed.zero1=true
stamp "summary"
python3 scripts/dist_summary.py $W/runs/125m-1gpu $W/runs/125m-${N}gpu $W/runs/125m-${N}gpu-zero | tee "$OUT/scaling125m.txt"
for r in 1b-${N}gpu 1b-${N}gpu-zero; do
  [ -f $W/runs/$r/metrics.jsonl ] && echo "$r: $(tail -1 $W/runs/$r/metrics.jsonl)"
done | tee "$OUT/scaling1b.txt"
stamp "done"
