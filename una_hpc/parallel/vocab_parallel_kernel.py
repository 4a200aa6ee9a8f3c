"""Vocabulary-parallel per-sequence log-probabilities on the fused kernel, policy and reference in one pass.

    logps, ref_logps = kernel_vocab_parallel_seq_logps(hidden, weight_shard, vocab_start, labels, seq_index,
                                                       num_seqs, group, ref_hidden=..., ref_weight_shard=...,
                                                       bias_shard=..., scale=..., softcap=...)

Each rank of `group` holds rows [vocab_start, vocab_start + V_r) of the lm_head (and of its bias) and the same
(replicated) hidden states. Forward: one kernel pass over the shard (kernels/vocab_shard.py) gives per-token lse_r and
the label logit (where this shard owns the label) for policy and reference; ONE all-reduce MAX of the stacked lse_r
and ONE all-reduce SUM of the stacked exp(lse_r - max) and label logits combine them; logp = z - lse, summed per
sequence. Backward: the shard's kernel backward fed the global lse and each token's upstream gradient; the weight and
bias shard gradients stay local, grad_hidden is summed over the group (copy_to_region). Only [T] statistics cross
the wire; no [T, V_r] tensor is built. The reference carries no gradient. Collectives live in comm.py.

The engine picks this path under tensor parallelism where seq_logps(backend="auto") picks the kernel (CUDA), or
when forced (`kernel_applies(..., backend="triton")`, TrainEngine.tp_logps_backend).

Tested by: OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/distributed/test_vocab_parallel_kernel.py -q
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..feedback import IGNORE_INDEX
from ..kernels.seq_logps import _resolve_backend
from ..kernels.seq_logps_torch import segment_sum
from .comm import all_reduce_max_, all_reduce_sum_, copy_to_region

BACKENDS = ("auto", "torch", "triton")
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _operands_fit(hidden: Tensor, weight: Tensor) -> bool:
    """One kernel dtype, or 16-bit hidden states with an fp32 (master) weight."""
    if hidden.dtype not in _KERNEL_DTYPES:
        return False
    return weight.dtype == hidden.dtype or (hidden.dtype != torch.float32 and weight.dtype == torch.float32)


def kernel_applies(hidden: Tensor, weight_shard: Tensor, backend: str = "auto") -> bool:
    """Whether the vocab-parallel path runs the fused kernel. "auto": the rule of seq_logps(backend="auto") (CUDA,
    a Triton dtype, triton installed), so TP and single-device runs agree; "triton": forced (CPU needs
    TRITON_INTERPRET=1; raises when it cannot run); "torch": never."""
    if backend not in BACKENDS:
        raise ValueError(f"vocab-parallel backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    if backend == "auto":
        fits = hidden.shape[0] > 0 and _operands_fit(hidden, weight_shard)
        return bool(fits) and _resolve_backend("auto", hidden) == "triton"
    _resolve_backend("triton", hidden)  # raises the reason the kernel cannot run here
    if not _operands_fit(hidden, weight_shard):
        raise ValueError(
            f"vocab-parallel kernel: hidden {hidden.dtype} and weight {weight_shard.dtype} are no kernel operand pair"
        )
    return True


# ---- math (no collectives) ----


def _combine_partials(lse_r: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """(max made finite, exp(lse_r - max)): tokens ignored everywhere have max = -inf; an empty shard adds 0."""
    m = torch.where(torch.isfinite(m), m, 0.0)
    return m, torch.exp(lse_r - m)


def _token_logps(m: Tensor, sum_exp: Tensor, z: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """(global lse, log-probabilities of the labels: 0 where ignored)."""
    lse = m + torch.log(sum_exp)
    return lse, torch.where(keep, z - lse, 0.0)


def _shard_stats(hidden, weight, bias, labels, vocab_start, ref, same, head) -> tuple[Tensor, Tensor]:
    """Stacked per-token (lse over the shard, owned label logit) [k, T] fp32, k = 1 or 2 (policy, reference)."""
    from ..kernels.vocab_shard import shard_token_stats  # lazy: imports triton

    k, T = (1 if ref is None else 2), hidden.shape[0]
    if weight.shape[0] == 0:  # an uneven split may leave a rank no rows: no mass, no label
        full = torch.full((k, T), float("-inf"), device=hidden.device)
        return full, torch.zeros_like(full)
    rh, rw, rb = ref if ref is not None and not same else (None, None, None)
    lse, z, ref_lse, ref_z = shard_token_stats(
        hidden, weight, labels, vocab_start, ref_hidden=rh, ref_weight=rw, bias=bias, ref_bias=rb, **head
    )
    if ref is not None and same:  # policy == reference: computed once, so r = 0 exactly
        ref_lse, ref_z = lse, z
    lses, zs = [lse], [z]
    if ref is not None:
        lses.append(ref_lse)
        zs.append(ref_z)
    return torch.stack(lses), torch.stack(zs)


class _KernelVocabParallel(torch.autograd.Function):
    """Outputs (logps, ref_logps); gradients reach hidden (this rank's share), the weight shard and the bias shard."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, seq_index, num_seqs, vocab_start, group, ref, scale, softcap, ign):
        head = dict(scale=scale, softcap=softcap, ignore_index=ign)
        same = ref is not None and ref[0] is hidden and ref[1] is weight and ref[2] is bias
        keep = labels != ign
        lse_r, z_r = _shard_stats(hidden, weight, bias, labels, vocab_start, ref, same, head)
        z_r = torch.where(keep, z_r, 0.0)  # an ignored token's label logit is undefined (a skipped block)
        m, part = _combine_partials(lse_r, all_reduce_max_(lse_r.clone(), group))
        k = lse_r.shape[0]
        sums = all_reduce_sum_(torch.cat([part, z_r]), group)
        lse, tok = _token_logps(m, sums[:k], sums[k:], keep)
        out = segment_sum(tok, seq_index, num_seqs).float()
        ctx.save_for_backward(hidden, weight, bias, labels, seq_index, lse[0])
        ctx.meta = (vocab_start, head)
        ref_logps = out[1] if k == 2 else out.new_empty(0)
        ctx.mark_non_differentiable(ref_logps)
        return out[0], ref_logps

    @staticmethod
    def backward(ctx, grad_logps, _grad_ref):
        hidden, weight, bias, labels, seq_index, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        none = (None,) * 9
        if not (need_h or need_w or need_b):
            return None, None, None, *none
        if weight.shape[0] == 0:
            gh = torch.zeros_like(hidden) if need_h else None
            gb = torch.zeros_like(bias) if need_b else None
            return gh, torch.zeros_like(weight) if need_w else None, gb, *none
        from ..kernels.vocab_shard import shard_backward

        vocab_start, head = ctx.meta
        g_tok = grad_logps.float()[seq_index]  # shard_backward zeroes ignored tokens
        gh, gw, gb = shard_backward(
            hidden, weight, labels, vocab_start, lse, g_tok, bias=bias, need_hidden=need_h, need_weight=need_w, **head
        )
        return gh if need_h else None, gw if need_w else None, gb if need_b else None, *none


def _validate(hidden, weight_shard, vocab_start, labels, seq_index, ref_hidden, ref_weight_shard, biases):
    if hidden.dim() != 2 or weight_shard.dim() != 2 or hidden.shape[1] != weight_shard.shape[1]:
        raise ValueError(
            f"hidden [T, H] and weight_shard [V_r, H] expected, got {tuple(hidden.shape)} and "
            f"{tuple(weight_shard.shape)}"
        )
    if labels.shape != hidden.shape[:1] or seq_index.shape != hidden.shape[:1]:
        raise ValueError(f"labels and seq_index must be [T={hidden.shape[0]}]")
    if isinstance(vocab_start, bool) or not isinstance(vocab_start, int) or vocab_start < 0:
        raise ValueError(f"vocab_start must be a non-negative int, got {vocab_start!r}")
    if not _operands_fit(hidden, weight_shard):
        raise ValueError(f"kernel operands expected, got hidden {hidden.dtype} and weight {weight_shard.dtype}")
    for name, x, like in (("ref_hidden", ref_hidden, hidden), ("ref_weight_shard", ref_weight_shard, weight_shard)):
        if x is not None and (x.shape != like.shape or x.dtype != like.dtype):
            raise ValueError(f"{name} must match {tuple(like.shape)} {like.dtype}, got {tuple(x.shape)} {x.dtype}")
    for name, b in biases:
        if b is not None and b.shape != weight_shard.shape[:1]:
            raise ValueError(f"{name} must be [V_r={weight_shard.shape[0]}], got {tuple(b.shape)}")


def kernel_vocab_parallel_seq_logps(
    hidden: Tensor,
    weight_shard: Tensor,
    vocab_start: int,
    labels: Tensor,
    seq_index: Tensor,
    num_seqs: int,
    group,
    *,
    ref_hidden: Tensor | None = None,
    ref_weight_shard: Tensor | None = None,
    bias_shard: Tensor | None = None,
    ref_bias_shard: Tensor | None = None,
    scale: float = 1.0,
    softcap: float | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Tensor, Tensor | None]:
    """(logps, ref_logps): [num_seqs] fp32 sums of token log-probabilities over the whole (sharded) vocabulary,
    equal on every rank of `group`. As seq_logps: give any ref_* to get ref_logps (None otherwise; the others default
    to the policy's; pass the same object as weight_shard to load each W tile once); ref_bias_shard None means the
    policy's bias; scale and softcap are shared and must be equal on every rank. Collective: every rank calls it
    with the same labels and seq_index."""
    biases = (("bias_shard", bias_shard), ("ref_bias_shard", ref_bias_shard))
    _validate(hidden, weight_shard, vocab_start, labels, seq_index, ref_hidden, ref_weight_shard, biases)
    scale, softcap = float(scale), (None if softcap is None else float(softcap))
    has_ref = ref_hidden is not None or ref_weight_shard is not None or ref_bias_shard is not None
    ref_is_policy = ref_hidden is None or ref_hidden is hidden
    if has_ref:
        ref_weight_shard = weight_shard if ref_weight_shard is None else ref_weight_shard
        if ref_bias_shard is None:
            ref_bias_shard = bias_shard
        elif bias_shard is None:  # only the reference has a bias: the kernel reads both, the policy's is zero
            bias_shard = torch.zeros_like(ref_bias_shard)
    labels, seq_index = labels.long(), seq_index.long()
    keep = labels != ignore_index
    n_keep = int(keep.sum())  # labels are replicated: every rank compacts alike (and skips alike)
    if n_keep == 0:  # no launch, no collective; zero gradients still reach every input
        params = [x for x in (hidden, weight_shard, bias_shard) if x is not None]
        zero = sum(x.sum() for x in params) * 0.0
        logps = zero.float() + torch.zeros(num_seqs, device=hidden.device)
        return logps, (torch.zeros(num_seqs, device=hidden.device) if has_ref else None)
    if n_keep < labels.numel():  # prompt and padding rows cost no kernel work; index_select scatters zeros back
        rows = keep.nonzero().squeeze(1)
        hidden, labels, seq_index = hidden.index_select(0, rows), labels[rows], seq_index[rows]
        if has_ref and not ref_is_policy:
            ref_hidden = ref_hidden.index_select(0, rows)
    h = copy_to_region(hidden, group)  # backward: this rank's grad_hidden share summed over the group
    ref = None
    if has_ref:
        ref = (h if ref_is_policy else ref_hidden.detach(), ref_weight_shard, ref_bias_shard)
    logps, ref_logps = _KernelVocabParallel.apply(
        h,
        weight_shard,
        bias_shard,
        labels.contiguous(),
        seq_index,
        num_seqs,
        vocab_start,
        group,
        ref,
        scale,
        softcap,
        ignore_index,
    )
    return logps, (ref_logps if has_ref else None)
