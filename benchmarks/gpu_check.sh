#!/usr/bin/env bash
# One prepared GPU check of the fused seq_logps kernel: one call on one H100/H200, under 8 minutes in all.
#   bash benchmarks/gpu_check.sh            # -> benchmarks/results/gpu_check_<device>.json (also copied to $OUT)
#   bash benchmarks/gpu_check.sh --dry-run  # CPU: the same python on tiny sizes under the Triton interpreter
# What it measures: benchmarks/gpu_check.py's docstring, then benchmarks/gpu_dpo.py's (DPO tokens/s of una-hpc and
# TRL on a ~0.5B model, key "dpo_tokens_per_s"; trl==1.16.0 is a peer like the two below). It needs a python with a CUDA torch and triton (the first of
# .venv/bin/python, python3 that sees a GPU) and exits 2, installing nothing, where there is none. Peers: liger-kernel and cut-cross-entropy are installed from wheels in
# .whl/ when that folder holds them (a machine without network), else by pip with short timeouts; a peer that does
# not install is listed as skipped in the JSON. The package itself need not be installed: kernels/ is loaded by path.
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
HARD=450  # seconds for the whole script: 8 minutes less a margin

has_cuda() { "$1" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }
PY=python3
if [ -x .venv/bin/python ] && has_cuda .venv/bin/python; then PY=.venv/bin/python; fi
if [ "${1:-}" = "--dry-run" ]; then
  [ -x .venv/bin/python ] && PY=.venv/bin/python
  J="${OUT:-/tmp}/gpu_check_dry_run.json"
  TRITON_INTERPRET=1 "$PY" benchmarks/gpu_check.py --dry-run --out "$J" || exit $?
  exec "$PY" benchmarks/gpu_dpo.py --dry-run --out "$J"
fi
if ! has_cuda "$PY"; then  # installs nothing then: a CPU machine's python is left as it is
  echo "gpu_check: no python here has a CUDA torch that sees a GPU (tried .venv/bin/python, python3); --dry-run on CPU"
  exit 2
fi
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gc_site .whl/*.whl \
    && export PYTHONPATH=/tmp/gc_site${PYTHONPATH:+:$PYTHONPATH}
fi
for pair in liger_kernel:liger-kernel cut_cross_entropy:cut-cross-entropy trl:trl==1.16.0; do
  mod=${pair%%:*}; pkg=${pair##*:}
  "$PY" -c "import $mod" 2>/dev/null && continue
  timeout 45 "$PY" -m pip install -q --retries 0 --timeout 10 --no-deps "$pkg" \
    || echo "gpu_check: $pkg did not install (its column is skipped)"
done

LEFT=$(( HARD - ($(date +%s) - T0) ))
DPO=150  # kept for benchmarks/gpu_dpo.py (una-hpc vs TRL DPO on ~0.5B), which runs after the kernel part
BUDGET=$(( LEFT - 90 - DPO ))  # no new measurement starts after this; the one running may take ~60 s at V = 256k
[ "$BUDGET" -lt 60 ] && BUDGET=60
NAME=$("$PY" -c "import torch; print(torch.cuda.get_device_name().replace(' ', '_'))" 2>/dev/null || echo unknown)
JSON=benchmarks/results/gpu_check_${NAME}.json
KLEFT=$(( LEFT - DPO ))
PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1 timeout $(( KLEFT > 120 ? KLEFT : 120 )) \
  "$PY" benchmarks/gpu_check.py --budget-s "$BUDGET" --out "$JSON"
rc=$?
# Whatever the kernel part left: gpu_dpo.py stops a side at its budget and records "skipped: budget" instead.
DLEFT=$(( HARD - ($(date +%s) - T0) - 10 ))
if [ "$DLEFT" -ge 30 ]; then
  PYTHONUNBUFFERED=1 timeout $(( DLEFT + 5 )) "$PY" benchmarks/gpu_dpo.py --budget-s "$DLEFT" --out "$JSON" \
    || echo "gpu_check: gpu_dpo.py failed (see above)"
else
  "$PY" -c "import json,sys; p=sys.argv[1]; r=json.load(open(p)); r['dpo_tokens_per_s']={'status': 'skipped: budget'}; \
json.dump(r, open(p, 'w'), indent=1)" "$JSON" 2>/dev/null || true
fi
if [ -n "${OUT:-}" ] && [ -f "$JSON" ]; then cp "$JSON" "$OUT/"; fi
echo "gpu_check: rc=$rc json=$JSON total_s=$(( $(date +%s) - T0 ))"
exit $rc
