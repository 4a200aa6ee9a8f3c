"""benchmarks/gpu_check.py (the one-call H100/H200 check) runs end to end on CPU: --dry-run, tiny sizes, Triton
interpreter; the JSON has every section and the fused op passes its own float64 and determinism checks. Then
benchmarks/gpu_dpo.py --dry-run adds its DPO tokens/s key (tiny model, una-hpc train in a child process).

Run: .venv/bin/python -m pytest tests/unit/test_seq_logps_gpu_check.py -q   (~15 s on 2 CPU cores)
"""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # read when the kernels are decorated

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[2]


def benchmark_module(name: str):
    """benchmarks/NAME.py loaded as a module (benchmarks/ is not a package); skips on a GPU, where the dry run is
    not the check: benchmarks/gpu_check.sh is."""
    if torch.cuda.is_available():
        pytest.skip("the dry run is the CPU check; on a GPU run benchmarks/gpu_check.sh")
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_dry_run_writes_the_json(tmp_path):
    mod = benchmark_module("gpu_check")
    out = tmp_path / "check.json"
    assert mod.main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"machine", "device", "method", "correctness", "speed"} <= set(report)
    for c in report["correctness"]:
        for mode in ("bf16", "bf16_hidden_fp32_weight"):
            assert c[mode]["bitwise_deterministic"] and c[mode]["pass"]
            assert c[mode]["logps_max_abs_err"] < 1e-3 and c[mode]["grad_weight_rel_err"] < 2e-2
    status = {r["variant"]: r["status"] for r in report["speed"]}
    assert status["naive"] == status["triton"] == status["triton_mixed"] == "ok"
    assert status["liger"].startswith("skipped") or status["liger"] == "ok"


def test_gpu_dpo_dry_run_adds_tokens_per_s(tmp_path):
    """gpu_dpo.py --dry-run: the same code path as on the GPU (config-built model, una-hpc train in its own process,
    metrics.jsonl, TRL where it imports) at tiny sizes; it adds its key to an existing gpu_check JSON."""
    mod = benchmark_module("gpu_dpo")
    out = tmp_path / "check.json"
    out.write_text(json.dumps({"device": "cpu"}))
    assert mod.main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["device"] == "cpu"  # the kernel part's keys are kept
    dpo = report["dpo_tokens_per_s"]
    una = dpo["una_hpc"]
    assert una["status"] == "ok", una
    assert una["tokens_per_s_steady"] > 0 and una["tokens_per_s_train"] > 0 and una["steps"] == 2
    assert dpo["setup"]["tokens"] > 0 and dpo["setup"]["model"]["num_hidden_layers"] == 2
    assert dpo["trl"]["status"] in ("ok", "skipped: not installed")
