"""Validation before training: every problem of a table, one `Problem` (one line) each.

    problems = validate(ds, "score", "data.jsonl", tokenizer=tok, max_prompt_length=256, truncation="error")
    for p in problems: print(p)          # data.jsonl:7: field 'score': 1.4 is outside [0, 1]

fmt="auto" first detects the TRL dataset type (una_hpc/data/detect.py; ambiguous or unknown columns are one line).
Checks: the format's columns (a missing column is one whole-file problem, and rows are then not checked), then
every row through the format's parser (missing value, wrong type, empty string, score outside [0, 1], label not
0/1, attribute outside 0-4, bad message role, ...), and, with a tokenizer and max_prompt_length, prompt length:
over the limit is a problem only when truncation == "error"; with "drop" or "truncate_prompt" it is counted in
the report (`ValidationReport.over_length`) and handled by tokenization.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..config import DataConfig
from .detect import Detected, resolve_format
from .formats import Record, get_format, make_context
from .helpsteer import DEFAULT_ATTRIBUTE_WEIGHTS
from .io import DataError, Problem, load_table
from .scores import normalize_pair_scores
from .tokenize import TRUNCATION_POLICIES, encode_prompts, over_limit_message, prompt_limit


@dataclass
class ValidationReport:
    source: str
    fmt: str
    rows: int
    problems: list[Problem] = field(default_factory=list)
    over_length: int = 0
    """Valid rows whose prompt is over the limit (a problem only with truncation="error")."""
    truncation: str = "truncate_prompt"
    records: list[tuple[Record, int]] = field(default_factory=list)
    """The valid rows, parsed, with their 1-based row numbers."""
    detected: Detected | None = None
    """What format auto detected (None when a format was named)."""
    score_range: tuple[float, float] | None = None
    """Raw range of score_chosen/score_rejected mapped to [0, 1] (None: no scored pairs)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def _lenient_numbers(source: str) -> bool:
    """CSV cells are text: a numeric column that also holds one non-number loads as strings, so numbers written
    as strings are accepted there (and only there)."""
    return Path(source).suffix.lower() == ".csv"


def parse_table(
    ds: Dataset,
    fmt: str,
    source: str,
    attribute_weights: Mapping[str, float] | None = None,
    score_range: Sequence[float] | None = None,
) -> tuple[list[tuple[Record, int]], list[Problem]]:
    """Parse every row: (valid records with 1-based rows, problems). Column problems stop row checks."""
    report = parse_report(ds, fmt, source, attribute_weights, score_range)
    return report.records, report.problems


def parse_report(
    ds: Dataset,
    fmt: str,
    source: str,
    attribute_weights: Mapping[str, float] | None = None,
    score_range: Sequence[float] | None = None,
) -> ValidationReport:
    """`parse_table` plus what auto detected and the score range used. fmt="auto" detects the TRL type first
    (una_hpc/data/detect.py; ambiguous or unknown columns raise DataError, one line)."""
    name, detected = resolve_format(ds, fmt, source)
    spec = get_format(name)
    weights = DEFAULT_ATTRIBUTE_WEIGHTS if attribute_weights is None else attribute_weights
    ctx = make_context(weights, _lenient_numbers(source), score_range)
    report = ValidationReport(source, fmt, len(ds), detected=detected)
    column_issues = spec.check_columns(list(ds.column_names), ctx)
    if column_issues:
        report.problems = [Problem(source, None, f, m) for f, m in column_issues]
        return report
    if len(ds) == 0:
        report.problems = [Problem(source, None, None, "no rows")]
        return report
    records, problems = [], []
    for i, row in enumerate(ds.to_list(), start=1):
        record, issues = spec.parse_row(row, ctx)
        problems.extend(Problem(source, i, f, m) for f, m in issues)
        if record is not None:
            records.append((record, i))
    records, more, report.score_range = normalize_pair_scores(records, score_range, source)
    report.records, report.problems = records, problems + more
    return report


def validate_report(
    ds: Dataset,
    fmt: str,
    source: str,
    *,
    tokenizer: Any = None,
    max_prompt_length: int | None = None,
    max_length: int | None = None,
    truncation: str = "truncate_prompt",
    attribute_weights: Mapping[str, float] | None = None,
    score_range: Sequence[float] | None = None,
) -> ValidationReport:
    """Everything `validate` finds, plus counts and the parsed rows."""
    if truncation not in TRUNCATION_POLICIES:
        raise ValueError(f"truncation must be one of {', '.join(TRUNCATION_POLICIES)}, got {truncation!r}")
    report = parse_report(ds, fmt, source, attribute_weights, score_range)
    report.truncation = truncation
    records = report.records
    if tokenizer is not None and max_prompt_length is not None and records:
        limit = prompt_limit(max_prompt_length, max_length)
        try:
            encoded = encode_prompts(tokenizer, [r.prompt for r, _ in records], source, [row for _, row in records])
        except DataError as e:
            report.problems.extend(e.problems)
            return report
        lengths = [len(ids) for ids in encoded]
        for (_, row), n in zip(records, lengths):
            if n > limit:
                report.over_length += 1
                if truncation == "error":
                    report.problems.append(Problem(source, row, "prompt", over_limit_message(n, limit, truncation)))
        report.problems.sort(key=lambda p: p.row or 0)
    return report


def validate(
    ds: Dataset,
    fmt: str,
    source: str,
    *,
    tokenizer: Any = None,
    max_prompt_length: int | None = None,
    truncation: str = "truncate_prompt",
    max_length: int | None = None,
    attribute_weights: Mapping[str, float] | None = None,
    score_range: Sequence[float] | None = None,
) -> list[Problem]:
    """Every problem of the table, in row order (whole-file problems first)."""
    return validate_report(
        ds,
        fmt,
        source,
        tokenizer=tokenizer,
        max_prompt_length=max_prompt_length,
        max_length=max_length,
        truncation=truncation,
        attribute_weights=attribute_weights,
        score_range=score_range,
    ).problems


def load_validated(data_cfg: DataConfig, *, tokenizer: Any = None, max_length: int | None = None) -> Dataset:
    """The trainer's entry: read data_cfg.path, validate the whole table, raise DataError with every problem."""
    path = os.fspath(data_cfg.path)
    ds = load_table(path, split=data_cfg.split)
    report = validate_report(
        ds,
        data_cfg.format,
        path,
        tokenizer=tokenizer,
        max_prompt_length=data_cfg.max_prompt_length if tokenizer is not None else None,
        max_length=max_length,
        truncation=data_cfg.truncation,
        attribute_weights=data_cfg.attribute_weights,
        score_range=data_cfg.score_range,
    )
    if report.problems:
        raise DataError(report.problems)
    return ds
