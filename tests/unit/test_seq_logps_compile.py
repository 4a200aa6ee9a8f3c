"""The fused seq_logps kernels compiled for sm_90 (H100/H200) without a GPU: tensor-core instructions, no register
spills, shared memory that fits.

The kernels are specialized exactly as the JIT would specialize the trainer's launches (argument divisibility and
alignment from the launchers' own arguments, the sm_90 block configs), then lowered to PTX and to a cubin with the
ptxas that the triton wheel ships; no CUDA driver is needed. Checked per kernel: wgmma (sm_90 tensor cores) or mma in
the PTX and HGMMA/HMMA in the SASS, "0 bytes spill stores" in the ptxas report, shared memory <= 227 KiB.

Run: .venv/bin/python -m pytest tests/unit/test_seq_logps_compile.py -q   (~25 s on 2 shared CPU cores)
"""

import json
import os
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")

# Runs in a subprocess: the other kernel tests set TRITON_INTERPRET=1 in this process, and the interpreter replaces
# the kernels at decoration time.
SCRIPT = r"""
import contextlib, io, json, os, re, subprocess, sys, tempfile
import torch, triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia import compiler as nv
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature
from una_hpc.kernels import seq_logps_bwd as bw, seq_logps_fwd as fw

TARGET = GPUTarget("cuda", 90, 32)
BACKEND = make_backend(TARGET)
knobs.nvidia.dump_ptxas_log = True  # ptxas -v's report (registers, spills) is printed per compile

def compile_launch(launch):
    # What JITFunction.run does before it asks the driver for anything: bind, specialize, pack, compile.
    fn = launch.fn
    binder = create_function_from_signature(fn.signature, fn.params, BACKEND)
    bound, spec, opts = binder(*launch.args, **launch.kwargs)
    options, sig, consts, attrs = fn._pack_args(BACKEND, launch.kwargs, bound, spec, opts)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        k = triton.compile(ASTSource(fn, sig, consts, attrs), target=TARGET, options=options.__dict__)
    return k, log.getvalue()

def sass(cubin):
    tool = os.path.join(os.path.dirname(nv.__file__), "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True).stdout

# The trainer's shapes: T labelled tokens after compaction (any count), H and V multiples of 16, bf16 operands
# (hidden under autocast and the bf16 copy of an fp32 lm_head), fp32 master weight for grad_weight.
T, V, H = 999, 32000, 256
bf = torch.bfloat16
h, w = torch.randn(T, H, dtype=bf), torch.randn(V, H, dtype=bf)
w32, bias = torch.randn(V, H), torch.randn(V, dtype=bf)
lab, lse, g = torch.randint(0, V, (T,)), torch.zeros(T), torch.ones(T)
launches = {
    "fwd_ref_separate": fw.forward_launch(h, w, None, lab, h * 0.5, w * 0.5, None, 1.0, None, -100, None)[0],
    "fwd_ref_shared_w": fw.forward_launch(h, w, None, lab, h * 0.5, w, None, 1.0, None, -100, None)[0],
    "fwd_ref_cache": fw.forward_launch(h, w, None, lab, None, None, None, 1.0, None, -100, None)[0],
    "fwd_bias_scale_softcap": fw.forward_launch(h, w, bias, lab, h * 0.5, w, bias, 1.7, 30.0, -100, None)[0],
}
for name, args in (("", (None, 1.0, None, True, True, False)), ("_head", (bias, 1.7, 30.0, True, True, True))):
    b, scale, cap, need_h, need_w, need_b = args
    steps = bw.backward_launches(h, w32, w, b, lab, lse, g, need_h, need_w, need_b, scale, cap)
    next(steps)
    dl, gh, gw = next(steps), next(steps), next(steps)
    launches["bwd_dlogits" + name] = dl
    if not name:
        launches["bwd_grad_hidden"], launches["bwd_grad_weight"] = gh, gw
steps = bw.backward_launches(h, w, w, None, lab, lse, g, True, True, False, 1.0, None)  # bf16 weight (DeepSpeed bf16)
next(steps), next(steps), next(steps)
launches["bwd_grad_weight_bf16_param"] = next(steps)

report = {}
for name, launch in launches.items():
    k, log = compile_launch(launch)
    spills = [int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", log)]
    code = sass(k.asm["cubin"])
    report[name] = dict(
        wgmma="wgmma.mma_async" in k.asm["ptx"], mma="mma.sync" in k.asm["ptx"],
        sass_tc=sorted(set(re.findall(r"\b(HGMMA|HMMA)\b", code))), spills=spills,
        shared=k.metadata.shared, regs=[int(x) for x in re.findall(r"Used (\d+) registers", log)],
    )
print("REPORT" + json.dumps(report))
"""


def _ptxas():
    from triton.backends.nvidia import compiler as nv

    tool = nv.get_ptxas(90)
    return tool.path if tool is not None else None


def test_kernels_use_tensor_cores_without_spills_on_sm90(tmp_path):
    """Forward (policy + separate reference, shared W, reference-cache pass, bias + scale + softcap) and backward
    (d(logits), grad_hidden and grad_weight matmuls) for sm_90 with bf16 operands."""
    try:
        ptxas = _ptxas()
    except Exception as e:  # noqa: BLE001 - a wheel without the NVIDIA backend: say why
        pytest.skip(f"triton has no NVIDIA backend here: {e}")
    if not ptxas or not os.path.exists(ptxas):
        pytest.skip("this triton wheel ships no ptxas for sm_90")
    # A fresh cache: a cached kernel would skip ptxas, and with it the register / spill report.
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1", "TRITON_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.split("REPORT", 1)[1])
    assert len(report) == 9
    for name, r in report.items():
        assert r["wgmma"] or r["mma"], (name, r)  # tensor-core PTX, not FMA loops
        assert r["sass_tc"], (name, r)  # and tensor-core SASS (HGMMA on sm_90)
        assert r["spills"] and max(r["spills"]) == 0, (name, r)
        assert 0 < r["shared"] <= 232448, (name, r)  # 227 KiB: the most one block may use on H100/H200
