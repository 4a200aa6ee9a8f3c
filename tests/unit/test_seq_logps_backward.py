"""The Triton backward of seq_logps (d(logits) per vocab chunk, owner-writes-only matmuls) and its 16-bit operands:
float64 gradients at odd sizes with every head transform, bitwise determinism, the cached bf16 weight copy, and no
fp32 [V, H] buffer for a bf16 weight.

Run: .venv/bin/python -m pytest tests/unit/test_seq_logps_backward.py -q   (CPU: Triton interpreter, ~10 s)
"""

import contextlib
import os
import types

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # read when the kernels are decorated, i.e. at the import below

pytest.importorskip("triton")
from una_hpc.kernels import seq_logps  # noqa: E402
from una_hpc.kernels import seq_logps_bwd as bwd  # noqa: E402
from una_hpc.kernels.operands import operand_copy, operand_dtype  # noqa: E402
from una_hpc.kernels.seq_logps_triton import TritonSeqLogps  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
IGN = -1  # not the default -100: the kernels must honour the argument
# Multiples of no block: interpreter blocks 16 / 32 / 16 and 32-wide matmul tiles; 4 d(logits) chunks of 32 columns.
T, V, H, S = 45, 101, 40, 5
HEADS = {
    "plain": dict(),
    "bias": dict(bias=True),
    "scale": dict(scale=0.3),
    "softcap": dict(softcap=4.0),
    "all": dict(bias=True, scale=1.7, softcap=4.0),
}


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(bwd, "DZ_CHUNK_ELEMS", T * 32)  # several vocab chunks: grad_hidden accumulates across them


def make(seed=0, dtype=torch.float32, wdtype=None):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(T, H, generator=g)
    weight = torch.randn(V, H, generator=g) * 0.5
    ref_hidden = hidden + 0.1 * torch.randn(T, H, generator=g)
    ref_weight = weight + 0.05 * torch.randn(V, H, generator=g)
    bias, ref_bias = torch.randn(V, generator=g), torch.randn(V, generator=g)
    labels = torch.randint(0, V, (T,), generator=g)
    labels[torch.rand(T, generator=g) < 0.25] = IGN
    seq_index = torch.randint(0, S, (T,), generator=g).sort().values
    wdtype = wdtype or dtype
    out = [hidden.to(dtype), weight.to(wdtype), ref_hidden.to(dtype), ref_weight.to(wdtype), bias.to(wdtype)]
    out += [ref_bias.to(wdtype), labels, seq_index]
    return [x.to(DEV) for x in out]


def reference(h, w, b, labels, seq_index, scale, softcap):
    z = h.double() @ w.double().T
    if b is not None:
        z = z + b.double()
    z = scale * z if softcap is None else softcap * torch.tanh(scale * z / softcap)
    tok = torch.log_softmax(z, dim=-1).gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
    tok = torch.where(labels != IGN, tok, 0.0)
    return torch.zeros(S, dtype=torch.float64, device=h.device).index_add(0, seq_index, tok)


def run(head, shared, seed=0, dtype=torch.float32, wdtype=None):
    """Triton (logps, ref_logps, grads of hidden, weight, bias) for upstream (-1, 0, 2, ...): sequence 1 gets 0."""
    hidden, weight, ref_hidden, ref_weight, bias, ref_bias, labels, seq_index = make(seed, dtype, wdtype)
    kw = HEADS[head]
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    b = bias.clone().requires_grad_() if kw.get("bias") else None
    rw = w if shared else ref_weight
    rb = (ref_bias if b is not None else None) if not shared else b
    scale, softcap = kw.get("scale", 1.0), kw.get("softcap")
    logps, ref_logps = TritonSeqLogps.apply(h, w, b, labels, seq_index, S, ref_hidden, rw, rb, scale, softcap, IGN, 2)
    upstream = torch.tensor([-1.0, 0.0, 2.0, 0.5, 1.5], device=DEV)
    (logps * upstream).sum().backward()
    grads = (h.grad, w.grad, None if b is None else b.grad)
    return (hidden, weight, bias if b is not None else None, ref_hidden, rw.detach(), rb), (logps, ref_logps), grads


