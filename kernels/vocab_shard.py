"""The fused Triton kernels on one vocabulary shard (tensor parallelism): rows [vocab_start, vocab_start + V_r).

The building blocks a vocab-parallel caller combines with one all-reduce pair per pass (max, then sum of
exp(lse_r - max), and a sum of label logits), policy and reference in one kernel pass, no [T, V_r] tensor:

    lse_r, z_r, ref_lse_r, ref_z_r = shard_token_stats(hidden, w_shard, labels, vocab_start, ref_hidden=...)
    lse = all_reduce_logsumexp(lse_r); z = all_reduce_sum(z_r)        # per token; logp = z - lse
    gh_r, gw_shard, gb_shard = shard_backward(hidden, w_shard, labels, vocab_start, lse, g_tok)
    gh = all_reduce_sum(gh_r)                                          # hidden is replicated over the shards

The backward is the single-device one with the global lse: dz = g * (onehot - exp(z - lse)) on the shard's columns.

Tested by: .venv/bin/python -m pytest tests/unit/test_seq_logps_backward.py -q -k shard
"""

from __future__ import annotations

import torch

from .operands import operand_copy
from .seq_logps_bwd import backward
from .seq_logps_fwd import forward


def local_labels(labels: torch.Tensor, vocab_start: int, rows: int, ignore_index: int) -> torch.Tensor:
    """Labels relative to the shard; a label another shard owns becomes negative (no column, padded ones included,
    matches it) and differs from ignore_index (the token stays live: its softmax still spans this shard)."""
    local = labels - vocab_start
    inside = (local >= 0) & (local < rows)
    elsewhere = -1 if ignore_index != -1 else -2
    return torch.where(labels == ignore_index, ignore_index, torch.where(inside, local, elsewhere)).contiguous()


@torch.no_grad()
def shard_token_stats(
    hidden,
    weight,
    labels,
    vocab_start,
    *,
    ref_hidden=None,
    ref_weight=None,
    bias=None,
    ref_bias=None,
    scale=1.0,
    softcap=None,
    ignore_index=-100,
):
    """Per-token (lse over the shard, label logit if the shard owns the label else 0) for the policy and, when
    ref_hidden / ref_weight are given, the reference (None otherwise); fp32 [T] each. Ignored tokens: lse = -inf."""
    lab = local_labels(labels, vocab_start, weight.shape[0], ignore_index)
    w_op = operand_copy(weight, hidden.dtype)
    has_ref = ref_hidden is not None or ref_weight is not None
    rh = (hidden if ref_hidden is None else ref_hidden) if has_ref else None
    rw = None
    if has_ref:
        rw = w_op if ref_weight is None or ref_weight is weight else operand_copy(ref_weight, hidden.dtype)
    rb = (bias if ref_bias is None else ref_bias) if has_ref else None
    lse, z, ref_lse, ref_z = forward(hidden, w_op, bias, lab, rh, rw, rb, scale, softcap, ignore_index, None)
    keep = lab != ignore_index
    lse = torch.where(keep, lse, float("-inf"))
    if has_ref:
        ref_lse = torch.where(keep, ref_lse, float("-inf"))
    return lse, z, ref_lse, ref_z


def shard_backward(
    hidden,
    weight,
    labels,
    vocab_start,
    lse,
    g_tok,
    *,
    bias=None,
    scale=1.0,
    softcap=None,
    ignore_index=-100,
    need_hidden=True,
    need_weight=True,
):
    """(this shard's share of grad_hidden, grad of the weight shard, grad of the bias shard or None) for
    d(sum_t g_t logp_t), given the global per-token lse (ignored tokens: g = 0). grad_hidden needs a sum over shards."""
    lab = local_labels(labels, vocab_start, weight.shape[0], ignore_index)
    keep = lab != ignore_index
    lse = torch.where(keep, lse.float(), float("inf")).contiguous()
    g = torch.where(keep, g_tok.float(), 0.0).contiguous()
    w_op = operand_copy(weight, hidden.dtype)
    return backward(hidden, weight, w_op, bias, lab, lse, g, need_hidden, need_weight, bias is not None, scale, softcap)
