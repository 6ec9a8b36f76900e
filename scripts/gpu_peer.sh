#!/usr/bin/env bash
# On the GPU machine: build, then run `deepthin bench` and the compiled-PyTorch peer
# (peer_lean.py: a lean Llama under torch.compile, fp32 master weights + bf16 autocast, fused AdamW)
# on the same GPU with the same shapes, row by row, and print the comparison table.
#
#   scripts/gpu_peer.sh                       # the four rows: 125m 16, 125m 32, 350m 16, 1b 4
#   ROWS="125m:16 1b:4" scripts/gpu_peer.sh   # some rows
#   PROFILE=3 scripts/gpu_peer.sh             # also deepthin's GPU time by kernel family
#
# The peer script is not part of the repository: put a copy at .carry/peer_lean.py (ignored, carried
# to the GPU machine) or point PEER at it. Full JSON lands in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/gpu_env.sh
OUT=${OUT:-/tmp/deepthin-gpu}
PEER=${PEER:-.carry/peer_lean.py}
ROWS=${ROWS:-"125m:16 125m:32 350m:16 1b:4"}
PROFILE=${PROFILE:-0}
EXTRA=${EXTRA:-}  # more --set options for deepthin, e.g. "--set train.kernels=reference"
mkdir -p "$OUT"
[ -f "$PEER" ] || { echo "gpu_peer.sh: no peer script at $PEER" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ -z "${SKIP_BUILD:-}" ]; then
  t0=$(date +%s)
  DEEPTHIN_JOBS=${DEEPTHIN_JOBS:-16} DEEPTHIN_BUILD_TARGET=deepthin scripts/setup.sh > "$OUT/setup.log" 2>&1 ||
    { tail -40 "$OUT/setup.log"; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
fi
: > "$OUT/peer_rows.jsonl"
for row in $ROWS; do
  shape=${row%%:*} mb=${row##*:}
  prof=()
  [ "$PROFILE" -gt 0 ] && prof=(--profile "$PROFILE")
  # shellcheck disable=SC2086
  build/deepthin bench configs/pretrain/mobilellm-$shape.yaml --set train.device=cuda \
    --set train.micro_batch_size=$mb --steps 10 --warmup 3 --step-only "${prof[@]}" $EXTRA \
    > "$OUT/deepthin_${shape}_$mb.json" 2> "$OUT/deepthin_${shape}_$mb.err" ||
    { echo "deepthin bench $shape $mb failed:"; tail -5 "$OUT/deepthin_${shape}_$mb.err"; }
  SHAPE=$shape python3 "$PEER" "$mb" > "$OUT/peer_${shape}_$mb.json" 2> "$OUT/peer_${shape}_$mb.err" ||
    { echo "peer $shape $mb failed:"; tail -5 "$OUT/peer_${shape}_$mb.err"; }
  python3 - "$shape" "$mb" "$OUT" <<'PY' >> "$OUT/peer_rows.jsonl"
import json, sys
shape, mb, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(p):
    try:
        text = open(p).read().strip()
        try:
            return json.loads(text)
        except ValueError:
            return json.loads(text.splitlines()[-1])  # the peer's one JSON line after any chatter
    except Exception:
        return {}
d, p = load(f"{out}/deepthin_{shape}_{mb}.json"), load(f"{out}/peer_{shape}_{mb}.json")
print(json.dumps({"shape": shape, "micro_batch": mb, "deepthin": d, "peer": p}))
PY
  tail -1 "$OUT/peer_rows.jsonl" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read()); d, p = r["deepthin"], r["peer"]
dt, pt = d.get("tokens_per_s"), p.get("tokens_per_s")
ratio = dt / pt if dt and pt else float("nan")
print("row", r["shape"], r["micro_batch"], "deepthin", dt, d.get("launch"), "peer", pt, "ratio %.3f" % ratio, flush=True)'
done
python3 - "$OUT/peer_rows.jsonl" <<'PY' | tee "$OUT/peer_table.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| shape, micro-batch × 2048 | deepthin tokens/s | peer tokens/s | deepthin ÷ peer | deepthin peak | peer peak | deepthin step | peer step |")
print("|---|---|---|---|---|---|---|---|")
k = lambda v: f"{v/1e3:.1f}K" if v else "—"
for r in rows:
    d, p = r["deepthin"], r["peer"]
    dt, pt = d.get("tokens_per_s"), p.get("tokens_per_s")
    ratio = f"**{dt/pt:.2f}**" if dt and pt else "—"
    print(f"| {r['shape'].upper()}, {r['micro_batch']} | {k(dt)} | {k(pt)} | {ratio} | "
          f"{d.get('peak_mem_gb', float('nan')):.1f} GB | {p.get('peak_mem_gb', float('nan')):.1f} GB | "
          f"{d.get('step_ms', float('nan')):.1f} ms | {p.get('step_ms', float('nan')):.1f} ms |")
dev = next((r["deepthin"].get("device") for r in rows if r["deepthin"]), "?")
print(f"\n{dev}; deepthin {rows[0]['deepthin'].get('kernels', '?')} kernels")
for r in rows:
    prof = r["deepthin"].get("profile")
    if not prof or "families" not in prof:
        continue
    print(f"\nGPU time per step by kernel family, {r['shape'].upper()} micro-batch {r['micro_batch']} "
          f"(step {r['deepthin']['step_ms']:.1f} ms wall, {prof['gpu_ms_per_step']:.1f} ms of kernels):")
    print("| family | ms / step | share | kernels / step |\n|---|---|---|---|")
    for f in prof["families"]:
        print(f"| {f['family']} | {f['ms_per_step']:.2f} | {100*f['share']:.1f}% | {f['kernels_per_step']:.0f} |")
PY
