"""Rows -> examples: pairs ordered by the (weighted) score, ties skipped, binary threshold, score view, mixed view,
pairwise -> binary, conversational prompts, and the views a format cannot give."""

from __future__ import annotations

import itertools
import math

import datasets
import pytest

from una_hpc.config import DataConfig
from una_hpc.data import DataError, prompts_of, to_examples
from una_hpc.trainer.inputs import resolve_view

SCORED = [  # prompt, response, score
    ("p1", "a", 0.9),
    ("p1", "b", 0.1),
    ("p1", "c", 0.5),
    ("p2", "d", 0.7),
    ("p2", "e", 0.7),  # a tie: no pair
    ("p3", "f", 0.2),
    ("p3", "g", 0.6),
    ("p4", "h", 0.3),
    ("p4", "i", 0.8),
    ("p4", "j", 0.8),
    ("p4", "k", 0.0),
]


def _ds(rows):
    return datasets.Dataset.from_list(rows)


def _scored():
    return _ds([{"prompt": p, "response": r, "score": s} for p, r, s in SCORED])


def test_pairs_from_scores_are_adjacent_plus_extremes_and_skip_ties():
    ex = to_examples(_scored(), "score", "pairwise", DataConfig())
    got = [(e.prompt, tuple(e.completions)) for e in ex]
    # by hand: p1 sorted a .9 > c .5 > b .1 -> (a,c), (c,b), best-worst (a,b); p2 tie -> none; p3 (g,f);
    # p4 sorted i .8 = j .8 > h .3 > k 0 -> (i,j) tie skipped, (j,h), (h,k), best-worst (i,k)
    assert got == [
        ("p1", ("a", "c")),
        ("p1", ("c", "b")),
        ("p1", ("a", "b")),
        ("p3", ("g", "f")),
        ("p4", ("j", "h")),
        ("p4", ("h", "k")),
        ("p4", ("i", "k")),
    ]
    assert [e.example_id for e in ex] == list(range(len(ex)))
    score = {r: s for _, r, s in SCORED}
    assert all(e.feedback == "pairwise" and math.isnan(e.target) for e in ex)
    assert all(score[e.completions[0]] > score[e.completions[1]] for e in ex)


def test_helpsteer2_pairs_follow_the_weighted_score():
    attrs = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
    # a: h=4 c=1 coh=4 -> (.65 + .2 + .45)/1.9 = .684;  b: h=1 c=4 coh=4 -> (.1625 + .8 + .45)/1.9 = .743
    # (the plain mean of the three is equal, 9/12, so only the weights decide); complexity/verbosity unweighted
    rows = [
        dict(prompt="q", response="a", **dict(zip(attrs, (4, 1, 4, 4, 4)))),
        dict(prompt="q", response="b", **dict(zip(attrs, (1, 4, 4, 0, 0)))),
    ]
    (pair,) = to_examples(_ds(rows), "helpsteer2", "pairwise", DataConfig())
    assert pair.completions == ["b", "a"]
    (pair,) = to_examples(_ds(rows), "helpsteer2", "pairwise", DataConfig(attribute_weights={"helpfulness": 1.0}))
    assert pair.completions == ["a", "b"]
    scores = [e.target for e in to_examples(_ds(rows), "helpsteer2", "score", DataConfig())]
    assert scores == pytest.approx([1.3 / 1.9, 1.4125 / 1.9])


@pytest.mark.parametrize("threshold", [0.5, 0.65])
def test_binary_view_uses_threshold(threshold):
    ex = to_examples(_scored(), "score", "binary", DataConfig(binary_threshold=threshold))
    assert [(e.completions[0], e.target) for e in ex] == [(r, float(s >= threshold)) for _, r, s in SCORED]
    assert {e.feedback for e in ex} == {"binary"}


def test_score_view_is_the_score():
    ex = to_examples(_scored(), "score", "score", DataConfig())
    assert [(e.prompt, e.completions, e.target) for e in ex] == [(p, [r], s) for p, r, s in SCORED]


