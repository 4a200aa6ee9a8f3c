"""`data.format: auto`: the TRL dataset type of a table, detected from its columns and value shapes, as TRL does.

    detected = detect_columns(ds, "data.jsonl")  # DataError (one line) when ambiguous or unknown
    detected.fmt, detected.describe()           # "pairwise", "standard preference, implicit prompt -> pairwise"

    .venv/bin/python -m pytest tests/unit/test_data_auto.py -x -q

| TRL type               | columns (extra columns are not read)                       | standard  | conversational |
|------------------------|------------------------------------------------------------|-----------|----------------|
| preference             | [prompt], chosen, rejected [, score_chosen, score_rejected] | pairwise  | conversational |
| unpaired preference    | [prompt], completion, label                                | binary    | conversational |
| scored                 | prompt, response, score or HelpSteer2 attributes           | score, helpsteer2 | score  |
| prompt-only            | prompt                                                     | prompt    | prompt         |
| prompt-completion      | prompt, completion (no label): prompts for online runs     | prompt    | prompt         |
| language modeling      | text / messages: prompts for online runs                   | text      | conversational |

The shape is that of the first non-null value of the type's key column: a string is standard, a list of messages
conversational (a row of the other shape is then a row error). Feedback types (preference, unpaired, scored) win
over the rest, so UltraFeedback-binarized's extra `messages` column does not make it ambiguous; two feedback types
at once, or `text` beside `messages`, is ambiguous. Columns that start a feedback type without completing it
(`chosen` alone, `label` without `completion`, ...) are an error naming what is missing, never prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from .formats import HELPSTEER_ATTRIBUTES, PAIR_SCORE_COLUMNS
from .io import DataError

SAMPLE_ROWS = 100
"""Rows looked at for a column's shape (its first non-null value among them)."""


@dataclass(frozen=True)
class Detected:
    trl_type: str
    """preference, unpaired preference, scored, prompt-only, prompt-completion or language modeling."""
    shape: str
    """standard (strings) or conversational (message lists)."""
    fmt: str
    """The una-hpc format that parses it."""
    notes: tuple[str, ...] = ()
    """implicit prompt, scores, HelpSteer2 attributes."""
    trains: bool = True
    """False: no feedback to train on offline (prompts for online runs only)."""

    def describe(self) -> str:
        extra = "".join(f", {n}" for n in self.notes)
        return f"{self.shape} {self.trl_type}{extra} -> {self.fmt}"


# type -> (its columns as users read them, the columns that must all be present)
FEEDBACK_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "preference": ("[prompt], chosen, rejected", ("chosen", "rejected")),
    "unpaired preference": ("[prompt], completion, label", ("completion", "label")),
    "scored": ("prompt, response, score (or HelpSteer2 attributes)", ("prompt", "response")),
}
STARTERS = ("chosen", "rejected", "label", "response", "score", *PAIR_SCORE_COLUMNS)
"""Columns that only a feedback type has: present without a complete type, the table is an error."""


def _fits(columns: set[str]) -> list[str]:
    out = [t for t, (_, need) in FEEDBACK_TYPES.items() if t != "scored" and set(need) <= columns]
    if {"prompt", "response"} <= columns and ("score" in columns or columns & set(HELPSTEER_ATTRIBUTES)):
        out.append("scored")
    return out


def _shape(ds: Dataset, column: str) -> str:
    values = ds.select(range(min(len(ds), SAMPLE_ROWS)))[column]
    first = next((v for v in values if v is not None), None)
    return "conversational" if isinstance(first, list) else "standard"


def _nearest(columns: set[str]) -> str:
    """The feedback types these columns start, each with what it misses; else every type's columns."""
    near = []
    for t, (_, need) in FEEDBACK_TYPES.items():
        need = need + (("score",) if t == "scored" and not columns & set(HELPSTEER_ATTRIBUTES) else ())
        missing = [c for c in need if c not in columns]
        if missing and columns & set(need) & set(STARTERS):
            near.append(f"{t} (missing {', '.join(missing)})")
    if near:
        return "nearest: " + "; ".join(near)
    kinds = [f"{t} ({spec})" for t, (spec, _) in FEEDBACK_TYPES.items()]
    return "types: " + "; ".join([*kinds, "prompt-only (prompt)", "language modeling (text or messages)"])


def _unknown(source: str, columns: Sequence[str], why: str, hint: str = "set data.format (or --format)") -> DataError:
    return DataError.one(source, f"columns {', '.join(columns)} {why}; {hint}")


def detect_columns(ds: Dataset, source: str) -> Detected:
    """The table's TRL type (see the module docstring); DataError with one line when none or several fit."""
    names = list(ds.column_names)
    cols = set(names)
    fits = _fits(cols)
    if {"prompt", "completions", "labels"} <= cols and not fits:
        raise _unknown(
            source,
            names,
            "are TRL stepwise supervision, which UNA has no loss for",
            "data.format=prompt uses its prompts (online runs)",
        )
    if len(fits) > 1:
        raise _unknown(source, names, f"are ambiguous: they fit {' and '.join(fits)}")
    if fits:
        return _feedback_type(ds, fits[0], cols)
    if cols & set(STARTERS):
        raise _unknown(source, names, f"fit no TRL dataset type ({_nearest(cols)})")
    if "prompt" in cols:
        kind = "prompt-completion" if "completion" in cols else "prompt-only"
        return Detected(kind, _shape(ds, "prompt"), "prompt", trains=False)
    if {"text", "messages"} <= cols:
        raise _unknown(source, names, "are ambiguous: they fit standard and conversational language modeling")
    if "messages" in cols:
        return Detected("language modeling", "conversational", "conversational", trains=False)
    if "text" in cols:
        return Detected("language modeling", "standard", "text", trains=False)
    raise _unknown(source, names, f"fit no TRL dataset type ({_nearest(cols)})")


def _feedback_type(ds: Dataset, kind: str, cols: set[str]) -> Detected:
    if kind == "preference":
        shape = _shape(ds, "chosen")
        notes = ("implicit prompt",) if "prompt" not in cols else ()
        notes += ("scores",) if cols & set(PAIR_SCORE_COLUMNS) else ()
        return Detected(kind, shape, "conversational" if shape == "conversational" else "pairwise", notes)
    if kind == "unpaired preference":
        shape = _shape(ds, "completion")
        notes = ("implicit prompt",) if "prompt" not in cols else ()
        return Detected(kind, shape, "conversational" if shape == "conversational" else "binary", notes)
    shape = _shape(ds, "prompt")
    if "score" not in cols and set(HELPSTEER_ATTRIBUTES) <= cols:
        return Detected(kind, shape, "helpsteer2", ("HelpSteer2 attributes",))
    return Detected(kind, shape, "score", () if "score" in cols else ("attributes",))


def resolve_format(ds: Dataset, fmt: str, source: str) -> tuple[str, Detected | None]:
    """(the format to parse with, what auto detected or None when the format was named)."""
    if fmt != "auto":
        return fmt, None
    detected = detect_columns(ds, source)
    return detected.fmt, detected


def no_feedback_message(detected: Detected | None, columns: Sequence[Any]) -> str:
    """Why a table cannot train offline, naming its type when auto detected it."""
    what = f"{detected.shape} {detected.trl_type} data" if detected else "this data"
    return (
        f"{what} (columns {', '.join(map(str, columns))}) has no feedback to train on offline: it gives prompts only "
        "(online runs: loss.name=una_online or ppo); for offline training use preference (chosen/rejected), "
        "unpaired preference (completion/label) or scored (response/score) rows"
    )
