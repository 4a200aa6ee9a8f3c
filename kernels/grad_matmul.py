"""Deterministic tile matmul for the backward of `seq_logps`: C[M, N] (+)= A[M, K] @ B[K, N], fp32 accumulators.

Each program owns one (BLOCK_M, BLOCK_N) tile of C and loops over all of K, so no two programs ever write the same
element: no atomics, and the result does not depend on scheduling (two runs are bitwise equal). The output is
written in C's dtype (fp32 grad_hidden accumulator; grad_weight straight in the parameter's dtype, so a bf16
weight never needs a full fp32 [V, H] buffer). Any strides: grad_weight reads d(logits) transposed through them.

Tested by: .venv/bin/python -m pytest tests/unit/test_seq_logps_backward.py tests/unit/test_seq_logps_triton.py -q
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_tiles import Launch, interpreting

GROUP_M = 8
# Interpreter: one numpy op per tile, so larger tiles are faster; >= 16 as tl.dot needs.
INTERPRETER_BLOCKS = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}
# sm_90: 128 x 128 fp32 accumulator (64 registers a thread at 8 warps), 3 stages of 2 x 16 KiB bf16 tiles.
GPU_CONFIG = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3}


@triton.jit
def _mm_kernel(
    A,
    B,
    C,
    M,
    N,
    K,
    s_am,
    s_ak,
    s_bk,
    s_bn,
    s_cm,
    s_cn,
    ACCUMULATE: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # Grouped order: GROUP row tiles share the B column tiles they read while resident together (L2 reuse).
    pid = tl.program_id(0)
    n_m = tl.cdiv(M, BLOCK_M)
    n_n = tl.cdiv(N, BLOCK_N)
    first_m = (pid // (GROUP * n_n)) * GROUP
    group_size = tl.minimum(n_m - first_m, GROUP)
    pid_m = first_m + (pid % (GROUP * n_n)) % group_size
    pid_n = (pid % (GROUP * n_n)) // group_size
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    # int64 offsets: a [V, H] or [T, V-chunk] operand can pass 2^31 elements.
    a_rows = offs_m.to(tl.int64)[:, None] * s_am
    b_cols = offs_n.to(tl.int64)[None, :] * s_bn
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in tl.range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        a = tl.load(A + a_rows + offs_k.to(tl.int64)[None, :] * s_ak, mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        b = tl.load(B + offs_k.to(tl.int64)[:, None] * s_bk + b_cols, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        if UPCAST:  # the interpreter multiplies bf16 tiles as raw bits: give it fp32
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PREC)
    c_ptrs = C + offs_m.to(tl.int64)[:, None] * s_cm + offs_n.to(tl.int64)[None, :] * s_cn
    c_mask = m_mask[:, None] & n_mask[None, :]
    if ACCUMULATE:  # the tile's owner is its only reader and writer: a plain read-modify-write
        acc += tl.load(c_ptrs, mask=c_mask, other=0.0).to(tl.float32)
    tl.store(c_ptrs, acc.to(C.dtype.element_ty), mask=c_mask)


def matmul_launch(a, b, c, accumulate: bool, upcast: bool, prec: str) -> Launch:
    """c (+)= a @ b for 2-D tensors (any strides); a and b share one dtype, c any float dtype."""
    M, K = a.shape
    N = b.shape[1]
    cfg = dict(INTERPRETER_BLOCKS) if interpreting() else dict(GPU_CONFIG)
    args = (a, b, c, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1))
    kwargs = dict(ACCUMULATE=accumulate, UPCAST=upcast, PREC=prec, GROUP=GROUP_M, **cfg)
    grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]),)
    return Launch(_mm_kernel, grid, args, kwargs)
