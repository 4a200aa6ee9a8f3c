"""`una-hpc data check FILE --format F`: print every problem as one line, then a summary; exit code 1 if any.

    $ una-hpc data check data.jsonl --format score
    data.jsonl:7: field 'score': 1.4 is outside [0, 1]
    data.jsonl: 1 problem in 10 rows (format score)
    $ una-hpc data check good.jsonl --format score
    good.jsonl: 10 rows valid (format score)
    $ una-hpc data check prefs.jsonl                     # --format auto: the TRL type, detected
    prefs.jsonl: 3 rows valid (format auto: conversational preference, implicit prompt, scores -> conversational;
    scores 1..10 mapped to [0, 1])

A missing or unreadable file is one line (no summary). Bad data never raises a traceback, and nothing is written.
With a tokenizer, prompt lengths are checked against data.max_prompt_length (and max_length) under
data.truncation, as training would.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from ..config import DataConfig
from .formats import FORMAT_NAMES
from .io import DataError, load_table
from .validate import validate_report


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def run_data_check(
    path: str,
    fmt: str,
    *,
    data_cfg: DataConfig | None = None,
    tokenizer: Any = None,
    max_length: int | None = None,
    out: TextIO | None = None,
) -> int:
    """Check one table; print problems and a summary to `out` (stdout); return 1 when there is any, else 0."""
    out = sys.stdout if out is None else out
    cfg = data_cfg or DataConfig()
    if fmt not in FORMAT_NAMES:
        print(f"unknown data format {fmt!r}; valid: {', '.join(FORMAT_NAMES)}", file=out)
        return 1
    try:
        ds = load_table(path, split=cfg.split)
        report = validate_report(
            ds,
            fmt,
            str(path),
            tokenizer=tokenizer,
            max_prompt_length=cfg.max_prompt_length if tokenizer is not None else None,
            max_length=max_length,
            truncation=cfg.truncation,
            attribute_weights=cfg.attribute_weights,
            score_range=cfg.score_range,
        )
    except DataError as e:
        for p in e.problems:
            print(p, file=out)
        return 1
    except ValueError as e:  # a configuration problem (weights, truncation policy), one line
        print(f"{path}: {str(e).splitlines()[0]}", file=out)
        return 1
    for p in report.problems:
        print(p, file=out)
    rows = _plural(report.rows, "row")
    if report.detected is not None:
        fmt = f"{fmt}: {report.detected.describe()}"
    if report.problems:
        print(f"{path}: {_plural(len(report.problems), 'problem')} in {rows} (format {fmt})", file=out)
        return 1
    note = ""
    if report.score_range is not None:
        note += f"; scores {report.score_range[0]:g}..{report.score_range[1]:g} mapped to [0, 1]"
    if report.detected is not None and not report.detected.trains:
        note += "; prompts only (online runs)"
    if report.over_length:
        note += f"; {_plural(report.over_length, 'prompt')} over the length limit (data.truncation={report.truncation})"
    print(f"{path}: {rows} valid (format {fmt}){note}", file=out)
    return 0
