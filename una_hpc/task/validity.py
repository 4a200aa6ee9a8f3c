"""The task builder writes only rows that the data layer's validation accepts: a refused row is resampled, then
dropped, and both are counted.

    rows, counts = keep_valid(rows, resample, seed=42)     # counts: rejected, resampled, dropped, reasons
    .venv/bin/python -m pytest tests/unit/test_task_validity.py -q

A sampled response can be refused (a model that emits EOS first decodes to an empty string: `field 'response':
empty string`). The check is the helpsteer2 format's own row parser (una_hpc.data.formats), so the builder and
`una-hpc train` cannot disagree on what is valid.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from ..data.formats import get_format, make_context
from ..data.helpsteer import DEFAULT_ATTRIBUTE_WEIGHTS

Resample = Callable[[list[str], int], list[dict]]
"""(prompts, seed) -> one freshly sampled, scored row per prompt, in order."""


def row_problems(row: dict, fmt: str = "helpsteer2") -> list[str]:
    """What validation says about one row ("field 'response': empty string"); empty when it is valid."""
    _, issues = get_format(fmt).parse_row(row, make_context(DEFAULT_ATTRIBUTE_WEIGHTS))
    return [f"field {f!r}: {m}" if f else m for f, m in issues]


def keep_valid(rows: list[dict], resample: Resample, seed: int, tries: int = 3) -> tuple[list[dict], dict]:
    """`rows` with every refused row replaced by a valid resample of its prompt (up to `tries` rounds, each with
    its own seed) or, failing that, dropped; order is kept. Returns (rows, counts)."""
    bad = {i: row_problems(r) for i, r in enumerate(rows)}
    bad = {i: p for i, p in bad.items() if p}
    counts = {"rejected": len(bad), "resampled": 0, "dropped": 0, "reasons": dict(Counter(p[0] for p in bad.values()))}
    out = list(rows)
    for attempt in range(1, tries + 1):
        if not bad:
            break
        todo = sorted(bad)
        fresh = resample([out[i]["prompt"] for i in todo], seed * 1000 + attempt)  # never a seed already used
        for i, row in zip(todo, fresh):
            if not row_problems(row):
                out[i] = row
                counts["resampled"] += 1
                del bad[i]
    counts["dropped"] = len(bad)
    return [r for i, r in enumerate(out) if i not in bad], counts
