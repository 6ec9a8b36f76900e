#!/usr/bin/env bash
# The export table of docs/export.md ("Sizes, agreement and CPU decode speed"): MobileLLM-125M and
# 125M-LS initialised (deepthin init, seed 0, with the
# 32k tokenizer of scripts/prepare_corpus.sh) and, when present, a trained model (RUN, e.g. the demo's
# run directory), exported to every GGUF and ExecuTorch variant; file sizes, agreement with deepthin and
# CPU decode speed on this machine (scripts/export/measure.py).
#   scripts/export_table.sh [RUN]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_export.sh
TOK=data/tokenizer-32k/tokenizer.model
[ -f $TOK ] || scripts/prepare_corpus.sh
W=${W:-/tmp/deepthin-export-table}
mkdir -p $W
models=()
for m in mobilellm-125m mobilellm-125m-ls; do
  [ -d $W/$m ] || { build/deepthin init configs/models/$m.yaml --out $W/$m --seed 0 && cp $TOK $W/$m/; }
  models+=($W/$m)
done
if [ $# -gt 0 ]; then  # a run directory (its newest checkpoint) or a model directory
  if [ -d "$1/checkpoints" ]; then models+=("$(ls -d "$1"/checkpoints/step_* | sort -V | tail -1)"); else models+=("$1"); fi
fi
.venv-export/bin/python scripts/export/measure.py --deepthin build/deepthin --work $W "${models[@]}" 2>/dev/null
