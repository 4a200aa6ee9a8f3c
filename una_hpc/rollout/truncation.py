"""rollout.truncated: what happens to completions that hit max_new_tokens without EOS or a stop string.

    kept, rewards, n_truncated = handle_truncated(rollouts, rm_logits, "penalty", penalty=1.0)

Applied to the explicit reward (RM logit or reward_fn value) before any normalization, so a penalized completion
also sits lower in its prompt's group (loss.reward_normalize=group). keep: nothing changes; penalty: `penalty` is
subtracted (TRL's missing_eos_penalty), and with `clamp_unit` (loss.reward_normalize=none, whose rewards must stay
in [0, 1]) the result is clamped at 0; drop: the truncated completions leave the batch, unless every
completion is truncated (an update needs at least one example on every rank, so they are all kept).

Tested by: .venv/bin/python -m pytest tests/unit/test_rollout_features.py -q
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import Rollout

MODES = ("keep", "penalty", "drop")


def is_truncated(rollout: Rollout) -> bool:
    """Cut by the length limit rather than finished (EOS or a stop string)."""
    return rollout.finish_reason == "length"


def handle_truncated(
    rollouts: Sequence[Rollout], rewards: Tensor, mode: str, penalty: float = 0.0, clamp_unit: bool = False
) -> tuple[list[int], Tensor, int]:
    """(indices of the rollouts to train on, their rewards, how many rollouts were truncated)."""
    if mode not in MODES:
        raise ValueError(f"rollout.truncated must be one of {', '.join(MODES)}, got {mode!r}")
    if len(rollouts) != rewards.shape[0]:
        raise ValueError(f"{len(rollouts)} rollouts but {rewards.shape[0]} rewards")
    cut = torch.tensor([is_truncated(r) for r in rollouts], dtype=torch.bool, device=rewards.device)
    n = int(cut.sum())
    everything = list(range(len(rollouts)))
    if mode == "penalty" and n:
        lowered = rewards - penalty
        rewards = torch.where(cut, lowered.clamp(min=0.0) if clamp_unit else lowered, rewards)
    if mode == "drop" and 0 < n < len(rollouts):
        keep = [i for i in everything if not cut[i]]
        return keep, rewards[keep], n
    return everything, rewards, n
