"""Row formats (TRL column names) and their per-row parsers: one registry, no branching on format names.

| format         | columns                                                                                   |
|----------------|-------------------------------------------------------------------------------------------|
| pairwise       | `prompt`, `chosen`, `rejected` (strings); without `prompt` the common beginning of chosen |
|                | and rejected is the prompt (TRL's implicit prompt)                                        |
| binary         | `prompt`, `completion`, `label` (0/1 or true/false)                                       |
| score          | `prompt`, `response`, `score` in [0, 1] (or data.score_range); or, instead of `score`, the|
|                | attribute columns                                                                         |
|                | named in data.attribute_weights (0-4 each, combined with those weights)                   |
| helpsteer2     | `prompt`, `response`, `helpfulness`, `correctness`, `coherence`, `complexity`,            |
|                | `verbosity` (0-4 each; combined with data.attribute_weights)                              |
| conversational | TRL conversational: `messages` (list of {role, content}); or `prompt`/`chosen`/`rejected` |
|                | with `chosen`/`rejected` message lists; or `prompt`/`completion`/`label` likewise          |
| text           | `text`                                                                                    |
| prompt         | `prompt` (string or message list); other columns are not read: prompts for online runs     |

Preference rows (pairwise or conversational) with `score_chosen` and `score_rejected` are scored pairs
(SCORED_PAIR): the scores are mapped to [0, 1] by data.score_range or by the range read from the data.

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
from .rows import ROLES, FieldIssue, Prompt, RowContext, _Row, kind_of, show

__all__ = ["ROLES", "FieldIssue", "Prompt", "RowContext", "kind_of", "show"]  # re-exported: they lived here first

PAIR, LABEL, SCORE, TEXT = "pair", "label", "score", "text"
"""Record kinds: a preference pair, a binary label, a score in [0, 1], a prompt/text without feedback."""
SCORED_PAIR = "scored_pair"
"""A preference pair that also carries a score per completion (score_chosen / score_rejected)."""
PAIR_SCORE_COLUMNS = ("score_chosen", "score_rejected")
HELPSTEER_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


@dataclass(frozen=True)
class Record:
    """One valid row, normalized."""

    kind: str
    """PAIR, SCORED_PAIR, LABEL, SCORE or TEXT."""
    prompt: Prompt
    completions: tuple[str, ...]
    """PAIR: (chosen, rejected); LABEL/SCORE: (completion,); TEXT: () or (final assistant turn,)."""
    value: float
    """LABEL: 0.0/1.0; SCORE: score in [0, 1]; nan otherwise."""
    scores: tuple[float, ...] = ()
    """SCORED_PAIR: (score_chosen, score_rejected) in [0, 1] (raw until the table pass when data.score_range is
    empty, see una_hpc/data/scores.py); () otherwise."""


@dataclass(frozen=True)
class FormatSpec:
    name: str
    columns: str
    """Human-readable column requirement, used in missing-column messages."""
    check_columns: Callable[[Sequence[str], RowContext], list[FieldIssue]]
    parse_row: Callable[[Mapping[str, Any], RowContext], tuple[Record | None, list[FieldIssue]]]


def _missing(columns: Sequence[str], needed: Sequence[str], spec: str) -> list[FieldIssue]:
    return [(c, f"missing column (format {spec})") for c in needed if c not in columns]


def _columns(fmt: str, *needed: str) -> Callable[[Sequence[str], RowContext], list[FieldIssue]]:
    def check(columns: Sequence[str], ctx: RowContext) -> list[FieldIssue]:
        return _missing(columns, needed, f"{fmt} needs " + ", ".join(needed))

    return check


def _done(r: _Row, record: Callable[[], Record]) -> tuple[Record | None, list[FieldIssue]]:
    return (None, r.issues) if r.issues else (record(), [])


def _pair_record(r: _Row, prompt: Prompt, chosen: str, rejected: str) -> Record:
    """PAIR, or SCORED_PAIR when the table has score_chosen / score_rejected (issues recorded on `r`)."""
    if not any(c in r.row for c in PAIR_SCORE_COLUMNS):
        return Record(PAIR, prompt, (chosen, rejected), math.nan)
    scores = tuple(r.score(c, None) for c in PAIR_SCORE_COLUMNS)
    return Record(SCORED_PAIR, prompt, (chosen, rejected), math.nan, scores)


def _implicit_prompt(r: _Row, chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """TRL's implicit prompt of standard preference rows: the common beginning of chosen and rejected (a space
    before the first difference goes to the completions, as TRL's extract_prompt does)."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n and n < len(chosen) and chosen[n - 1] == " ":
        n -= 1
    if not chosen[:n].strip():
        r.bad("prompt", "no prompt column, and 'chosen' and 'rejected' share no beginning to take as the prompt")
        return None
    for field, text in (("chosen", chosen), ("rejected", rejected)):
        if not text[n:].strip():
            r.bad(field, "nothing is left after the prompt (the beginning it shares with the other completion)")
            return None
    return chosen[:n], chosen[n:], rejected[n:]


