#!/usr/bin/env bash
# GPU-machine measurements for goodput (issue 24) and data throughput (issue 22), in stages that each
# build first when build/deepthin is missing; name one or more, in order (`ab` = all four):
#   a       shards from the carried .carry/corpus.jsonl.gz (gzip read through Arrow); `deepthin bench`
#           of MobileLLM-125M at micro-batch 16; the goodput run (2,000 steps, asynchronous
#           checkpoints every 200, validation every 1,000) and its ratio to the bench's tokens/s.
#   data    data prepare throughput at 1, 4 and 16 threads against SentencePiece and HF tokenizers.
#   big     MobileLLM-1.5B: what training waits at each checkpoint.
#   lmeval  deepthin eval against lm-eval at the published item counts (lm-eval from the wheels
#           carried in .whl; .whl/alt holds an older `datasets` for an older pyarrow) on a 125M
#           trained for 200 steps.
# STEPS and EVAL_EVERY shorten stage a's run (default 2000 and 1000, as the issue asks);
# SKIP_BENCH=1 leaves the bench out (then only the run's own goodput is printed); BENCH_AFTER=0 only
# the one after the run. DATA_MB and DATA_THREADS size the data stage (default 100 and 1,4,8,16).
# Carry: .carry (corpus.jsonl.gz, tokenizer-4096.model) and, for lmeval, .whl. Results in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/gpu_env.sh
OUT=${OUT:-/tmp/deepthin-gpu}
W=/tmp/dt-goodput
mkdir -p "$OUT" $W
t0=$(date +%s)
stamp() { echo "[$1 after $(($(date +%s) - t0)) s]"; }
[ -x build/deepthin ] || { ensure_built "$OUT/setup.log"; stamp "build done"; }
D=build/deepthin
C125=configs/pretrain/mobilellm-125m.yaml
shards() {
  [ -d $W/shards ] && return
  $D data prepare --tokenizer .carry/tokenizer-4096.model --input .carry/corpus.jsonl.gz \
    --out $W/shards --val-fraction 0.01 --threads 16 2>&1 | tail -1
}

stage_a() {
  shards
  if [ -z "${SKIP_BENCH:-}" ]; then
    $D bench $C125 --set train.device=cuda --set train.micro_batch_size=16 --step-only \
      > "$OUT/bench.json" 2> "$OUT/bench.err"
    stamp "bench done"
  else
    echo '{}' > "$OUT/bench.json"
  fi
  rm -rf $W/runs/goodput
  $D train $C125 --set run.root=$W/runs --set run.name=goodput \
    --set data.path=$W/shards --set 'data.tokenizer=""' --set train.micro_batch_size=16 \
    --set train.max_steps=${STEPS:-2000} --set checkpoint.every=200 --set checkpoint.keep_last=3 \
    --set eval.every=${EVAL_EVERY:-1000} --set eval.batches=50 --set log.every=100 > "$OUT/train.json" 2> "$OUT/train.err"
  stamp "train exit $?"
  grep -E "goodput|checkpoint step|captured|page-locked" $W/runs/goodput/train.log | tail -16
  # The same bench right after the run, over 100 steps: a warm GPU's clocks against a cool one's.
  [ -z "${SKIP_BENCH:-}" ] && [ "${BENCH_AFTER:-1}" = 1 ] && $D bench $C125 --set train.device=cuda --set train.micro_batch_size=16 \
    --step-only --steps 100 > "$OUT/bench_after.json" 2> "$OUT/bench_after.err" &&
    python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(f"bench after the run (100 steps): {b[\"step_ms\"]:.1f} ms a step, {b[\"tokens_per_s\"]:.0f} tokens/s")' "$OUT/bench_after.json"
  cp $W/runs/goodput/metrics.jsonl "$OUT/metrics.jsonl" 2>/dev/null
  python3 - "$OUT/bench.json" "$OUT/metrics.jsonl" <<'EOF'
import json, sys
bench = json.load(open(sys.argv[1]))
recs = [json.loads(l) for l in open(sys.argv[2])]
g = [r for r in recs if r.get("type") == "goodput"][-1]
tokens = [r for r in recs if r.get("type") == "train"][-1]["tokens"]
tps = tokens / g["wall_s"]
if bench:
    print(f"bench {bench['tokens_per_s']:.0f} tokens/s ({bench['step_ms']:.1f} ms a step, {bench['launch']}); "
          f"goodput against the bench {tps / bench['tokens_per_s']:.4f}")
print(f"run {tokens} tokens in {g['wall_s']:.1f} s from the first step = {tps:.0f} tokens/s; "
      f"the run's own goodput {g['goodput']:.4f}; "
      f"checkpoints {g['checkpoint_s']:.2f} s over {g['checkpoints']}, eval {g['eval_s']:.2f} s, "
      f"data wait {g['data_wait_s']:.2f} s, capture {g['capture_s']:.2f} s, start-up {g['startup_s']:.1f} s, "
      f"host between steps {g.get('host_gap_ms_per_step', float('nan')):.3f} ms a step")
EOF
  stamp "stage a done"
}

