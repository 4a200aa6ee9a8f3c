"""The UNA loss family (docs/design.md, "The loss contract") and the registry of loss heads.

SeqTargets and the feedback kinds live in una_hpc.feedback (data produces them without importing this package);
they are re-exported here for convenience.
"""

from ..feedback import BINARY, KL, PAIR_CHOSEN, PAIR_REJECTED, SCORE, SeqTargets
from .dpo import dpo_loss, dpo_losses
from .heads import LOSSES, HeadOutput, LossHead, get_head
from .kto import kto_kl_estimate, kto_loss, kto_losses
from .ppo import PPOLoss, PPOTargets, gae, kl_penalized_rewards, kl_penalty, ppo_policy_loss, ppo_value_loss, whiten
from .una_binary import una_binary_loss, una_binary_losses
from .una_score import group_advantages, normalize_rewards, una_score_loss, una_score_losses

__all__ = [
    "dpo_loss",
    "dpo_losses",
    "kto_loss",
    "kto_losses",
    "kto_kl_estimate",
    "una_binary_loss",
    "una_binary_losses",
    "una_score_loss",
    "una_score_losses",
    "normalize_rewards",
    "group_advantages",
    "LOSSES",
    "LossHead",
    "HeadOutput",
    "get_head",
    "SeqTargets",
    "PPOLoss",
    "PPOTargets",
    "gae",
    "kl_penalized_rewards",
    "kl_penalty",
    "ppo_policy_loss",
    "ppo_value_loss",
    "whiten",
    "PAIR_CHOSEN",
    "PAIR_REJECTED",
    "BINARY",
    "SCORE",
    "KL",
]
