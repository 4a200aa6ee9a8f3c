"""Tile helpers shared by the seq_logps Triton kernels: the head's transform, online softmax, tile loads, launch flags.

The transform is z = cap * tanh(mul * (h @ W.T + b)) with mul = scale / cap, or z = mul * (h @ W.T + b) with
mul = scale; it is constexpr-flagged (HAS_BIAS, SCALED, HAS_SOFTCAP), so a plain head compiles to bare matmuls.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

# Fixed blocks for the interpreter: small (numpy per tile op) but >= 16, as tl.dot needs on GPU.
INTERPRETER_BLOCKS = {"BLOCK_T": 16, "BLOCK_V": 32, "BLOCK_D": 16}


class Launch(NamedTuple):
    """One kernel launch: `fn[grid](*args, **kwargs)`; kwargs hold the constexprs, num_warps and num_stages."""

    fn: object
    grid: tuple
    args: tuple
    kwargs: dict

    def __call__(self):
        self.fn[self.grid](*self.args, **self.kwargs)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def tanh(x):
    # tl has no tanh, and libdevice's does not run under the interpreter. exp(-2|x|) never overflows. The absolute
    # error is ~1e-7, so z = cap * tanh is off by about cap * 1e-7: the size of z's own fp32 rounding near +-cap.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def pre_cap(acc, Bp, offs_v, v_mask, mul, HAS_BIAS: tl.constexpr, SCALED: tl.constexpr):
    """mul * (logits + b): the transform up to the tanh (all of it without a softcap)."""
    if HAS_BIAS:
        acc += tl.load(Bp + offs_v, mask=v_mask, other=0.0).to(tl.float32)[None, :]
    if SCALED:
        acc = acc * mul
    return acc


@triton.jit
def head(acc, Bp, offs_v, v_mask, mul, cap, HAS_BIAS: tl.constexpr, SCALED: tl.constexpr, HAS_SOFTCAP: tl.constexpr):
    """Transformed logits z of one fp32 tile of h @ W.T."""
    acc = pre_cap(acc, Bp, offs_v, v_mask, mul, HAS_BIAS, SCALED)
    if HAS_SOFTCAP:
        acc = cap * tanh(acc)
    return acc


@triton.jit
def online_update(logits, offs_v, labels, m, s, z):
    """Fold one logits tile (masked columns = -inf) into running max, sum-exp and label logit per row."""
    m_new = tl.maximum(m, tl.max(logits, axis=1))
    s = s * tl.exp(m - m_new) + tl.sum(tl.exp(logits - m_new[:, None]), axis=1)
    z += tl.sum(tl.where(offs_v[None, :] == labels[:, None], logits, 0.0), axis=1)
    return m_new, s, z


@triton.jit
def load_tile(ptr, offs_r, offs_d, s_r, s_d, r_mask, d_mask, UPCAST: tl.constexpr):
    # int64 row offsets: V * H passes 2^31 for large vocabularies (256k x 8192).
    rows = offs_r.to(tl.int64)[:, None] * s_r
    x = tl.load(ptr + rows + offs_d[None, :] * s_d, mask=r_mask[:, None] & d_mask[None, :], other=0.0)
    if UPCAST:  # triton 3.9's interpreter multiplies bf16 tiles as raw uint16 bits: give it fp32
        x = x.to(tl.float32)
    return x


def kernel_args(dtype: torch.dtype) -> dict:
    """UPCAST (interpreter with 16-bit operands) and the dot precision: fp32 users get fp32 dots, not tf32."""
    return {"UPCAST": interpreting() and dtype != torch.float32, "PREC": "ieee" if dtype == torch.float32 else "tf32"}


def head_args(bias, scale: float, softcap: float | None) -> tuple[float, float, dict]:
    """(mul, cap, flags) of the kernels' transform z = cap * tanh(mul * (pre + b)) or mul * (pre + b)."""
    mul = scale if softcap is None else scale / softcap
    flags = {"HAS_BIAS": bias is not None, "SCALED": mul != 1.0, "HAS_SOFTCAP": softcap is not None}
    return mul, (1.0 if softcap is None else softcap), flags
