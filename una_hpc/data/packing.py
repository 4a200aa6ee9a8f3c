"""Pair-atomic packing of tokenized examples into a PackedBatch (and the one-sequence-per-row reference layout).

Sequence order (the seq_index numbering, SeqTargets order, example_ids and ref_logps order) is canonical and does
not depend on how rows are packed:
    1. every example in the order given, each contributing its sequences in order (a pair: chosen, then rejected);
    2. with kto_kl, then the KL sequences: for the binary examples b_0..b_{m-1} (in the order given, m >= 2),
       sequence j is the prompt of b_j with the completion of b_{(j+1) mod m} (TRL's KTO mismatched pairs);
       kind KL, pair_id -1, target 0, example id of b_j. With fewer than two binary examples none is added.
Pairs are numbered 0..P-1 (pair_id) in example order.

Packing: units are a pair (both sequences, adjacent in one row: chosen then rejected), or one single sequence.
First-fit-decreasing: units sorted by length, longest first (ties: canonical order), each placed in the first row
with room; row capacity = max(row_length or 0, longest unit); rows are padded to the longest row.
Per sequence: position_ids restart at 0; labels[t] = token t+1 when token t+1 is a completion token of the same
sequence, else IGNORE_INDEX (so prompt tokens, each sequence's last position and padding carry no label); seq_index
is the canonical sequence number (padding: 0, with pad_mask True).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..feedback import BINARY, IGNORE_INDEX, KL, PAIR_CHOSEN, PAIR_REJECTED, SCORE, SeqTargets
from .batch import PackedBatch
from .tokenize import TokenizedExample

KINDS = {"pairwise": (PAIR_CHOSEN, PAIR_REJECTED), "binary": (BINARY,), "score": (SCORE,)}
"""feedback -> the kinds of its sequences, in order."""


@dataclass(frozen=True)
class _Seq:
    ids: list[int]
    prompt_len: int
    kind: int
    pair_id: int
    target: float
    example_id: int


def _check(ex: TokenizedExample) -> None:
    if ex.feedback not in KINDS:
        raise ValueError(f"example {ex.example_id}: feedback {ex.feedback!r} is not one of {', '.join(KINDS)}")
    if len(ex.sequences) != len(KINDS[ex.feedback]):
        raise ValueError(
            f"example {ex.example_id}: {ex.feedback} needs {len(KINDS[ex.feedback])} sequence(s), "
            f"got {len(ex.sequences)}"
        )
    for prompt, _ in ex.sequences:
        if not prompt:
            raise ValueError(f"example {ex.example_id}: empty prompt (the first completion token needs a predictor)")


def plan_sequences(
    examples: Sequence[TokenizedExample], *, kto_kl: bool = False, max_length: int | None = None
) -> tuple[list[_Seq], list[list[int]]]:
    """Sequences in canonical order, and the packing units (lists of sequence indices)."""
    seqs: list[_Seq] = []
    units: list[list[int]] = []
    pair = 0
    for ex in examples:
        _check(ex)
        pid = pair if ex.feedback == "pairwise" else -1
        pair += ex.feedback == "pairwise"
        target = 0.0 if ex.feedback == "pairwise" else float(ex.target)
        first = len(seqs)
        for (prompt, completion), kind in zip(ex.sequences, KINDS[ex.feedback]):
            seqs.append(_Seq(list(prompt) + list(completion), len(prompt), kind, pid, target, ex.example_id))
        units.append(list(range(first, len(seqs))))
    binary = [ex for ex in examples if ex.feedback == "binary"] if kto_kl else []
    for j, ex in enumerate(binary if len(binary) >= 2 else []):
        prompt = ex.sequences[0][0]
        completion = list(binary[(j + 1) % len(binary)].sequences[0][1])
        if max_length is not None:
            completion = completion[: max(max_length - len(prompt), 0)]
        units.append([len(seqs)])
        seqs.append(_Seq(list(prompt) + completion, len(prompt), KL, -1, 0.0, ex.example_id))
    return seqs, units


def _first_fit_decreasing(seqs: list[_Seq], units: list[list[int]], row_length: int | None) -> list[list[int]]:
    lengths = [sum(len(seqs[i].ids) for i in u) for u in units]
    capacity = max([row_length or 0, *lengths])
    rows: list[list[int]] = []
    used: list[int] = []
    for u in sorted(range(len(units)), key=lambda k: (-lengths[k], units[k][0])):
        r = next((r for r in range(len(rows)) if used[r] + lengths[u] <= capacity), None)
        if r is None:
            rows.append([])
            used.append(0)
            r = len(rows) - 1
        rows[r].extend(units[u])
        used[r] += lengths[u]
    return rows


def _layout(seqs: list[_Seq], rows: list[list[int]], pad_id: int, ref_logps: Tensor | None) -> PackedBatch:
    if not seqs:
        raise ValueError("cannot collate an empty list of examples")
    width = max(sum(len(seqs[i].ids) for i in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    seq_index = torch.zeros(shape, dtype=torch.long)
    pad_mask = torch.ones(shape, dtype=torch.bool)
    for r, row in enumerate(rows):
        offset = 0
        for i in row:
            s = seqs[i]
            n = len(s.ids)
            ids = torch.tensor(s.ids, dtype=torch.long)
            span = slice(offset, offset + n)
            input_ids[r, span] = ids
            position_ids[r, span] = torch.arange(n)
            seq_index[r, span] = i
            pad_mask[r, span] = False
            if n > s.prompt_len:  # position t predicts token t+1 for t in [P-1, n-2]
                labels[r, offset + s.prompt_len - 1 : offset + n - 1] = ids[s.prompt_len :]
            offset += n
    targets = SeqTargets(
        torch.tensor([s.kind for s in seqs], dtype=torch.long),
        torch.tensor([s.pair_id for s in seqs], dtype=torch.long),
        torch.tensor([s.target for s in seqs], dtype=torch.float32),
    )
    if ref_logps is not None and tuple(ref_logps.shape) != (len(seqs),):
        raise ValueError(f"ref_logps must be [{len(seqs)}] (one per sequence), got {tuple(ref_logps.shape)}")
    return PackedBatch(
        input_ids,
        position_ids,
        labels,
        seq_index,
        pad_mask,
        len(seqs),
        targets,
        torch.tensor([s.example_id for s in seqs], dtype=torch.long),
        None if ref_logps is None else ref_logps.float(),
    )


def collate(
    examples: Sequence[TokenizedExample],
    pad_id: int,
    *,
    row_length: int | None = None,
    kto_kl: bool = False,
    ref_logps: Tensor | None = None,
    max_length: int | None = None,
) -> PackedBatch:
    """Pack examples pair-atomically (first-fit-decreasing); `max_length` only bounds KL sequences."""
    seqs, units = plan_sequences(examples, kto_kl=kto_kl, max_length=max_length)
    return _layout(seqs, _first_fit_decreasing(seqs, units, row_length), pad_id, ref_logps)


def unpacked(
    examples: Sequence[TokenizedExample],
    pad_id: int,
    *,
    kto_kl: bool = False,
    ref_logps: Tensor | None = None,
    max_length: int | None = None,
) -> PackedBatch:
    """The same sequences, one per row in canonical order (the reference layout; data.packing=false)."""
    seqs, _ = plan_sequences(examples, kto_kl=kto_kl, max_length=max_length)
    return _layout(seqs, [[i] for i in range(len(seqs))], pad_id, ref_logps)
