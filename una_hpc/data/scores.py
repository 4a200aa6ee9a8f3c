"""Scores of preference pairs (`score_chosen` / `score_rejected`, as UltraFeedback-binarized has) mapped to [0, 1].

    records, problems, bounds = normalize_pair_scores(records, cfg.score_range, "data.jsonl")

With data.score_range set, the rows were already checked against it and mapped (una_hpc/data/rows.py `_Row.score`).
Empty, the range is read from the data: [0, 1] when every score lies in it, else the data's own min and max
(UltraFeedback's 1-10 ratings); all scores equal is one line asking for data.score_range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from .formats import PAIR_SCORE_COLUMNS, SCORED_PAIR, Record
from .io import Problem


def normalize_pair_scores(
    records: list[tuple[Record, int]], score_range: Sequence[float] | None, source: str
) -> tuple[list[tuple[Record, int]], list[Problem], tuple[float, float] | None]:
    """(records with scores in [0, 1], problems, the raw range used; None when no record is a scored pair)."""
    values = [v for r, _ in records if r.kind == SCORED_PAIR for v in r.scores]
    if not values:
        return records, [], None
    if score_range:
        return records, [], (float(score_range[0]), float(score_range[1]))
    lo, hi = min(values), max(values)
    if lo >= 0.0 and hi <= 1.0:
        return records, [], (0.0, 1.0)
    if hi == lo:  # only reached for a constant outside [0, 1]
        message = f"every score is {lo:g}, so no range can be read from the data: set data.score_range=[low,high]"
        return [], [Problem(source, None, PAIR_SCORE_COLUMNS[0], message)], None
    scale = hi - lo
    out = [
        (replace(r, scores=tuple((v - lo) / scale for v in r.scores)) if r.kind == SCORED_PAIR else r, row)
        for r, row in records
    ]
    return out, [], (lo, hi)