stage_data() {
  zcat .carry/corpus.jsonl.gz > $W/corpus.jsonl
  timeout 240 python3 scripts/bench/prepare_speed.py --deepthin $D --tokenizer .carry/tokenizer-4096.model \
    --input $W/corpus.jsonl --mb ${DATA_MB:-100} --threads ${DATA_THREADS:-1,4,8,16} > "$OUT/prepare_speed.txt" 2>&1
  cat "$OUT/prepare_speed.txt"
  stamp "prepare speed done"
}

stage_big() {
  shards
  rm -rf $W/runs/big
  $D train configs/pretrain/mobilellm-1.5b.yaml --set run.root=$W/runs --set run.name=big \
    --set data.path=$W/shards --set 'data.tokenizer=""' \
    --set train.micro_batch_size=4 --set train.max_steps=60 --set checkpoint.every=20 \
    --set checkpoint.keep_last=1 --set eval.every=0 --set log.every=20 > "$OUT/big.json" 2> "$OUT/big.err"
  stamp "1.5B exit $?"
  grep -E "goodput|checkpoint step|page-locked|parameters" $W/runs/big/train.log | tail -10
  rm -rf $W/runs/big
}

# lm-eval from the carried wheels; the older `datasets` in .whl/alt when the image's pyarrow is too
# old for the newer one (checked by loading a JSON file, as lm-eval's tasks do).
lm_eval_env() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target $W/site .whl/*.whl > /dev/null 2>&1
  export PYTHONPATH=$W/site
  local probe='import datasets, lm_eval, sys, json; open("'$W'/probe.jsonl","w").write(json.dumps({"a":1})+"\n"); datasets.load_dataset("json", data_files="'$W'/probe.jsonl", cache_dir="'$W'/probe-cache")'
  if ! python3 -c "$probe" > $W/probe.log 2>&1; then
    tail -3 $W/probe.log
    echo "datasets $(python3 -c 'import pyarrow; print(pyarrow.__version__)') pyarrow: trying .whl/alt"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target $W/site .whl/alt/*.whl > /dev/null 2>&1
    python3 -c "$probe" || return 1
  fi
  python3 -c 'import datasets, lm_eval, pyarrow; print("lm_eval", lm_eval.__version__ if hasattr(lm_eval, "__version__") else "?", "datasets", datasets.__version__, "pyarrow", pyarrow.__version__)'
}

stage_lmeval() {
  shards
  # A 125M on the carried 4096-piece tokenizer: lm-eval needs the tokenizer beside the weights.
  rm -rf $W/runs/small
  $D train $C125 --set run.root=$W/runs --set run.name=small --set data.path=$W/shards \
    --set data.tokenizer=.carry/tokenizer-4096.model --set model.vocab_size=4096 \
    --set train.micro_batch_size=16 --set train.max_steps=200 --set eval.every=0 > /dev/null 2>&1
  stamp "small 125M exit $?"
  lm_eval_env || { echo "lm-eval could not be imported"; return 1; }
  timeout 400 python3 scripts/eval/lm_eval_speed.py $W/runs/small --published --device cuda \
    --batch-size 64 --cli $D --work $W/lmeval > "$OUT/lm_eval_speed.txt" 2>&1
  tail -14 "$OUT/lm_eval_speed.txt"
  stamp "lm-eval done"
}

[ $# -eq 0 ] && set -- a
for stage in "$@"; do
  case "$stage" in
    a) stage_a ;;
    data) stage_data ;;
    big) stage_big ;;
    lmeval) stage_lmeval ;;
    ab) stage_a; stage_data; stage_big; stage_lmeval ;;
    *) echo "usage: $0 a|data|big|lmeval|ab ..." >&2; exit 2 ;;
  esac
done
