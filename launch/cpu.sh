#!/usr/bin/env bash
# N processes on one CPU machine, gloo backend (tests, laptops, CI):
#   launch/cpu.sh CONFIG.yaml [key.sub=value ...]              # NPROC=2 by default
#   NPROC=2 launch/cpu.sh configs/parallel/zero2.yaml trainer.max_steps=5
# = DS_ACCELERATOR=cpu deepspeed --num_gpus N --no_local_rank --module una_hpc.train CONFIG parallel.dist_backend=gloo ...
# DeepSpeed 0.19 on CPU accepts --num_gpus as the process count (measured); DS_ACCELERATOR=cpu must be set before
# deepspeed is imported. The first start JIT-builds DeepSpeed's shm comm op (~40 s, cached in ~/.cache/torch_extensions).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
[[ $# -ge 1 ]] || { sed -n 2,7p "$0" >&2; exit 2; }
NPROC="${NPROC:-2}"
export DS_ACCELERATOR=cpu
# Share the cores between the ranks instead of oversubscribing them.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / NPROC > 0 ? $(nproc) / NPROC : 1 ))}"
cd "$ROOT"
exec "$DEEPSPEED" --num_gpus "$NPROC" "${LAUNCH_FLAGS[@]}" "${ENTRY_ARGS[@]}" "$1" parallel.dist_backend=gloo "${@:2}"
