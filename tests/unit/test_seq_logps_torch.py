"""Torch backend of seq_logps: float64 gradcheck (plain and bias + scale + softcap heads), multi-tile loops,
deterministic segment sums, peak memory.

Run: .venv/bin/python -m pytest tests/unit/test_seq_logps_torch.py -q
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from una_hpc.kernels import seq_logps
from una_hpc.kernels import seq_logps_torch as st

IGN = -100


def batch(t=23, v=37, h=6, s=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(t, h, generator=g, dtype=dtype)
    weight = torch.randn(v, h, generator=g, dtype=dtype)
    labels = torch.randint(0, v, (t,), generator=g)
    labels[::5] = IGN
    seq_index = torch.randint(0, s, (t,), generator=g)
    return hidden, weight, labels, seq_index


def naive(hidden, weight, labels, seq_index, num_seqs, bias=None, scale=1.0, softcap=None):
    z = hidden @ weight.T + (0.0 if bias is None else bias)
    z = scale * z if softcap is None else softcap * torch.tanh(scale * z / softcap)
    logp = torch.log_softmax(z, dim=-1)
    mask = labels != IGN
    tok = torch.where(mask, logp.gather(1, labels.clamp(min=0)[:, None]).squeeze(1), 0.0)
    return torch.zeros(num_seqs, dtype=logp.dtype).index_add(0, seq_index, tok)


def test_gradcheck_float64(monkeypatch):
    monkeypatch.setattr(st, "tile_sizes", lambda T, V, H: (5, 8))  # several token and vocab tiles
    hidden, weight, labels, seq_index = batch()
    ref_hidden = hidden + 0.1

    def fn(h, w):
        logps, ref_logps = seq_logps(h, w, labels, seq_index, 4, ref_hidden=ref_hidden, backend="torch")
        return logps, ref_logps

    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    assert fn(h, w)[0].dtype == torch.float64
    # fast_mode checks random vector-Jacobian products: a few evaluations instead of one per input element.
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b)[0], (h, w), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("with_ref", [False, True])
def test_gradcheck_float64_with_bias_scale_softcap(monkeypatch, with_ref):
    """Gradients wrt hidden, weight and bias through z = softcap * tanh(scale * (h @ W.T + b) / softcap)."""
    monkeypatch.setattr(st, "tile_sizes", lambda T, V, H: (5, 8))
    hidden, weight, labels, seq_index = batch(seed=5)
    bias = torch.randn(weight.shape[0], generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ref = dict(ref_hidden=hidden + 0.1, ref_bias=bias * 0.5) if with_ref else {}

    def fn(h, w, b):
        return seq_logps(h, w, labels, seq_index, 4, bias=b, scale=1.3, softcap=2.0, backend="torch", **ref)[0]

    h, w, b = (x.clone().requires_grad_() for x in (hidden, weight, bias))
    assert torch.autograd.gradcheck(fn, (h, w, b), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)
    torch.testing.assert_close(
        fn(h, w, b), naive(hidden, weight, labels, seq_index, 4, bias, 1.3, 2.0), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("tiles", [(1, 1000), (4, 8), (7, 5), (1000, 36)])
def test_tiling_does_not_change_results(monkeypatch, tiles):
    hidden, weight, labels, seq_index = batch(dtype=torch.float32, seed=1)
    ref_w = weight * 0.9
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    h64, w64 = hidden.double().requires_grad_(), weight.double().requires_grad_()
    want = naive(h64, w64, labels, seq_index, 4)
    want_ref = naive(hidden.double(), ref_w.double(), labels, seq_index, 4)
    (want * torch.arange(4.0)).sum().backward()
    monkeypatch.setattr(st, "tile_sizes", lambda T, V, H: tiles)
    logps, ref_logps = seq_logps(h, w, labels, seq_index, 4, ref_weight=ref_w, backend="torch")
    (logps * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(logps.double(), want.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ref_logps.double(), want_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h.grad.double(), h64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tiles", [(1, 1000), (7, 5)])
def test_tiling_does_not_change_transformed_results(monkeypatch, tiles):
    """The bias tile must follow the vocab tile, and grad_bias must sum over every token tile."""
    hidden, weight, labels, seq_index = batch(dtype=torch.float32, seed=7)
    bias = torch.randn(weight.shape[0], generator=torch.Generator().manual_seed(8))
    head = dict(scale=0.8, softcap=3.0)
    leaves = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
    leaves64 = [x.double().requires_grad_() for x in (hidden, weight, bias)]
    want = naive(*leaves64[:2], labels, seq_index, 4, leaves64[2], **head)
    (want * torch.arange(4.0)).sum().backward()
    monkeypatch.setattr(st, "tile_sizes", lambda T, V, H: tiles)
    logps, _ = seq_logps(*leaves[:2], labels, seq_index, 4, bias=leaves[2], backend="torch", **head)
    (logps * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(logps.double(), want.detach(), rtol=1e-5, atol=1e-5)
    for got, ref in zip(leaves, leaves64, strict=True):
        torch.testing.assert_close(got.grad.double(), ref.grad, rtol=1e-5, atol=1e-5)


def test_tile_sizes_bound_the_logits_and_weight_tiles():
    for T, V, H in [(4096, 32768, 64), (16384, 131072, 4096), (8, 50, 3), (1, 256000, 8192)]:
        bt, bv = st.tile_sizes(T, V, H)
        assert 1 <= bt <= T and 1 <= bv <= V
        assert bt * bv <= max(st._LOGITS_TILE_ELEMS, 16 * bv)
        assert bv * H <= max(st._WEIGHT_TILE_ELEMS, 256 * H)


def test_segment_sum_is_exact_for_empty_and_matches_index_add():
    g = torch.Generator().manual_seed(3)
    values = torch.randn(2, 1000, generator=g)
    seq_index = torch.randint(0, 9, (1000,), generator=g)
    seq_index[seq_index == 4] = 5  # sequence 4 has no tokens
    got = st.segment_sum(values, seq_index, 10)
    want = torch.zeros(2, 10, dtype=torch.float64).index_add(1, seq_index, values.double())
    assert got[:, 4].tolist() == [0.0, 0.0] and got[:, 9].tolist() == [0.0, 0.0]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_bf16_gradients_accumulate_in_fp32():
    """With many tiles the bf16 weight gradient must be as accurate as one fp32 sum rounded once to bf16."""
    hidden, weight, labels, seq_index = batch(t=512, v=64, h=16, dtype=torch.float32, seed=4)
    hb, wb = hidden.bfloat16().requires_grad_(), weight.bfloat16().requires_grad_()
    seq_logps(hb, wb, labels, seq_index, 4, backend="torch")[0].sum().backward()
    h64, w64 = hb.detach().double().requires_grad_(), wb.detach().double().requires_grad_()
    naive(h64, w64, labels, seq_index, 4).sum().backward()
    rounded_once = w64.grad.bfloat16().double()
    err = (wb.grad.double() - w64.grad).abs().max().item()
    floor = (rounded_once - w64.grad).abs().max().item()
    assert err <= 1.01 * floor + 1e-6, (err, floor)


WORKER = r"""
import resource, sys, json, torch
variant = sys.argv[1]
T, H, V, S = 4096, 64, 32768, 16

