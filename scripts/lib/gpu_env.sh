# Sourced by the scripts/gpu_*.sh runs on the GPU machine.
# NVLink multicast stays off: on shared hosts a program that uses it can take the GPUs out of service.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

# carried_shards CORPUS_JSONL SHARDS_DIR BIN: the offline corpus carried in .carry/ (corpus.jsonl.gz,
# tokenizer-32k.model), unpacked and tokenised once with the 32k tokenizer (1% validation split).
carried_shards() {
  local corpus=$1 shards=$2 bin=$3
  mkdir -p "$(dirname "$corpus")"
  [ -f "$corpus" ] || gunzip -c .carry/corpus.jsonl.gz > "$corpus"
  [ -f "$shards/manifest.json" ] ||
    "$bin" data prepare --tokenizer .carry/tokenizer-32k.model --input "$corpus" --format jsonl \
      --out "$shards" --val-fraction 0.01 --threads 16 2>&1 | tail -1
}
export DEEPTHIN_NO_EXPORT=1  # no registry on the GPU machine: the export runtimes are set up on CPU machines

# ensure_built LOG: builds build/deepthin with 16 jobs when it is missing (the log to LOG; its tail and
# exit 1 on failure).
ensure_built() {
  [ -x build/deepthin ] && return
  DEEPTHIN_JOBS=16 DEEPTHIN_BUILD_TARGET=deepthin scripts/setup.sh > "$1" 2>&1 ||
    { tail -40 "$1"; exit 1; }
}
