#!/usr/bin/env bash
# On the GPU machine: the distillation table of the KD issue. MobileLLM-125M as the student, with a
# MobileLLM-350M-shaped teacher at micro-batch 16 and a MobileLLM-1B-shaped teacher at micro-batch 8
# (random weights from `deepthin init`: speed does not depend on them). For each: `deepthin bench`
# without a teacher and with it; the KD bench times the teacher's forward and the KD loss apart.
#   scripts/gpu_kd.sh           builds build/deepthin first when it is missing; results in $OUT
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/gpu_env.sh
OUT=${OUT:-/tmp/deepthin-gpu}
W=/tmp/dt-kd
mkdir -p "$OUT" $W
ensure_built "$OUT/setup.log"
D=build/deepthin
C125=configs/pretrain/mobilellm-125m.yaml
for t in 350m 1b; do
  [ -d $W/t$t ] || $D init configs/pretrain/mobilellm-$t.yaml --out $W/t$t > /dev/null || exit 1
done
run() {  # NAME MICRO_BATCH [TEACHER]
  local kd=()
  [ -n "${3:-}" ] && kd=(--set kd.teacher=$W/t$3)
  timeout 240 $D bench $C125 --set train.device=cuda --set train.micro_batch_size=$2 "${kd[@]}" \
    --steps 20 --warmup 5 > "$OUT/kd_$1.json" 2> "$OUT/kd_$1.err" ||
    { echo "bench $1 failed"; tail -5 "$OUT/kd_$1.err"; }
}
run plain16 16
run t350m 16 350m
run plain8 8
run t1b 8 1b
python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
def load(n):
    try:
        return json.load(open(os.path.join(out, f"kd_{n}.json")))
    except Exception:
        return None
print("| teacher | micro-batch | no teacher: tokens/s (step ms, launch) | with teacher: tokens/s (step ms, launch) "
      "| ratio | teacher forward ms | KD loss fwd+bwd ms | plain loss fwd+bwd ms | student + teacher + 10% ms |")
print("|---|---|---|---|---|---|---|---|---|")
for name, plain, kd, mb in (("350M-shaped", "plain16", "t350m", 16), ("1B-shaped", "plain8", "t1b", 8)):
    p, k = load(plain), load(kd)
    if not p or not k:
        print(f"| {name} | {mb} | missing | missing | | | | | |")
        continue
    bound = (p["step_ms"] + k["teacher_forward_ms"]) * 1.10
    print(f"| {name} | {mb} | {p['tokens_per_s']:,.0f} ({p['step_ms']:.1f}, {p['launch']}) | "
          f"{k['tokens_per_s']:,.0f} ({k['step_ms']:.1f}, {k['launch']}) | {k['tokens_per_s'] / p['tokens_per_s']:.3f} | "
          f"{k['teacher_forward_ms']:.1f} | {k['kd_loss_fwd_bwd_ms']:.1f} | {k['loss_fwd_bwd_ms']:.1f} | {bound:.1f} |")
EOF

# The top-k cache (needs .carry): the 350M-shaped teacher over ~5 MB of the carried corpus, k = 16;
# its write speed and bytes a token, then the 125M student trained 40 steps from it and from the
# teacher itself (tokens/s from each run's log).
if [ -f .carry/corpus.jsonl.gz ]; then
  [ -d $W/shards ] || {
    zcat .carry/corpus.jsonl.gz | head -c 5000000 > $W/slice.jsonl
    $D data prepare --tokenizer .carry/tokenizer-4096.model --input $W/slice.jsonl --out $W/shards \
      --threads 16 2>&1 | tail -1
  }
  common=(--set data.path=$W/shards --set 'data.tokenizer=""' --set train.micro_batch_size=16
          --set kd.teacher=$W/t350m)
  rm -rf $W/cache $W/runs
  $D kd cache $C125 "${common[@]}" --k 16 --batch 8 --out $W/cache 2>&1 | tail -1
  for how in teacher cache; do
    extra=()
    [ $how = cache ] && extra=(--set kd.cache=$W/cache)
    $D train $C125 "${common[@]}" "${extra[@]}" --set run.root=$W/runs --set run.name=$how \
      --set train.max_steps=40 --set log.every=10 --set eval.every=0 --set checkpoint.every=0 \
      --set checkpoint.at_end=false > /dev/null 2>&1
    echo "student from the $how: $(grep -E 'step 40/40' $W/runs/$how/train.log | tail -1)"
  done
fi
