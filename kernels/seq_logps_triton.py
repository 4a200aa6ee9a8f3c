"""Fused Triton kernels for `seq_logps`: policy and reference logits tiles in one program, no [T, V] buffer.

Forward: program (token block, vocab split) streams W tiles, applies the head's transform to each logits tile
(z = cap * tanh(mul * (h @ W.T + b)) with mul = scale / cap, or z = mul * (h @ W.T + b) with mul = scale), keeps an
online max / sum-exp and the label logit per token for policy and reference, and writes per-split partials
[splits, T]; the host combines them (deterministic) into per-token lse + token logps, then per-sequence sums. When
`ref_weight is weight` each W tile is loaded once.
Backward: program (token block, vocab block) recomputes its logits tile from the saved lse, forms
dz = g_seq * scale * (onehot - softmax) * (1 - tanh^2 with a softcap), and atomically adds dz @ W into grad_hidden,
dz^T @ h into grad_weight and dz's column sums into grad_bias (fp32).
The transform is constexpr-flagged (HAS_BIAS, SCALED, HAS_SOFTCAP): a plain head compiles to the bare-matmul kernels.

Runs on CPU under TRITON_INTERPRET=1 (set before triton is imported) with small fixed blocks; autotuned on CUDA.
Tested by: .venv/bin/python -m pytest tests/unit/test_seq_logps_triton.py -q
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .seq_logps_torch import segment_sum

# Fixed blocks for the interpreter: small (numpy per tile op) but >= 16, as tl.dot needs on GPU.
INTERPRETER_BLOCKS = {"BLOCK_T": 16, "BLOCK_V": 32, "BLOCK_D": 16}


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _tanh(x):
    # tl has no tanh, and libdevice's does not run under the interpreter. exp(-2|x|) never overflows. The absolute
    # error is ~1e-7, so z = cap * tanh is off by about cap * 1e-7: the size of z's own fp32 rounding near +-cap.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _pre_cap(acc, Bp, offs_v, v_mask, mul, HAS_BIAS: tl.constexpr, SCALED: tl.constexpr):
    """mul * (logits + b): the transform up to the tanh (all of it without a softcap)."""
    if HAS_BIAS:
        acc += tl.load(Bp + offs_v, mask=v_mask, other=0.0).to(tl.float32)[None, :]
    if SCALED:
        acc = acc * mul
    return acc


@triton.jit
def _head(acc, Bp, offs_v, v_mask, mul, cap, HAS_BIAS: tl.constexpr, SCALED: tl.constexpr, HAS_SOFTCAP: tl.constexpr):
    """Transformed logits z of one fp32 tile of h @ W.T."""
    acc = _pre_cap(acc, Bp, offs_v, v_mask, mul, HAS_BIAS, SCALED)
    if HAS_SOFTCAP:
        acc = cap * _tanh(acc)
    return acc


@triton.jit
def _online_update(logits, offs_v, labels, m, s, z):
    """Fold one logits tile (masked columns = -inf) into running max, sum-exp and label logit per row."""
    m_new = tl.maximum(m, tl.max(logits, axis=1))
    s = s * tl.exp(m - m_new) + tl.sum(tl.exp(logits - m_new[:, None]), axis=1)
    z += tl.sum(tl.where(offs_v[None, :] == labels[:, None], logits, 0.0), axis=1)
    return m_new, s, z


@triton.jit
def _load_tile(ptr, offs_r, offs_d, s_r, s_d, r_mask, d_mask, UPCAST: tl.constexpr):
    # int64 row offsets: V * H passes 2^31 for large vocabularies (256k x 8192).
    rows = offs_r.to(tl.int64)[:, None] * s_r
    x = tl.load(ptr + rows + offs_d[None, :] * s_d, mask=r_mask[:, None] & d_mask[None, :], other=0.0)
    if UPCAST:  # triton 3.9's interpreter multiplies bf16 tiles as raw uint16 bits: give it fp32
        x = x.to(tl.float32)
    return x


@triton.jit
def _fwd_kernel(
    Hp,
    Wp,
    Bp,
    RHp,
    RWp,
    RBp,
    LAB,
    M,
    S,
    Z,
    RM,
    RS,
    RZ,
    T,
    V,
    D,
    s_ht,
    s_hd,
    s_wv,
    s_wd,
    s_rht,
    s_rhd,
    s_rwv,
    s_rwd,
    ignore_index,
    mul,
    cap,
    HAS_REF: tl.constexpr,
    SHARED_H: tl.constexpr,
    SHARED_W: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SCALED: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    t_mask = offs_t < T
    labels = tl.load(LAB + offs_t, mask=t_mask, other=ignore_index)
    # A token block with only ignored tokens (prompt, padding) needs nothing: empty vocab loop.
    active = tl.sum(((labels != ignore_index) & t_mask).to(tl.int32), axis=0) > 0
    tiles_per_split = tl.cdiv(tl.cdiv(V, BLOCK_V), tl.num_programs(1))
    v_begin = pid_s * tiles_per_split * BLOCK_V
    v_stop = tl.minimum(v_begin + tiles_per_split * BLOCK_V, V)
    v_stop = tl.where(active, v_stop, v_begin)

    m = tl.full([BLOCK_T], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_T], tl.float32)
    z = tl.zeros([BLOCK_T], tl.float32)
    rm = tl.full([BLOCK_T], float("-inf"), tl.float32)
    rs = tl.zeros([BLOCK_T], tl.float32)
    rz = tl.zeros([BLOCK_T], tl.float32)
    for v0 in tl.range(v_begin, v_stop, BLOCK_V):
        offs_v = v0 + tl.arange(0, BLOCK_V)
        v_mask = offs_v < v_stop
        acc = tl.zeros([BLOCK_T, BLOCK_V], tl.float32)
        racc = tl.zeros([BLOCK_T, BLOCK_V], tl.float32)
        for d0 in tl.range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_mask = offs_d < D
            h = _load_tile(Hp, offs_t, offs_d, s_ht, s_hd, t_mask, d_mask, UPCAST)
            w = _load_tile(Wp, offs_v, offs_d, s_wv, s_wd, v_mask, d_mask, UPCAST)
            acc = tl.dot(h, tl.trans(w), acc, input_precision=PREC)
            if HAS_REF:
                if SHARED_H:
                    rh = h
                else:
                    rh = _load_tile(RHp, offs_t, offs_d, s_rht, s_rhd, t_mask, d_mask, UPCAST)
                if SHARED_W:  # LoRA with the adapter off: the W tile is loaded once for both models
                    rw = w
                else:
                    rw = _load_tile(RWp, offs_v, offs_d, s_rwv, s_rwd, v_mask, d_mask, UPCAST)
                racc = tl.dot(rh, tl.trans(rw), racc, input_precision=PREC)
        # The transform runs before the masking, so padded columns end at -inf whatever the bias or cap.
        acc = _head(acc, Bp, offs_v, v_mask, mul, cap, HAS_BIAS, SCALED, HAS_SOFTCAP)
        acc = tl.where(v_mask[None, :], acc, float("-inf"))
        m, s, z = _online_update(acc, offs_v, labels, m, s, z)
        if HAS_REF:
            racc = _head(racc, RBp, offs_v, v_mask, mul, cap, HAS_BIAS, SCALED, HAS_SOFTCAP)
            racc = tl.where(v_mask[None, :], racc, float("-inf"))
            rm, rs, rz = _online_update(racc, offs_v, labels, rm, rs, rz)

    out = pid_s * T + offs_t
    tl.store(M + out, m, mask=t_mask)
    tl.store(S + out, s, mask=t_mask)
    tl.store(Z + out, z, mask=t_mask)
    if HAS_REF:
        tl.store(RM + out, rm, mask=t_mask)
        tl.store(RS + out, rs, mask=t_mask)
        tl.store(RZ + out, rz, mask=t_mask)


@triton.jit
def _bwd_kernel(
    Hp,
    Wp,
    Bp,
    LAB,
    LSE,
    G,
    GH,
    GW,
    GB,
    T,
    V,
    D,
    s_ht,
    s_hd,
    s_wv,
    s_wd,
    mul,
    cap,
    COMPUTE_GH: tl.constexpr,
    COMPUTE_GW: tl.constexpr,
    COMPUTE_GB: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SCALED: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_v = tl.program_id(1)
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_v = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    t_mask = offs_t < T
    v_mask = offs_v < V
    labels = tl.load(LAB + offs_t, mask=t_mask, other=-1)
    # Rows past T get lse = +inf, so p = 0 there even when a large bias would overflow exp.
    lse = tl.load(LSE + offs_t, mask=t_mask, other=float("inf"))
    g = tl.load(G + offs_t, mask=t_mask, other=0.0)  # the host folded the head's scale into g
    # g is 0 for ignored tokens and for sequences with zero upstream gradient: such blocks contribute nothing.
    live = tl.max(tl.abs(g), axis=0) > 0
    d_stop = tl.where(live, D, 0)

    acc = tl.zeros([BLOCK_T, BLOCK_V], tl.float32)
    for d0 in tl.range(0, d_stop, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_mask = offs_d < D
        h = _load_tile(Hp, offs_t, offs_d, s_ht, s_hd, t_mask, d_mask, UPCAST)
        w = _load_tile(Wp, offs_v, offs_d, s_wv, s_wd, v_mask, d_mask, UPCAST)
        acc = tl.dot(h, tl.trans(w), acc, input_precision=PREC)
    acc = _pre_cap(acc, Bp, offs_v, v_mask, mul, HAS_BIAS, SCALED)
    if HAS_SOFTCAP:
        u = _tanh(acc)
        acc = cap * u
    p = tl.where(v_mask[None, :], tl.exp(acc - lse[:, None]), 0.0)
    dz = g[:, None] * (tl.where(offs_v[None, :] == labels[:, None], 1.0, 0.0) - p)
    if HAS_SOFTCAP:  # d(cap * tanh(mul * pre)) / d(pre) = scale * (1 - tanh^2); scale is already in g
        dz = dz * (1.0 - u * u)
    if COMPUTE_GB:  # column sums in fp32, before the rounding below; a skipped block (g == 0, acc never formed) adds 0
        tl.atomic_add(GB + offs_v, tl.where(live, tl.sum(dz, axis=0), 0.0), mask=v_mask, sem="relaxed")
    # Round dz to the input dtype as the GPU dot does (bf16 tensor cores); the interpreter then gets fp32 again.
    dz = dz.to(Wp.dtype.element_ty)
    if UPCAST:
        dz = dz.to(tl.float32)

    for d0 in tl.range(0, d_stop, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_mask = offs_d < D
        if COMPUTE_GH:
            w = _load_tile(Wp, offs_v, offs_d, s_wv, s_wd, v_mask, d_mask, UPCAST)
            gh_ptrs = GH + offs_t.to(tl.int64)[:, None] * D + offs_d[None, :]
            tl.atomic_add(
                gh_ptrs, tl.dot(dz, w, input_precision=PREC), mask=t_mask[:, None] & d_mask[None, :], sem="relaxed"
            )
        if COMPUTE_GW:
            h = _load_tile(Hp, offs_t, offs_d, s_ht, s_hd, t_mask, d_mask, UPCAST)
            gw_ptrs = GW + offs_v.to(tl.int64)[:, None] * D + offs_d[None, :]
            tl.atomic_add(
                gw_ptrs,
                tl.dot(tl.trans(dz), h, input_precision=PREC),
                mask=v_mask[:, None] & d_mask[None, :],
                sem="relaxed",
            )


def _configs():
    shapes = [
        (64, 128, 64, 4, 3),
        (128, 128, 64, 8, 3),
        (64, 256, 64, 8, 3),
        (128, 64, 64, 4, 4),
        (64, 64, 64, 4, 4),
        (128, 128, 32, 8, 4),
    ]
    return [
        triton.Config({"BLOCK_T": bt, "BLOCK_V": bv, "BLOCK_D": bd}, num_warps=w, num_stages=st)
        for bt, bv, bd, w, st in shapes
    ]


# T is left out of the keys: packed batches change T every step and should not re-tune each time.
_fwd_tuned = triton.autotune(_configs(), key=["V", "D", "HAS_REF", "SHARED_W", "HAS_BIAS", "HAS_SOFTCAP"])(_fwd_kernel)
_bwd_tuned = triton.autotune(
    _configs(),
    key=["V", "D", "COMPUTE_GH", "COMPUTE_GW", "COMPUTE_GB", "HAS_SOFTCAP"],
    reset_to_zero=["GH", "GW", "GB"],
)(_bwd_kernel)


def _kernel_args(dtype: torch.dtype):
    upcast = interpreting() and dtype != torch.float32
    prec = "ieee" if dtype == torch.float32 else "tf32"  # fp32 users get fp32 dots, not tf32
    return {"UPCAST": upcast, "PREC": prec}


def _head_args(bias, scale: float, softcap: float | None) -> tuple[float, float, dict]:
    """(mul, cap, flags) of the kernels' transform z = cap * tanh(mul * (pre + b)) or mul * (pre + b)."""
    mul = scale if softcap is None else scale / softcap
    flags = {"HAS_BIAS": bias is not None, "SCALED": mul != 1.0, "HAS_SOFTCAP": softcap is not None}
    return mul, (1.0 if softcap is None else softcap), flags


