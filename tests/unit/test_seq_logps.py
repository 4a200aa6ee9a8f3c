"""seq_logps behaviour on both backends against a float64 full-logits reference, plain and transformed heads.

Run: .venv/bin/python -m pytest tests/unit/test_seq_logps.py -q
On CPU the Triton backend runs under the interpreter: TRITON_INTERPRET must be set before any @triton.jit in
una_hpc.kernels is defined (triton reads it at decoration time), so it is set here before that module is imported.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from una_hpc.kernels import seq_logps  # noqa: E402

BACKENDS = ["torch", "triton"]
IGN = -100
# T, V, H are chosen to be multiples of no tile size (torch tiles, interpreter blocks 16/32/16, GPU configs).
T, V, H, S = 53, 101, 40, 7

# Values: inputs are rounded to the test dtype first and the reference uses those rounded values in float64, so the
# only error left is arithmetic. Both backends accumulate in fp32 -> ~1e-7 relative (measured) for fp32 and bf16.
VALUE_TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-5}
# Gradients, relative to the largest reference entry: fp32 is accumulated in fp32 (~1e-6 measured). bf16 gradients
# are cast to bf16 at the end (unit roundoff 2^-8), and the Triton kernel also rounds dz to bf16 before its
# tensor-core dots, as on the GPU: measured up to 0.3 % (torch) and 0.7 % (triton) over 6 seeds; 2 % leaves margin.
# The HEADS below measured the same over 4 seeds: values ~1e-7, fp32 grads <= 7e-7, bf16 grads <= 0.35 % (torch) and
# 0.8 % (triton; grad_bias 0.3 %, summed from the fp32 dz before any rounding).
GRAD_TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}

# Output-head transforms: scale 0.3 shrinks the logits (std ~3 here) like Cohere's logit_scale; softcap 4 with scale 1.7
# puts most logits well into tanh's curved range, so a wrong derivative cannot hide.
HEADS = {
    "bias": dict(bias=True),
    "scale": dict(scale=0.3),
    "softcap": dict(softcap=4.0),
    "all": dict(bias=True, scale=1.7, softcap=4.0),
}


def reference(hidden, weight, labels, seq_index, num_seqs, bias=None, scale=1.0, softcap=None):
    """Naive float64 per-sequence logps: full log_softmax(z), z = softcap * tanh(scale * (h @ W.T + b) / softcap)."""
    z = hidden.double() @ weight.double().T
    if bias is not None:
        z = z + bias.double()
    z = scale * z if softcap is None else softcap * torch.tanh(scale * z / softcap)
    logp = torch.log_softmax(z, dim=-1)
    mask = labels != IGN
    tok = logp.gather(1, labels.clamp(min=0).unsqueeze(1)).squeeze(1)
    tok = torch.where(mask, tok, torch.zeros_like(tok))
    return torch.zeros(num_seqs, dtype=torch.float64).index_add(0, seq_index, tok)


def make_batch(dtype, seed=0, t=T, v=V, h=H, s=S):
    """Tokens spread over sequences 1..s-2 in shuffled order; sequence 0 only ignored tokens; sequence s-1 no tokens."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(t, h, generator=g).to(dtype)
    weight = (torch.randn(v, h, generator=g) * 0.5).to(dtype)
    ref_hidden = (hidden.float() + 0.1 * torch.randn(t, h, generator=g)).to(dtype)
    ref_weight = (weight.float() + 0.05 * torch.randn(v, h, generator=g)).to(dtype)
    labels = torch.randint(0, v, (t,), generator=g)
    labels[torch.rand(t, generator=g) < 0.25] = IGN
    seq_index = torch.randint(1, s - 1, (t,), generator=g)
    seq_index[:6] = 0
    labels[:6] = IGN
    labels[-1] = v - 1  # the last vocab row, in the last (partial) tile
    perm = torch.randperm(t, generator=g)
    return hidden, weight, ref_hidden, ref_weight, labels[perm], seq_index[perm]


def make_biases(dtype, seed=0, v=V):
    """(policy bias, reference bias), rounded to the test dtype."""
    g = torch.Generator().manual_seed(100 + seed)
    bias = torch.randn(v, generator=g)
    return bias.to(dtype), (bias + 0.2 * torch.randn(v, generator=g)).to(dtype)


def leaf(x):
    return x.detach().clone().requires_grad_(True)


