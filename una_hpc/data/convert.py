"""Rows -> training examples, one feedback view at a time (pairwise, binary, score) or mixed.

    examples = to_examples(ds, "helpsteer2", "mixed", cfg.data)

Which views a format gives (record kind -> views):
    pairs (pairwise data)     pairwise; binary (chosen -> label 1, rejected -> label 0, exact duplicates once)
    scored pairs              pairwise; binary as pairs; score (chosen and rejected, each with its score in [0, 1]);
      (score_chosen/          mixed = every row as its pair AND its two scores (not the round-robin below)
       score_rejected)
    labels (binary data)      binary
    scores (score/helpsteer2) pairwise, binary (score >= data.binary_threshold -> 1), score (the score itself)

Pairs from scored data: responses to the same prompt are sorted by score, descending (ties keep row order), and
paired as (a) every adjacent pair in that order and (b) best vs worst when the prompt has 3+ responses; a pair whose
scores are equal is skipped. So a prompt with n distinct-scored responses gives n - 1 pairs (n = 2) or n pairs
(n >= 3), e.g. 4 pairs for HelpSteer2-like groups of 4.

"mixed" splits prompts deterministically: prompt groups in order of first appearance go round-robin to the views
the data supports (pairwise, binary, score in that order), so any run of consecutive prompts mixes the types.

Output order is deterministic: groups in order of first appearance, and within a group the view's order above
(pairs: adjacent pairs from the best down, then best-vs-worst; binary/score: row order). `example_id` is the
position in the returned list.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from datasets import Dataset

from ..config import DataConfig
from ..feedback import FEEDBACK_TYPES
from .detect import no_feedback_message
from .example import Example
from .formats import LABEL, PAIR, SCORE, SCORED_PAIR, TEXT, Prompt, Record, prompt_key
from .io import DataError
from .validate import parse_report, parse_table

VIEWS = ("pairwise", "binary", "score", "mixed")
TIE_EPS = 1e-12
"""Scores closer than this are a tie (no pair)."""


_Item = tuple[str, list[str], float, list[int]]  # feedback, completions, target, source rows


def _pairs_from_scores(group: list[tuple[Record, int]], cfg: DataConfig) -> list[_Item]:
    order = sorted(range(len(group)), key=lambda i: -group[i][0].value)  # stable: ties keep row order
    picks = [(order[k], order[k + 1]) for k in range(len(order) - 1)]
    if len(order) >= 3:
        picks.append((order[0], order[-1]))
    out = []
    for win, lose in picks:
        (rw, row_w), (rl, row_l) = group[win], group[lose]
        if rw.value - rl.value > TIE_EPS:
            out.append(("pairwise", [rw.completions[0], rl.completions[0]], math.nan, [row_w, row_l]))
    return out


def _binary_from_scores(group: list[tuple[Record, int]], cfg: DataConfig) -> list[_Item]:
    return [("binary", [r.completions[0]], float(r.value >= cfg.binary_threshold), [row]) for r, row in group]


def _score_from_scores(group: list[tuple[Record, int]], cfg: DataConfig) -> list[_Item]:
    return [("score", [r.completions[0]], float(r.value), [row]) for r, row in group]


def _pairs_from_pairs(group: list[tuple[Record, int]], cfg: DataConfig) -> list[_Item]:
    return [("pairwise", list(r.completions), math.nan, [row]) for r, row in group]


def _binary_from_pairs(group: list[tuple[Record, int]], cfg: DataConfig) -> list[_Item]:
    seen, out = set(), []
    for r, row in group:
        for completion, label in ((r.completions[0], 1.0), (r.completions[1], 0.0)):
            if (completion, label) not in seen:
                seen.add((completion, label))
                out.append(("binary", [completion], label, [row]))
    return out


def _score_from_scored_pairs(group: list[tuple[Record, int]], cfg: DataConfig) -> list[_Item]:
    return [("score", [c], float(v), [row]) for r, row in group for c, v in zip(r.completions, r.scores)]


def _pair_and_scores(group: list[tuple[Record, int]], cfg: DataConfig) -> list[_Item]:
    return [item for one in group for item in _pairs_from_pairs([one], cfg) + _score_from_scored_pairs([one], cfg)]


def _binary_from_labels(group: list[tuple[Record, int]], cfg: DataConfig) -> list[_Item]:
    return [("binary", [r.completions[0]], float(r.value), [row]) for r, row in group]


BUILDERS: dict[str, dict[str, Callable[[list[tuple[Record, int]], DataConfig], list[_Item]]]] = {
    PAIR: {"pairwise": _pairs_from_pairs, "binary": _binary_from_pairs},
    SCORED_PAIR: {"pairwise": _pairs_from_pairs, "binary": _binary_from_pairs, "score": _score_from_scored_pairs},
    LABEL: {"binary": _binary_from_labels},
    SCORE: {"pairwise": _pairs_from_scores, "binary": _binary_from_scores, "score": _score_from_scores},
    TEXT: {},
}
"""record kind -> view -> builder of one prompt group's examples."""
MIXED: dict[str, Callable[[list[tuple[Record, int]], DataConfig], list[_Item]]] = {SCORED_PAIR: _pair_and_scores}
"""record kind -> its own mixed view (kinds not named here: prompt groups round-robin over the views)."""


