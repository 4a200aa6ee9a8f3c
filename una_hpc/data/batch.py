"""The packed micro-batch the trainer consumes: token rows, kernel indices and per-sequence targets.

Several sequences share a row (packing); position ids restart at 0 for each sequence and attention is
block-diagonal causal, so a packed sequence sees exactly what it would see alone. `labels` are already shifted:
labels[r, t] is the token that position t predicts, or IGNORE_INDEX (prompt, padding, a sequence's last position).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from ..feedback import SeqTargets


@dataclass
class PackedBatch:
    input_ids: Tensor
    """[R, L] int64 token ids, padded with the tokenizer's pad id."""
    position_ids: Tensor
    """[R, L] int64, restarting at 0 for every sequence (padding: 0)."""
    labels: Tensor
    """[R, L] int64, shifted next-token targets of completion tokens; IGNORE_INDEX elsewhere."""
    seq_index: Tensor
    """[R, L] int64 in [0, num_seqs): the sequence a position belongs to (padding: 0, its label ignored)."""
    pad_mask: Tensor
    """[R, L] bool, True on row padding."""
    num_seqs: int
    """S, sequences in this micro-batch (a pair contributes two)."""
    targets: SeqTargets
    """What each sequence is regressed onto."""
    example_ids: Tensor
    """[S] int64: the dataset example each sequence comes from (ref-logp cache key, metrics)."""
    ref_logps: Tensor | None = None
    """[S] float32 cached reference logps, or None to compute them in the kernel's one pass."""
    sequence_tokens: int | None = None
    """Tokens of the sequences themselves (prompt + completion each), what tokens/s counts; None: the non-padding
    positions. More than the positions when pairs share their prompt."""
    unit_ids: Tensor | None = None
    """[R, L] int64 with shared prompts (else None): the attention block of a position, a sequence or a pair sharing
    its prompt (padding: -1). Attention stays inside a block."""
    branch_ids: Tensor | None = None
    """[R, L] int64 with shared prompts: 0 for a block's shared prefix, k > 0 for branch k, which attends to the
    prefix and itself only (una_hpc.data.packing.collate)."""

    @property
    def num_tokens(self) -> int:
        """Real tokens: what tokens/s counts (a shared prompt counts once per sequence, as if unshared)."""
        if self.sequence_tokens is not None:
            return self.sequence_tokens
        return int((~self.pad_mask).sum())

    def select_rows(self, rows: list[int]) -> PackedBatch:
        """Rows of an unpacked batch (one sequence per row, as `unpacked` makes), renumbered 0..len(rows)-1."""
        if self.input_ids.shape[0] != self.num_seqs or self.unit_ids is not None:
            raise ValueError("select_rows needs one sequence per row (an unpacked batch)")
        idx = torch.as_tensor(rows, dtype=torch.long)
        seq = torch.arange(len(rows)).unsqueeze(1).expand(-1, self.input_ids.shape[1]).to(self.seq_index.device)
        t = self.targets
        return PackedBatch(
            self.input_ids[idx],
            self.position_ids[idx],
            self.labels[idx],
            seq,
            self.pad_mask[idx],
            len(rows),
            SeqTargets(t.kind[idx], t.pair_id[idx], t.target[idx]),
            self.example_ids[idx],
            None if self.ref_logps is None else self.ref_logps[idx],
        )

    def to(self, device: torch.device | str) -> PackedBatch:
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device) if isinstance(v, (Tensor, SeqTargets)) else v
        return PackedBatch(**moved)
