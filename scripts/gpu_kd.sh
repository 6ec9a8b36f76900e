#!/usr/bin/env bash
# On the GPU machine: the measurements of the KD issue, in stages (default: all three, in order):
#   table   MobileLLM-125M as the student with a MobileLLM-350M-shaped teacher at micro-batch 16 and a
#           MobileLLM-1B-shaped teacher at micro-batch 8 (random weights from `deepthin init`: speed
#           does not depend on them): `deepthin bench` without a teacher and with it; the KD bench
#           times the teacher's forward and the KD loss apart.
#   cache   the top-k cache's write speed and bytes a token (the 350M-shaped teacher, k = 16, over
#           ~5 MB of the carried corpus) and the 125M student's speed from it against from the teacher.
#   tiny    experiments/kd_tiny.yaml's shapes on the carried corpus (4096-piece tokenizer): the teacher
#           trained 2,000 steps, its top-16 cache, and students of 1,000 steps without KD, distilled
#           from the teacher's full logits and from the cache: their validation losses side by side.
#   scripts/gpu_kd.sh [table|cache|tiny ...]    builds build/deepthin first when it is missing;
#   results in $OUT. cache and tiny need .carry (corpus.jsonl.gz, tokenizer-4096.model).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/gpu_env.sh
OUT=${OUT:-/tmp/deepthin-gpu}
W=/tmp/dt-kd
mkdir -p "$OUT" $W
ensure_built "$OUT/setup.log"
D=build/deepthin
C125=configs/pretrain/mobilellm-125m.yaml
# init_teachers SIZE...: random-weight teachers of the published shapes in $W/t<SIZE>, once.
init_teachers() {
  local t
  for t in "$@"; do
    [ -d $W/t$t ] || $D init configs/pretrain/mobilellm-$t.yaml --out $W/t$t > /dev/null || return 1
  done
}

stage_table() {
init_teachers 350m 1b || return 1
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
}

# The top-k cache (needs .carry): the 350M-shaped teacher over ~5 MB of the carried corpus, k = 16;
# its write speed and bytes a token, then the 125M student trained 40 steps from it and from the
# teacher itself (tokens/s from each run's log).
stage_cache() {
  [ -f .carry/corpus.jsonl.gz ] || { echo "cache: needs .carry/corpus.jsonl.gz"; return 1; }
  init_teachers 350m || return 1
  [ -d $W/shards ] || {
    zcat .carry/corpus.jsonl.gz | head -c 5000000 | head -n -1 > $W/slice.jsonl
    $D data prepare --tokenizer .carry/tokenizer-4096.model --input $W/slice.jsonl --out $W/shards \
      --threads 16 2>&1 | tail -1
  }
  common=(--set data.path=$W/shards --set 'data.tokenizer=""' --set train.micro_batch_size=16
          --set kd.teacher=$W/t350m)
  rm -rf $W/cache $W/runs
  local t0=$(date +%s.%N)
  $D kd cache $C125 "${common[@]}" --k 16 --batch 8 --out $W/cache 2>&1 | tail -1
  echo "cache: $(du -sb $W/cache | cut -f1) bytes in $(python3 -c "import time; print(f'{time.time()-$t0:.1f}')") s (process)"
  for how in teacher cache; do
    extra=()
    [ $how = cache ] && extra=(--set kd.cache=$W/cache)
    $D train $C125 "${common[@]}" "${extra[@]}" --set run.root=$W/runs --set run.name=$how \
      --set train.max_steps=40 --set log.every=10 --set eval.every=0 --set checkpoint.every=0 \
      --set checkpoint.at_end=false > /dev/null 2>&1
    echo "student from the $how: $(grep -E 'step 40/40' $W/runs/$how/train.log | tail -1)"
  done
}

