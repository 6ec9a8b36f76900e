#!/usr/bin/env bash
# Coverage-guided fuzzing of every reader of outside bytes (libFuzzer through clang, with ASan and
# UBSan): JSON, YAML configs, experiment files, safetensors, shards and manifests, score's token files
# (tests/fuzz/fuzz_*.cpp). Builds build-san/ (the sanitized build), makes the seed corpora from the
# repository's own files and a freshly initialised model, then runs each target for SECONDS
# (default 60). Corpora grow across runs in build-san/fuzz/corpus/<target>; a crash, hang, leak-free
# sanitizer report or uncaught non-deepthin exception leaves its input in build-san/fuzz/artifacts/
# and makes the script exit 1.
#   scripts/fuzz.sh [SECONDS] [TARGET...]      # FUZZ_JOBS=2 runs two targets at a time
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${1:-60}
shift || true
export DEEPTHIN_SANITIZE=${DEEPTHIN_SANITIZE:-address,undefined} DEEPTHIN_FUZZ=1
export DEEPTHIN_BUILD_DIR=build-san
export DEEPTHIN_CMAKE_ARGS="-DDEEPTHIN_SANITIZE=$DEEPTHIN_SANITIZE -DDEEPTHIN_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
scripts/setup.sh >&2
B=$ROOT/build-san
F=$B/fuzz
mkdir -p "$F/artifacts" "$F/seeds"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(cd "$B" && ls fuzz_* | sort))

# Seeds: the repository's configs and experiments (base: paths made absolute, so that they resolve
# from the fuzzers' scratch directory), a tiny initialised model, hand-made shards and manifests.
S=$F/seeds
rm -rf "$S" && mkdir -p "$S"/{fuzz_config,fuzz_experiment,fuzz_json,fuzz_safetensors,fuzz_shards,fuzz_tokens,fuzz_paths,fuzz_tasks}
python3 - "$S" <<'PY'
import glob, os, re, sys
s = sys.argv[1]
def absolute(m, here):
    paths = [p.strip() for p in m.group(2).strip("[]").split(",")]
    paths = [os.path.normpath(os.path.join(here, p)) for p in paths]
    return m.group(1) + ("[" + ", ".join(paths) + "]" if m.group(2).startswith("[") else paths[0])
for pattern, target in (("configs/**/*.yaml", "fuzz_config"), ("experiments/*.yaml", "fuzz_experiment")):
    for f in glob.glob(pattern, recursive=True):
        here = os.path.dirname(os.path.abspath(f))
        text = re.sub(r"^(base:\s*)(.+?)\s*$", lambda m: absolute(m, here), open(f).read(), flags=re.M)
        open(f"{s}/{target}/{f.replace('/', '_')}", "w").write(text)
        if target == "fuzz_experiment":  # the same over the fuzzer's small base.yaml
            small = re.sub(r"^base:.*$", "base: base.yaml", open(f).read(), flags=re.M)
            open(f"{s}/{target}/small_{os.path.basename(f)}", "w").write(small)
PY
cat > "$F/tiny.yaml" <<YAML
model: {vocab_size: 64, dim: 16, n_layers: 2, n_heads: 2, n_kv_heads: 1, max_seq_len: 32,
        layer_sharing: {scheme: immediate, repeats: 2}}
YAML
rm -rf "$F/model" && "$B/deepthin" init "$F/tiny.yaml" --out "$F/model" >/dev/null
cp "$F/model/model.safetensors" "$S/fuzz_safetensors/tiny.safetensors"
cp "$F/model/config.json" "$S/fuzz_json/config.json"
python3 - "$S" <<'PY'
import json, struct, sys
s = sys.argv[1]
def put(target, name, data):
    open(f"{s}/{target}/{name}", "wb").write(data)
put("fuzz_json", "state.json", json.dumps({"step": 12, "tokens": 2**53 + 1, "elapsed_s": 1.5,
    "loader": {"epoch": 0, "cursor": [3, 4]}, "cpu_rng": "00ff"}).encode())
