#!/usr/bin/env bash
# The full offline corpus as training tokens: a 32k-piece BPE tokenizer (LLaMA's vocabulary size) trained on
# it, and token shards with a 1% validation split. configs/recipes/mobilellm.yaml points here.
#   scripts/prepare_corpus.sh            # data/tokenizer-32k/, data/shards/corpus-32k/
set -euo pipefail
cd "$(dirname "$0")/.."
D=build/deepthin
[ -x $D ] || scripts/setup.sh
[ -f data/corpus/corpus.jsonl ] || scripts/get_corpus.sh
[ -f data/tokenizer-32k/tokenizer.model ] ||
  $D tokenizer train --input data/corpus/corpus.jsonl --vocab-size 32000 --max-sentences 400000 \
    --out data/tokenizer-32k --threads "$(nproc)"
$D data prepare --tokenizer data/tokenizer-32k/tokenizer.model --input data/corpus/corpus.jsonl \
  --format jsonl --out data/shards/corpus-32k --val-fraction 0.01 --threads "$(nproc)" --force
$D data inspect data/shards/corpus-32k --entropy
