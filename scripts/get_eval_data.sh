#!/usr/bin/env bash
# The eight zero-shot task files for `deepthin eval`, from the Hugging Face hub through `datasets`:
#   scripts/get_eval_data.sh [OUT_DIR]     # default data/eval
# On a machine that does not reach the hub it says so and exits non-zero (status 3).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-data/eval}
PY=.venv/bin/python
[ -x $PY ] || scripts/setup.sh
$PY -c 'import datasets' 2>/dev/null || .venv/bin/pip install -q --disable-pip-version-check datasets
HF_HUB_ETAG_TIMEOUT=${HF_HUB_ETAG_TIMEOUT:-20} $PY scripts/eval/get_eval_data.py --out "$OUT"