stage_tiny() {
  [ -f .carry/corpus.jsonl.gz ] || { echo "tiny: needs .carry/corpus.jsonl.gz"; return 1; }
  local T=configs/pretrain/tiny.yaml R=$W/tiny
  [ -f $W/tshards/manifest.json ] || {
    zcat .carry/corpus.jsonl.gz | head -n ${TINY_DOCS:-3500} > $W/corpus.jsonl  # about half: ~1.3 epochs of the teacher
    $D data prepare --tokenizer .carry/tokenizer-4096.model --input $W/corpus.jsonl --out $W/tshards \
      --val-fraction 0.01 --threads 16 2>&1 | tail -1
  }
  local base=(--set model.vocab_size=4096 --set data.path=$W/tshards --set 'data.tokenizer=""'
              --set run.root=$R --set checkpoint.every=0 --set log.every=250)
  rm -rf $R
  # The teacher of experiments/kd_tiny.yaml: 16 × 384, 2,000 steps.
  $D train $T "${base[@]}" --set run.name=teacher --set model.n_layers=16 --set model.dim=384 \
    --set model.n_heads=6 --set model.n_kv_heads=2 --set model.head_dim=64 \
    --set model.ffn.hidden_dim=1024 --set train.max_steps=${TINY_TEACHER_STEPS:-2000} --set eval.every=1000 \
    > "$OUT/tiny_teacher.json" 2> "$OUT/tiny_teacher.err" || { tail -5 "$OUT/tiny_teacher.err"; return 1; }
  cp $R/teacher/metrics.jsonl "$OUT/tiny_teacher.metrics.jsonl"
  local t0=$(date +%s.%N)
  $D kd cache $T "${base[@]}" --set kd.teacher=$R/teacher --k 16 --batch 64 --out $R/cache16 2>&1 | tail -1
  echo "tiny cache (k 16): $(du -sb $R/cache16 | cut -f1) bytes, $(python3 -c "import time; print(f'{time.time()-$t0:.1f}')") s (process)"
  local name kd
  for name in kd-full kd-cache16 no-kd; do
    case $name in
      no-kd) kd=(--set kd.ratio=0) ;;
      kd-full) kd=(--set kd.ratio=1 --set kd.teacher=$R/teacher) ;;
      kd-cache16) kd=(--set kd.ratio=1 --set kd.cache=$R/cache16) ;;
    esac
    $D train $T "${base[@]}" "${kd[@]}" --set run.name=$name --set train.max_steps=1000 \
      --set eval.every=250 > "$OUT/tiny_$name.json" 2> "$OUT/tiny_$name.err" || tail -5 "$OUT/tiny_$name.err"
    cp $R/$name/metrics.jsonl "$OUT/tiny_$name.metrics.jsonl" 2>/dev/null
  done
  python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def evals(n):
    try:
        return {r["step"]: r["val_loss"] for r in map(json.loads, open(os.path.join(out, f"tiny_{n}.metrics.jsonl")))
                if r.get("type") == "eval"}
    except Exception:
        return {}
runs = {n: evals(n) for n in ("teacher", "no-kd", "kd-full", "kd-cache16")}
print("teacher validation loss by step:", {k: round(v, 4) for k, v in sorted(runs["teacher"].items())})
steps = sorted(set(runs["no-kd"]) | set(runs["kd-full"]) | set(runs["kd-cache16"]))
print("| step | no KD | KD, full logits | KD, top-16 cache | cache vs full |")
print("|---|---|---|---|---|")
for s in steps:
    a, b, c = (runs[n].get(s) for n in ("no-kd", "kd-full", "kd-cache16"))
    rel = f"{(c - b) / b * 100:+.2f}%" if b and c else ""
    f = lambda x: f"{x:.4f}" if x is not None else "missing"
    print(f"| {s} | {f(a)} | {f(b)} | {f(c)} | {rel} |")
PY
}

[ $# -eq 0 ] && set -- table cache tiny
for stage in "$@"; do
  case "$stage" in
    table) stage_table ;;
    cache) stage_cache ;;
    tiny) stage_tiny ;;
    *) echo "usage: $0 [table|cache|tiny ...]" >&2; exit 2 ;;
  esac
done