put("fuzz_json", "metrics.json", b'{"type":"train","loss":NaN,"grad_norm":Infinity,"lr":-Infinity,"s":"\\u00e9\\ud83d\\ude00"}')
put("fuzz_json", "checksums.json", json.dumps({"model.safetensors": "ab" * 32}).encode())
tokens = list(range(7)) * 40
dt = b"DTSHARD\0" + struct.pack("<IIQ", 1, 2, len(tokens)) + bytes(40) + struct.pack(f"<{len(tokens)}H", *tokens)
llmc = struct.pack("<256i", 20240520, 1, len(tokens), *([0] * 253)) + struct.pack(f"<{len(tokens)}H", *tokens)
put("fuzz_shards", "deepthin_shard", b"\0" + dt)
put("fuzz_shards", "llmc_shard", b"\0" + llmc)
manifest = {"format": "deepthin-shards", "version": 1, "dtype": "uint16", "vocab_size": 64,
            "max_token_id": 7, "bos_id": 1, "eos_id": 2,
            "splits": {"train": {"tokens": 300, "shards": [{"file": "train_000000.bin", "tokens": 300}]},
                       "val": {"tokens": 100, "shards": [{"file": "val_000000.bin", "tokens": 100}]}}}
put("fuzz_shards", "manifest", b"\1" + json.dumps(manifest).encode())
put("fuzz_json", "manifest.json", json.dumps(manifest).encode())
put("fuzz_tokens", "lines", b"1 2 3 4\n\n31999 0 7\n  5\t6  \n")
put("fuzz_tokens", "bad", b"1 2 x\n-3 4\n99999999999999999999 1\n")
for i, name in enumerate([b"run_1", b"../x", b"a/b", b"..", b".", b"x" * 129, b"\xc3\xa9t\xc3\xa9", b"\xff"]):
    put("fuzz_paths", f"name{i}", b"\0" + name)
for i, (flags, out) in enumerate([(1, b"model"), (0, b"model"), (3, b"model.gguf"), (1, b"run"),
                                  (3, b"notes.txt"), (1, b"fifo"), (1, b"new/x"), (1, b"model/../model")]):
    put("fuzz_paths", f"out{i}", b"\1" + bytes([flags]) + out)
tasks = ["arc_easy", "arc_challenge", "boolq", "piqa", "siqa", "hellaswag", "openbookqa", "winogrande"]
lines = {
    "arc_easy": {"question": "Why?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"},
    "boolq": {"passage": "\u00a0P ", "question": "q", "label": 1},
    "piqa": {"goal": "g", "sol1": "", "sol2": "s", "label": 0},
    "siqa": {"context": "c", "question": "q", "answerA": "a", "answerB": "b", "answerC": "c", "label": " 2"},
    "hellaswag": {"activity_label": "A", "ctx_a": "x [y] z", "ctx_b": "\u00c9COLE \u03a3", "endings": ["e [title] f", "\u3000g"], "label": "1"},
    "openbookqa": {"question_stem": "s\u00a0", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "\u00a0A"},
    "winogrande": {"sentence": "The _ is \u2028here.", "option1": "x", "option2": "y", "answer": "2"},
}
for i, t in enumerate(tasks):
    line = lines.get(t, lines["arc_easy"])
    put("fuzz_tasks", t, bytes([i]) + (json.dumps(line, ensure_ascii=False) + "\n").encode())
PY

run_target() {
  local t=$1 corpus=$F/corpus/$1
  mkdir -p "$corpus"
  local t0=$(date +%s)
  if "$B/$t" "$corpus" "$S/$t" -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=4096 \
       -max_len=16384 -artifact_prefix="$F/artifacts/$t-" -print_final_stats=1 \
       > "$F/$t.log" 2>&1; then
    echo "$t: ${SECONDS_EACH} s, $(grep -m1 -oE 'stat::number_of_executed_units: *[0-9]+' "$F/$t.log" | grep -oE '[0-9]+$') runs, corpus $(ls "$corpus" | wc -l) inputs, no findings"
  else
    echo "$t: FINDING after $(( $(date +%s) - t0 )) s (log $F/$t.log):"
    grep -E "ERROR|SUMMARY|uncaught|runtime error|Test unit written" "$F/$t.log" | head -6
    return 1
  fi
}
export -f run_target
export B F S SECONDS_EACH
printf '%s\n' "${targets[@]}" | xargs -P "${FUZZ_JOBS:-1}" -I{} bash -c 'run_target {}'
