"""UNA-pairwise = DPO (UNA eq 8): -log sigmoid(r_w - r_l), r = beta * (logp - ref_logp)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ._checks import as_fp32, check_beta, same_shape


def dpo_losses(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float
) -> Tensor:
    """Per-pair losses (fp32)."""
    check_beta(beta)
    same_shape(
        policy_chosen=policy_chosen, policy_rejected=policy_rejected, ref_chosen=ref_chosen, ref_rejected=ref_rejected
    )
    pc, pr = as_fp32("policy_chosen", policy_chosen), as_fp32("policy_rejected", policy_rejected)
    rc, rr = as_fp32("ref_chosen", ref_chosen), as_fp32("ref_rejected", ref_rejected)
    margin = beta * ((pc - rc) - (pr - rr))
    return -F.logsigmoid(margin)


def dpo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float
) -> Tensor:
    """Mean DPO loss over pairs."""
    return dpo_losses(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta).mean()
