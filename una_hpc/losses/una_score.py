"""UNA-score (UNA eq 10) and online UNA: (norm(r) - score)^2 with r = beta * (logp - ref_logp).

normalize="sigmoid" regresses sigmoid(r) onto a score in [0, 1]; "none" regresses raw r onto an unbounded score.
"""

from __future__ import annotations

from collections.abc import Sequence
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


RewardNormalize = Literal["sigmoid", "minmax", "zscore", "group", "group_std", "none"]


def group_advantages(rewards: Tensor, groups: Sequence[int] | Tensor, std: bool = False) -> Tensor:
    """GRPO-style per-prompt advantages: each reward minus the mean of its group (the samples of one prompt, same
    id in `groups`); with `std`, divided by the group's sample std (n - 1; a group of one, or of equal rewards,
    gets 0 everywhere)."""
    x = rewards.detach().float()
    ids = torch.as_tensor(groups, device=x.device)
    if ids.shape != x.shape:
        raise ValueError(f"{tuple(ids.shape)} group ids for {tuple(x.shape)} rewards")
    out = torch.zeros_like(x)
    for g in ids.unique():
        m = ids == g
        centered = x[m] - x[m].mean()
        if std:
            s = x[m].std() if int(m.sum()) > 1 else x.new_zeros(())
            centered = centered / s if s > 0 else torch.zeros_like(centered)
        out[m] = centered
    return out


def normalize_rewards(
    logits: Tensor, method: RewardNormalize = "sigmoid", groups: Sequence[int] | Tensor | None = None
) -> Tensor:
    """Online UNA: map the explicit rewards of one rollout batch to [0, 1] (UNA section 2.3 (d)); `none` keeps
    rewards that are already in [0, 1] (a reward function's) and refuses others. `group` / `group_std` need
    `groups` (each reward's prompt): the target is sigmoid(group_advantages(...)), 0.5 for a sample as good as its
    prompt's average."""
    x = logits.detach().float()
    if method in ("group", "group_std"):
        if groups is None:
            raise ValueError(f"reward normalization {method} needs the group (prompt) of every reward")
        return torch.sigmoid(group_advantages(x, groups, std=method == "group_std"))
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
    raise ValueError(f"reward normalization must be sigmoid, minmax, zscore, group, group_std or none, got {method!r}")
