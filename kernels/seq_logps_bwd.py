"""Backward of `seq_logps` without atomics: d(logits) per vocab chunk, then two owner-writes-only matmuls.

For each vocab chunk [v0, v1) (<= DZ_CHUNK_ELEMS d(logits) elements and <= V / 4 columns, so never [T, V]):
1. `_dlogits_kernel`, program (token tile, vocab tile): recomputes its logits tile from the saved lse and writes
   dz = g * scale * (onehot - softmax) * (1 - tanh^2 with a softcap) in the operand dtype (bf16 on tensor cores),
   plus per-token-tile column sums of the fp32 dz for grad_bias ([token tiles, width], summed by torch).
2. grad_hidden (+)= dz @ W[v0:v1] into an fp32 [T, H] buffer: each program owns a (token, hidden) tile.
3. grad_weight[v0:v1] = dz.T @ hidden, complete for the chunk, written once in the parameter's dtype: each program
   owns a (vocab, hidden) tile and loops over every token (vocab-tile ownership).
Every output element has exactly one writer and a fixed summation order, so two runs are bitwise equal. Cost at
T = 16k, V = 128k, H = 4096 in bf16: three [T, V, H] matmuls (the logits recompute and the two gradients, 5.3e13
flops) plus the dz round trip through HBM (write once, read twice: 12.9 GB, ~5 % of the matmul time at 700 TFLOP/s
and 3.35 TB/s), against ~512 GiB of fp32 atomics in the per-(token, vocab)-block design this replaces.

Tested by: .venv/bin/python -m pytest tests/unit/test_seq_logps_backward.py tests/unit/test_seq_logps_triton.py -q
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .grad_matmul import matmul_launch
from .triton_tiles import INTERPRETER_BLOCKS, Launch, head_args, interpreting, kernel_args, load_tile, pre_cap, tanh

GROUP_T = 8
# d(logits) chunk: 2^26 elements is 128 MiB in bf16; at T = 16k that is 4096 vocab columns a chunk.
DZ_CHUNK_ELEMS = 1 << 26
# sm_90 blocks of the d(logits) kernel: one 128 x 128 fp32 accumulator, 3 stages of two 16 KiB bf16 tiles.
GPU_CONFIG = {"BLOCK_T": 128, "BLOCK_V": 128, "BLOCK_D": 64, "num_warps": 8, "num_stages": 3}


@triton.jit
def _dlogits_kernel(
    Hp,
    Wp,
    Bp,
    LAB,
    LSE,
    G,
    DZ,
    GBP,
    T,
    D,
    v_begin,
    v_end,
    s_ht,
    s_hd,
    s_wv,
    s_wd,
    s_dz,
    mul,
    cap,
    COMPUTE_GB: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SCALED: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # Grouped order, as the forward: GROUP token tiles meet every vocab tile of the chunk while resident together.
    pid = tl.program_id(0)
    n_t = tl.cdiv(T, BLOCK_T)
    n_v = tl.cdiv(v_end - v_begin, BLOCK_V)
    first_t = (pid // (GROUP * n_v)) * GROUP
    group_size = tl.minimum(n_t - first_t, GROUP)
    pid_t = first_t + (pid % (GROUP * n_v)) % group_size
    pid_v = (pid % (GROUP * n_v)) // group_size
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)  # column inside the chunk
    offs_v = v_begin + cols
    t_mask = offs_t < T
    v_mask = offs_v < v_end
    labels = tl.load(LAB + offs_t, mask=t_mask, other=-1)
    # Rows past T get lse = +inf, so p = 0 there even when a large bias would overflow exp.
    lse = tl.load(LSE + offs_t, mask=t_mask, other=float("inf"))
    g = tl.load(G + offs_t, mask=t_mask, other=0.0)  # the host folded the head's scale into g
    # g is 0 for ignored tokens and for sequences with zero upstream gradient: such blocks skip the recompute.
    live = tl.max(tl.abs(g), axis=0) > 0
    d_stop = tl.where(live, D, 0)

    acc = tl.zeros([BLOCK_T, BLOCK_V], tl.float32)
    for d0 in tl.range(0, d_stop, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_mask = offs_d < D
        h = load_tile(Hp, offs_t, offs_d, s_ht, s_hd, t_mask, d_mask, UPCAST)
        w = load_tile(Wp, offs_v, offs_d, s_wv, s_wd, v_mask, d_mask, UPCAST)
        acc = tl.dot(h, tl.trans(w), acc, input_precision=PREC)
    acc = pre_cap(acc, Bp, offs_v, v_mask, mul, HAS_BIAS, SCALED)
    if HAS_SOFTCAP:
        u = tanh(acc)
        acc = cap * u
    p = tl.where(v_mask[None, :], tl.exp(acc - lse[:, None]), 0.0)
    dz = g[:, None] * (tl.where(offs_v[None, :] == labels[:, None], 1.0, 0.0) - p)
    if HAS_SOFTCAP:  # d(cap * tanh(mul * pre)) / d(pre) = scale * (1 - tanh^2); scale is already in g
        dz = dz * (1.0 - u * u)
    # Rows with g = 0 contribute exactly 0: in a skipped block acc was never formed and exp may have overflowed.
    dz = tl.where(g[:, None] != 0.0, dz, 0.0)
    if COMPUTE_GB:  # column sums in fp32, before the rounding below; one row of partials per token tile
        tl.store(GBP + pid_t * s_dz + cols, tl.sum(dz, axis=0), mask=v_mask)
    # Rounded to the operand dtype, as the tensor-core matmuls read it.
    dz_ptrs = DZ + offs_t.to(tl.int64)[:, None] * s_dz + cols[None, :]
    tl.store(dz_ptrs, dz.to(DZ.dtype.element_ty), mask=t_mask[:, None] & v_mask[None, :])


def chunk_width(T: int, V: int, block_v: int) -> int:
    """Vocab columns per d(logits) chunk: a multiple of block_v, <= DZ_CHUNK_ELEMS elements at T rows when possible,
    and at most a quarter of the vocabulary (rounded up to a block), so d(logits) is never one [T, V] tensor."""
    width = max(block_v, DZ_CHUNK_ELEMS // max(T, 1) // block_v * block_v)
    return min(width, triton.cdiv(triton.cdiv(V, 4), block_v) * block_v)


def dlogits_launch(hidden, w_op, bias, labels, lse, g_tok, dz, gbp, v0, v1, mul, cap, head_flags, cfg) -> Launch:
    T, D = hidden.shape
    args = (
        hidden,
        w_op,
        w_op if bias is None else bias,  # an unused pointer without a bias
        labels,
        lse,
        g_tok,
        dz,
        gbp,
        T,
        D,
        v0,
        v1,
        hidden.stride(0),
        hidden.stride(1),
        w_op.stride(0),
        w_op.stride(1),
        dz.stride(0),
        mul,
        cap,
    )
    kwargs = dict(COMPUTE_GB=gbp is not dz, **head_flags, **kernel_args(hidden.dtype), GROUP=GROUP_T, **cfg)
    grid = (triton.cdiv(T, cfg["BLOCK_T"]) * triton.cdiv(v1 - v0, cfg["BLOCK_V"]),)
    return Launch(_dlogits_kernel, grid, args, kwargs)


def backward_launches(hidden, weight, w_op, bias, labels, lse, g_tok, need_h, need_w, need_b, scale, softcap):
    """First yields the output buffers (grad_hidden fp32, grad_weight in weight's dtype, grad_bias fp32; None where
    unneeded), then every launch of the backward in order (callables), which fill them. `hidden` and `w_op` are the
    operands (one dtype), `weight` the parameter. The compile test specializes these exact launches."""
    T, D = hidden.shape
    V = weight.shape[0]
    cfg = dict(INTERPRETER_BLOCKS) if interpreting() else dict(GPU_CONFIG)
    mul, cap, head_flags = head_args(bias, scale, softcap)
    if scale != 1.0:  # dz/dpre carries a factor scale: applied once per token here
        g_tok = g_tok * scale
    width = chunk_width(T, V, cfg["BLOCK_V"])
    dev = hidden.device
    dz = torch.empty((T, width), dtype=hidden.dtype, device=dev)
    gbp = torch.empty((triton.cdiv(T, cfg["BLOCK_T"]), width), dtype=torch.float32, device=dev) if need_b else dz
    gh = torch.empty((T, D), dtype=torch.float32, device=dev) if need_h else None
    gw = torch.empty((V, D), dtype=weight.dtype, device=dev) if need_w else None
    gb = torch.empty((V,), dtype=torch.float32, device=dev) if need_b else None
    yield gh, gw, gb
    flags = kernel_args(hidden.dtype)
    for v0 in range(0, V, width):
        v1 = min(V, v0 + width)
        yield dlogits_launch(hidden, w_op, bias, labels, lse, g_tok, dz, gbp, v0, v1, mul, cap, head_flags, cfg)
        chunk = dz[:, : v1 - v0]
        if need_h:  # fp32 accumulation across chunks, in a fixed chunk order
            yield matmul_launch(chunk, w_op[v0:v1], gh, v0 > 0, flags["UPCAST"], flags["PREC"])
        if need_w:
            yield matmul_launch(chunk.T, hidden, gw[v0:v1], False, flags["UPCAST"], flags["PREC"])
        if need_b:
            yield lambda v0=v0, v1=v1: gb[v0:v1].copy_(gbp[:, : v1 - v0].sum(dim=0))


def backward(hidden, weight, w_op, bias, labels, lse, g_tok, need_h, need_w, need_b, scale, softcap):
    """(grad_hidden in hidden's dtype, grad_weight in weight's dtype, grad_bias in bias's dtype), None if unneeded."""
    steps = backward_launches(hidden, weight, w_op, bias, labels, lse, g_tok, need_h, need_w, need_b, scale, softcap)
    gh, gw, gb = next(steps)
    for launch in steps:
        launch()
    return (
        gh.to(hidden.dtype) if need_h else None,
        gw if need_w else None,
        gb.to(bias.dtype) if need_b else None,
    )