def assert_grad_close(got, want, dtype):
    scale = want.abs().max().item()
    err = (got.double() - want).abs().max().item()
    assert err <= GRAD_TOL[dtype] * scale, f"grad error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_values_and_grads_match_float64(backend, dtype):
    hidden, weight, ref_hidden, ref_weight, labels, seq_index = make_batch(dtype)
    h, w = leaf(hidden), leaf(weight)
    upstream = torch.linspace(-2.0, 3.0, S)  # non-uniform per-sequence gradients
    logps, ref_logps = seq_logps(
        h, w, labels, seq_index, S, ref_hidden=ref_hidden, ref_weight=ref_weight, backend=backend
    )
    assert logps.dtype == torch.float32 and logps.shape == (S,)
    assert ref_logps.dtype == torch.float32 and not ref_logps.requires_grad
    (logps * upstream).sum().backward()

    h64, w64 = leaf(hidden.double()), leaf(weight.double())
    want = reference(h64, w64, labels, seq_index, S)
    (want * upstream.double()).sum().backward()
    want_ref = reference(ref_hidden, ref_weight, labels, seq_index, S)
    torch.testing.assert_close(logps.double(), want.detach(), rtol=VALUE_TOL[dtype], atol=VALUE_TOL[dtype])
    torch.testing.assert_close(ref_logps.double(), want_ref, rtol=VALUE_TOL[dtype], atol=VALUE_TOL[dtype])
    assert h.grad.dtype == dtype and w.grad.dtype == dtype
    assert_grad_close(h.grad, h64.grad, dtype)
    assert_grad_close(w.grad, w64.grad, dtype)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_head_transforms_match_float64(backend, dtype, head):
    """bias / scale / softcap / all three, values and gradients (hidden, weight, bias), policy and reference.

    With a bias the reference head gets its own ref_bias for "all" and falls back to the policy's bias for "bias".
    """
    kw = dict(HEADS[head])
    hidden, weight, ref_hidden, ref_weight, labels, seq_index = make_batch(dtype, seed=11)
    bias, ref_bias = make_biases(dtype)
    if not kw.pop("bias", False):
        bias = ref_bias = None
    elif head == "bias":
        ref_bias = None
    h, w = leaf(hidden), leaf(weight)
    b = None if bias is None else leaf(bias)
    upstream = torch.linspace(-2.0, 3.0, S)
    logps, ref_logps = seq_logps(
        h,
        w,
        labels,
        seq_index,
        S,
        ref_hidden=ref_hidden,
        ref_weight=ref_weight,
        bias=b,
        ref_bias=ref_bias,
        backend=backend,
        **kw,
    )
    assert logps.dtype == torch.float32 and not ref_logps.requires_grad
    (logps * upstream).sum().backward()

    h64, w64 = leaf(hidden.double()), leaf(weight.double())
    b64 = None if bias is None else leaf(bias.double())
    want = reference(h64, w64, labels, seq_index, S, bias=b64, **kw)
    (want * upstream.double()).sum().backward()
    want_ref = reference(
        ref_hidden, ref_weight, labels, seq_index, S, bias=bias if ref_bias is None else ref_bias, **kw
    )
    torch.testing.assert_close(logps.double(), want.detach(), rtol=VALUE_TOL[dtype], atol=VALUE_TOL[dtype])
    torch.testing.assert_close(ref_logps.double(), want_ref, rtol=VALUE_TOL[dtype], atol=VALUE_TOL[dtype])
    assert h.grad.dtype == dtype and w.grad.dtype == dtype
    assert_grad_close(h.grad, h64.grad, dtype)
    assert_grad_close(w.grad, w64.grad, dtype)
    if b is not None:
        assert b.grad.dtype == dtype
        assert_grad_close(b.grad, b64.grad, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_transformed_head_shared_weight_and_identical_policy(backend):
    """With bias + scale + softcap: the one-W-load path equals the two-load path, and policy == reference gives
    bit-identical logps; a reference with only its own bias still shares the policy's hidden and weight."""
    kw = HEADS["all"]
    hidden, weight, ref_hidden, _, labels, seq_index = make_batch(torch.float32, seed=12)
    bias, ref_bias = make_biases(torch.float32, seed=12)
    runs = []
    for ref_w in (weight, weight.clone()):
        h, w, b = leaf(hidden), leaf(weight), leaf(bias)
        ref_w = w if ref_w is weight else ref_w
        logps, ref_logps = seq_logps(
            h,
            w,
            labels,
            seq_index,
            S,
            ref_hidden=ref_hidden,
            ref_weight=ref_w,
            bias=b,
            ref_bias=ref_bias,
            scale=kw["scale"],
            softcap=kw["softcap"],
            backend=backend,
        )
        (logps * torch.arange(S, dtype=torch.float32)).sum().backward()
        runs.append((logps.detach(), ref_logps, h.grad, w.grad, b.grad))
    for a, c in zip(*runs, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-6)
    want_ref = reference(
        ref_hidden, weight, labels, seq_index, S, bias=ref_bias, scale=kw["scale"], softcap=kw["softcap"]
    )
    torch.testing.assert_close(runs[0][1].double(), want_ref, rtol=2e-5, atol=2e-5)

    head = dict(bias=bias, scale=kw["scale"], softcap=kw["softcap"], backend=backend)
    same = seq_logps(hidden, weight, labels, seq_index, S, ref_hidden=hidden, ref_weight=weight, ref_bias=bias, **head)
    assert torch.equal(same[0], same[1])
    only_bias = seq_logps(hidden, weight, labels, seq_index, S, ref_bias=ref_bias, **head)[1]
    torch.testing.assert_close(
        only_bias.double(),
        reference(hidden, weight, labels, seq_index, S, bias=ref_bias, scale=kw["scale"], softcap=kw["softcap"]),
        rtol=2e-5,
        atol=2e-5,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignored_and_empty_sequences_get_zero_and_no_gradient(backend):
    hidden, weight, _, _, labels, seq_index = make_batch(torch.float32, seed=1)
    h, w = leaf(hidden), leaf(weight)
    logps, ref_logps = seq_logps(h, w, labels, seq_index, S, backend=backend)
    assert ref_logps is None
    assert logps[0].item() == 0.0 and logps[S - 1].item() == 0.0
    assert (logps[1 : S - 1] < 0).all()
    # A huge upstream gradient on the empty / all-ignored sequences must not leak anywhere.
    upstream = torch.zeros(S)
    upstream[0] = upstream[S - 1] = 1e6
    (logps * upstream).sum().backward()
    assert torch.count_nonzero(h.grad) == 0 and torch.count_nonzero(w.grad) == 0
    # Ignored tokens of live sequences get zero hidden gradient too.
    h.grad = w.grad = None
    seq_logps(h, w, labels, seq_index, S, backend=backend)[0].sum().backward()
    assert torch.count_nonzero(h.grad[labels == IGN]) == 0
    assert torch.count_nonzero(h.grad[labels != IGN].abs().sum(1)) == int((labels != IGN).sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignored_tokens_with_huge_logits_keep_gradients_finite(backend):
    """exp(logits) of an ignored token may overflow; its zero upstream gradient must not turn that into nan."""
    hidden, weight, _, _, labels, seq_index = make_batch(torch.float32, seed=8)
    hidden[labels == IGN] *= 1e3  # logits in the thousands: exp overflows fp32 unless lse is subtracted
    h, w = leaf(hidden), leaf(weight)
    logps, _ = seq_logps(h, w, labels, seq_index, S, backend=backend)
    logps.sum().backward()
    h64, w64 = leaf(hidden.double()), leaf(weight.double())
    reference(h64, w64, labels, seq_index, S).sum().backward()
    assert torch.isfinite(h.grad).all() and torch.isfinite(w.grad).all()
    assert_grad_close(w.grad, w64.grad, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_policy_equal_to_reference_gives_identical_logps(backend):
    hidden, weight, _, _, labels, seq_index = make_batch(torch.bfloat16, seed=2)
    same = seq_logps(hidden, weight, labels, seq_index, S, ref_hidden=hidden, ref_weight=weight, backend=backend)
    copies = seq_logps(
        hidden, weight, labels, seq_index, S, ref_hidden=hidden.clone(), ref_weight=weight.clone(), backend=backend
    )
    for logps, ref_logps in (same, copies):
        assert torch.equal(logps, ref_logps)  # r = beta * (logp - ref_logp) = 0 exactly
    assert torch.equal(same[0], copies[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_weight_path_equals_separate_weight_path(backend):
    hidden, weight, ref_hidden, _, labels, seq_index = make_batch(torch.float32, seed=3)
    runs = []
    for ref_w in (weight, weight.clone()):  # same object: W tiles loaded once; a copy: loaded twice
        h, w = leaf(hidden), leaf(weight)
        ref_w = w if ref_w is weight else ref_w
        logps, ref_logps = seq_logps(
            h, w, labels, seq_index, S, ref_hidden=ref_hidden, ref_weight=ref_w, backend=backend
        )
        (logps * torch.arange(S, dtype=torch.float32)).sum().backward()
        runs.append((logps.detach(), ref_logps, h.grad, w.grad))
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    want_ref = reference(ref_hidden, weight, labels, seq_index, S)
    torch.testing.assert_close(runs[0][1].double(), want_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_micro_batches_sum_to_the_full_batch(backend):
    hidden, weight, ref_hidden, ref_weight, labels, seq_index = make_batch(torch.float32, seed=4)
    upstream = torch.randn(S, generator=torch.Generator().manual_seed(5))
    h, w = leaf(hidden), leaf(weight)
    full, full_ref = seq_logps(
        h, w, labels, seq_index, S, ref_hidden=ref_hidden, ref_weight=ref_weight, backend=backend
    )
    (full * upstream).sum().backward()
    h2, w2 = leaf(hidden), leaf(weight)
    k = 29
    total, total_ref = torch.zeros(S), torch.zeros(S)
    for sl in (slice(0, k), slice(k, T)):  # gradient accumulation over micro-batches
        lp, rlp = seq_logps(
            h2[sl], w2, labels[sl], seq_index[sl], S, ref_hidden=ref_hidden[sl], ref_weight=ref_weight, backend=backend
        )
        (lp * upstream).sum().backward()
        total, total_ref = total + lp.detach(), total_ref + rlp
    for got, want in ((total, full), (total_ref, full_ref), (h2.grad, h.grad), (w2.grad, w.grad)):
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_composes_with_una_losses_like_full_float64_logits(backend):
    losses = pytest.importorskip("una_hpc.losses")
    hidden, weight, ref_hidden, ref_weight, labels, _ = make_batch(torch.float32, seed=6, s=8)
    n = 4  # sequences 0..3 chosen, 4..7 rejected (or 8 scored sequences)
    seq_index = torch.arange(T) % (2 * n)
    score = torch.linspace(0.1, 0.9, 2 * n)

    def heads(pol, ref):
        dpo = losses.dpo_loss(pol[:n], pol[n:], ref[:n], ref[n:], beta=0.5)
        return dpo, losses.una_score_loss(pol, ref, score, beta=0.5)

    for pick in (0, 1):
        h, w = leaf(hidden), leaf(weight)
        pol, ref = seq_logps(
            h, w, labels, seq_index, 2 * n, ref_hidden=ref_hidden, ref_weight=ref_weight, backend=backend
        )
        loss = heads(pol, ref)[pick]
        loss.backward()
        h64, w64 = leaf(hidden.double()), leaf(weight.double())
        want = heads(
            reference(h64, w64, labels, seq_index, 2 * n), reference(ref_hidden, ref_weight, labels, seq_index, 2 * n)
        )[pick]
        want.backward()
        assert loss.item() > 0
        torch.testing.assert_close(loss.double(), want.double().detach(), rtol=1e-5, atol=1e-6)
        assert_grad_close(h.grad, h64.grad, torch.float32)
        assert_grad_close(w.grad, w64.grad, torch.float32)


def test_auto_backend_is_torch_on_cpu_and_matches():
    hidden, weight, _, _, labels, seq_index = make_batch(torch.float32, seed=7)
    auto, _ = seq_logps(hidden, weight, labels, seq_index, S)
    torch.testing.assert_close(auto.double(), reference(hidden, weight, labels, seq_index, S), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_tokens_at_all(backend):
    h = leaf(torch.randn(0, H))
    w = leaf(torch.randn(V, H))
    empty = torch.zeros(0, dtype=torch.long)
    logps, ref_logps = seq_logps(h, w, empty, empty, 3, ref_weight=w, backend=backend)
    assert torch.equal(logps, torch.zeros(3)) and torch.equal(ref_logps, torch.zeros(3))
    logps.sum().backward()
    assert h.grad.shape == (0, H) and torch.count_nonzero(w.grad) == 0
