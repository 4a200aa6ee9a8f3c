# Sourced by the launch/*.sh scripts: the deepspeed launcher and the entry point.
#   UNA_DEEPSPEED  launcher to use (default: the repo's .venv/bin/deepspeed, else `deepspeed` on PATH)
#   UNA_ENTRY      python module (default una_hpc.train) or a path to a .py script, started on every rank
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${UNA_DEEPSPEED:-}" ]]; then DEEPSPEED="$UNA_DEEPSPEED"
elif [[ -x "$ROOT/.venv/bin/deepspeed" ]]; then DEEPSPEED="$ROOT/.venv/bin/deepspeed"
else DEEPSPEED="$(command -v deepspeed || true)"; fi
if [[ -z "$DEEPSPEED" ]]; then echo "deepspeed launcher not found (make venv, or set UNA_DEEPSPEED)" >&2; exit 1; fi
ENTRY="${UNA_ENTRY:-una_hpc.train}"
if [[ "$ENTRY" == *.py ]]; then ENTRY_ARGS=("$ENTRY"); else ENTRY_ARGS=(--module "$ENTRY"); fi
# The entry point reads CONFIG and key=value overrides; ranks find each other through the launcher's env vars.
LAUNCH_FLAGS=(--no_local_rank --master_port "${MASTER_PORT:-29500}")
