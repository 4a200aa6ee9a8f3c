"""Public `seq_logps`: per-sequence sums of token log-probabilities for policy and reference, fused with lm_head.

    from una_hpc.kernels import seq_logps
    logps, ref_logps = seq_logps(hidden, lm_head.weight, labels, seq_index, num_seqs,
                                 ref_hidden=ref_hidden, ref_weight=ref_lm_head.weight)
    # Gemma-2: softcap=config.final_logit_softcapping; Cohere: scale=config.logit_scale;
    # Granite: scale=1 / config.logits_scaling; Phi: bias=lm_head.bias
    logps, _ = seq_logps(hidden, lm_head.weight, labels, seq_index, num_seqs, bias=lm_head.bias, softcap=30.0)

Logits are z = softcap * tanh(scale * (hidden @ weight.T + bias) / softcap) (z = scale * (hidden @ weight.T + bias)
without a softcap); every backend fuses the transform into its tiles, forward and backward, and skips it for a plain
head.

Validates arguments (clear ValueError) and dispatches to the chunked torch path or the fused Triton kernels; triton is
imported only when that backend is chosen. Tested by: .venv/bin/python -m pytest tests/unit/test_seq_logps*.py -q
"""

from __future__ import annotations

import importlib.util
import math
import os

import torch

from .seq_logps_torch import TorchSeqLogps

BACKENDS = ("auto", "torch", "triton")
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _mixed(hidden: torch.Tensor, weight: torch.Tensor) -> bool:
    """16-bit hidden states with an fp32 (master) weight: tensor-core operands on the triton path (a 16-bit weight
    copy per weight version), fp32 tiles on the torch path."""
    return hidden.dtype in (torch.bfloat16, torch.float16) and weight.dtype == torch.float32


def _check_tensor(name: str, x, ndim: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"seq_logps: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"seq_logps: {name} must be {ndim}-D, got shape {tuple(x.shape)}")


def _validate(hidden, weight, labels, seq_index, num_seqs, ref_hidden, ref_weight, ignore_index, backend):
    if backend not in BACKENDS:
        raise ValueError(f"seq_logps: backend must be one of {BACKENDS}, got {backend!r}")
    _check_tensor("hidden", hidden, 2)
    _check_tensor("weight", weight, 2)
    _check_tensor("labels", labels, 1)
    _check_tensor("seq_index", seq_index, 1)
    T, H = hidden.shape
    V = weight.shape[0]
    if weight.shape[1] != H:
        raise ValueError(f"seq_logps: weight [V, H] must match hidden's H={H}, got shape {tuple(weight.shape)}")
    if V == 0:
        raise ValueError("seq_logps: weight has an empty vocabulary (V = 0)")
    if not hidden.is_floating_point() or (weight.dtype != hidden.dtype and not _mixed(hidden, weight)):
        raise ValueError(
            f"seq_logps: hidden and weight must share one float dtype (or 16-bit hidden with an fp32 weight), "
            f"got {hidden.dtype}, {weight.dtype}"
        )
    for name, x in (("labels", labels), ("seq_index", seq_index)):
        if x.shape[0] != T:
            raise ValueError(f"seq_logps: {name} must have T={T} entries (one per hidden row), got {x.shape[0]}")
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"seq_logps: {name} must be an integer tensor, got {x.dtype}")
    if isinstance(num_seqs, bool) or not isinstance(num_seqs, int) or num_seqs < 0:
        raise ValueError(f"seq_logps: num_seqs must be a non-negative int, got {num_seqs!r}")
    for name, x, like in (("ref_hidden", ref_hidden, hidden), ("ref_weight", ref_weight, weight)):
        if x is None:
            continue
        _check_tensor(name, x, 2)
        if x.shape != like.shape or x.dtype != like.dtype:
            raise ValueError(
                f"seq_logps: {name} must match shape {tuple(like.shape)} and dtype {like.dtype}, "
                f"got {tuple(x.shape)} {x.dtype}"
            )
    devices = {x.device for x in (hidden, weight, labels, seq_index, ref_hidden, ref_weight) if x is not None}
    if len(devices) > 1:
        raise ValueError(f"seq_logps: all tensors must be on one device, got {sorted(map(str, devices))}")
    if T == 0:
        return
    # One host sync for both range checks: an out-of-range index would otherwise read out of bounds in a kernel.
    bad_label = ((labels != ignore_index) & ((labels < 0) | (labels >= V))).any()
    bad_seq = ((seq_index < 0) | (seq_index >= num_seqs)).any()
    bad_label, bad_seq = torch.stack([bad_label, bad_seq]).tolist()
    if bad_seq:
        raise ValueError(f"seq_logps: seq_index values must lie in [0, num_seqs={num_seqs})")
    if bad_label:
        raise ValueError(f"seq_logps: labels must lie in [0, V={V}) or equal ignore_index={ignore_index}")


def _check_number(name: str, x, allow_none: bool = False) -> None:
    if x is None and allow_none:
        return
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
        raise ValueError(
            f"seq_logps: {name} must be a finite positive float{' or None' if allow_none else ''}, got {x!r}"
        )


