"""The synthetic HelpSteer-style task: grammar, exact gold attributes (hand-computed), splits, generators.

.venv/bin/python -m pytest tests/unit/test_synthetic.py -q
"""

from __future__ import annotations

import random

import pytest

from una_hpc.task.grammar import (
    ATTRIBUTES,
    FAMILIES,
    QUALITIES,
    family_of,
    gold_attributes,
    gold_score,
    make_response,
    make_splits,
    parse_prompt,
    sample_prompts,
    sample_response,
    sft_examples,
)

H, C, COH, CX, V = ATTRIBUTES


def attrs(h: int, c: int, coh: int, cx: int, v: int) -> dict[str, int]:
    return {H: h, C: c, COH: coh, CX: cx, V: v}


# (prompt, response, expected attributes), each worked out by hand from the rules in the module docstring.
CASES = [
    # count: exact answer; one number missing -> LCS 3/4 -> 3, one word short -> verbosity 1
    ("count from 3 to 7", "3 4 5 6 7", attrs(4, 4, 4, 2, 2)),
    ("count down from 9 to 6", "9 8 7", attrs(3, 3, 4, 1, 1)),
    # list: any in-category items; a duplicate counts once (1/2 -> 2) and is a loop (coherence 3, helpfulness -1)
    ("list three colors", "red blue green", attrs(4, 4, 4, 1, 2)),
    ("name two animals", "cat cat", attrs(1, 2, 3, 0, 2)),
    # sort: verbose wrapper (10 words vs 3 -> verbosity 4) around a wrong order (LCS 2/3 -> 2)
    ("sort: pear apple fig", "apple fig pear", attrs(4, 4, 4, 1, 2)),
    ("sort: pear apple fig", "sure! here it is: apple pear fig. hope this helps!", attrs(1, 2, 4, 1, 4)),
    # repeat: the answer's own repeats are not loops; 5x for 2x -> LCS 2/5 -> 1, 3 extra loops
    ("repeat cat 3 times", "cat cat cat", attrs(4, 4, 4, 0, 2)),
    ("say dog 2 times", "dog dog dog dog dog", attrs(0, 1, 1, 0, 4)),
    # count: one extra number is not exact (7/8 -> 3)
    ("count from 3 to 9", "3 4 5 6 7 8 9 10", attrs(3, 3, 4, 4, 3)),
    # add: wrong sum behind a one-word frame
    ("add 4 and 5", "9", attrs(4, 4, 4, 0, 2)),
    ("what is 12 plus 7", "answer: 20", attrs(0, 0, 4, 0, 3)),
    # opposite: a misspelling is garbage (coherence 3) and wrong
    ("what is the opposite of hot", "cold", attrs(4, 4, 4, 0, 2)),
    ("opposite of big", "smal", attrs(0, 0, 4 - 1, 0, 2)),
    # reverse: echoing the input keeps one word in order (1/3 -> 1)
    ("reverse: cat dog red", "red dog cat", attrs(4, 4, 4, 1, 2)),
    ("reverse the order: cat dog red", "cat dog red", attrs(1, 1, 4, 1, 2)),
    # spell: trailing stutter: LCS 4/7 -> 2, 3 loops, 3 extra words
    ("spell fig", "f i g", attrs(4, 4, 4, 1, 2)),
    ("spell the word pear", "p e a r r r r", attrs(0, 2, 1, 2, 4)),
    # empty response: all zero
    ("add 1 and 1", "  ", attrs(0, 0, 0, 0, 0)),
]


@pytest.mark.parametrize("prompt,response,expected", CASES)
def test_gold_attributes_hand_computed(prompt, response, expected):
    assert gold_attributes(prompt, response) == expected


def test_every_family_has_a_hand_written_case():
    assert {family_of(p) for p, _, _ in CASES} == set(FAMILIES)


def test_gold_score_combines_with_weights():
    assert gold_score("add 4 and 5", "9") == 1.0
    assert gold_score("add 1 and 1", "") == 0.0
    # helpfulness 1, correctness 2, coherence 4 -> (0.65*1/4 + 0.8*2/4 + 0.45*4/4) / 1.9
    s = gold_score("sort: pear apple fig", "sure! here it is: apple pear fig. hope this helps!")
    assert s == pytest.approx((0.1625 + 0.4 + 0.45) / 1.9, abs=1e-12)
    assert gold_score("add 4 and 5", "9", weights={"verbosity": 1.0}) == 0.5


def test_prompt_outside_grammar_raises():
    with pytest.raises(ValueError, match="grammar"):
        parse_prompt("write a poem about the sea")
    with pytest.raises(ValueError):
        parse_prompt("what is the opposite of cat")  # no such pair


def test_scores_in_unit_interval_and_generators_graded():
    rng = random.Random(0)
    prompts = sample_prompts(200, seed=3, split="train")
    by_quality = {q: [] for q in QUALITIES}
    for p in prompts:
        for q in QUALITIES:
            s = gold_score(p, make_response(p, q, rng))
            assert 0.0 <= s <= 1.0
            by_quality[q].append(s)
    assert all(s == 1.0 for s in by_quality["correct"])  # the grammar and the reward agree
    assert all(s < 1.0 for s in by_quality["verbose"] + by_quality["wrong"] + by_quality["repetitive"])
    mean = {q: sum(v) / len(v) for q, v in by_quality.items()}
    assert mean["correct"] > mean["verbose"] > mean["wrong"] > mean["offtopic"]
    assert mean["verbose"] > mean["repetitive"]


def test_splits_disjoint_deterministic_and_seeded():
    train, held = make_splits(300, 100, seed=5)
    assert len(set(train)) == 300 and len(set(held)) == 100
    assert not set(train) & set(held)
    assert make_splits(300, 100, seed=5) == (train, held)
    assert make_splits(300, 100, seed=6)[1] != held
    assert {family_of(p) for p in held[: len(FAMILIES)]} == set(FAMILIES)  # round-robin over families


def test_grammar_exhaustion_is_reported():
    with pytest.raises(ValueError, match="fewer than"):  # a held-out fraction of 0 leaves no held-out prompt
        sample_prompts(10, seed=0, split="heldout", heldout_fraction=0.0)


def test_sft_examples_deterministic_and_family_balanced():
    pool = sample_prompts(2000, seed=1, split="train")
    a, b = sft_examples(pool, 4000, seed=1), sft_examples(pool, 4000, seed=1)
    assert a == b
    assert sft_examples(pool, 50, seed=2) != a[:50]
    counts = {f: 0 for f in FAMILIES}
    for p, _ in a:
        counts[family_of(p)] += 1
    assert min(counts.values()) > 0.7 * 4000 / len(FAMILIES)  # small families (list: ~30 prompts) not drowned
    q, r = sample_response(pool[0], random.Random(0), {"verbose": 1.0})
    assert q == "verbose" and gold_attributes(pool[0], r)[V] == 4
