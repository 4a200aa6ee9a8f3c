"""Row formats (TRL column names) and their per-row parsers: one registry, no branching on format names.

| format         | columns                                                                                   |
|----------------|-------------------------------------------------------------------------------------------|
| pairwise       | `prompt`, `chosen`, `rejected` (strings)                                                  |
| binary         | `prompt`, `completion`, `label` (0/1 or true/false)                                       |
| score          | `prompt`, `response`, `score` in [0, 1]; or, instead of `score`, the attribute columns    |
|                | named in data.attribute_weights (0-4 each, combined with those weights)                   |
| helpsteer2     | `prompt`, `response`, `helpfulness`, `correctness`, `coherence`, `complexity`,            |
|                | `verbosity` (0-4 each; combined with data.attribute_weights)                              |
| conversational | TRL conversational: `messages` (list of {role, content}); or `prompt`/`chosen`/`rejected` |
|                | with `chosen`/`rejected` message lists; or `prompt`/`completion`/`label` likewise          |
| text           | `text`                                                                                    |

Conversational completions are message lists whose last message is the assistant's answer (the completion).
When such a list holds more than that one message, the messages before it are the prompt (TRL's implicit prompt,
as in UltraFeedback-binarized) and must agree between `chosen` and `rejected`; otherwise the `prompt` column (a
string, read as one user message, or a message list) is the prompt. A `messages` row ending with an assistant
message is (prompt = the messages before it, completion = it); one ending otherwise is all prompt. A `prompt`-only
conversational table is a prompt list (online rollouts).

Each format parses a row into a `Record` (prompt, completions, feedback value) or a list of (field, message) issues.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .helpsteer import ATTRIBUTE_MAX, combine_attributes

Prompt = str | list[dict[str, str]]
FieldIssue = tuple[str, str]
"""(field, message) of one problem in one row."""

PAIR, LABEL, SCORE, TEXT = "pair", "label", "score", "text"
"""Record kinds: a preference pair, a binary label, a score in [0, 1], a prompt/text without feedback."""
ROLES = ("system", "user", "assistant", "tool")
HELPSTEER_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


@dataclass(frozen=True)
class Record:
    """One valid row, normalized."""

    kind: str
    """PAIR, LABEL, SCORE or TEXT."""
    prompt: Prompt
    completions: tuple[str, ...]
    """PAIR: (chosen, rejected); LABEL/SCORE: (completion,); TEXT: () or (final assistant turn,)."""
    value: float
    """LABEL: 0.0/1.0; SCORE: score in [0, 1]; nan otherwise."""


@dataclass(frozen=True)
class RowContext:
    attribute_weights: Mapping[str, float]
    """Weights combining 0-4 attributes into one score (see una_hpc.data.helpsteer.combine_attributes)."""
    lenient_numbers: bool = False
    """Accept numbers (and true/false labels) written as strings: CSV sources, where every cell is text."""


@dataclass(frozen=True)
class FormatSpec:
    name: str
    columns: str
    """Human-readable column requirement, used in missing-column messages."""
    check_columns: Callable[[Sequence[str], RowContext], list[FieldIssue]]
    parse_row: Callable[[Mapping[str, Any], RowContext], tuple[Record | None, list[FieldIssue]]]


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


def _missing(columns: Sequence[str], needed: Sequence[str], spec: str) -> list[FieldIssue]:
    return [(c, f"missing column (format {spec})") for c in needed if c not in columns]


def _columns(fmt: str, *needed: str) -> Callable[[Sequence[str], RowContext], list[FieldIssue]]:
    def check(columns: Sequence[str], ctx: RowContext) -> list[FieldIssue]:
        return _missing(columns, needed, f"{fmt} needs " + ", ".join(needed))

    return check


def _done(r: _Row, record: Callable[[], Record]) -> tuple[Record | None, list[FieldIssue]]:
    return (None, r.issues) if r.issues else (record(), [])


def _parse_pairwise(row: Mapping[str, Any], ctx: RowContext) -> tuple[Record | None, list[FieldIssue]]:
    r = _Row(row, ctx)
    prompt, chosen, rejected = r.text("prompt"), r.text("chosen"), r.text("rejected")
    return _done(r, lambda: Record(PAIR, prompt, (chosen, rejected), math.nan))


def _parse_binary(row: Mapping[str, Any], ctx: RowContext) -> tuple[Record | None, list[FieldIssue]]:
    r = _Row(row, ctx)
    prompt, completion, label = r.text("prompt"), r.text("completion"), r.label("label")
    return _done(r, lambda: Record(LABEL, prompt, (completion,), label))


def _combined(r: _Row, names: Sequence[str]) -> float | None:
    """Range-check the 0-4 attribute columns `names`, then combine the weighted ones into one score in [0, 1]."""
    values = {n: r.number(n, 0.0, ATTRIBUTE_MAX) for n in names}
    if any(v is None for v in values.values()):
        return None
    return combine_attributes(values, r.ctx.attribute_weights)


def _check_score_columns(columns: Sequence[str], ctx: RowContext) -> list[FieldIssue]:
    if "score" in columns or not any(n in columns for n in ctx.attribute_weights):
        spec = f"score needs prompt, response and score (or the attribute columns {', '.join(ctx.attribute_weights)})"
        return _missing(columns, ("prompt", "response", "score"), spec)
    spec = "score needs prompt, response and the attribute columns " + ", ".join(ctx.attribute_weights)
    return _missing(columns, ("prompt", "response", *ctx.attribute_weights), spec)


def _parse_score(row: Mapping[str, Any], ctx: RowContext) -> tuple[Record | None, list[FieldIssue]]:
    r = _Row(row, ctx)
    prompt, response = r.text("prompt"), r.text("response")
    score = r.number("score", 0.0, 1.0) if "score" in row else _combined(r, list(ctx.attribute_weights))
    return _done(r, lambda: Record(SCORE, prompt, (response,), score))


def _check_helpsteer_columns(columns: Sequence[str], ctx: RowContext) -> list[FieldIssue]:
    issues = _missing(
        columns,
        ("prompt", "response", *HELPSTEER_ATTRIBUTES),
        "helpsteer2 needs prompt, response, " + ", ".join(HELPSTEER_ATTRIBUTES),
    )
    unknown = [n for n in ctx.attribute_weights if n not in HELPSTEER_ATTRIBUTES]
    return issues + [(n, f"data.attribute_weights names {n!r}, not a HelpSteer2 attribute") for n in unknown]


def _parse_helpsteer(row: Mapping[str, Any], ctx: RowContext) -> tuple[Record | None, list[FieldIssue]]:
    r = _Row(row, ctx)
    prompt, response = r.text("prompt"), r.text("response")
    score = _combined(r, HELPSTEER_ATTRIBUTES)
    return _done(r, lambda: Record(SCORE, prompt, (response,), score))


def _parse_text(row: Mapping[str, Any], ctx: RowContext) -> tuple[Record | None, list[FieldIssue]]:
    r = _Row(row, ctx)
    text = r.text("text")
    return _done(r, lambda: Record(TEXT, text, (), math.nan))


# --- conversational: the variant is chosen by which columns the table has -------------------------------------
def _conv_prompt(r: _Row, implicit: list[dict[str, str]] | None, field: str) -> Prompt | None:
    """The implicit prompt when the completion carries one, else the `prompt` column."""
    if implicit:
        return implicit
    if "prompt" not in r.row:
        r.bad("prompt", f"missing: no prompt column and {field!r} holds only the assistant message")
        return None
    return r.prompt("prompt")


def _parse_conv_preference(r: _Row) -> Record | None:
    head_c, chosen = r.completion("chosen")
    head_r, rejected = r.completion("rejected")
    if chosen is None or rejected is None:
        return None
    if (head_c or head_r) and head_c != head_r:
        r.bad("rejected", "the conversation before the last message differs from 'chosen'")
        return None
    prompt = _conv_prompt(r, head_c, "chosen")
    return None if prompt is None else Record(PAIR, prompt, (chosen, rejected), math.nan)


def _parse_conv_unpaired(r: _Row) -> Record | None:
    head, completion = r.completion("completion")
    label = r.label("label")
    if completion is None:
        return None
    prompt = _conv_prompt(r, head, "completion")
    return None if prompt is None or label is None else Record(LABEL, prompt, (completion,), label)


def _parse_conv_messages(r: _Row) -> Record | None:
    msgs = r.messages("messages")
    if msgs is None:
        return None
    if msgs[-1]["role"] != "assistant":  # the conversation awaits the assistant: all of it is the prompt
        return Record(TEXT, msgs, (), math.nan)
    if len(msgs) == 1:
        r.bad("messages", "message 1: only an assistant message; no prompt before it")
        return None
    return Record(TEXT, msgs[:-1], (msgs[-1]["content"],), math.nan)


def _parse_conv_prompts(r: _Row) -> Record | None:
    prompt = r.prompt("prompt")
    return None if prompt is None else Record(TEXT, prompt, (), math.nan)


CONVERSATIONAL_VARIANTS: tuple[tuple[tuple[str, ...], Callable[[_Row], Record | None]], ...] = (
    (("chosen", "rejected"), _parse_conv_preference),
    (("completion", "label"), _parse_conv_unpaired),
    (("messages",), _parse_conv_messages),
    (("prompt",), _parse_conv_prompts),
)
"""(columns that select the variant, parser); the first whose columns are all present wins."""


def _conv_variant(columns: Sequence[str]) -> Callable[[_Row], Record | None] | None:
    return next((parse for cols, parse in CONVERSATIONAL_VARIANTS if all(c in columns for c in cols)), None)


def _check_conv_columns(columns: Sequence[str], ctx: RowContext) -> list[FieldIssue]:
    if _conv_variant(columns) is not None:
        return []
    return [
        (
            "messages",
            "missing column (format conversational needs messages, or prompt + chosen + rejected, "
            "or prompt + completion + label)",
        )
    ]


def _parse_conversational(row: Mapping[str, Any], ctx: RowContext) -> tuple[Record | None, list[FieldIssue]]:
    r = _Row(row, ctx)
    parse = _conv_variant(list(row))
    if parse is None:
        return None, _check_conv_columns(list(row), ctx)
    record = parse(r)
    return (None, r.issues) if r.issues or record is None else (record, [])


FORMATS: dict[str, FormatSpec] = {
    "pairwise": FormatSpec(
        "pairwise", "prompt, chosen, rejected", _columns("pairwise", "prompt", "chosen", "rejected"), _parse_pairwise
    ),
    "binary": FormatSpec(
        "binary", "prompt, completion, label", _columns("binary", "prompt", "completion", "label"), _parse_binary
    ),
    "score": FormatSpec("score", "prompt, response, score (or attribute columns)", _check_score_columns, _parse_score),
    "helpsteer2": FormatSpec(
        "helpsteer2", "prompt, response, " + ", ".join(HELPSTEER_ATTRIBUTES), _check_helpsteer_columns, _parse_helpsteer
    ),
    "conversational": FormatSpec(
        "conversational",
        "messages | prompt, chosen, rejected | prompt, completion, label",
        _check_conv_columns,
        _parse_conversational,
    ),
    "text": FormatSpec("text", "text", _columns("text", "text"), _parse_text),
}


def make_context(attribute_weights: Mapping[str, float], lenient_numbers: bool = False) -> RowContext:
    """Checked RowContext: weights must be non-negative with a positive sum (one-line ValueError otherwise)."""
    w = dict(attribute_weights)
    if not w or any(v < 0 for v in w.values()) or sum(w.values()) <= 0:
        raise ValueError(f"data.attribute_weights must be non-negative with a positive sum, got {w}")
    return RowContext(w, lenient_numbers)


def get_format(name: str) -> FormatSpec:
    if name not in FORMATS:
        raise ValueError(f"unknown data format {name!r}; valid: {', '.join(FORMATS)}")
    return FORMATS[name]


def prompt_key(prompt: Prompt) -> str:
    """A hashable, canonical key for grouping rows by prompt (strings and message lists never collide)."""
    return "s:" + prompt if isinstance(prompt, str) else "m:" + json.dumps(prompt, sort_keys=True, ensure_ascii=False)