def _score_pair_columns(columns: Sequence[str]) -> list[FieldIssue]:
    """score_chosen and score_rejected come together."""
    if not any(c in columns for c in PAIR_SCORE_COLUMNS):
        return []
    return _missing(columns, PAIR_SCORE_COLUMNS, "scored preference needs both " + " and ".join(PAIR_SCORE_COLUMNS))


def _check_pairwise_columns(columns: Sequence[str], ctx: RowContext) -> list[FieldIssue]:
    # prompt may be absent: TRL's implicit prompt (see _implicit_prompt)
    missing = _missing(columns, ("chosen", "rejected"), "pairwise needs prompt, chosen, rejected")
    return missing + _score_pair_columns(columns)


def _parse_pairwise(row: Mapping[str, Any], ctx: RowContext) -> tuple[Record | None, list[FieldIssue]]:
    r = _Row(row, ctx)
    prompt = r.text("prompt") if "prompt" in row else None
    chosen, rejected = r.text("chosen"), r.text("rejected")
    if "prompt" not in row and chosen is not None and rejected is not None:
        prompt, chosen, rejected = _implicit_prompt(r, chosen, rejected) or (None, None, None)
    record = None if r.issues else _pair_record(r, prompt, chosen, rejected)
    return (None, r.issues) if r.issues else (record, [])


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
    prompt, response = r.prompt("prompt"), r.text("response")
    score = r.score("score", (0.0, 1.0)) if "score" in row else _combined(r, list(ctx.attribute_weights))
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


def _parse_prompt(row: Mapping[str, Any], ctx: RowContext) -> tuple[Record | None, list[FieldIssue]]:
    r = _Row(row, ctx)
    prompt = r.prompt("prompt")  # other columns (completion, ...) are not read: prompts for online runs
    return _done(r, lambda: Record(TEXT, prompt, (), math.nan))


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
    return None if prompt is None else _pair_record(r, prompt, chosen, rejected)


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
        return _score_pair_columns(columns) if _conv_variant(columns) is _parse_conv_preference else []
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
    "pairwise": FormatSpec("pairwise", "prompt, chosen, rejected", _check_pairwise_columns, _parse_pairwise),
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
    "prompt": FormatSpec("prompt", "prompt", _columns("prompt", "prompt"), _parse_prompt),
}
FORMAT_NAMES = ("auto", *FORMATS)
"""What data.format and `data check --format` accept: auto (detected, una_hpc/data/detect.py) or a format."""


def make_context(
    attribute_weights: Mapping[str, float], lenient_numbers: bool = False, score_range: Sequence[float] | None = None
) -> RowContext:
    """Checked RowContext: weights must be non-negative with a positive sum, score_range empty or [low < high]
    (one-line ValueError otherwise)."""
    w = dict(attribute_weights)
    if not w or any(v < 0 for v in w.values()) or sum(w.values()) <= 0:
        raise ValueError(f"data.attribute_weights must be non-negative with a positive sum, got {w}")
    bounds = None
    if score_range:
        if len(score_range) != 2 or not all(math.isfinite(v) for v in score_range) or score_range[0] >= score_range[1]:
            raise ValueError(f"data.score_range must be empty or [low, high] with low < high, got {list(score_range)}")
        bounds = (float(score_range[0]), float(score_range[1]))
    return RowContext(w, lenient_numbers, bounds)


def get_format(name: str) -> FormatSpec:
    if name not in FORMATS:
        raise ValueError(f"unknown data format {name!r}; valid: {', '.join(FORMAT_NAMES)}")
    return FORMATS[name]


def prompt_key(prompt: Prompt) -> str:
    """A hashable, canonical key for grouping rows by prompt (strings and message lists never collide)."""
    return "s:" + prompt if isinstance(prompt, str) else "m:" + json.dumps(prompt, sort_keys=True, ensure_ascii=False)
