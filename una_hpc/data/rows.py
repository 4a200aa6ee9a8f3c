"""Typed field access on one row: each failed check records one (field, message) issue and returns None.

Shared by the row formats (una_hpc/data/formats.py); messages render bad values short (`show`) and name their JSON
kind (`kind_of`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Prompt = str | list[dict[str, str]]
FieldIssue = tuple[str, str]
"""(field, message) of one problem in one row."""
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class RowContext:
    attribute_weights: Mapping[str, float]
    """Weights combining 0-4 attributes into one score (see una_hpc.data.helpsteer.combine_attributes)."""
    lenient_numbers: bool = False
    """Accept numbers (and true/false labels) written as strings: CSV sources, where every cell is text."""
    score_range: tuple[float, float] | None = None
    """data.score_range: raw scores lie in it and map linearly to [0, 1]. None: `score` must be in [0, 1];
    score_chosen/score_rejected are read raw and normalized over the whole table (una_hpc/data/scores.py)."""


def show(value: Any) -> str:
    """A short rendering of a bad value for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    names = ((bool, "boolean"), (int, "number"), (float, "number"), (str, "string"), (list, "list"), (dict, "object"))
    return next((n for t, n in names if isinstance(value, t)), type(value).__name__)


class _Row:
    """Typed field access on one row; every failed check records one issue and returns None."""

    def __init__(self, row: Mapping[str, Any], ctx: RowContext):
        self.row, self.ctx, self.issues = row, ctx, []

    def bad(self, field: str, message: str) -> None:
        self.issues.append((field, message))

    def _present(self, field: str) -> Any:
        value = self.row.get(field)
        if value is None or (isinstance(value, float) and math.isnan(value)):  # CSV: an empty numeric cell
            self.bad(field, "missing value")
            return None
        return value

    def text(self, field: str) -> str | None:
        value = self._present(field)
        if value is None:
            return None
        if not isinstance(value, str):
            self.bad(field, f"expected a string, got {kind_of(value)} {show(value)}")
            return None
        if not value.strip():
            self.bad(field, "empty string")
            return None
        return value

    def _numeric(self, field: str, value: Any) -> float | None:
        if isinstance(value, str) and self.ctx.lenient_numbers:
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.bad(field, f"expected a number, got {kind_of(value)} {show(value)}")
            return None
        return float(value)

    def number(self, field: str, lo: float, hi: float) -> float | None:
        value = self._present(field)
        if value is None:
            return None
        x = self._numeric(field, value)
        if x is None:
            return None
        if math.isnan(x) or not lo <= x <= hi:
            self.bad(field, f"{show(value) if not isinstance(value, str) else value} is outside [{lo:g}, {hi:g}]")
            return None
        return x

    def score(self, field: str, default: tuple[float, float] | None) -> float | None:
        """A score inside data.score_range (else `default`), mapped from it to [0, 1]. With neither, any finite
        number, kept raw: the table pass (una_hpc/data/scores.py) reads the range from the data."""
        if self.ctx.score_range is None and default is not None:
            lo, hi = default
            x = self.number(field, lo, hi)
            return None if x is None else (x - lo) / (hi - lo)
        x = self.number(field, -math.inf, math.inf)
        if x is not None and not math.isfinite(x):
            self.bad(field, f"{x} is not a finite number")
            return None
        if x is None or self.ctx.score_range is None:
            return x
        lo, hi = self.ctx.score_range
        if not lo <= x <= hi:
            self.bad(field, f"{x:g} is outside data.score_range [{lo:g}, {hi:g}]")
            return None
        return (x - lo) / (hi - lo)

    def label(self, field: str) -> float | None:
        value = self._present(field)
        if value is None:
            return None
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and self.ctx.lenient_numbers and value.strip().lower() in ("true", "false"):
            return float(value.strip().lower() == "true")
        x = self._numeric(field, value)
        if x is None:
            return None
        if x not in (0.0, 1.0):
            self.bad(field, f"{show(value)} is not 0/1 or true/false")
            return None
        return x

    def messages(self, field: str) -> list[dict[str, str]] | None:
        value = self._present(field)
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            what = "an empty list" if isinstance(value, list) else f"{kind_of(value)} {show(value)}"
            self.bad(field, f"expected a non-empty list of {{role, content}} messages, got {what}")
            return None
        out = []
        for i, m in enumerate(value, start=1):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                self.bad(field, f'message {i}: expected {{"role": string, "content": string}}, got {show(m)}')
                return None
            if m["role"] not in ROLES:
                self.bad(field, f"message {i}: role {m['role']!r} is not one of {', '.join(ROLES)}")
                return None
            out.append({"role": m["role"], "content": m["content"]})
        return out

    def prompt(self, field: str = "prompt") -> Prompt | None:
        """A string prompt, or a message list (conversational)."""
        return self.messages(field) if isinstance(self.row.get(field), list) else self.text(field)

    def completion(self, field: str) -> tuple[list[dict[str, str]] | None, str | None]:
        """Conversational completion: (messages before the answer, answer text)."""
        msgs = self.messages(field)
        if msgs is None:
            return None, None
        last = msgs[-1]
        if last["role"] != "assistant":
            self.bad(field, f"message {len(msgs)}: the last message must have role 'assistant', got {last['role']!r}")
            return None, None
        if not last["content"].strip():
            self.bad(field, f"message {len(msgs)}: empty assistant content")
            return None, None
        return msgs[:-1], last["content"]
