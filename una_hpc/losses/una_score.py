"""UNA-score (UNA eq 10) and online UNA: (norm(r) - score)^2 with r = beta * (logp - ref_logp).

normalize="sigmoid" regresses sigmoid(r) onto a score in [0, 1]; "none" regresses raw r onto an unbounded score.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ._checks import as_fp32, check_beta, check_unit_interval, same_shape


def una_score_losses(
    policy: Tensor, ref: Tensor, score: Tensor, beta: float, normalize: Literal["sigmoid", "none"] = "sigmoid"
) -> Tensor:
    check_beta(beta)
    same_shape(policy=policy, ref=ref, score=score)
    s = as_fp32("score", score)
    r = beta * (as_fp32("policy", policy) - as_fp32("ref", ref))
    if normalize == "sigmoid":
        check_unit_interval("score", s)
        return (torch.sigmoid(r) - s) ** 2
    if normalize == "none":
        return (r - s) ** 2
    raise ValueError(f"normalize must be 'sigmoid' or 'none', got {normalize!r}")


def una_score_loss(
    policy: Tensor, ref: Tensor, score: Tensor, beta: float, normalize: Literal["sigmoid", "none"] = "sigmoid"
) -> Tensor:
    """Mean UNA-score loss; score in [0, 1] when normalize='sigmoid'."""
    return una_score_losses(policy, ref, score, beta, normalize).mean()


def normalize_rewards(logits: Tensor, method: Literal["sigmoid", "minmax", "zscore", "none"] = "sigmoid") -> Tensor:
    """Online UNA: map the explicit rewards of one rollout batch to [0, 1] (UNA section 2.3 (d)); `none` keeps
    rewards that are already in [0, 1] (a reward function's) and refuses others."""
    x = logits.detach().float()
    if method == "none":
        if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
            raise ValueError(
                f"loss.reward_normalize=none needs rewards in [0, 1], got values in "
                f"[{x.min().item():.4g}, {x.max().item():.4g}]: use sigmoid, minmax or zscore"
            )
        return x
    if method == "sigmoid":
        return torch.sigmoid(x)
    if method == "minmax":
        span = x.max() - x.min()
        return (x - x.min()) / span if span > 0 else torch.full_like(x, 0.5)
    if method == "zscore":  # z-score, then squashed to [0, 1]
        std = x.std(unbiased=False) if x.numel() > 1 else x.new_zeros(())
        return torch.sigmoid((x - x.mean()) / std) if std > 0 else torch.full_like(x, 0.5)
    raise ValueError(f"reward normalization must be sigmoid, minmax, zscore or none, got {method!r}")
