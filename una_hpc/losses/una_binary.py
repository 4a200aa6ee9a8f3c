"""UNA-binary (UNA eq 9): thumbs up/down regressed from the implicit reward r = beta * (logp - ref_logp).

mse: (sigmoid(r) - label)^2        bce: BCE-with-logits(r, label)
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import as_fp32, check_beta, check_binary, same_shape


def una_binary_losses(
    policy: Tensor, ref: Tensor, label: Tensor, beta: float, kind: Literal["mse", "bce"] = "mse"
) -> Tensor:
    check_beta(beta)
    same_shape(policy=policy, ref=ref, label=label)
    y = label.float()
    check_binary("label", y)
    r = beta * (as_fp32("policy", policy) - as_fp32("ref", ref))
    if kind == "mse":
        return (torch.sigmoid(r) - y) ** 2
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(r, y, reduction="none")
    raise ValueError(f"kind must be 'mse' or 'bce', got {kind!r}")


def una_binary_loss(
    policy: Tensor, ref: Tensor, label: Tensor, beta: float, kind: Literal["mse", "bce"] = "mse"
) -> Tensor:
    """Mean UNA-binary loss."""
    return una_binary_losses(policy, ref, label, beta, kind).mean()
