"""Chunked torch fallback for `seq_logps`: never materializes a [T, V] tensor.

Logits are z = softcap * tanh(scale * (h @ W.T + b) / softcap), or z = scale * (h @ W.T + b) without a softcap: the
output heads of Gemma-2/3 (final_logit_softcapping), Cohere (logit_scale), Granite (1 / logits_scaling) and Phi (lm_head
bias). The transform is applied in place to each logits tile and skipped entirely for a plain head (no bias, scale 1,
no softcap), which then runs exactly the code of a bare matmul head.

Loop order is vocab tile outer, token tile inner, so each W (and bias) tile is cast to the accumulation dtype once and
shared by policy and reference (the LoRA-adapter-off fast path is simply `ref_weight is weight`). Forward keeps
per-token log-sum-exp (combined over vocab tiles) and label logit; backward recomputes the logits tiles from the saved
lse and chains through the transform: dz/dpre = scale * (1 - tanh^2) with a softcap, scale without.

Tested by: .venv/bin/python -m pytest tests/unit/test_seq_logps_torch.py -q
"""

from __future__ import annotations

import torch

# A logits tile holds at most this many elements (8 MiB in fp32); the elementwise temporaries scale with it.
_LOGITS_TILE_ELEMS = 1 << 21
# An upcast W tile holds at most this many elements (16 MiB in fp32): bounds the copy for bf16 weights.
_WEIGHT_TILE_ELEMS = 1 << 22


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 accumulation for 16-bit and fp32 inputs; float64 stays float64 (gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tile_sizes(T: int, V: int, H: int) -> tuple[int, int]:
    """(token_tile, vocab_tile) bounding both the logits tile and the upcast W tile."""
    bv = min(V, max(256, _WEIGHT_TILE_ELEMS // max(H, 1)))
    bt = min(max(T, 1), max(16, _LOGITS_TILE_ELEMS // bv))
    return bt, bv


def segment_sum(values: torch.Tensor, seq_index: torch.Tensor, num_seqs: int) -> torch.Tensor:
    """Per-sequence sums of `values` [K, T] -> [K, num_seqs], deterministic on every device.

    index_add_ uses atomics on CUDA, so two equal inputs could sum to different bits; a stable sort plus a float64
    prefix sum is order-fixed, which keeps r = 0 exact when policy == reference. Empty sequences get exactly 0.
    """
    order = torch.argsort(seq_index, stable=True)
    sorted_ids = seq_index[order]
    cs = torch.cumsum(values[:, order].to(torch.float64), dim=1)
    cs = torch.nn.functional.pad(cs, (1, 0))
    bounds = torch.searchsorted(sorted_ids, torch.arange(num_seqs + 1, device=seq_index.device))
    return cs[:, bounds[1:]] - cs[:, bounds[:-1]]


def _pick(logits: torch.Tensor, labels: torch.Tensor, v0: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(column of each row's label inside this vocab tile, whether the label falls in the tile)."""
    col = labels - v0
    inside = (col >= 0) & (col < logits.shape[1])
    return col.clamp(0, logits.shape[1] - 1).unsqueeze(1), inside


def _tile(x: torch.Tensor | None, v0: int, bv: int, acc: torch.dtype) -> torch.Tensor | None:
    return None if x is None else x[v0 : v0 + bv].to(acc)


def head_(pre: torch.Tensor, bias: torch.Tensor | None, scale: float, softcap: float | None) -> torch.Tensor:
    """In place on a pre-transform logits tile: z = softcap * tanh(scale * (pre + b) / softcap) or scale * (pre + b)."""
    if bias is not None:
        pre.add_(bias)
    if softcap is not None:
        return pre.mul_(scale / softcap).tanh_().mul_(softcap)
    return pre.mul_(scale) if scale != 1 else pre


def forward_stats(hidden, weight, labels, ref_hidden, ref_weight, *, bias=None, ref_bias=None, scale=1.0, softcap=None):
    """Per-token (lse, label_logit) for the policy and, when given, the reference, in one pass over W.

    ref_bias is the reference's own bias (None: no bias). Returns (lse, label_logit, ref_lse, ref_label_logit); the
    ref entries are None without a reference.
    """
    T, H = hidden.shape
    V = weight.shape[0]
    acc = acc_dtype(hidden.dtype)
    bt, bv = tile_sizes(T, V, H)
    has_ref = ref_hidden is not None
    # Policy == reference (same objects): one computation, bit-identical results.
    same = has_ref and ref_hidden is hidden and ref_weight is weight and ref_bias is bias
    n_models = 2 if has_ref and not same else 1
    lse = torch.full((n_models, T), float("-inf"), dtype=acc, device=hidden.device)
    z = torch.zeros((n_models, T), dtype=acc, device=hidden.device)
    for v0 in range(0, V, bv):
        w, b = weight[v0 : v0 + bv].to(acc), _tile(bias, v0, bv, acc)
        models = [(hidden, w, b)]
        if n_models == 2:
            rw = w if ref_weight is weight else ref_weight[v0 : v0 + bv].to(acc)
            rb = b if ref_bias is bias else _tile(ref_bias, v0, bv, acc)
            models.append((ref_hidden, rw, rb))
        for t0 in range(0, T, bt):
            lab = labels[t0 : t0 + bt]
            for k, (h_full, w_tile, b_tile) in enumerate(models):
                logits = head_(h_full[t0 : t0 + bt].to(acc) @ w_tile.T, b_tile, scale, softcap)
                col, inside = _pick(logits, lab, v0)
                z[k, t0 : t0 + bt] += torch.where(inside, logits.gather(1, col).squeeze(1), 0.0)
                # lse = max - log_softmax[argmax]: fused log_softmax is ~25 % faster on CPU than the composite
                # logsumexp, and log_softmax at the max lies in [-log V, 0], so no precision is lost.
                # Vocab tiles combine with logaddexp (online softmax).
                m, j = logits.max(dim=1, keepdim=True)
                tile_lse = (m - torch.log_softmax(logits, dim=1).gather(1, j)).squeeze(1)
                lse[k, t0 : t0 + bt] = tile_lse if v0 == 0 else torch.logaddexp(lse[k, t0 : t0 + bt], tile_lse)
    if has_ref:
        return lse[0], z[0], lse[-1], z[-1]
    return lse[0], z[0], None, None


def backward_grads(
    hidden,
    weight,
    labels,
    lse,
    g_tok,
    need_hidden: bool,
    need_weight: bool,
    *,
    bias=None,
    scale=1.0,
    softcap=None,
    need_bias: bool = False,
):
    """grad_hidden, grad_weight, grad_bias for d(sum_t g_t * logp_t); g_tok is 0 for ignored tokens.

    dlogp_t/dz_t = onehot(y_t) - softmax(z_t), times dz/dpre for the pre-transform logits; logits tiles are
    recomputed, gradients accumulate in fp32 and are cast to the input dtype at the end (grad_weight and grad_bias per
    vocab tile, as each tile's sum is complete after its token loop). grad_bias is None unless need_bias.
    """
    T, H = hidden.shape
    V = weight.shape[0]
    acc = acc_dtype(hidden.dtype)
    bt, bv = tile_sizes(T, V, H)
    if scale != 1:  # dz/dpre = scale (times 1 - tanh^2 with a softcap): folded into g once
        g_tok = g_tok * scale
    gh = torch.zeros((T, H), dtype=acc, device=hidden.device) if need_hidden else None
    gw = torch.empty_like(weight) if need_weight else None
    gb = torch.empty_like(bias) if need_bias else None
    for v0 in range(0, V, bv):
        w, b = weight[v0 : v0 + bv].to(acc), _tile(bias, v0, bv, acc)
        gw_tile = torch.zeros_like(w) if need_weight else None
        gb_tile = torch.zeros(w.shape[0], dtype=acc, device=w.device) if need_bias else None
        for t0 in range(0, T, bt):
            g = g_tok[t0 : t0 + bt]
            h = hidden[t0 : t0 + bt].to(acc)
            logits = h @ w.T
            dtanh = None
            if softcap is None:
                head_(logits, b, scale, None)
            else:  # keep tanh for its derivative, then finish z = softcap * tanh in place
                u = head_(logits, b, scale / softcap, None).tanh_()
                dtanh = torch.mul(u, u).neg_().add_(1.0)
                u.mul_(softcap)
            # In place on the logits tile: p = exp(z - lse), then dz = -g * p (+ g at the label below).
            dz = logits.sub_(lse[t0 : t0 + bt].unsqueeze(1)).exp_().mul_(-g.unsqueeze(1))
            col, inside = _pick(dz, labels[t0 : t0 + bt], v0)
            dz.scatter_add_(1, col, torch.where(inside, g, 0.0).unsqueeze(1))
            if dtanh is not None:
                dz.mul_(dtanh)
            if need_hidden:
                gh[t0 : t0 + bt].addmm_(dz, w)
            if need_weight:
                gw_tile.addmm_(dz.T, h)
            if need_bias:
                gb_tile += dz.sum(dim=0)
        if need_weight:
            gw[v0 : v0 + bv] = gw_tile
        if need_bias:
            gb[v0 : v0 + bv] = gb_tile
    return (gh.to(hidden.dtype) if need_hidden else None), gw, gb


class TorchSeqLogps(torch.autograd.Function):
    """autograd.Function over the chunked torch path; outputs (logps, ref_logps) with ref_logps non-differentiable.

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
    ):
        mask = labels != ignore_index
        with torch.no_grad():
            lse, z, ref_lse, ref_z = forward_stats(
                hidden,
                weight,
                labels,
                ref_hidden,
                ref_weight,
                bias=bias,
                ref_bias=ref_bias,
                scale=scale,
                softcap=softcap,
            )
            # Ignored tokens get lse = +inf: the backward's exp(z - lse) is then 0, never inf * (g = 0) = nan.
            lse = torch.where(mask, lse, float("inf"))
            tok = [torch.where(mask, z - lse, 0.0)]
            if ref_hidden is not None:
                tok.append(torch.where(mask, ref_z - ref_lse, 0.0))
            out_dtype = acc_dtype(hidden.dtype)
            sums = segment_sum(torch.stack(tok), seq_index, num_seqs).to(out_dtype)
        ctx.save_for_backward(hidden, weight, bias, labels, seq_index, lse, mask)
        ctx.head = (scale, softcap)
        logps = sums[0]
        ref_logps = sums[1] if ref_hidden is not None else sums.new_empty(0)
        ctx.mark_non_differentiable(ref_logps)
        return logps, ref_logps

    @staticmethod
    def backward(ctx, grad_logps, _grad_ref):
        hidden, weight, bias, labels, seq_index, lse, mask = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        if not (need_h or need_w or need_b):
            return (None,) * 12
        acc = acc_dtype(hidden.dtype)
        g_tok = torch.where(mask, grad_logps.to(acc)[seq_index], 0.0)
        scale, softcap = ctx.head
        gh, gw, gb = backward_grads(
            hidden,
            weight,
            labels,
            lse,
            g_tok,
            need_h,
            need_w,
            bias=bias,
            scale=scale,
            softcap=softcap,
            need_bias=need_b,
        )
        return gh, gw, gb, *(None,) * 9
