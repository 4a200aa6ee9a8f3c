"""KTO baseline, TRL's convention: z is the detached batch KL estimate from mismatched pairs, clamped >= 0.

desirable:   lambda_D * (1 - sigmoid(r - beta*z))
undesirable: lambda_U * (1 - sigmoid(beta*z - r))
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import as_fp32, check_beta, check_binary, same_shape


def kto_kl_estimate(policy_mismatched: Tensor, ref_mismatched: Tensor) -> Tensor:
    """z = mean log-ratio on mismatched (prompt, completion) pairs, detached and clamped at 0 (TRL)."""
    if policy_mismatched.numel() == 0:
        return torch.zeros((), device=policy_mismatched.device)
    return (policy_mismatched.float() - ref_mismatched.float()).mean().detach().clamp(min=0)


def kto_losses(
    policy: Tensor,
    ref: Tensor,
    label: Tensor,
    kl: Tensor | float,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> Tensor:
    check_beta(beta)
    same_shape(policy=policy, ref=ref, label=label)
    p, r0 = as_fp32("policy", policy), as_fp32("ref", ref)
    y = label.float()
    check_binary("label", y)
    z = torch.as_tensor(kl, dtype=torch.float32, device=p.device).detach().clamp(min=0)
    r = beta * (p - r0)
    desirable = desirable_weight * (1 - torch.sigmoid(r - beta * z))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * z - r))
    return torch.where(y > 0.5, desirable, undesirable)


def kto_loss(
    policy: Tensor,
    ref: Tensor,
    label: Tensor,
    kl: Tensor | float,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> Tensor:
    """Mean KTO loss; `kl` is the detached scalar z."""
    return kto_losses(policy, ref, label, kl, beta, desirable_weight, undesirable_weight).mean()
