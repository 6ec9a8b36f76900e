#!/usr/bin/env bash
# On the GPU machine: `deepthin bench` of one config under several environment settings (the fused
# path's experiment switches, kernels/fused.h), with the GPU time per kernel family and the top
# kernels of each. The build must exist.
#   CONFIG=configs/pretrain/mobilellm-125m.yaml MB=16 scripts/gpu_variants.sh "X=0" "DEEPTHIN_SDPA=cudnn"
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/gpu_env.sh
OUT=${OUT:-/tmp/deepthin-gpu}
CONFIG=${CONFIG:-configs/pretrain/mobilellm-125m.yaml}
MB=${MB:-16}
mkdir -p "$OUT"
i=0
for v in "$@"; do
  i=$((i + 1))
  f="$OUT/variant_$i.json"
  # shellcheck disable=SC2086
  env $v build/deepthin bench "$CONFIG" --set train.device=cuda --set train.micro_batch_size=$MB \
    --step-only --steps 6 --warmup 2 --profile 2 > "$f" 2> "${f%.json}.err"
  python3 - "$f" "$v" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"{sys.argv[2]}: failed ({e})"); sys.exit()
p = d.get("profile", {})
fam = ", ".join(f"{f['family']} {f['ms_per_step']:.1f}" for f in p.get("families", [])[:4])
top = "; ".join(f"{k['kernel'][:60]} {k['ms_per_step']:.1f}" for k in p.get("top_kernels", [])[:5])
print(f"{sys.argv[2]}: step {d['step_ms']:.1f} ms, {d['tokens_per_s']/1e3:.1f}K tok/s, "
      f"peak {d['peak_mem_gb']:.1f} GB, kernels {p.get('gpu_ms_per_step', 0):.1f} ms\n  {fam}\n  {top}")
PY
done
