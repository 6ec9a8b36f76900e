#!/usr/bin/env bash
# Start one deepthin process per GPU on this node, as torchrun would: RANK, WORLD_SIZE, LOCAL_RANK,
# LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR and MASTER_PORT are set for each; rank 0 serves the
# rendezvous store. Run it once per node (same --nnodes, --master and --port, each its --node-rank).
# If any process fails, the others on this node are stopped and the script exits with its status;
# SIGINT/SIGTERM are passed on (deepthin checkpoints and stops).
#
#   scripts/launch.sh [--nproc N] [--nnodes N] [--node-rank R] [--master HOST] [--port P] \
#                     [--bin PATH] -- train CONFIG [--set KEY=VALUE]...
#
# One node, 8 GPUs:    scripts/launch.sh --nproc 8 -- train configs/pretrain/mobilellm-125m.yaml
# Node 1 of 4:         scripts/launch.sh --nproc 8 --nnodes 4 --node-rank 1 --master node0 -- train …
set -uo pipefail
cd "$(dirname "$0")/.."

nproc=""; nnodes=1; node_rank=0; master=127.0.0.1; port=29500; bin=build/deepthin
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
need() { [ $# -ge 2 ] || { echo "launch.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --nproc) need "$@"; nproc=$2; shift 2 ;;
    --nnodes) need "$@"; nnodes=$2; shift 2 ;;
    --node-rank) need "$@"; node_rank=$2; shift 2 ;;
    --master) need "$@"; master=$2; shift 2 ;;
    --port) need "$@"; port=$2; shift 2 ;;
    --bin) need "$@"; bin=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "launch.sh: unknown option '$1' (deepthin's own arguments go after --)" >&2; usage ;;
  esac
done
[ $# -gt 0 ] || { echo "launch.sh: no deepthin command after --" >&2; usage; }
if [ -z "$nproc" ]; then
  nproc=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  [ "${nproc:-0}" -gt 0 ] || nproc=1
fi
for v in nproc nnodes node_rank port; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "launch.sh: --${v//_/-} must be a number, got '${!v}'" >&2; exit 2; }
done
[ "$nproc" -ge 1 ] && [ "$nnodes" -ge 1 ] && [ "$node_rank" -lt "$nnodes" ] ||
  { echo "launch.sh: need nproc >= 1, nnodes >= 1 and node-rank < nnodes" >&2; exit 2; }
[ -x "$bin" ] || { echo "launch.sh: $bin not found; build first (scripts/setup.sh)" >&2; exit 2; }

# Multicast/NVLS off by default (machines without it hang or fail at communicator setup).
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
export TORCH_SYMM_MEM_DISABLE_MULTICAST=${TORCH_SYMM_MEM_DISABLE_MULTICAST:-1}
export NVSHMEM_DISABLE_NVLS=${NVSHMEM_DISABLE_NVLS:-1}
world=$((nproc * nnodes))
pids=()
for ((l = 0; l < nproc; l++)); do
  r=$((node_rank * nproc + l))
  RANK=$r WORLD_SIZE=$world LOCAL_RANK=$l LOCAL_WORLD_SIZE=$nproc GROUP_RANK=$node_rank \
    MASTER_ADDR=$master MASTER_PORT=$port OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} \
    "$bin" "$@" &
  pids+=($!)
done
echo "launch.sh: node $node_rank of $nnodes, ranks $((node_rank * nproc))..$((node_rank * nproc + nproc - 1)) of $world, master $master:$port" >&2

forward() { [ ${#live[@]} -gt 0 ] && kill -"$1" "${!live[@]}" 2>/dev/null; }
declare -A live
for p in "${pids[@]}"; do live[$p]=1; done
trap 'forward INT' INT
trap 'forward TERM' TERM
status=0
# Poll rather than `wait -n`: a rank that bash has already reaped and reported is no longer a job
# that `wait -n` can name, while `wait PID` still returns its status.
while [ ${#live[@]} -gt 0 ]; do
  for p in "${!live[@]}"; do
    kill -0 "$p" 2>/dev/null && continue
    wait "$p"
    rc=$?
    unset "live[$p]"
    if [ $rc -ne 0 ] && [ $status -eq 0 ]; then
      status=$rc
      echo "launch.sh: a rank (pid $p) exited with status $rc; stopping the others on this node" >&2
      forward TERM
    fi
  done
  [ ${#live[@]} -gt 0 ] && sleep 0.2
done
exit $status
