"""Pair-atomic packing: no pair split across rows, first-fit-decreasing placement, position ids restart, labels and
seq_index consistent with the one-sequence-per-row layout, canonical sequence order and targets, KL sequences."""

from __future__ import annotations

import math
import random

import pytest
import torch

from una_hpc.data import TokenizedExample, collate, unpacked
from una_hpc.feedback import IGNORE_INDEX as IGNORE
from una_hpc.losses import BINARY, KL, PAIR_CHOSEN, PAIR_REJECTED, SCORE

PAD = 0


def _random_examples(n: int, seed: int = 0) -> list[TokenizedExample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        feedback = rng.choice(["pairwise", "binary", "score"])
        prompt = [rng.randint(3, 99) for _ in range(rng.randint(1, 12))]
        k = 2 if feedback == "pairwise" else 1
        seqs = [(prompt, [rng.randint(3, 99) for _ in range(rng.randint(1, 10))]) for _ in range(k)]
        target = (
            math.nan
            if feedback == "pairwise"
            else (float(rng.random() < 0.5) if feedback == "binary" else rng.random())
        )
        out.append(TokenizedExample(100 + i, feedback, seqs, target))
    return out


def _canonical(examples):
    """Sequences in the documented order: (example_id, kind, prompt, completion)."""
    kinds = {"pairwise": [PAIR_CHOSEN, PAIR_REJECTED], "binary": [BINARY], "score": [SCORE]}
    return [(ex.example_id, kind, p, c) for ex in examples for kind, (p, c) in zip(kinds[ex.feedback], ex.sequences)]


def _segments(batch):
    """{seq: (row, start, end)} read back from seq_index / pad_mask."""
    seg = {}
    for r in range(batch.input_ids.shape[0]):
        for t in range(batch.input_ids.shape[1]):
            if not batch.pad_mask[r, t]:
                s = int(batch.seq_index[r, t])
                row, start, _ = seg.get(s, (r, t, t))
                assert row == r, "a sequence spans two rows"
                seg[s] = (row, start, t + 1)
    return seg


def _token_set(batch):
    keep = ~batch.pad_mask
    return sorted(
        zip(
            batch.seq_index[keep].tolist(),
            batch.position_ids[keep].tolist(),
            batch.input_ids[keep].tolist(),
            batch.labels[keep].tolist(),
        )
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairs_stay_together_and_rows_fit(seed):
    examples = _random_examples(40, seed)
    batch = collate(examples, PAD, row_length=48)
    seg = _segments(batch)
    assert sorted(seg) == list(range(batch.num_seqs))
    chosen, rejected = batch.targets.pairs()
    for c, r in zip(chosen.tolist(), rejected.tolist()):
        assert seg[c][0] == seg[r][0] and seg[c][2] == seg[r][1]  # same row, rejected right after chosen
    real = (~batch.pad_mask).sum(1)
    assert int(real.max()) <= 48 and batch.input_ids.shape[1] == int(real.max())
    assert batch.num_tokens == sum(len(p) + len(c) for ex in examples for p, c in ex.sequences)
    assert batch.input_ids.shape[0] < batch.num_seqs  # it actually packs


def test_position_ids_restart_per_sequence():
    batch = collate(_random_examples(30), PAD, row_length=64)
    for r, start, end in _segments(batch).values():
        assert batch.position_ids[r, start:end].tolist() == list(range(end - start))
    assert (batch.position_ids[batch.pad_mask] == 0).all() and (batch.labels[batch.pad_mask] == -100).all()
    assert (batch.input_ids[batch.pad_mask] == PAD).all()


@pytest.mark.parametrize("seed", [0, 3])
def test_packed_matches_unpacked_layout(seed):
    examples = _random_examples(25, seed)
    packed, flat = collate(examples, PAD, row_length=40), unpacked(examples, PAD)
    assert _token_set(packed) == _token_set(flat)
    assert flat.input_ids.shape[0] == flat.num_seqs == packed.num_seqs
    for name in ("kind", "pair_id", "target"):
        assert torch.equal(getattr(packed.targets, name), getattr(flat.targets, name))
    assert torch.equal(packed.example_ids, flat.example_ids)

    # a per-sequence reduction through seq_index gives the same numbers in both layouts
    def per_seq(b):
        x = torch.where(b.labels != -100, b.labels, 0).float()
        return torch.zeros(b.num_seqs).index_add_(0, b.seq_index.flatten(), x.flatten())

    assert torch.equal(per_seq(packed), per_seq(flat))


def test_labels_and_order_match_an_independent_reference():
    examples = _random_examples(12, 5)
    batch = collate(examples, PAD, row_length=32)
    seg = _segments(batch)
    pair_no = 0
    for s, (eid, kind, p, c) in enumerate(_canonical(examples)):
        r, start, end = seg[s]
        assert batch.input_ids[r, start:end].tolist() == p + c
        assert batch.labels[r, start:end].tolist() == [-100] * (len(p) - 1) + c + [-100]
        assert int(batch.example_ids[s]) == eid and int(batch.targets.kind[s]) == kind
        if kind in (PAIR_CHOSEN, PAIR_REJECTED):
            assert int(batch.targets.pair_id[s]) == pair_no
            pair_no += kind == PAIR_REJECTED
        else:
            ex = next(e for e in examples if e.example_id == eid)
            assert int(batch.targets.pair_id[s]) == -1 and float(batch.targets.target[s]) == pytest.approx(ex.target)


def test_first_fit_decreasing_placement():
    def ex(i, n):  # one single-sequence example of n tokens (1 prompt token)
        return TokenizedExample(i, "score", [([7], [8] * (n - 1))], 0.5)

    examples = [ex(0, 2), ex(1, 6), ex(2, 3), ex(3, 5), ex(4, 4)]
    batch = collate(examples, PAD, row_length=10)
    # by hand: 6 -> row 0; 5 -> row 1; 4 -> row 0 (full); 3 -> row 1; 2 -> row 1 (full)
    rows = [[s for s in dict.fromkeys(batch.seq_index[r][~batch.pad_mask[r]].tolist())] for r in range(2)]
    assert batch.input_ids.shape == (2, 10) and rows == [[1, 4], [3, 2, 0]]


def test_row_capacity_grows_to_the_longest_unit():
    examples = [
        TokenizedExample(0, "pairwise", [([1, 2, 3], [4, 5]), ([1, 2, 3], [6, 7, 8])], math.nan),
        TokenizedExample(1, "binary", [([1], [2])], 1.0),
    ]
    batch = collate(examples, PAD, row_length=4)  # the pair alone has 11 tokens: capacity 11, so 2 rows
    assert batch.input_ids.shape == (2, 11)
    assert collate(examples, PAD).input_ids.shape == (2, 11)
    assert collate(examples, PAD, row_length=13).input_ids.shape == (1, 13)


def test_kto_kl_sequences_are_mismatched_pairs():
    examples = _random_examples(20, 7)
    binary = [e for e in examples if e.feedback == "binary"]
    batch = collate(examples, PAD, row_length=64, kto_kl=True)
    base = len(_canonical(examples))
    assert batch.num_seqs == base + len(binary)
    assert (batch.targets.kind[base:] == KL).all() and (batch.targets.kind[:base] != KL).all()
    seg = _segments(batch)
    for j, ex in enumerate(binary):
        r, start, end = seg[base + j]
        prompt, completion = ex.sequences[0][0], binary[(j + 1) % len(binary)].sequences[0][1]
        assert batch.input_ids[r, start:end].tolist() == prompt + completion
        assert batch.labels[r, start:end].tolist() == [-100] * (len(prompt) - 1) + completion + [-100]
        assert int(batch.example_ids[base + j]) == ex.example_id and int(batch.targets.pair_id[base + j]) == -1
    # one binary example has no partner: no KL sequence
    one = [e for e in examples if e.feedback != "binary"] + binary[:1]
    assert (collate(one, PAD, kto_kl=True).targets.kind != KL).all()
    # max_length bounds the mismatched sequence
    short = collate(examples, PAD, kto_kl=True, max_length=8)
    kl_rows = [seg_ for s, seg_ in sorted(_segments(short).items()) if s >= base]
    assert len(kl_rows) == len(binary)
    assert all(end - start <= max(8, len(binary[k].sequences[0][0])) for k, (_, start, end) in enumerate(kl_rows))


def test_ref_logps_are_carried_and_checked():
    examples = _random_examples(6)
    n = len(_canonical(examples))
    ref = torch.arange(n, dtype=torch.float64)
    batch = collate(examples, PAD, ref_logps=ref)
    assert batch.ref_logps.dtype == torch.float32 and torch.equal(batch.ref_logps, ref.float())
    with pytest.raises(ValueError, match=f"ref_logps must be \\[{n}\\]"):
        collate(examples, PAD, ref_logps=torch.zeros(n + 1))


def test_bad_examples_are_rejected():
    with pytest.raises(ValueError, match="pairwise needs 2 sequence"):
        collate([TokenizedExample(3, "pairwise", [([1], [2])], math.nan)], PAD)
    with pytest.raises(ValueError, match="empty list"):
        collate([], PAD)


def _tokens_seen(batch, r: int, t: int) -> list[tuple[int, int]]:
    """(token, position id) of every position that position t of row r attends to, under the branch mask."""
    from una_hpc.models.attention import shared_prompt_mask

    mask = shared_prompt_mask(batch.unit_ids, batch.branch_ids, "sdpa")[r, 0, t]
    return [(int(batch.input_ids[r, j]), int(batch.position_ids[r, j])) for j in mask.nonzero().squeeze(1).tolist()]


def test_shared_prompt_layout_gives_each_sequence_its_own_context():
    """With share_prompt, every labelled position attends to exactly the (token, position) prefix it would see in
    the plain layout, predicts the same label, and belongs to the same sequence; pairs with a 1-token or unequal
    prompt, and single sequences, keep the plain layout. Positions stored: P - 1 fewer per extra sequence of a
    shared prompt (a pair, consecutive samples of one prompt)."""
    examples = _random_examples(24, seed=3)
    examples.append(TokenizedExample(200, "pairwise", [([5, 6, 7], [8]), ([5, 6, 9], [10, 11])], math.nan))
    # an online step's 3 samples of one 4-token prompt, consecutive score examples: (3 - 1) * (4 - 1) = 6 saved
    group = [TokenizedExample(300 + k, "score", [([4, 5, 6, 7], [20 + k] * (k + 1))], 0.5) for k in range(3)]
    examples[5:5] = group
    shared = collate(examples, PAD, row_length=48, share_prompt=True)
    plain = unpacked(examples, PAD)
    saved = 6 + sum(
        len(ex.sequences[0][0]) - 1
        for ex in examples
        if ex.feedback == "pairwise" and ex.sequences[0][0] == ex.sequences[1][0] and len(ex.sequences[0][0]) >= 2
    )
    assert shared.num_tokens == plain.num_tokens
    assert int((~shared.pad_mask).sum()) == int((~plain.pad_mask).sum()) - saved

    def contexts(batch, per_row_mask):
        out = {}
        for r, t in (batch.labels != IGNORE).nonzero().tolist():
            out[(int(batch.seq_index[r, t]), int(batch.position_ids[r, t]))] = (
                int(batch.labels[r, t]),
                per_row_mask(batch, r, t),
            )
        return out

    def plain_seen(batch, r, t):
        return [(int(batch.input_ids[r, j]), int(batch.position_ids[r, j])) for j in range(t + 1)]

    assert contexts(shared, _tokens_seen) == contexts(plain, plain_seen)
    assert torch.equal(shared.targets.kind, plain.targets.kind) and torch.equal(shared.example_ids, plain.example_ids)


def test_without_share_prompt_no_mask_is_needed():
    batch = collate(_random_examples(12), PAD, row_length=32)
    assert batch.unit_ids is None and batch.branch_ids is None