def _default_splits(T: int, V: int, device: torch.device) -> int:
    """Split the vocab across programs when there are too few token blocks to fill the GPU."""
    if device.type != "cuda":
        return 1
    n_sm = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(triton.cdiv(2 * n_sm, triton.cdiv(T, 64)), V // 4096))


def _forward(hidden, weight, bias, labels, ref_hidden, ref_weight, ref_bias, scale, softcap, ignore_index, num_splits):
    """Per-token (lse, label_logit, ref_lse, ref_label_logit), fp32; ref entries None without a reference.

    ref_bias is the reference's own bias; the kernel reads both biases when bias is given (the public API resolves
    them so that either both or neither are None).
    """
    T, D = hidden.shape
    V = weight.shape[0]
    has_ref = ref_hidden is not None
    splits = num_splits or _default_splits(T, V, hidden.device)
    parts = torch.empty((6 if has_ref else 3, splits, T), dtype=torch.float32, device=hidden.device)
    rh = ref_hidden if has_ref else hidden
    rw = ref_weight if has_ref else weight
    b = weight if bias is None else bias.contiguous()  # an unused pointer without a bias
    rb = b if ref_bias is None or ref_bias is bias else ref_bias.contiguous()
    mul, cap, head_flags = _head_args(bias, scale, softcap)
    args = (
        hidden,
        weight,
        b,
        rh,
        rw,
        rb,
        labels,
        *parts[:3],
        *(parts[3:] if has_ref else parts[:3]),
        T,
        V,
        D,
        hidden.stride(0),
        hidden.stride(1),
        weight.stride(0),
        weight.stride(1),
        rh.stride(0),
        rh.stride(1),
        rw.stride(0),
        rw.stride(1),
        ignore_index,
        mul,
        cap,
    )
    flags = dict(
        HAS_REF=has_ref, SHARED_H=rh is hidden, SHARED_W=rw is weight, **head_flags, **_kernel_args(hidden.dtype)
    )
    if interpreting():
        grid = (triton.cdiv(T, INTERPRETER_BLOCKS["BLOCK_T"]), splits)
        _fwd_kernel[grid](*args, **flags, **INTERPRETER_BLOCKS)
    else:
        _fwd_tuned[lambda meta: (triton.cdiv(T, meta["BLOCK_T"]), splits)](*args, **flags)

    def combine(m, s, z):  # log-sum-exp over the vocab splits, in a fixed order
        m_max = m.amax(dim=0)
        return m_max + torch.log((s * torch.exp(m - m_max)).sum(dim=0)), z.sum(dim=0)

    lse, z = combine(*parts[:3])
    if not has_ref:
        return lse, z, None, None
    return (lse, z, *combine(*parts[3:]))


def _backward(hidden, weight, bias, labels, lse, g_tok, need_h, need_w, need_b, scale, softcap):
    T, D = hidden.shape
    V = weight.shape[0]
    gh = torch.zeros((T, D) if need_h else (1,), dtype=torch.float32, device=hidden.device)
    gw = torch.zeros((V, D) if need_w else (1,), dtype=torch.float32, device=hidden.device)
    gb = torch.zeros((V,) if need_b else (1,), dtype=torch.float32, device=hidden.device)
    mul, cap, head_flags = _head_args(bias, scale, softcap)
    if scale != 1.0:  # dz/dpre carries a factor scale: applied once per token here
        g_tok = g_tok * scale
    args = (
        hidden,
        weight,
        weight if bias is None else bias.contiguous(),
        labels,
        lse,
        g_tok,
        gh,
        gw,
        gb,
        T,
        V,
        D,
        hidden.stride(0),
        hidden.stride(1),
        weight.stride(0),
        weight.stride(1),
        mul,
        cap,
    )
    flags = dict(COMPUTE_GH=need_h, COMPUTE_GW=need_w, COMPUTE_GB=need_b, **head_flags, **_kernel_args(hidden.dtype))
    if interpreting():
        b = INTERPRETER_BLOCKS
        _bwd_kernel[(triton.cdiv(T, b["BLOCK_T"]), triton.cdiv(V, b["BLOCK_V"]))](*args, **flags, **b)
    else:
        _bwd_tuned[lambda meta: (triton.cdiv(T, meta["BLOCK_T"]), triton.cdiv(V, meta["BLOCK_V"]))](*args, **flags)
    return (
        gh.to(hidden.dtype) if need_h else None,
        gw.to(weight.dtype) if need_w else None,
        gb.to(bias.dtype) if need_b else None,
    )


class TritonSeqLogps(torch.autograd.Function):
    """autograd.Function over the fused kernels; outputs (logps, ref_logps), ref_logps non-differentiable.

    Gradients flow to hidden, weight and bias; ref_bias is the reference's resolved bias (see seq_logps).
    """

    @staticmethod
    def forward(
        ctx,
        hidden,
        weight,
        bias,
        labels,
        seq_index,
        num_seqs,
        ref_hidden,
        ref_weight,
        ref_bias,
        scale,
        softcap,
        ignore_index,
        num_splits=None,
    ):
        labels = labels.contiguous()
        mask = labels != ignore_index
        same = ref_hidden is hidden and ref_weight is weight and ref_bias is bias  # policy == reference: compute once
        with torch.no_grad():
            lse, z, ref_lse, ref_z = _forward(
                hidden,
                weight,
                bias,
                labels,
                None if same else ref_hidden,
                None if same else ref_weight,
                None if same else ref_bias,
                scale,
                softcap,
                ignore_index,
                num_splits,
            )
            if same:
                ref_lse, ref_z = lse, z
            # Ignored tokens (nan where a block was skipped) get lse = +inf: the backward's exp(z - lse) is then 0,
            # never inf * (g = 0) = nan, whatever block sizes the backward's autotuning picks.
            lse = torch.where(mask, lse, float("inf"))
            tok = [torch.where(mask, z - lse, 0.0)]
            if ref_hidden is not None:
                tok.append(torch.where(mask, ref_z - ref_lse, 0.0))
            sums = segment_sum(torch.stack(tok), seq_index, num_seqs).float()
        ctx.save_for_backward(hidden, weight, bias, labels, seq_index, lse, mask)
        ctx.head = (scale, softcap)
        ref_logps = sums[1] if ref_hidden is not None else sums.new_empty(0)
        ctx.mark_non_differentiable(ref_logps)
        return sums[0], ref_logps

    @staticmethod
    def backward(ctx, grad_logps, _grad_ref):
        hidden, weight, bias, labels, seq_index, lse, mask = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        if not (need_h or need_w or need_b):
            return (None,) * 13
        g_tok = torch.where(mask, grad_logps.float()[seq_index], 0.0).contiguous()
        gh, gw, gb = _backward(hidden, weight, bias, labels, lse, g_tok, need_h, need_w, need_b, *ctx.head)
        return gh, gw, gb, *(None,) * 10
