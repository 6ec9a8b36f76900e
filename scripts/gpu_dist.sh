#!/usr/bin/env bash
# On a 2-GPU machine (nvidia-h200-x2): MobileLLM-125M data parallel on NCCL.
#   1. 1 GPU, micro-batch 16 × 2048, 2 accumulation steps        (global batch 32 × 2048)
#   2. 2 GPUs through torchrun, micro-batch 16, no accumulation  (the same global batch)
#   3. the same with ZeRO-1
#   4. two launchers as two "nodes" (node ranks 0 and 1, one GPU each) on this machine
#   5. a rank killed mid-run: the other must exit non-zero within distributed.timeout_s
# then compares loss curves and throughput (scripts/dist_summary.py). Needs .carry/ (corpus.jsonl.gz,
# tokenizer-32k.model) and a build (BUILD=1 builds it: scripts/setup.sh plus the CUDA tests).
#   scripts/gpu_dist.sh [STEPS]
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/gpu_env.sh
STEPS=${1:-100}
OUT=${OUT:-/tmp/deepthin-gpu}
W=/tmp/dt-dist
BIN=${BIN:-build/deepthin}
mkdir -p "$OUT" $W
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
t0=$(date +%s)
stamp() { echo "== [$(($(date +%s) - t0)) s] $*"; }
if [ "${BUILD:-0}" = 1 ]; then
  stamp "build"
  DEEPTHIN_JOBS=${DEEPTHIN_JOBS:-16} scripts/setup.sh > "$OUT/setup.log" 2>&1 || { tail -40 "$OUT/setup.log"; exit 1; }
  grep -E "deepthin: (torch|NCCL)" "$OUT/setup.log"
  build/tests/deepthin_tests --gtest_filter='Cuda.*:TrainerTest.*:Optimizer.*:LaunchEnv.*:Dist*' 2>&1 |
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran|125M" | head -20
  strip -o "$OUT/deepthin" build/deepthin
fi
export PATH=$(dirname "$(command -v python3)"):$PATH
TORCHRUN=$(python3 -c 'import shutil,sys,os; print(shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable),"torchrun"))')

stamp "data"
carried_shards $W/corpus.jsonl $W/shards $BIN
rm -rf $W/runs
common=(configs/pretrain/mobilellm-125m.yaml --set run.root=$W/runs
  --set data.path=$W/shards --set data.tokenizer=.carry/tokenizer-32k.model
  --set train.micro_batch_size=16 --set train.max_steps=$STEPS --set optimizer.lr=1.0e-3
  --set schedule.warmup_steps=20 --set eval.every=0 --set eval.batches=8
  --set checkpoint.every=0 --set checkpoint.keep_last=1 --set log.every=10)
keep() { grep -E "distributed|data parallel|step ($STEPS|50)/|eval|error|ZeRO" | grep -v "^$"; }

stamp "1 GPU, accumulation 2"
timeout 150 $BIN train "${common[@]}" --set run.name=gpu1 --set train.grad_accum_steps=2 2>&1 | keep
stamp "2 GPUs (torchrun)"
timeout 120 "$TORCHRUN" --nproc-per-node=2 --master-port=29601 --no-python $BIN train "${common[@]}" \
  --set run.name=gpu2 2>&1 | keep
stamp "2 GPUs, ZeRO-1 (torchrun)"
timeout 120 "$TORCHRUN" --nproc-per-node=2 --master-port=29602 --no-python $BIN train "${common[@]}" \
  --set run.name=gpu2z --set distributed.zero1=true 2>&1 | keep
stamp "two nodes of one GPU each (scripts/launch.sh, node ranks 0 and 1)"
NODE_STEPS=20
CUDA_VISIBLE_DEVICES=1 timeout 90 scripts/launch.sh --nproc 1 --nnodes 2 --node-rank 1 --port 29603 --bin $BIN -- \
  train "${common[@]}" --set run.name=nodes --set train.max_steps=$NODE_STEPS > $W/node1.log 2>&1 &
CUDA_VISIBLE_DEVICES=0 timeout 90 scripts/launch.sh --nproc 1 --nnodes 2 --node-rank 0 --port 29603 --bin $BIN -- \
  train "${common[@]}" --set run.name=nodes --set train.max_steps=$NODE_STEPS 2>&1 |
  grep -E "launch.sh|distributed|step $NODE_STEPS/|error"
wait
echo "node 1: $(grep -c . $W/node1.log) lines, exit as above; $(grep -E 'launch.sh' $W/node1.log)"
stamp "a rank killed at step 5 (timeout_s 30)"
s=$(date +%s)
for r in 0 1; do
  f=""; [ $r = 1 ] && f="exit_at:5"
  RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29604 DEEPTHIN_FAULT=$f \
    timeout 120 $BIN train "${common[@]}" --set run.name=kill --set distributed.timeout_s=30 > $W/kill$r.log 2>&1 &
  eval p$r=$!
done
wait $p0; rc0=$?; e=$(date +%s); wait $p1; rc1=$?
echo "rank 0 exit $rc0 after $((e - s)) s; rank 1 exit $rc1"
grep -vE "info\]" $W/kill0.log | grep -E "error|Watchdog|timed out|Timeout|abort" | head -5
grep -E "fault" $W/kill1.log
stamp "summary"
python3 scripts/dist_summary.py $W/runs/gpu1 $W/runs/gpu2 $W/runs/gpu2z | tee "$OUT/summary.txt"
for r in gpu1 gpu2 gpu2z; do cp $W/runs/$r/metrics.jsonl "$OUT/$r.metrics.jsonl"; done
stamp "done"
