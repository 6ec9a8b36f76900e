#!/usr/bin/env bash
# The main job on a built-in default, on a fresh machine: set up, build the offline corpus, train a
# small tokenizer, prepare the demo slice, train the demo deep-and-thin model on the CPU for about five
# minutes (validation loss printed as it falls), then generate a sample.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1;32m== %s ==\033[0m\n' "$*"; }
scripts/setup.sh
D=build/deepthin
DATA=runs/demo-data

say "corpus (Debian packages of free text; cached after the first run)"
[ -f data/corpus/demo.jsonl ] || scripts/get_corpus.sh

say "tokenizer: 4096-piece BPE on the demo slice"
[ -f $DATA/tokenizer/tokenizer.model ] ||
  $D tokenizer train --input data/corpus/demo.jsonl --vocab-size 4096 --out $DATA/tokenizer

say "token shards"
[ -f $DATA/shards/manifest.json ] ||
  $D data prepare --tokenizer $DATA/tokenizer/tokenizer.model --input data/corpus/demo.jsonl \
    --format jsonl --out $DATA/shards --val-fraction 0.02 --threads 2
$D data inspect $DATA/shards --seq-len 256

say "training configs/demo.yaml on the CPU"
rm -rf runs/demo
$D train configs/demo.yaml | tee runs/demo-summary.json

say "sample"
$D generate runs/demo --prompt "The" --max-new-tokens 60 --temperature 0.8 --top-k 40 --seed 1

say "result"
entropy=$($D data inspect $DATA/shards --split val --seq-len 256 --entropy | sed -n 's/^unigram entropy: \([0-9.]*\).*/\1/p')
python3 - "$entropy" <<'PY'
import json, sys
s = json.load(open("runs/demo-summary.json"))
first = next(json.loads(l) for l in open("runs/demo/metrics.jsonl") if '"eval"' in l)
print(f"validation loss {first['val_loss']:.3f} at step {first['step']} -> {s['val_loss']:.3f} after {s['steps']} steps "
      f"({s['tokens']:,} tokens); unigram entropy of the same data {float(sys.argv[1]):.3f} nats/token")
PY