def views_for(kind: str) -> tuple[str, ...]:
    return tuple(v for v in FEEDBACK_TYPES if v in BUILDERS[kind])


def records_to_examples(
    records: list[tuple[Record, int]], view: str, data_cfg: DataConfig, source: str = "<data>", no_feedback: str = ""
) -> list[Example]:
    """(record, 1-based row) pairs -> examples for `view` (see the module docstring)."""
    if view not in VIEWS:
        raise ValueError(f"unknown data view {view!r}; valid: auto, {', '.join(VIEWS)}")
    if not records:
        raise DataError.one(source, "no rows")
    kinds = sorted({r.kind for r, _ in records})
    if len(kinds) > 1:
        raise DataError.one(source, f"rows of different kinds ({', '.join(kinds)}) in one table")
    available = views_for(kinds[0])
    if not available:
        raise DataError.one(
            source,
            no_feedback
            or "this data has no feedback (prompts/text only); use a pairwise, binary, "
            "score, helpsteer2 or conversational preference table for training",
        )
    if view != "mixed" and view not in available:
        raise DataError.one(source, f"data of this format gives the views {', '.join(available)}, not {view!r}")
    groups: dict[str, list[tuple[Record, int]]] = {}
    for rec, row in records:
        groups.setdefault(prompt_key(rec.prompt), []).append((rec, row))
    builders = BUILDERS[kinds[0]]
    examples: list[Example] = []
    for g, group in enumerate(groups.values()):
        if view == "mixed" and kinds[0] in MIXED:
            build = MIXED[kinds[0]]
        else:
            build = builders[available[g % len(available)] if view == "mixed" else view]
        for feedback, completions, target, rows in build(group, data_cfg):
            examples.append(Example(len(examples), feedback, group[0][0].prompt, completions, target, rows))
    return examples


def to_examples(ds: Dataset, fmt: str, view: str, data_cfg: DataConfig, source: str = "<data>") -> list[Example]:
    """Validated table -> examples. Raises DataError with every problem when a row is invalid."""
    report = parse_report(ds, fmt, source, data_cfg.attribute_weights, data_cfg.score_range)
    if report.problems:
        raise DataError(report.problems)
    why = no_feedback_message(report.detected, ds.column_names) if report.detected else ""
    return records_to_examples(report.records, view, data_cfg, source, why)


def prompts_of(
    ds: Dataset, fmt: str, source: str = "<data>", attribute_weights: dict[str, float] | None = None
) -> list[Prompt]:
    """Distinct prompts in order of first appearance, from any format or "auto" (online rollouts, eval prompt
    lists): every TRL type has prompts. A `text` row is a prompt; a `messages` row's prompt is the conversation
    before its final assistant message."""
    records, problems = parse_table(ds, fmt, source, attribute_weights)
    if problems:
        raise DataError(problems)
    unique: dict[str, Prompt] = {}
    for rec, _ in records:
        unique.setdefault(prompt_key(rec.prompt), rec.prompt)
    return list(unique.values())