def _validate_head(hidden, weight, bias, ref_bias, scale, softcap):
    V = weight.shape[0]
    dtypes = {weight.dtype, hidden.dtype}  # one dtype, or both of a 16-bit hidden / fp32 weight pair
    for name, b in (("bias", bias), ("ref_bias", ref_bias)):
        if b is None:
            continue
        if not isinstance(b, torch.Tensor) or b.shape != (V,) or b.dtype not in dtypes or b.device != weight.device:
            got = f"{tuple(b.shape)} {b.dtype} on {b.device}" if isinstance(b, torch.Tensor) else type(b).__name__
            also = f" (or hidden's {hidden.dtype})" if hidden.dtype != weight.dtype else ""
            raise ValueError(
                f"seq_logps: {name} must be a [V={V}] tensor of weight's dtype {weight.dtype}{also} on "
                f"{weight.device}, got {got}"
            )
    _check_number("scale", scale)
    _check_number("softcap", softcap, allow_none=True)


def _resolve_backend(backend: str, hidden: torch.Tensor) -> str:
    if backend == "auto":
        usable = hidden.is_cuda and hidden.dtype in _TRITON_DTYPES and importlib.util.find_spec("triton")
        return "triton" if usable and hidden.shape[0] > 0 else "torch"
    if backend == "triton":
        if hidden.dtype not in _TRITON_DTYPES:
            raise ValueError(f"seq_logps: backend='triton' supports {_TRITON_DTYPES}, got {hidden.dtype}")
        if not hidden.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise ValueError(
                "seq_logps: backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported"
            )
        if importlib.util.find_spec("triton") is None:
            raise ValueError("seq_logps: backend='triton' needs the triton package (pip install triton)")
        if hidden.shape[0] == 0:  # nothing to launch; the torch path returns zeros with a graph
            return "torch"
    return backend


def seq_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    seq_index: torch.Tensor,
    num_seqs: int,
    *,
    ref_hidden: torch.Tensor | None = None,
    ref_weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    ref_bias: torch.Tensor | None = None,
    scale: float = 1.0,
    softcap: float | None = None,
    ignore_index: int = -100,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sequence sums of log softmax(z)[labels] (z: the head's logits), for the policy and optionally the reference.

    hidden [T, H] packed token states (row t predicts labels[t], already shifted); weight [V, H] (lm_head);
    labels [T] ints, `ignore_index` for masked tokens; seq_index [T] ints in [0, num_seqs).
    bias [V] (weight's dtype and device) or None; scale > 0; softcap > 0 or None (no capping): logits are
    z = softcap * tanh(scale * (hidden @ weight.T + bias) / softcap), or scale * (hidden @ weight.T + bias).
    hidden may be bf16 / fp16 with an fp32 weight (master weights under autocast; see operands.operand_dtype): the
    triton path then multiplies hidden by a 16-bit copy of the weight made once per weight version (tensor cores,
    fp32 accumulation), the torch path in fp32; grad_weight comes back in the weight's dtype.
    ref_hidden / ref_weight / ref_bias: the reference model's head; give any (the others default to the policy's) to
    get ref_logps, computed in the same pass under no grad, with the same scale and softcap. Pass the *same object* as
    `weight` for the one-W-load path. Gradients flow to hidden, weight and bias.
    Returns (logps, ref_logps): [num_seqs] float32 (float64 for float64 inputs); ref_logps is None without a
    reference and never carries a gradient. Sequences without unmasked tokens get 0 and zero gradient.
    backend: "torch" (chunked), "triton" (fused; CPU needs TRITON_INTERPRET=1), "auto" (triton on CUDA, else torch).
    """
    _validate(hidden, weight, labels, seq_index, num_seqs, ref_hidden, ref_weight, ignore_index, backend)
    _validate_head(hidden, weight, bias, ref_bias, scale, softcap)
    scale, softcap = float(scale), (None if softcap is None else float(softcap))
    has_ref = ref_hidden is not None or ref_weight is not None or ref_bias is not None
    if has_ref:
        ref_hidden = hidden if ref_hidden is None else ref_hidden
        ref_weight = weight if ref_weight is None else ref_weight
        if ref_bias is None:
            ref_bias = bias
        elif bias is None:  # only the reference head has a bias: the policy's is zero (and gets no gradient)
            bias = torch.zeros_like(ref_bias)
    labels = labels.long()
    seq_index = seq_index.long()
    # Only labelled rows reach the head: prompt and padding rows (a third of the rows of a packed DPO batch of chat
    # pairs, benchmarks/offline_vs_trl.py) would cost their share of the [T, V] matmuls for nothing. index_select's
    # backward scatters the gradient back, exact zeros on the dropped rows.
    keep = labels != ignore_index
    n_keep = int(keep.sum())
    if 0 < n_keep < labels.numel():
        rows = keep.nonzero().squeeze(1)
        ref_is_policy = ref_hidden is hidden
        hidden, labels, seq_index = hidden.index_select(0, rows), labels[rows], seq_index[rows]
        if has_ref:
            ref_hidden = hidden if ref_is_policy else ref_hidden.index_select(0, rows)
    if _resolve_backend(backend, hidden) == "triton":
        from .seq_logps_triton import TritonSeqLogps  # lazy: importing triton is slow and optional

        fn = TritonSeqLogps
    else:
        fn = TorchSeqLogps
    logps, ref_logps = fn.apply(
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
    )
    return logps, (ref_logps if has_ref else None)
