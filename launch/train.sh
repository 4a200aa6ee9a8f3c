#!/usr/bin/env bash
# Single node, N GPUs (NCCL):
#   launch/train.sh CONFIG.yaml [key.sub=value ...]            # all visible GPUs
#   NUM_GPUS=4 launch/train.sh configs/parallel/zero3.yaml trainer.max_steps=200
# = deepspeed --num_gpus N --no_local_rank --module una_hpc.train CONFIG parallel.dist_backend=nccl overrides...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
[[ $# -ge 1 ]] || { sed -n 2,5p "$0" >&2; exit 2; }
NUM_GPUS="${NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}"
[[ "$NUM_GPUS" -ge 1 ]] || { echo "no GPU visible: use launch/cpu.sh" >&2; exit 1; }
cd "$ROOT"
exec "$DEEPSPEED" --num_gpus "$NUM_GPUS" "${LAUNCH_FLAGS[@]}" "${ENTRY_ARGS[@]}" "$1" parallel.dist_backend=nccl "${@:2}"
