"""Tensor-core operands for the fused kernel: which dtype the trainer hands it, and a 16-bit copy of an fp32 lm_head.

With fp32 master weights and trainer.dtype=bfloat16, the lm_head stays fp32 while the decoder runs under autocast.
Casting hidden states up to fp32 would make the kernel run fp32 dots (FMA units, no wgmma on sm_90: 15-30x below
bf16 tensor cores); instead the kernel gets bf16 hidden states and multiplies them by a bf16 copy of the weight, with
fp32 accumulation, and writes grad_weight in fp32. The copy is made once per weight version (an optimizer step bumps
it) and kept on the weight tensor itself, so no module-level state outlives the parameter.

On CPU the operands stay in the weight's dtype: the chunked torch path is fastest in fp32 there.
"""

from __future__ import annotations

import contextlib

import torch

_ATTR = "_una_operand_copy"
_LOW = (torch.bfloat16, torch.float16)


def operand_dtype(weight: torch.Tensor, autocast: contextlib.AbstractContextManager | None = None) -> torch.dtype:
    """dtype to cast hidden states to before `seq_logps(hidden, weight, ...)`.

    The autocast dtype (bf16 / fp16) when `autocast` (the trainer's compute-dtype context) enables one on CUDA and the
    weight is fp32: the kernel then multiplies in 16 bits. Otherwise the weight's dtype (CPU, fp32 training, or
    weights that are already 16-bit).
    """
    if autocast is None or not weight.is_cuda or weight.dtype != torch.float32:
        return weight.dtype
    with autocast:
        if torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") in _LOW:
            return torch.get_autocast_dtype("cuda")
    return weight.dtype


def _key(weight: torch.Tensor, dtype: torch.dtype) -> tuple:
    # _version counts in-place writes (optimizer steps, load_state_dict); data_ptr catches a swapped storage (ZeRO-3).
    return (dtype, weight._version, weight.data_ptr(), weight.storage_offset(), tuple(weight.shape), weight.stride())


def _probe(weight: torch.Tensor, n: int = 4096) -> torch.Tensor:
    """n entries spread over every row range and column of the weight (a strided gather, no host sync)."""
    V, H = weight.shape
    rows = torch.linspace(0, V - 1, min(n, V * H), device=weight.device).long()
    return weight.detach()[rows, (rows * 7919) % H].clone()


def operand_copy(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`weight` in `dtype` (contiguous), made once per weight version: every micro-batch of an optimizer step and its
    backward reuse the same copy (1 GiB in bf16 at V = 128k, H = 4096). `weight` itself when it already has `dtype`.

    torch's fused AdamW (fused=True) writes the parameters without bumping their version (measured, torch 2.13), so
    a key match is confirmed by 4096 probed entries (one host sync): an Adam step moves every entry that has a
    gradient or weight decay, and lm_head gradients are dense.
    """
    if weight.dtype == dtype:
        return weight
    try:
        key = _key(weight, dtype)
    except RuntimeError:  # inference tensors have no version counter: no cache
        return weight.detach().to(dtype).contiguous()
    hit = weight.__dict__.get(_ATTR)
    if hit is not None and hit[0] == key and torch.equal(hit[2], _probe(weight)):
        return hit[1]
    weight.__dict__.pop(_ATTR, None)  # drop the stale copy before making the new one: one copy alive at a time
    with torch.no_grad():
        copy = weight.detach().to(dtype).contiguous()
    weight.__dict__[_ATTR] = (key, copy, _probe(weight))
    return copy
