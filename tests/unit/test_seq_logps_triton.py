"""Triton backend of seq_logps: vocab splits, strides, skipped blocks, fp16, output-head transforms (bias, scale,
softcap), no [T, V] tensor, block configs (sm_90 compile: test_seq_logps_compile.py).

Run: .venv/bin/python -m pytest tests/unit/test_seq_logps_triton.py -q   (CPU: Triton interpreter, kept small)
"""

import math
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # read when the kernels are decorated, i.e. at the import below

pytest.importorskip("triton")
from una_hpc.kernels import grad_matmul as mm  # noqa: E402
from una_hpc.kernels import seq_logps  # noqa: E402
from una_hpc.kernels import seq_logps_bwd as bwd  # noqa: E402
from una_hpc.kernels import seq_logps_fwd as fwd  # noqa: E402
from una_hpc.kernels import seq_logps_torch as st  # noqa: E402
from una_hpc.kernels import seq_logps_triton as tt  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
IGN = -100


def reference(hidden, weight, labels, seq_index, num_seqs):
    logp = torch.log_softmax(hidden.double() @ weight.double().T, dim=-1)
    tok = logp.gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
    tok = torch.where(labels != IGN, tok, torch.zeros_like(tok))
    return torch.zeros(num_seqs, dtype=torch.float64, device=hidden.device).index_add(0, seq_index, tok)


