#!/usr/bin/env bash
# The W8A8 study over trained runs: for every run under each RUNS_ROOT (a sweep's directory, or one
# run), validation perplexity unquantized, with simulated W8A8, W8A16 and W4A16 (group 32)
# (deepthin eval --perplexity --quant), and a markdown table with each one's change in percent.
#   scripts/quant_table.sh TOKENS RUNS_ROOT... > table.md
# TOKENS: a prepared dataset (its val split is scored) or shard files. BIN=build/deepthin,
# MAX_TOKENS (default all), DEVICE (default auto: CUDA when there is one), JOBS evaluations at once
# (default 1; small models share a GPU well).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/deepthin}
TOKENS=$1
shift
QUANTS=(none w8a8 w8a16 w4a16-g32)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
runs=()
for root in "$@"; do
  if [ -d "$root/checkpoints" ]; then runs+=("$root"); continue; fi
  for d in "$root"/*/; do [ -d "$d/checkpoints" ] && runs+=("${d%/}"); done
done
[ ${#runs[@]} -gt 0 ] || { echo "quant_table.sh: no runs with checkpoints under $*" >&2; exit 2; }
one() {  # RUN QUANT
  local out=$tmp/$(basename "$(dirname "$1")")__$(basename "$1")__$2
  "$BIN" eval "$1" --perplexity "$TOKENS" --quant "$2" --device "${DEVICE:-auto}" \
    ${MAX_TOKENS:+--max-tokens $MAX_TOKENS} --json "$out.json" > /dev/null 2> "$out.err" ||
    { echo "quant_table.sh: $1 --quant $2 failed:" >&2; tail -3 "$out.err" >&2; return 1; }
  echo "$(basename "$1") $2 done" >&2
}
export -f one
export BIN TOKENS tmp MAX_TOKENS DEVICE
for run in "${runs[@]}"; do for q in "${QUANTS[@]}"; do echo "$run $q"; done; done |
  xargs -P "${JOBS:-1}" -n 2 bash -c 'one "$0" "$1"'
python3 - "$tmp" "${QUANTS[@]}" <<'PY'
import glob, json, os, sys
tmp, quants = sys.argv[1], sys.argv[2:]
rows = {}
for f in sorted(glob.glob(os.path.join(tmp, "*.json"))):
    exp, run, q = os.path.basename(f)[:-5].split("__")
    d = json.load(open(f))
    rows.setdefault((exp, run), {})[q] = d["perplexity"]
p0 = next(iter(rows.values()))["none"]
print(f"Validation perplexity over {p0['tokens']:,} tokens ({p0['windows']} windows); change against unquantized in parentheses.\n")
print("| sweep | run | " + " | ".join("unquantized" if q == "none" else q for q in quants) + " |")
print("|---|---|" + "---|" * len(quants))
worst = {q: 0.0 for q in quants[1:]}
for (exp, run), r in rows.items():
    base = r["none"]["ppl"]
    cells = [f"{base:.2f}"]
    for q in quants[1:]:
        d = 100 * (r[q]["ppl"] / base - 1)
        worst[q] = max(worst[q], abs(d))
        cells.append(f"{r[q]['ppl']:.2f} ({d:+.2f}%)")
    print(f"| {exp} | {run} | " + " | ".join(cells) + " |")
print("\nLargest change: " + ", ".join(f"{q} {v:.2f}%" for q, v in worst.items()))
PY
