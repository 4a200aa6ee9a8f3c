"""Loss heads: the registry the trainer looks loss names up in (no if/elif over loss names anywhere).

A head turns per-sequence logps and SeqTargets into per-feedback-type loss *sums* plus per-example metrics. The
trainer divides each sum by that type's example count over the whole optimizer step (the global normalizer), so
any micro-batch split gives the same loss and gradients (KTO excepted: as in TRL, its KL estimate z comes from the
micro-batch's mismatched pairs), and weights the types (mixed head) from the config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..config import LossConfig
from ..feedback import BINARY, KL, PAIR_CHOSEN, SCORE, SeqTargets
from .dpo import dpo_losses
from .kto import kto_kl_estimate, kto_losses
from .una_binary import una_binary_losses
from .una_score import una_score_losses


@dataclass
class HeadOutput:
    loss_sums: dict[str, Tensor] = field(default_factory=dict)
    """Feedback type -> sum of per-example losses (differentiable)."""
    counts: dict[str, int] = field(default_factory=dict)
    """Feedback type -> examples in this micro-batch."""
    metrics: dict[str, Tensor] = field(default_factory=dict)
    """Per-example detached values: implicit reward per sequence, pair accuracy and margin, normalized reward."""

    def reduce(self, global_counts: dict[str, int], type_weights: dict[str, float]) -> Tensor:
        """sum_t w_t * loss_sum_t / N_t, with N_t counted over the whole optimizer step."""
        total = None
        for t, s in self.loss_sums.items():
            term = type_weights.get(t, 1.0) * s / max(global_counts.get(t, 0), 1)
            total = term if total is None else total + term
        if total is None:
            raise ValueError("the batch holds no example this loss head can use")
        return total


def _reward(policy: Tensor, ref: Tensor, beta: float) -> Tensor:
    return beta * (policy.float() - ref.float())


def pairwise_part(policy: Tensor, ref: Tensor, t: SeqTargets, cfg: LossConfig, out: HeadOutput) -> None:
    if not bool((t.kind == PAIR_CHOSEN).any()):
        return
    c, r = t.pairs()
    losses = dpo_losses(policy[c], policy[r], ref[c], ref[r], cfg.beta)
    margin = (_reward(policy[c], ref[c], cfg.beta) - _reward(policy[r], ref[r], cfg.beta)).detach()
    out.loss_sums["pairwise"], out.counts["pairwise"] = losses.sum(), int(c.numel())
    out.metrics["pair_accuracy"] = (margin > 0).float()
    out.metrics["reward_margin"] = margin


def binary_part(policy: Tensor, ref: Tensor, t: SeqTargets, cfg: LossConfig, out: HeadOutput) -> None:
    idx = torch.nonzero(t.kind == BINARY).flatten()
    if idx.numel() == 0:
        return
    losses = una_binary_losses(policy[idx], ref[idx], t.target[idx], cfg.beta, kind=cfg.binary_kind)
    out.loss_sums["binary"], out.counts["binary"] = losses.sum(), int(idx.numel())


def score_part(policy: Tensor, ref: Tensor, t: SeqTargets, cfg: LossConfig, out: HeadOutput) -> None:
    idx = torch.nonzero(t.kind == SCORE).flatten()
    if idx.numel() == 0:
        return
    losses = una_score_losses(policy[idx], ref[idx], t.target[idx], cfg.beta, normalize=cfg.normalize)
    out.loss_sums["score"], out.counts["score"] = losses.sum(), int(idx.numel())
    r = _reward(policy[idx], ref[idx], cfg.beta).detach()
    out.metrics["normalized_reward"] = torch.sigmoid(r) if cfg.normalize == "sigmoid" else r


def kto_part(policy: Tensor, ref: Tensor, t: SeqTargets, cfg: LossConfig, out: HeadOutput) -> None:
    idx = torch.nonzero(t.kind == BINARY).flatten()
    if idx.numel() == 0:
        return
    kl_idx = torch.nonzero(t.kind == KL).flatten()
    z = kto_kl_estimate(policy[kl_idx], ref[kl_idx])  # per micro-batch, as in TRL
    losses = kto_losses(policy[idx], ref[idx], t.target[idx], z, cfg.beta, cfg.desirable_weight, cfg.undesirable_weight)
    out.loss_sums["binary"], out.counts["binary"] = losses.sum(), int(idx.numel())
    out.metrics["kl_estimate"] = z.reshape(1)


@dataclass(frozen=True)
class LossHead:
    """A named composition of parts; `parts` each handle one feedback type."""

    name: str
    parts: tuple
    feedback_types: tuple[str, ...]
    weighted: bool = False
    """Mixed head: weight types by loss.type_weights (single-type heads use weight 1)."""
    kl_sequences: bool = False
    """KTO: the collator adds mismatched (prompt, completion) sequences for the KL estimate z."""
    loop: str = "offline"
    """Training loop module in una_hpc.trainer that drives this head: offline, online or ppo."""

    @property
    def view(self) -> str:
        """The data view this head consumes (what data.view=auto means): its one feedback type, else "mixed"."""
        return self.feedback_types[0] if len(self.feedback_types) == 1 else "mixed"

    def __call__(self, policy: Tensor, ref: Tensor, targets: SeqTargets, cfg: LossConfig) -> HeadOutput:
        out = HeadOutput()
        for part in self.parts:
            part(policy, ref, targets, cfg, out)
        keep = targets.kind != KL
        out.metrics["implicit_reward"] = _reward(policy[keep], ref[keep], cfg.beta).detach()
        return out

    def loss(self, out: HeadOutput, global_counts: dict[str, int], cfg: LossConfig) -> Tensor:
        return out.reduce(global_counts, cfg.type_weights if self.weighted else {})


LOSSES: dict[str, LossHead] = {
    "dpo": LossHead("dpo", (pairwise_part,), ("pairwise",)),
    "kto": LossHead("kto", (kto_part,), ("binary",), kl_sequences=True),
    "una_binary": LossHead("una_binary", (binary_part,), ("binary",)),
    "una_score": LossHead("una_score", (score_part,), ("score",)),
    "una_online": LossHead("una_online", (score_part,), ("score",), loop="online"),
    # PPO's per-token clipped losses live in una_hpc.losses.ppo; the head only routes the name to its loop.
    "ppo": LossHead("ppo", (), (), loop="ppo"),
    "mixed": LossHead(
        "mixed", (pairwise_part, binary_part, score_part), ("pairwise", "binary", "score"), weighted=True
    ),
}


def get_head(name: str) -> LossHead:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; registered: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]
