#!/usr/bin/env bash
# Several nodes (NCCL), started from the first node listed in the hostfile:
#   HOSTFILE=launch/hostfile MASTER_ADDR=node-001 launch/multinode.sh configs/paper/mistral7b_offline_zero3.yaml
# = deepspeed --hostfile H --master_addr A --master_port P --no_local_rank --module una_hpc.train CONFIG ...
# Environment variables to forward to every node go into ~/.deepspeed_env or ./.deepspeed_env (KEY=VALUE lines),
# e.g. NCCL_SOCKET_IFNAME, HF_HOME.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
[[ $# -ge 1 ]] || { sed -n 2,6p "$0" >&2; exit 2; }
HOSTFILE="${HOSTFILE:-$ROOT/launch/hostfile}"
[[ -f "$HOSTFILE" ]] || { echo "$HOSTFILE: no hostfile (copy launch/hostfile.example)" >&2; exit 1; }
MASTER_ADDR="${MASTER_ADDR:-$(awk '!/^#/ && NF {print $1; exit}' "$HOSTFILE")}"
cd "$ROOT"
exec "$DEEPSPEED" --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" "${LAUNCH_FLAGS[@]}" "${ENTRY_ARGS[@]}" "$1" \
    parallel.dist_backend=nccl "${@:2}"
