"""Per-sequence log-probabilities on an unsharded lm_head, defined with plain autograd (the engine calls the fused
op, una_hpc.kernels.seq_logps, directly).

    logps, ref_logps = reference_seq_logps(hidden, weight, labels, seq_index, num_seqs, ref_hidden=..., ref_weight=...)

Logits are z = softcap * tanh(scale * (hidden @ weight.T + bias) / softcap), or scale * (hidden @ weight.T + bias)
without a softcap (Gemma-2/3 final_logit_softcapping, Cohere logit_scale, Granite 1 / logits_scaling, Phi's bias);
the reference head uses ref_bias (None: the policy's bias) with the same scale and softcap.
`reference_seq_logps` is the definition (docs/design.md, "The fused op") written with plain autograd over
token chunks; tests use it as ground truth for the sharded paths. Tested by: tests/distributed/test_vocab_parallel.py
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..feedback import IGNORE_INDEX


def head_logits(pre: Tensor, bias: Tensor | None = None, scale: float = 1.0, softcap: float | None = None) -> Tensor:
    """The output head's transform of pre-logits h @ W.T (autograd); a plain head returns `pre` itself."""
    if bias is not None:
        pre = pre + bias.to(pre.dtype)
    if softcap is not None:
        return softcap * torch.tanh(pre * (scale / softcap))
    return pre * scale if scale != 1 else pre


def token_logps(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int = 1024,
    *,
    bias: Tensor | None = None,
    scale: float = 1.0,
    softcap: float | None = None,
) -> Tensor:
    """[T] log softmax(z)[label] in fp32 (float64 stays float64), 0 where the label is ignored; z as in the header."""
    acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    out = []
    for t0 in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[t0 : t0 + chunk_size].to(acc), labels[t0 : t0 + chunk_size]
        logp = torch.log_softmax(head_logits(h @ weight.to(acc).T, bias, scale, softcap), dim=-1)
        keep = y != ignore_index
        picked = logp.gather(1, torch.where(keep, y, 0).unsqueeze(1)).squeeze(1)
        out.append(torch.where(keep, picked, 0.0))
    return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)


def segment_sums(values: Tensor, seq_index: Tensor, num_seqs: int) -> Tensor:
    """[num_seqs] sums of `values` [T] by sequence (differentiable)."""
    return values.new_zeros(num_seqs).index_add(0, seq_index, values)


def reference_seq_logps(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    seq_index: Tensor,
    num_seqs: int,
    *,
    ref_hidden: Tensor | None = None,
    ref_weight: Tensor | None = None,
    bias: Tensor | None = None,
    ref_bias: Tensor | None = None,
    scale: float = 1.0,
    softcap: float | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Tensor, Tensor | None]:
    head = dict(scale=scale, softcap=softcap)
    logps = segment_sums(token_logps(hidden, weight, labels, ignore_index, bias=bias, **head), seq_index, num_seqs)
    ref = None
    if ref_hidden is not None:
        with torch.no_grad():
            w = weight if ref_weight is None else ref_weight
            b = bias if ref_bias is None else ref_bias
            ref = segment_sums(token_logps(ref_hidden, w, labels, ignore_index, bias=b, **head), seq_index, num_seqs)
    return logps, ref
