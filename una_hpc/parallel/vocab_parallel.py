"""Vocabulary-parallel per-sequence log-probabilities (Megatron-style), in token chunks.

    logps = vocab_parallel_seq_logps(hidden, weight_shard, vocab_start, labels, seq_index, num_seqs, group,
                                     bias_shard=None, scale=1.0, softcap=None)

Each rank of `group` holds rows [vocab_start, vocab_start + V_r) of the lm_head (and of its bias, when the head has
one) and the same (replicated) hidden states. Per chunk of tokens a rank builds only its [chunk, V_r] logits
z = softcap * tanh(scale * (h @ W_r.T + b_r) / softcap) (scale * (h @ W_r.T + b_r) without a softcap; the transform is
elementwise, so it is applied locally before any reduction): local max -> all-reduce MAX, local sum of exp ->
all-reduce SUM, the label logit from the owning shard -> all-reduce SUM; logp = label - max - log(sumexp).
Backward: grads wrt the weight and bias shards stay local, grad wrt hidden is all-reduced over the group
(copy_to_region).
Each chunk is recomputed in backward (activation checkpointing), so no more than one [chunk, V_r] logits tile is
alive at a time; the recompute repeats the chunk's two small all-reduces in the same order on every rank.

Tested by: .venv/bin/python -m pytest tests/distributed/test_vocab_parallel.py -q
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..feedback import IGNORE_INDEX
from .comm import all_reduce_max_, copy_to_region, reduce_from_region
from .logps import head_logits, segment_sums

DEFAULT_CHUNK = 1024


def _chunk_logps(
    hidden: Tensor,
    weight_shard: Tensor,
    bias_shard: Tensor | None,
    local_label: Tensor,
    owned: Tensor,
    group,
    scale: float,
    softcap: float | None,
) -> Tensor:
    """Math of one token chunk: [c] log-probabilities of the labels over the full (sharded) vocabulary."""
    acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32  # fp32 for 16-bit inputs
    logits = head_logits(hidden.to(acc) @ weight_shard.to(acc).T, bias_shard, scale, softcap)  # [c, V_r]
    if logits.shape[1] > 0:
        m = logits.detach().amax(dim=1)
    else:  # a rank may hold no rows (uneven shards)
        m = logits.new_full((logits.shape[0],), float("-inf"))
    m = all_reduce_max_(m, group)  # logp does not depend on m: detaching it is exact
    sum_exp = reduce_from_region(torch.exp(logits - m.unsqueeze(1)).sum(dim=1), group)
    picked = logits.gather(1, local_label.unsqueeze(1)).squeeze(1) if logits.shape[1] > 0 else m.new_zeros(m.shape)
    label_logit = reduce_from_region(torch.where(owned, picked, 0.0), group)
    return label_logit - m - torch.log(sum_exp)


def vocab_parallel_token_logps(
    hidden: Tensor,
    weight_shard: Tensor,
    vocab_start: int,
    labels: Tensor,
    group,
    *,
    bias_shard: Tensor | None = None,
    scale: float = 1.0,
    softcap: float | None = None,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int = DEFAULT_CHUNK,
) -> Tensor:
    """[T] token log-probabilities in fp32 (float64 for float64 inputs), 0 where the label is ignored.

    bias_shard: this rank's rows of the lm_head bias, [V_r]; scale and softcap must be equal on every rank.
    """
    if hidden.dim() != 2 or weight_shard.dim() != 2 or hidden.shape[1] != weight_shard.shape[1]:
        raise ValueError(
            f"hidden [T, H] and weight_shard [V_r, H] expected, got {tuple(hidden.shape)} and "
            f"{tuple(weight_shard.shape)}"
        )
    if bias_shard is not None and bias_shard.shape != weight_shard.shape[:1]:
        raise ValueError(f"bias_shard must be [V_r={weight_shard.shape[0]}], got {tuple(bias_shard.shape)}")
    keep = labels != ignore_index
    local = labels - vocab_start
    owned = keep & (local >= 0) & (local < weight_shard.shape[0])
    local = torch.where(owned, local, 0)
    h = copy_to_region(hidden, group)
    params = (h, weight_shard) if bias_shard is None else (h, weight_shard, bias_shard)
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in params)
    parts = []
    for t0 in range(0, hidden.shape[0], chunk_size):
        sl = slice(t0, t0 + chunk_size)
        args = (h[sl], weight_shard, bias_shard, local[sl], owned[sl], group, scale, softcap)
        if needs_grad:
            parts.append(checkpoint(_chunk_logps, *args, use_reentrant=False, preserve_rng_state=False))
        else:
            parts.append(_chunk_logps(*args))
    tok = torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
    return torch.where(keep, tok, 0.0)


def vocab_parallel_seq_logps(
    hidden: Tensor,
    weight_shard: Tensor,
    vocab_start: int,
    labels: Tensor,
    seq_index: Tensor,
    num_seqs: int,
    group,
    *,
    bias_shard: Tensor | None = None,
    scale: float = 1.0,
    softcap: float | None = None,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int = DEFAULT_CHUNK,
) -> Tensor:
    """[num_seqs] sums of token log-probabilities (fp32; float64 inputs stay float64), equal on every rank."""
    tok = vocab_parallel_token_logps(
        hidden,
        weight_shard,
        vocab_start,
        labels,
        group,
        bias_shard=bias_shard,
        scale=scale,
        softcap=softcap,
        ignore_index=ignore_index,
        chunk_size=chunk_size,
    )
    return segment_sums(tok, seq_index, num_seqs)