@pytest.mark.parametrize("shared", [True, False], ids=["ref_weight_is_weight", "separate_ref_weight"])
@pytest.mark.parametrize("head", list(HEADS))
def test_gradients_match_float64_at_odd_sizes(head, shared):
    (hidden, weight, bias, ref_hidden, ref_weight, ref_bias), (logps, ref_logps), grads = run(head, shared)
    kw = HEADS[head]
    scale, softcap = kw.get("scale", 1.0), kw.get("softcap")
    leaves = [x.double().requires_grad_() for x in (hidden, weight)] + [
        None if bias is None else bias.double().requires_grad_()
    ]
    labels, seq_index = make()[6:]
    want = reference(*leaves, labels, seq_index, scale, softcap)
    (want * torch.tensor([-1.0, 0.0, 2.0, 0.5, 1.5], dtype=torch.float64, device=DEV)).sum().backward()
    want_ref = reference(ref_hidden, ref_weight, ref_bias, labels, seq_index, scale, softcap)
    torch.testing.assert_close(logps.double(), want.detach(), rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(ref_logps.double(), want_ref, rtol=2e-5, atol=2e-5)
    for got, leaf in zip(grads, leaves, strict=True):
        if leaf is None:
            assert got is None
            continue
        assert (got.double() - leaf.grad).abs().max() <= 1e-5 * leaf.grad.abs().max(), head
    assert torch.count_nonzero(grads[0][labels == IGN]) == 0  # ignored rows get exactly zero


def test_two_backward_runs_are_bitwise_equal():
    for dtype, wdtype in ((torch.float32, None), (torch.bfloat16, torch.float32)):
        _, out1, g1 = run("all", False, seed=3, dtype=dtype, wdtype=wdtype)
        _, out2, g2 = run("all", False, seed=3, dtype=dtype, wdtype=wdtype)
        for a, b in zip((*out1, *g1), (*out2, *g2), strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b)


def test_bf16_hidden_with_fp32_weight_multiplies_a_cached_bf16_copy():
    """Mixed operands: the kernel reads a bf16 copy of the fp32 weight (one per weight version), grad_weight and
    grad_bias come back fp32, grad_hidden bf16; values match float64 on the bf16-rounded weight."""
    (hidden, weight, bias, *_), (logps, _), (gh, gw, gb) = run(
        "all", True, seed=4, dtype=torch.bfloat16, wdtype=torch.float32
    )
    assert gh.dtype == torch.bfloat16 and gw.dtype == torch.float32 and gb.dtype == torch.float32
    labels, seq_index = make(4)[6:]
    w16 = weight.bfloat16().double().requires_grad_()
    h64, b64 = hidden.double().requires_grad_(), bias.double().requires_grad_()
    want = reference(h64, w16, b64, labels, seq_index, 1.7, 4.0)
    (want * torch.tensor([-1.0, 0.0, 2.0, 0.5, 1.5], dtype=torch.float64, device=DEV)).sum().backward()
    torch.testing.assert_close(logps.double(), want.detach(), rtol=2e-5, atol=2e-5)
    # dz is rounded to bf16 before the matmuls (2^-8 unit roundoff), grad_hidden once more at the end: 2 % of the max.
    for got, leaf in ((gh, h64), (gw, w16), (gb, b64)):
        assert (got.double() - leaf.grad).abs().max() <= 2e-2 * leaf.grad.abs().max()

    w = torch.nn.Parameter(weight.clone())
    first = operand_copy(w, torch.bfloat16)
    assert first.dtype == torch.bfloat16 and operand_copy(w, torch.bfloat16) is first  # same version: reused
    with torch.no_grad():
        w.add_(1.0)  # an optimizer step bumps the version
    second = operand_copy(w, torch.bfloat16)
    assert second is not first and torch.equal(second, w.detach().bfloat16())
    assert operand_copy(w, torch.float32) is w
    # fused AdamW leaves the version counter alone: the probe still sees the step
    opt = torch.optim.AdamW([w], lr=0.1, fused=True)
    w.grad = torch.ones_like(w)
    version = w._version
    opt.step()
    third = operand_copy(w, torch.bfloat16)
    assert third is not second and torch.equal(third, w.detach().bfloat16()), w._version - version


def test_operand_dtype_is_the_autocast_dtype_on_cuda_only(monkeypatch):
    w = torch.zeros(4, 4)
    assert operand_dtype(w, torch.autocast("cpu", dtype=torch.bfloat16)) == torch.float32  # CPU: fp32 torch path
    assert operand_dtype(w.bfloat16(), None) == torch.bfloat16
    # An fp32 CUDA weight inside the engine's bf16 autocast (faked: this machine may have no GPU).
    cuda_w = types.SimpleNamespace(is_cuda=True, dtype=torch.float32)
    state = {"on": False}

    @contextlib.contextmanager
    def engine_autocast():
        state["on"] = True
        yield
        state["on"] = False

    monkeypatch.setattr(torch, "is_autocast_enabled", lambda device: device == "cuda" and state["on"])
    monkeypatch.setattr(torch, "get_autocast_dtype", lambda device: torch.bfloat16)
    assert operand_dtype(cuda_w, engine_autocast()) == torch.bfloat16
    assert operand_dtype(cuda_w, contextlib.nullcontext()) == torch.float32  # trainer.dtype=float32
    assert operand_dtype(cuda_w, None) == torch.float32


def test_mixed_dtypes_on_the_torch_path_equal_fp32_hidden():
    hidden, weight, *_, labels, seq_index = make(5, torch.bfloat16, torch.float32)
    got, _ = seq_logps(hidden, weight, labels, seq_index, S, ignore_index=IGN, backend="torch")
    want, _ = seq_logps(hidden.float(), weight, labels, seq_index, S, ignore_index=IGN, backend="torch")
    assert torch.equal(got, want)


class Fp32Sizes(TorchDispatchMode):
    """Largest fp32 tensor (elements) any aten op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(x, torch.Tensor) and x.dtype == torch.float32:
                self.largest = max(self.largest, x.numel())
        return out


def test_bf16_weight_gets_no_fp32_weight_sized_buffer():
    hidden, weight, ref_hidden, _, _, _, labels, seq_index = make(6, torch.bfloat16)
    h, w = hidden.requires_grad_(), weight.requires_grad_()
    with Fp32Sizes() as mode:
        logps, _ = seq_logps(h, w, labels, seq_index, S, ref_hidden=ref_hidden, ignore_index=IGN, backend="triton")
        logps.sum().backward()
    assert w.grad.dtype == torch.bfloat16
    assert mode.largest < V * H  # grad_hidden's fp32 accumulator is [T, H]; nothing [V, H] in fp32


def test_engine_style_mixed_call_through_the_dispatcher():
    """The engine's call under bf16 autocast with fp32 master weights: bf16 hidden, fp32 weight, bias cast to bf16;
    triton and torch backends agree (the torch path multiplies in fp32, the kernel the bf16 weight copy)."""
    hidden, weight, ref_hidden, _, bias, _, labels, seq_index = make(7, torch.bfloat16, torch.float32)
    out = {}
    for backend in ("triton", "torch"):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        b = bias.bfloat16().requires_grad_()
        logps, ref = seq_logps(
            h, w, labels, seq_index, S, ref_hidden=ref_hidden, bias=b, scale=0.5, ignore_index=IGN, backend=backend
        )
        (logps - ref).sum().backward()
        assert (h.grad.dtype, w.grad.dtype, b.grad.dtype) == (torch.bfloat16, torch.float32, torch.bfloat16)
        out[backend] = (logps.detach(), ref, w.grad)
    for a, c in zip(out["triton"], out["torch"], strict=True):
        # the bf16-rounded weight moves logits by ~2^-9 relative: 2e-2 absolute on sums of ~10 tokens
        assert (a - c).abs().max() <= 2e-2 * max(1.0, c.abs().max())


def test_vocab_shards_combine_to_the_full_op():
    """Tensor-parallel building blocks: two vocabulary shards (50 + 51 rows), per-token lse / label logit combined
    as the all-reduces would (logsumexp, sum), backward per shard with the global lse: values and gradients equal
    the float64 reference with the full head (bias, scale, softcap), policy and reference in one pass."""
    from una_hpc.kernels.vocab_shard import shard_backward, shard_token_stats

    hidden, weight, ref_hidden, _, bias, _, labels, seq_index = make(8)
    scale, cap, cut = 1.7, 4.0, 50
    shards = [(0, weight[:cut], bias[:cut]), (cut, weight[cut:], bias[cut:])]
    stats = [
        shard_token_stats(
            hidden, w, labels, v0, ref_hidden=ref_hidden, bias=b, scale=scale, softcap=cap, ignore_index=IGN
        )
        for v0, w, b in shards
    ]
    lse = torch.logsumexp(torch.stack([s[0] for s in stats]), dim=0)
    ref_lse = torch.logsumexp(torch.stack([s[2] for s in stats]), dim=0)
    keep = labels != IGN
    tok = torch.where(keep, sum(s[1] for s in stats) - lse, 0.0)
    ref_tok = torch.where(keep, sum(s[3] for s in stats) - ref_lse, 0.0)
    upstream = torch.tensor([-1.0, 0.0, 2.0, 0.5, 1.5], device=DEV)
    g_tok = torch.where(keep, upstream[seq_index], 0.0)
    parts = [
        shard_backward(hidden, w, labels, v0, lse, g_tok, bias=b, scale=scale, softcap=cap, ignore_index=IGN)
        for v0, w, b in shards
    ]
    gh = parts[0][0] + parts[1][0]
    gw = torch.cat([p[1] for p in parts])
    gb = torch.cat([p[2] for p in parts])
    leaves = [x.double().requires_grad_() for x in (hidden, weight, bias)]
    want = reference(*leaves, labels, seq_index, scale, cap)
    (want * upstream.double()).sum().backward()
    got = torch.zeros(S, dtype=torch.float64, device=DEV).index_add(0, seq_index, tok.double())
    got_ref = torch.zeros(S, dtype=torch.float64, device=DEV).index_add(0, seq_index, ref_tok.double())
    torch.testing.assert_close(got, want.detach(), rtol=2e-5, atol=2e-5)
    want_ref = reference(ref_hidden, weight, bias, labels, seq_index, scale, cap)
    torch.testing.assert_close(got_ref, want_ref, rtol=2e-5, atol=2e-5)
    for a, leaf in zip((gh, gw, gb), leaves, strict=True):
        assert (a.double() - leaf.grad).abs().max() <= 1e-5 * leaf.grad.abs().max()