def batch(t=45, v=101, h=24, s=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(t, h, generator=g).to(dtype)
    weight = (torch.randn(v, h, generator=g) * 0.5).to(dtype)
    labels = torch.randint(0, v, (t,), generator=g)
    labels[torch.rand(t, generator=g) < 0.2] = IGN
    seq_index = torch.randint(0, s, (t,), generator=g).sort().values
    return [x.to(DEV) for x in (hidden, weight, labels, seq_index)]


def grads_of(fn, hidden, weight, upstream):
    h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    out = fn(h, w)
    (out[0] * upstream).sum().backward()
    return out, h.grad, w.grad


@pytest.mark.parametrize("splits", [2, 3])
def test_vocab_splits_combine_to_the_same_result(splits):
    """V=101 with 32-wide blocks is 4 tiles: 3 splits leave the last split empty (its partials stay -inf / 0)."""
    hidden, weight, labels, seq_index = batch()
    ref_hidden = hidden + 0.1
    upstream = torch.linspace(-1.0, 2.0, 5, device=DEV)

    def run(n):
        return lambda h, w: tt.TritonSeqLogps.apply(
            h, w, None, labels, seq_index, 5, ref_hidden, w, None, 1.0, None, IGN, n
        )

    (one, ref_one), gh1, gw1 = grads_of(run(1), hidden, weight, upstream)
    (many, ref_many), ghn, gwn = grads_of(run(splits), hidden, weight, upstream)
    for got, want in ((many, one), (ref_many, ref_one), (ghn, gh1), (gwn, gw1)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(many.double(), reference(hidden, weight, labels, seq_index, 5), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        ref_many.double(), reference(ref_hidden, weight, labels, seq_index, 5), rtol=1e-5, atol=1e-5
    )


HEAD = dict(scale=1.7, softcap=4.0)


def test_transformed_head_with_vocab_splits_matches_torch_backend():
    """bias + scale + softcap, a reference with its own bias sharing the W tiles, 3 vocab splits (one empty): values
    and gradients (hidden, weight, bias) equal the torch backend's, which test_seq_logps checks against float64."""
    hidden, weight, labels, seq_index = batch(seed=5)
    g = torch.Generator().manual_seed(5)
    bias = torch.randn(weight.shape[0], generator=g).to(DEV)
    ref_bias = bias + 0.3 * torch.randn(weight.shape[0], generator=g).to(DEV)
    ref_hidden = hidden + 0.1
    upstream = torch.linspace(-1.0, 2.0, 5, device=DEV)

    def run(apply):
        h, w, b = (x.detach().clone().requires_grad_() for x in (hidden, weight, bias))
        logps, ref_logps = apply(h, w, b)
        (logps * upstream).sum().backward()
        return logps.detach(), ref_logps, h.grad, w.grad, b.grad

    got = run(
        lambda h, w, b: tt.TritonSeqLogps.apply(
            h, w, b, labels, seq_index, 5, ref_hidden, w, ref_bias, HEAD["scale"], HEAD["softcap"], IGN, 3
        )
    )
    want = run(
        lambda h, w, b: seq_logps(
            h,
            w,
            labels,
            seq_index,
            5,
            ref_hidden=ref_hidden,
            ref_weight=w,
            bias=b,
            ref_bias=ref_bias,
            backend="torch",
            **HEAD,
        )
    )
    for a, c in zip(got, want, strict=True):
        torch.testing.assert_close(a, c, rtol=2e-5, atol=2e-5)


# The interpreter's numpy reports the overflow the kernel then discards with tl.where (the GPU is silent).
@pytest.mark.filterwarnings("ignore:overflow encountered in exp", "ignore:invalid value encountered in multiply")
def test_large_bias_on_skipped_blocks_and_padded_rows_stays_finite():
    """exp(z - lse) must never reach a gradient as inf * 0: rows past T, and a zero-gradient token block, whose
    logits the backward never forms (z = bias there), with lse near -400 and a bias of 200 where exp overflows fp32."""
    hidden, weight, labels, seq_index = batch(t=70, seed=6)
    labels[:16] = IGN  # block 0: only ignored tokens
    seq_index[:32] = 0  # block 1: live tokens of sequence 0, which gets zero upstream gradient
    hidden[16:32] = 0.0
    hidden[16:32, 0] = -1000.0
    weight[:, 0] = weight[:, 0].abs() + 1.0  # every logit of block 1 is <= 0.5 * (-1000 + 200)
    bias = torch.zeros(weight.shape[0], device=DEV)
    bias[::7] = 200.0
    upstream = torch.tensor([0.0, 1.5, -2.0, 0.0, 0.7], device=DEV)
    leaves = [x.detach().clone().requires_grad_() for x in (hidden, weight, bias)]
    got, _ = seq_logps(*leaves[:2], labels, seq_index, 5, bias=leaves[2], scale=0.5, backend="triton")
    (got * upstream).sum().backward()
    leaves64 = [x.double().requires_grad_() for x in (hidden, weight, bias)]
    z = 0.5 * (leaves64[0] @ leaves64[1].T + leaves64[2])
    tok = torch.log_softmax(z, dim=-1).gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
    want = torch.zeros(5, dtype=torch.float64, device=DEV).index_add(0, seq_index, torch.where(labels != IGN, tok, 0.0))
    (want * upstream.double()).sum().backward()
    torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=1e-4)
    for a, c in zip(leaves, leaves64, strict=True):
        assert torch.isfinite(a.grad).all()
        assert (a.grad.double() - c.grad).abs().max() <= 1e-5 * c.grad.abs().max()


def test_strided_inputs_match_contiguous():
    hidden, weight, labels, seq_index = batch(seed=1)
    wide = torch.zeros(hidden.shape[0], 2 * hidden.shape[1], device=DEV)
    wide[:, ::2] = hidden  # column stride 2
    weight_t = weight.T.contiguous().T  # [V, H] view of a [H, V] buffer: strides (1, V)
    upstream = torch.arange(5.0, device=DEV)

    def run(h, w):
        return seq_logps(h, w, labels, seq_index, 5, backend="triton")

    (a, _), gha, gwa = grads_of(run, hidden, weight, upstream)
    hs = wide[:, ::2].detach().requires_grad_()
    ws = weight_t.detach().requires_grad_()
    b, _ = run(hs, ws)
    (b * upstream).sum().backward()
    assert hs.stride() != (hidden.shape[1], 1) and ws.stride() != (weight.shape[1], 1)
    for got, want in ((b, a), (hs.grad, gha), (ws.grad, gwa)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_fully_ignored_token_blocks_and_zero_upstream_are_skipped_correctly():
    hidden, weight, labels, seq_index = batch(t=70, seed=2)
    labels[:40] = IGN  # the first two 16-token blocks only hold ignored tokens
    upstream = torch.tensor([0.0, 1.5, -2.0, 0.0, 0.7], device=DEV)  # zero gradient for sequences 0 and 3
    (got, _), gh, gw = grads_of(
        lambda h, w: seq_logps(h, w, labels, seq_index, 5, backend="triton"), hidden, weight, upstream
    )
    h64 = hidden.double().requires_grad_()
    w64 = weight.double().requires_grad_()
    want = reference(h64, w64, labels, seq_index, 5)
    (want * upstream.double()).sum().backward()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gh.double(), h64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw.double(), w64.grad, rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(gh[:40]) == 0


def test_float16_matches_reference():
    hidden, weight, labels, seq_index = batch(seed=3, dtype=torch.float16)
    (got, _), gh, gw = grads_of(
        lambda h, w: seq_logps(h, w, labels, seq_index, 5, backend="triton"), hidden, weight, torch.ones(5, device=DEV)
    )
    assert gh.dtype == torch.float16 and gw.dtype == torch.float16
    h64 = hidden.double().requires_grad_()
    want = reference(h64, weight, labels, seq_index, 5)
    want.sum().backward()
    torch.testing.assert_close(got.double(), want.detach(), rtol=2e-5, atol=2e-5)
    # fp16 has a 2^-11 unit roundoff: dz and the final cast are rounded; 1 % of the largest entry is ample.
    assert (gh.double() - h64.grad).abs().max() <= 1e-2 * h64.grad.abs().max()


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor (in bytes) any aten op produces; the interpreter's own copies are uint8 views."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(x, torch.Tensor):
                self.largest = max(self.largest, x.numel() * x.element_size())
        return out


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_no_tensor_of_size_t_times_v_is_created(backend, monkeypatch):
    t, v, h = 96, 256, 16  # T*V = 24576 elements, six times any other tensor of the op ([V, H] is 4096)
    hidden, weight, labels, seq_index = batch(t=t, v=v, h=h, seed=4)
    monkeypatch.setattr(st, "tile_sizes", lambda T, V, H: (16, 64))  # the torch path's tiles, scaled down
    monkeypatch.setattr(bwd, "DZ_CHUNK_ELEMS", t * 64)  # the triton backward's d(logits) chunk, scaled down alike
    hh, ww = hidden.requires_grad_(), weight.requires_grad_()
    with LargestTensor() as mode:
        logps, ref_logps = seq_logps(
            hh, ww, labels, seq_index, 5, ref_hidden=hidden.detach() * 0.5, ref_weight=ww, backend=backend
        )
        (logps - ref_logps).sum().backward()
    assert 0 < mode.largest <= t * v * 4 // 4  # bytes: a quarter of one fp32 [T, V] logits tensor


def test_block_sizes_are_powers_of_two():
    configs = [fwd.gpu_config(True), fwd.gpu_config(False), bwd.GPU_CONFIG, tt.INTERPRETER_BLOCKS]
    for cfg in configs:
        for name in ("BLOCK_T", "BLOCK_V", "BLOCK_D"):
            assert cfg[name] >= 16 and math.log2(cfg[name]).is_integer(), cfg
    for cfg in (mm.GPU_CONFIG, mm.INTERPRETER_BLOCKS):
        for name in ("BLOCK_M", "BLOCK_N", "BLOCK_K"):
            assert cfg[name] >= 16 and math.log2(cfg[name]).is_integer(), cfg
