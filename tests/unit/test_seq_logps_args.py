"""seq_logps's argument contract: one clear ValueError per bad argument, the Triton backend refused where it cannot
run, and an import that loads neither triton nor a top-level `kernels` module.

Run: .venv/bin/python -m pytest tests/unit/test_seq_logps_args.py -q
"""

import os
import subprocess
import sys

import pytest
import torch
from test_seq_logps import H, S, T, V, make_batch  # sets TRITON_INTERPRET before una_hpc.kernels loads

from una_hpc.kernels import seq_logps

BAD_ARGS = [
    ({"weight": torch.randn(V, H + 1)}, "must match hidden's H"),
    ({"labels": torch.zeros(T - 1, dtype=torch.long)}, "T=53 entries"),
    ({"labels": torch.zeros(T)}, "integer tensor"),
    ({"seq_index": torch.full((T,), S, dtype=torch.long)}, r"seq_index values must lie in \[0, num_seqs=7\)"),
    ({"seq_index": torch.full((T,), -1, dtype=torch.long)}, "seq_index values"),
    ({"labels": torch.full((T,), V, dtype=torch.long)}, r"labels must lie in \[0, V=101\)"),
    ({"labels": torch.full((T,), -5, dtype=torch.long)}, "labels must lie"),
    ({"num_seqs": -1}, "non-negative int"),
    ({"num_seqs": 2.0}, "non-negative int"),
    ({"backend": "cuda"}, "backend must be one of"),
    ({"hidden": torch.randn(T, H, 1)}, "hidden must be 2-D"),
    ({"weight": torch.randn(V, H, dtype=torch.float64)}, "share one float dtype"),
    ({"ref_hidden": torch.randn(T + 1, H)}, "ref_hidden must match shape"),
    ({"ref_weight": torch.randn(V, H).bfloat16()}, "ref_weight must match shape"),
    ({"hidden": torch.zeros(T, H, dtype=torch.long)}, "float dtype"),
    ({"bias": torch.zeros(V + 1)}, r"bias must be a \[V=101\] tensor"),
    ({"bias": torch.zeros(1, V)}, r"bias must be a \[V=101\] tensor"),
    ({"bias": torch.zeros(V, dtype=torch.float64)}, "bias must be .* dtype torch.float32"),
    ({"bias": [0.0] * V}, "got list"),
    ({"ref_bias": torch.zeros(V).bfloat16()}, r"ref_bias must be a \[V=101\] tensor"),
    ({"scale": 0.0}, "scale must be a finite positive float"),
    ({"scale": -1.0}, "scale must be"),
    ({"scale": float("inf")}, "scale must be"),
    ({"scale": float("nan")}, "scale must be"),
    ({"scale": True}, "scale must be"),
    ({"scale": torch.tensor(2.0)}, "scale must be"),
    ({"scale": None}, "scale must be"),
    ({"softcap": 0.0}, "softcap must be a finite positive float or None"),
    ({"softcap": -30.0}, "softcap must be"),
    ({"softcap": float("inf")}, "softcap must be"),
    ({"softcap": "30"}, "softcap must be"),
]


@pytest.mark.parametrize("bad,match", BAD_ARGS)
def test_bad_arguments_raise_clear_value_error(bad, match):
    hidden, weight, _, _, labels, seq_index = make_batch(torch.float32)
    kwargs = dict(hidden=hidden, weight=weight, labels=labels, seq_index=seq_index, num_seqs=S, backend="torch")
    kwargs.update(bad)
    with pytest.raises(ValueError, match=match):
        seq_logps(**kwargs)


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    hidden, weight, _, _, labels, seq_index = make_batch(torch.float32)
    if hidden.is_cuda:
        pytest.skip("CPU-only check")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        seq_logps(hidden, weight, labels, seq_index, S, backend="triton")
    with pytest.raises(ValueError, match="supports"):
        seq_logps(hidden.double(), weight.double(), labels, seq_index, S, backend="triton")


def test_import_is_light():
    """`import una_hpc.kernels` must not import triton (slow, optional) nor register a top-level `kernels`."""
    code = (
        "import sys, una_hpc.kernels as k; assert callable(k.seq_logps); "
        "print('triton' in sys.modules, 'kernels' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TRITON_INTERPRET": "0"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