def test_mixed_view_has_all_three_types_round_robin_over_prompts():
    rows = [{"prompt": f"p{g}", "response": f"r{g}{k}", "score": k / 3} for g in range(6) for k in range(3)]
    ex = to_examples(_ds(rows), "score", "mixed", DataConfig())
    assert {e.feedback for e in ex} == {"pairwise", "binary", "score"}
    by_prompt = {p: {e.feedback for e in ex if e.prompt == p} for p in (f"p{g}" for g in range(6))}
    assert by_prompt == {f"p{g}": {("pairwise", "binary", "score")[g % 3]} for g in range(6)}
    again = to_examples(_ds(rows), "score", "mixed", DataConfig())
    assert [(e.feedback, e.prompt, e.completions) for e in again] == [(e.feedback, e.prompt, e.completions) for e in ex]
    # within the first 3 prompts every type occurs: any batch of consecutive prompts mixes types
    first = [e for e in ex if e.prompt in ("p0", "p1", "p2")]
    assert {e.feedback for e in first} == {"pairwise", "binary", "score"}


def test_pairwise_data_yields_binary_view():
    rows = [{"prompt": "p", "chosen": "good", "rejected": "bad"}, {"prompt": "q", "chosen": "yes", "rejected": "no"}]
    ex = to_examples(_ds(rows), "pairwise", "binary", DataConfig())
    assert [(e.prompt, e.completions[0], e.target) for e in ex] == [
        ("p", "good", 1.0),
        ("p", "bad", 0.0),
        ("q", "yes", 1.0),
        ("q", "no", 0.0),
    ]
    pairs = to_examples(_ds(rows), "pairwise", "pairwise", DataConfig())
    assert [e.completions for e in pairs] == [["good", "bad"], ["yes", "no"]]


def test_conversational_implicit_prompt_and_unpaired():
    conv = [{"role": "user", "content": "hi"}]
    rows = [
        {
            "chosen": conv + [{"role": "assistant", "content": "hello"}],
            "rejected": conv + [{"role": "assistant", "content": "go"}],
        }
    ]
    (pair,) = to_examples(_ds(rows), "conversational", "pairwise", DataConfig())
    assert pair.prompt == conv and pair.completions == ["hello", "go"]
    rows = [{"prompt": conv, "completion": [{"role": "assistant", "content": "ok"}], "label": True}]
    (b,) = to_examples(_ds(rows), "conversational", "binary", DataConfig())
    assert (b.prompt, b.completions, b.target, b.feedback) == (conv, ["ok"], 1.0, "binary")


def test_views_a_format_cannot_give_are_one_line_errors():
    rows = [{"prompt": "p", "completion": "c", "label": 1}]
    with pytest.raises(DataError, match="gives the views binary, not 'pairwise'"):
        to_examples(_ds(rows), "binary", "pairwise", DataConfig(), "b.jsonl")
    with pytest.raises(DataError, match="no feedback"):
        to_examples(_ds([{"text": "t"}]), "text", "score", DataConfig())


def test_invalid_rows_raise_all_problems():
    rows = [{"prompt": "p", "response": "a", "score": 2.0}, {"prompt": "p", "response": "", "score": 0.5}]
    with pytest.raises(DataError) as err:
        to_examples(_ds(rows), "score", "score", DataConfig(), "s.jsonl")
    assert [str(p) for p in err.value.problems] == [
        "s.jsonl:1: field 'score': 2 is outside [0, 1]",
        "s.jsonl:2: field 'response': empty string",
    ]


@pytest.mark.parametrize(
    "loss,view",
    [("dpo", "pairwise"), ("kto", "binary"), ("una_binary", "binary"), ("una_score", "score"), ("mixed", "mixed")],
)
def test_auto_view_follows_the_loss(loss, view):
    assert resolve_view("auto", loss) == view
    assert resolve_view("score", loss) == "score"


def test_pair_count_per_prompt_matches_the_documented_rule():
    for n in range(1, 6):
        rows = [{"prompt": "p", "response": str(k), "score": k / 10} for k in range(n)]
        ex = to_examples(_ds(rows), "score", "pairwise", DataConfig())
        assert len(ex) == (n - 1 if n <= 2 else n)
        assert len({tuple(e.completions) for e in ex}) == len(ex)
        assert all(set(e.completions) <= {str(k) for k in range(n)} for e in ex)
        assert set(itertools.chain.from_iterable(e.completions for e in ex)) == (
            {str(k) for k in range(n)} if n > 1 else set()
        )


def test_prompts_of_any_format_in_first_seen_order():
    assert prompts_of(_scored(), "score") == ["p1", "p2", "p3", "p4"]
    msgs = [{"role": "user", "content": "hi"}]
    rows = [{"messages": msgs + [{"role": "assistant", "content": "yo"}]}, {"messages": msgs}]
    assert prompts_of(_ds(rows), "conversational") == [msgs]
    assert prompts_of(_ds([{"text": "a"}, {"text": "b"}, {"text": "a"}]), "text") == ["a", "b"]
