"""Deterministic, resumable batch order: optimizer step k always sees the same examples.

The example stream is the concatenation of per-epoch permutations, each seeded by (seed, epoch); step k takes
positions [k*B, (k+1)*B). Because the order is a pure function of the step, a run killed after step k and resumed
neither repeats nor skips an example, and every data-parallel rank derives the same global batch without talking.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepSampler:
    num_examples: int
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        if self.num_examples <= 0:
            raise ValueError("the dataset holds no usable example")
        if self.batch_size <= 0:
            raise ValueError(f"trainer.batch_size must be > 0, got {self.batch_size}")

    def _epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_examples, generator=g).tolist()

    def global_batch(self, step: int) -> list[int]:
        """Example indices of optimizer step `step` (0-based)."""
        start = step * self.batch_size
        out: list[int] = []
        while len(out) < self.batch_size:
            epoch, offset = divmod(start + len(out), self.num_examples)
            order = self._epoch_order(epoch)
            out.extend(order[offset : offset + self.batch_size - len(out)])
        return out

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size / self.num_examples


def shard_for_rank(indices: list[int], rank: int, world_size: int) -> list[int]:
    """This rank's slice of a global batch (strided, so every rank gets a similar mix)."""
    return indices[rank::world_size]


def micro_batches(indices: list[int], micro_batch_size: int) -> list[list[int]]:
    size = micro_batch_size if micro_batch_size > 0 else max(len(indices), 1)
    return [indices[i : i + size] for i in range(0, len(indices), size)]
