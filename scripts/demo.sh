#!/usr/bin/env bash
# The main job on a built-in default: set up, count the paper's models, build the demo model, write it
# in HF format and score a sequence with it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
D=build/deepthin
echo "== MobileLLM-125M and its layer-shared twin =="
$D params configs/models/mobilellm-125m.yaml
$D params configs/models/mobilellm-125m-ls.yaml
echo "== demo model: init, then score a sequence =="
mkdir -p runs/demo
$D init configs/demo.yaml --out runs/demo/init --seed 0 --force
echo "1 15 300 42 7 2048 99 5" > runs/demo/tokens.txt
$D score runs/demo/init --tokens runs/demo/tokens.txt | python3 -c '
import json, sys
s = json.load(sys.stdin)["sequences"][0]
print("log-probs:", " ".join(f"{x:.3f}" for x in s["logprobs"]), f"(sum {s['"'"'sum'"'"']:.3f})")'
