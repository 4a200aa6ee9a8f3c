"""Fused Triton path of `seq_logps`: the autograd.Function over the forward and backward kernels.

Forward (seq_logps_fwd.py): policy and reference logits tiles in one program, per-token lse and label logit, no
[T, V] buffer. Backward (seq_logps_bwd.py): d(logits) per vocab chunk feeding two owner-writes-only matmuls
(grad_matmul.py), no atomics, bitwise reproducible. 16-bit hidden states with an fp32 weight multiply a 16-bit copy
of the weight made once per weight version (operands.py); grad_weight is written in the weight's dtype.

Runs on CPU under TRITON_INTERPRET=1 (set before triton is imported) with small fixed blocks; fixed sm_90 blocks
on CUDA (tests/unit/test_seq_logps_compile.py compiles them for sm_90 and checks tensor-core instructions, no spills).
Tested by: .venv/bin/python -m pytest tests/unit/test_seq_logps_triton.py -q
"""

from __future__ import annotations

import torch

from .operands import operand_copy
from .seq_logps_bwd import backward as _backward
from .seq_logps_fwd import forward as _forward
from .seq_logps_torch import segment_sum
from .triton_tiles import INTERPRETER_BLOCKS, interpreting

__all__ = ["INTERPRETER_BLOCKS", "TritonSeqLogps", "interpreting"]


class TritonSeqLogps(torch.autograd.Function):
    """autograd.Function over the fused kernels; outputs (logps, ref_logps), ref_logps non-differentiable.

    Gradients flow to hidden, weight and bias; ref_bias is the reference's resolved bias (see seq_logps). hidden may
    be 16-bit with an fp32 weight (and ref_weight): the kernels then read 16-bit copies of the weights.
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
        w_op = operand_copy(weight, hidden.dtype)
        rw_op = None
        if ref_weight is not None and not same:
            rw_op = w_op if ref_weight is weight else operand_copy(ref_weight, hidden.dtype)
        with torch.no_grad():
            lse, z, ref_lse, ref_z = _forward(
                hidden,
                w_op,
                bias,
                labels,
                None if same else ref_hidden,
                rw_op,
                None if same else ref_bias,
                scale,
                softcap,
                ignore_index,
                num_splits,
            )
            if same:
                ref_lse, ref_z = lse, z
            # Ignored tokens (nan where a block was skipped) get lse = +inf: the backward's exp(z - lse) is then 0,
            # never inf * (g = 0) = nan.
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
        w_op = operand_copy(weight, hidden.dtype)  # the forward's copy: the weight has not changed since
        gh, gw, gb = _backward(hidden, weight, w_op, bias, labels, lse, g_tok, need_h, need_w, need_b, *ctx.head)
        return gh, gw, gb, *(None,) * 10
