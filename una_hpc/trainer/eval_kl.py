"""KL(policy || reference) of sampled completions through the fused `seq_logps` op: no [tokens x vocab] logits.

    logps, ref_logps = policy_ref_logps(policy, reference, prompt_ids, completion_ids, pad_id=tok.pad_token_id)
    kl = kl_of_samples(policy, reference, prompt_ids, completion_ids, pad_id=tok.pad_token_id)  # {"mean", ...}

Log-probs: the decoder's final hidden states of right-padded prompt + completion rows (the hidden state at position
t predicts token t + 1, as in una_hpc.rollout.consistency.rollout_logps), fed with the output head
(una_hpc.models.output_head: weight, bias, scale, softcap) to `una_hpc.kernels.seq_logps`, so memory stays
O(tokens x hidden) at any vocabulary size. Policy and reference share one kernel pass (LoRA: the very same lm_head
tensor, each weight tile loaded once for both) unless their heads differ in scale or softcap, or only the policy
has a bias; then each gets its own pass.

Estimator (`kl_of_samples`): given one completion per prompt sampled from the policy at temperature 1, the mean
over samples of sum_t [log pi(y_t | ..) - log ref(y_t | ..)] over the completion tokens (EOS included). Unbiased
for the KL of the length-capped sequence distributions; reported with its standard error.

`reference`: a module, or a zero-argument callable returning a context manager that yields the reference module
— `PolicyPair.reference`, which with LoRA yields the policy itself with its adapter disabled.

Tested by: .venv/bin/python -m pytest tests/unit/test_evaluate.py -q
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn

from ..feedback import IGNORE_INDEX
from ..kernels import seq_logps
from ..models.output_head import OutputHead, output_head
from ..models.policy import base_causal_lm

Reference = nn.Module | Callable[[], AbstractContextManager[nn.Module]]


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put modules in eval mode and back in the mode each had (a training run's policy must resume as it was)."""
    flags = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, flag in zip(models, flags):
            m.train(flag)


def reference_scope(reference: Reference) -> AbstractContextManager[nn.Module]:
    if isinstance(reference, nn.Module):  # checked first: a module is callable too
        return contextlib.nullcontext(reference)
    return reference()


def _rows(
    prompt_ids: Sequence[list[int]], completion_ids: Sequence[list[int]], pad_id: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded input_ids, attention_mask and shifted labels (label at t = token t + 1 of the completion)."""
    width = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for b, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        ids[b, : len(p) + len(c)] = torch.tensor(list(p) + list(c), dtype=torch.long)
        mask[b, : len(p) + len(c)] = 1
        if c:
            labels[b, len(p) - 1 : len(p) - 1 + len(c)] = torch.tensor(list(c), dtype=torch.long)
    return ids, mask, labels


def _hidden(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """[B * W, H] final-norm hidden states (what the lm_head would see), without computing logits."""
    out = base_causal_lm(model).get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False)
    return out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])


def _one_pass(policy: OutputHead, ref: OutputHead) -> bool:
    """Whether the kernel's reference operands can express `ref`: it shares scale and softcap with the policy, and
    a reference without a bias would inherit the policy's."""
    return policy.scale == ref.scale and policy.softcap == ref.softcap and (ref.bias is not None or policy.bias is None)


@torch.no_grad()
def policy_ref_logps(
    policy: nn.Module,
    reference: Reference,
    prompt_ids: Sequence[list[int]],
    completion_ids: Sequence[list[int]],
    *,
    pad_id: int,
    batch_size: int = 16,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """[N] float64 sums of log p(completion | prompt) under the policy and under the reference (kernel path)."""
    head = output_head(policy)
    device = head.weight.device
    out, ref_out = [], []
    for start in range(0, len(prompt_ids), batch_size):
        p, c = prompt_ids[start : start + batch_size], completion_ids[start : start + batch_size]
        ids, mask, labels = (x.to(device) for x in _rows(p, c, pad_id))
        seq_index = torch.arange(len(p), device=device).repeat_interleave(ids.shape[1])
        labels = labels.reshape(-1)
        with eval_mode(policy):
            hidden = _hidden(policy, ids, mask)
        with reference_scope(reference) as ref, eval_mode(ref):
            ref_hidden, ref_head = _hidden(ref, ids, mask).to(hidden.dtype), output_head(ref)
        ref_weight = ref_head.weight.to(hidden.dtype)  # the same object when the dtype matches: one W load
        ref_bias = None if ref_head.bias is None else ref_head.bias.to(hidden.dtype)
        if _one_pass(head, ref_head):
            logps, ref_logps = seq_logps(
                hidden,
                head.weight,
                labels,
                seq_index,
                len(p),
                ref_hidden=ref_hidden,
                ref_weight=ref_weight,
                ref_bias=ref_bias,
                backend=backend,
                **head.transform(),
            )
        else:  # a reference head with another scale or softcap, or no bias: one pass with each head's transform
            logps, _ = seq_logps(hidden, head.weight, labels, seq_index, len(p), backend=backend, **head.transform())
            ref_logps, _ = seq_logps(
                ref_hidden, ref_weight, labels, seq_index, len(p), backend=backend, **ref_head.transform()
            )
        out.append(logps.double().cpu())
        ref_out.append(ref_logps.double().cpu())
    empty = torch.zeros(0, dtype=torch.float64)
    return (torch.cat(out), torch.cat(ref_out)) if out else (empty, empty.clone())


def kl_of_samples(
    policy: nn.Module,
    reference: Reference,
    prompt_ids: Sequence[list[int]],
    completion_ids: Sequence[list[int]],
    *,
    pad_id: int,
    batch_size: int = 16,
) -> dict[str, float]:
    """Monte-Carlo KL(policy || reference) from policy samples at temperature 1 (see the module docstring)."""
    logps, ref_logps = policy_ref_logps(
        policy, reference, prompt_ids, completion_ids, pad_id=pad_id, batch_size=batch_size
    )
    ratio = logps - ref_logps
    n = ratio.numel()
    if n == 0:
        raise ValueError("no samples to estimate the KL from")
    std = float(ratio.std()) if n > 1 else 0.0
    return {
        "mean": float(ratio.mean()),
        "stderr": std / math.sqrt(n),
        "samples": n,
        "temperature": 1.0,
        "method": "mean over policy samples of summed token log-ratios (fused seq_logps)",
    }