def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

def run(t):
    torch.manual_seed(0)
    h = torch.randn(t, H, requires_grad=True)
    w = (torch.randn(V, H) * 0.02).requires_grad_()
    rh, rw = torch.randn(t, H), torch.randn(V, H) * 0.02
    labels = torch.randint(0, V, (t,))
    seq_index = torch.arange(t) * S // t
    upstream = torch.randn(S)
    return h, w, rh, rw, labels, seq_index, upstream

def step(h, w, rh, rw, labels, seq_index, upstream):
    if variant == "naive":
        def logps(hh, ww):
            tok = torch.log_softmax(hh @ ww.T, dim=-1).gather(1, labels[:, None]).squeeze(1)
            return torch.zeros(S).index_add(0, seq_index, tok)
        pol = logps(h, w)
        with torch.no_grad():
            ref = logps(rh, rw)
    else:
        from una_hpc.kernels import seq_logps
        pol, ref = seq_logps(h, w, labels, seq_index, S, ref_hidden=rh, ref_weight=rw, backend="torch")
    ((pol - ref) * upstream).sum().backward()

def peak_rss_bytes():
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmHWM:"))) * 1024

step(*run(64))  # library warm-up (thread pools, kernels) on a tiny batch, not counted
inputs = run(T)
base = rss_bytes()
# Reset the peak-RSS mark (Linux >= 4.0). ru_maxrss cannot be used: it survives fork+exec, so a big parent process
# (one that imported vLLM, say) would set the child's "peak" before it allocated anything.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
step(*inputs)
peak = peak_rss_bytes()
print(json.dumps({"growth": peak - base}))
"""


def peak_growth(variant):
    # A clean environment: an in-process vLLM engine exports allocator and threading variables (LD_PRELOAD among them).
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    out = subprocess.run([sys.executable, "-c", WORKER, variant], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["growth"]


@pytest.mark.slow  # two subprocesses with a full [T, V] naive pass: ~20-45 s on 2 cores
def test_peak_memory_is_at_most_a_tenth_of_naive():
    """T=4096, H=64, V=32768, fp32, policy + reference fwd+bwd; peak RSS growth in separate processes."""
    naive_growth = peak_growth("naive")
    chunked_growth = peak_growth("chunked")
    print(
        f"peak RSS growth: naive {naive_growth / 2**20:.0f} MiB, chunked {chunked_growth / 2**20:.0f} MiB, "
        f"ratio {chunked_growth / naive_growth:.3f}"
    )
    assert naive_growth > 3 * 4096 * 32768 * 4 // 2  # naive holds at least ~1.5 [T, V] fp32 tensors at its peak
    assert chunked_growth * 10 <= naive_growth
