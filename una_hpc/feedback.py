"""What data produces and losses consume, per sequence: its feedback kind and the target it is regressed onto.

    .venv/bin/python -m pytest tests/unit/test_losses.py tests/unit/test_data_packing.py -q

A leaf module (torch only) below both una_hpc.data and una_hpc.losses, so data never imports the loss package.
Feedback kinds are small integers so a batch can mix them in one tensor (the mixed head). IGNORE_INDEX marks the
label positions that predict nothing (prompt, padding, a sequence's last position); the fused kernel's
`ignore_index` default is the same value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE_INDEX = -100
"""Label of a position that predicts nothing (the value torch's cross-entropy and HF models ignore)."""
PAIR_CHOSEN, PAIR_REJECTED, BINARY, SCORE, KL = 0, 1, 2, 3, 4
# Feedback type of an example (a pair is one example) -> the sequence kinds it consists of.
FEEDBACK_TYPES = ("pairwise", "binary", "score")


@dataclass
class SeqTargets:
    """One entry per sequence in a micro-batch (same order as the kernel's seq_index)."""

    kind: Tensor
    """[S] int64: PAIR_CHOSEN, PAIR_REJECTED, BINARY, SCORE or KL (KTO's mismatched completions)."""
    pair_id: Tensor
    """[S] int64: for chosen/rejected, the pair they belong to (each id once per side); -1 otherwise."""
    target: Tensor
    """[S] float32: label in {0, 1} for BINARY, score for SCORE; ignored for pairs and KL."""

    def __post_init__(self) -> None:
        n = self.kind.shape[0]
        if self.pair_id.shape != (n,) or self.target.shape != (n,):
            raise ValueError(
                f"SeqTargets fields must all be [{n}], got pair_id {tuple(self.pair_id.shape)}, "
                f"target {tuple(self.target.shape)}"
            )

    def to(self, device: torch.device | str) -> SeqTargets:
        return SeqTargets(self.kind.to(device), self.pair_id.to(device), self.target.to(device))

    def pairs(self) -> tuple[Tensor, Tensor]:
        """Indices of chosen and rejected sequences, aligned by pair_id."""
        chosen = torch.nonzero(self.kind == PAIR_CHOSEN).flatten()
        rejected = torch.nonzero(self.kind == PAIR_REJECTED).flatten()
        chosen = chosen[torch.argsort(self.pair_id[chosen])]
        rejected = rejected[torch.argsort(self.pair_id[rejected])]
        if chosen.numel() != rejected.numel() or not torch.equal(self.pair_id[chosen], self.pair_id[rejected]):
            raise ValueError("every pair_id needs exactly one chosen and one rejected sequence")
        return chosen, rejected

    def example_counts(self) -> dict[str, int]:
        """Examples per feedback type (a pair counts once) — the global normalizer for accumulation."""
        return {
            "pairwise": int((self.kind == PAIR_CHOSEN).sum()),
            "binary": int((self.kind == BINARY).sum()),
            "score": int((self.kind == SCORE).sum()),
        }

    @staticmethod
    def cat(parts: list[SeqTargets]) -> SeqTargets:
        offset, pair_ids = 0, []
        for p in parts:  # keep pair ids unique across the concatenated parts
            pair_ids.append(torch.where(p.pair_id >= 0, p.pair_id + offset, p.pair_id))
            offset += int(p.pair_id.max().item()) + 1 if p.pair_id.numel() and p.pair_id.max() >= 0 else 0
        return SeqTargets(torch.cat([p.kind for p in parts]), torch.cat(pair_ids), torch.cat([p.target for p in parts]))
