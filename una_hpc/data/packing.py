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
    examples: Sequence[TokenizedExample],
    *,
    kto_kl: bool = False,
    max_length: int | None = None,
    group_prompts: bool = False,
) -> tuple[list[_Seq], list[list[int]]]:
    """Sequences in canonical order, and the packing units (lists of sequence indices). group_prompts: consecutive
    single-sequence examples with the same prompt (an online step's samples of one prompt) form one unit."""
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
        unit = list(range(first, len(seqs)))
        if group_prompts and len(unit) == 1 and units and _same_prompt(seqs, units[-1] + unit):
            units[-1].extend(unit)
        else:
            units.append(unit)
    binary = [ex for ex in examples if ex.feedback == "binary"] if kto_kl else []
    for j, ex in enumerate(binary if len(binary) >= 2 else []):
        prompt = ex.sequences[0][0]
        completion = list(binary[(j + 1) % len(binary)].sequences[0][1])
        if max_length is not None:
            completion = completion[: max(max_length - len(prompt), 0)]
        units.append([len(seqs)])
        seqs.append(_Seq(list(prompt) + completion, len(prompt), KL, -1, 0.0, ex.example_id))
    return seqs, units


def _same_prompt(seqs: list[_Seq], unit: list[int]) -> bool:
    """Every sequence of the unit begins with the same prompt tokens."""
    first = seqs[unit[0]]
    prompt = first.ids[: first.prompt_len]
    return all(seqs[i].prompt_len == first.prompt_len and seqs[i].ids[: first.prompt_len] == prompt for i in unit)


def _shares_prompt(seqs: list[_Seq], unit: list[int]) -> bool:
    """Two or more sequences that begin with the same prompt of at least 2 tokens (one is kept as the shared
    prefix: a shorter prompt saves nothing)."""
    return len(unit) >= 2 and seqs[unit[0]].prompt_len >= 2 and _same_prompt(seqs, unit)


@dataclass(frozen=True)
class _Segment:
    """Consecutive positions of one row: tokens, the position id of the first, where labels start, which sequence
    owns it, its attention block (`block`: the segments that may see each other) and its branch within the block
    (0: seen by the whole block; k > 0: seen only by branch k, see `collate`)."""

    ids: list[int]
    first_position: int
    label_from: int
    seq: int
    block: int
    branch: int


def _segments(seqs: list[_Seq], unit: list[int], share_prompt: bool) -> list[_Segment]:
    if share_prompt and _shares_prompt(seqs, unit):
        first = unit[0]
        p = seqs[first].prompt_len
        prefix = _Segment(seqs[first].ids[: p - 1], 0, p, first, first, 0)  # no labels: predicts a prompt token
        return [prefix] + [_Segment(seqs[i].ids[p - 1 :], p - 1, 0, i, first, k) for k, i in enumerate(unit, 1)]
    return [_Segment(seqs[i].ids, 0, seqs[i].prompt_len - 1, i, i, 0) for i in unit]


def _first_fit_decreasing(units: list[list[_Segment]], row_length: int | None) -> list[list[list[_Segment]]]:
    lengths = [sum(len(seg.ids) for seg in u) for u in units]
    capacity = max([row_length or 0, *lengths])
    rows: list[list[list[_Segment]]] = []
    used: list[int] = []
    for u in sorted(range(len(units)), key=lambda k: (-lengths[k], units[k][0].seq)):
        r = next((r for r in range(len(rows)) if used[r] + lengths[u] <= capacity), None)
        if r is None:
            rows.append([])
            used.append(0)
            r = len(rows) - 1
        rows[r].append(units[u])
        used[r] += lengths[u]
    return rows


def _layout(seqs: list[_Seq], rows: list[list[list[_Segment]]], pad_id: int, ref_logps: Tensor | None) -> PackedBatch:
    if not seqs:
        raise ValueError("cannot collate an empty list of examples")
    width = max(sum(len(seg.ids) for unit in row for seg in unit) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    seq_index = torch.zeros(shape, dtype=torch.long)
    pad_mask = torch.ones(shape, dtype=torch.bool)
    unit_ids = torch.full(shape, -1, dtype=torch.long)
    branch_ids = torch.zeros(shape, dtype=torch.long)
    for r, row in enumerate(rows):
        offset = 0
        for unit in row:
            for seg in unit:
                n = len(seg.ids)
                ids = torch.tensor(seg.ids, dtype=torch.long)
                span = slice(offset, offset + n)
                input_ids[r, span] = ids
                position_ids[r, span] = torch.arange(seg.first_position, seg.first_position + n)
                seq_index[r, span] = seg.seq
                pad_mask[r, span] = False
                unit_ids[r, span] = seg.block
                branch_ids[r, span] = seg.branch
                if n > seg.label_from + 1:  # position t predicts token t+1 of the same segment
                    labels[r, offset + seg.label_from : offset + n - 1] = ids[seg.label_from + 1 :]
                offset += n
    targets = SeqTargets(
        torch.tensor([s.kind for s in seqs], dtype=torch.long),
        torch.tensor([s.pair_id for s in seqs], dtype=torch.long),
        torch.tensor([s.target for s in seqs], dtype=torch.float32),
    )
    shared = bool(branch_ids.any())  # some unit keeps one copy of its prompt: the forward needs the branch mask
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
        sequence_tokens=sum(len(s.ids) for s in seqs),
        unit_ids=unit_ids if shared else None,
        branch_ids=branch_ids if shared else None,
    )


def collate(
    examples: Sequence[TokenizedExample],
    pad_id: int,
    *,
    row_length: int | None = None,
    kto_kl: bool = False,
    ref_logps: Tensor | None = None,
    max_length: int | None = None,
    share_prompt: bool = False,
) -> PackedBatch:
    """Pack examples pair-atomically (first-fit-decreasing); `max_length` only bounds KL sequences.

    share_prompt: sequences with one prompt keep one copy of it: a pair's two, and consecutive single-sequence
    examples with the same prompt (an online step's samples of a prompt). The row holds prompt[:-1] once, then
    prompt[-1] + completion for each sequence (each branch repeats the last prompt token, whose position predicts
    the first completion token, and continues the prompt's position ids); each branch attends to the shared prefix
    and to itself, never to another branch, through `unit_ids` / `branch_ids` (una_hpc.models.attention builds the
    mask). Each sequence sees exactly the tokens and positions it would see alone, in (n - 1)(P - 1) fewer tokens
    for n sequences with a P-token prompt.
    """
    seqs, units = plan_sequences(examples, kto_kl=kto_kl, max_length=max_length, group_prompts=share_prompt)
    segments = [_segments(seqs, u, share_prompt) for u in units]
    return _layout(seqs, _first_fit_decreasing(segments, row_length), pad_id, ref_logps)


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
    return _layout(seqs, [[_segments(seqs, [i], False)] for i in range(len(seqs))], pad_id, ref_logps)
