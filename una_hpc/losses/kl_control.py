"""PPO's KL coefficient beta over training: fixed, or adapted toward a target KL (Ziegler et al. 2019).

    ctl = KLController.from_config(cfg.ppo)        # ppo.kl_target > 0: adaptive; else fixed at ppo.kl_coef
    targets = ppo.targets(..., kl_coef=ctl.value)  # every rollout batch
    ctl.update(batch_kl, n_rollouts)               # afterwards, with the batch's mean KL (sequence_kl's unit)

The adaptive rule is TRL's AdaptiveKLController: error = clip(KL / target - 1, -0.2, 0.2), then
beta *= 1 + error * n / horizon, n = rollouts in the batch. The KL is measured in the unit ppo.kl_coef_unit gives
beta (token: nats per response, summed over its tokens; sequence: nats per token). A resumed run restores beta from
its checkpoint (the PPO loop keeps it in the run's extra state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import PPOConfig

ERROR_CLIP = 0.2
"""Largest relative step toward the target per `horizon` rollouts (TRL, Ziegler et al.)."""


@dataclass
class KLController:
    value: float
    """The current beta."""
    target: float = 0.0
    """Target KL; 0 = fixed beta (update does nothing)."""
    horizon: int = PPOConfig.kl_horizon

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value >= 0):
            raise ValueError(f"kl_coef must be finite and >= 0, got {self.value}")
        if not (math.isfinite(self.target) and self.target >= 0) or self.horizon < 1:
            raise ValueError(f"kl_target must be >= 0 and kl_horizon >= 1, got {self.target} and {self.horizon}")

    @classmethod
    def from_config(cls, cfg: PPOConfig) -> KLController:
        return cls(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)

    @property
    def adaptive(self) -> bool:
        return self.target > 0

    def update(self, current_kl: float, n: int) -> float:
        """Move beta after a batch of `n` rollouts whose mean KL was `current_kl`; returns the new beta. A
        non-finite KL leaves beta as it is (the step that produced it is skipped anyway)."""
        if self.adaptive and math.isfinite(current_kl):
            error = min(max(current_kl / self.target - 1.0, -ERROR_CLIP), ERROR_CLIP)
            self.value *= 1.0 + error * n / self.horizon
        return self.value
