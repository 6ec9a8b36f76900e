#!/usr/bin/env bash
# On the GPU machine: MobileLLM-125M at micro-batch 16 × 2048 in bf16 on real tokens (the offline corpus
# tokenised with the 32k tokenizer), three ways:
#   1. the fused path (train.kernels: fused), stopped with a checkpoint at step STOP and resumed to STEPS;
#   2. the reference path (train.kernels: reference, train.cuda_graph: off), uninterrupted, same seed
#      and data order;
#   3. `deepthin bench` of the same config;
# then compares the loss curves (1 vs 2) and the logged tokens/s with the benchmark's (1 vs 3).
# Carry .carry/ (corpus.jsonl.gz, tokenizer-32k.model); the build must exist (scripts/gpu_check.sh).
#   scripts/gpu_train.sh [STEPS] [STOP]
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/gpu_env.sh
STEPS=${1:-300}
STOP=${2:-150}
OUT=${OUT:-/tmp/deepthin-gpu}
W=/tmp/dt-train
mkdir -p "$OUT" $W
carried_shards $W/corpus.jsonl $W/shards build/deepthin
rm -rf $W/runs
common=(configs/pretrain/mobilellm-125m.yaml --set run.root=$W/runs
  --set data.path=$W/shards --set data.tokenizer=.carry/tokenizer-32k.model
  --set train.micro_batch_size=16 --set train.max_steps=$STEPS --set optimizer.lr=1.0e-3
  --set schedule.warmup_steps=50 --set eval.every=50 --set eval.batches=10
  --set checkpoint.every=100 --set log.every=10)
echo "== fused: train to step $STOP, then stop with a checkpoint =="
build/deepthin train "${common[@]}" --set run.name=fused --until-step "$STOP" 2>&1 | grep -E "step|resumed|stopping" | tail -4
echo "== fused: resume to step $STEPS =="
build/deepthin train --resume $W/runs/fused 2>&1 | grep -E "step|resumed|eval" | tail -4
echo "== reference path, uninterrupted =="
build/deepthin train "${common[@]}" --set run.name=reference --set train.kernels=reference \
  --set train.cuda_graph=off 2>&1 | tail -3
build/deepthin bench configs/pretrain/mobilellm-125m.yaml --set train.device=cuda \
  --set train.micro_batch_size=16 --step-only > $W/bench.json
for r in fused reference; do cp $W/runs/$r/metrics.jsonl "$OUT/metrics_$r.jsonl"; done
cp $W/bench.json "$OUT/bench_train_config.json"
python3 - $W <<'PY'
import json, sys, statistics
w = sys.argv[1]
def load(name):
    rows = [json.loads(l) for l in open(f"{w}/runs/{name}/metrics.jsonl")]
    train = {r["step"]: r for r in rows if r.get("type") == "train"}
    evals = {r["step"]: r["val_loss"] for r in rows if r.get("type") == "eval"}
    return train, evals
fused, fe = load("fused")
ref, re_ = load("reference")
steps = sorted(set(fused) & set(ref))
d = [abs(fused[s]["loss"] - ref[s]["loss"]) for s in steps]
rel = [abs(fused[s]["loss"] - ref[s]["loss"]) / ref[s]["loss"] for s in steps]
print(f"loss curves over {len(steps)} logged windows (steps {steps[0]}..{steps[-1]}): "
      f"max |Δ| {max(d):.4f}, mean |Δ| {statistics.mean(d):.4f}, max relative {max(rel):.2%}")
print(f"  first/last train loss fused {fused[steps[0]]['loss']:.4f} → {fused[steps[-1]]['loss']:.4f}, "
      f"reference {ref[steps[0]]['loss']:.4f} → {ref[steps[-1]]['loss']:.4f}")
ve = sorted(set(fe) & set(re_))
print("  val loss (step: fused / reference): " + ", ".join(f"{s}: {fe[s]:.4f}/{re_[s]:.4f}" for s in ve))
b = json.load(open(f"{w}/bench.json"))
def tps(t):  # steady windows: skip the first window and any window with a resume in it
    v = [t[s]["tokens_per_s"] for s in sorted(t)[1:]]
    return statistics.median(v)
tf, tr = tps(fused), tps(ref)
print(f"tokens/s: train (median window) fused {tf/1e3:.1f}K, reference {tr/1e3:.1f}K; "
      f"bench {b['tokens_per_s']/1e3:.1f}K → train/bench {tf/b['tokens_per_s']:.3f}; "
      f"peak memory train {max(r['peak_mem_gb'] for r in fused.values()):.1f} GB, bench {b['peak_mem_gb']:.1f} GB")
PY
