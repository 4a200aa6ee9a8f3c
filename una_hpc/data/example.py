"""One training example before tokenization: what `convert` produces and `tokenize` consumes.

    .venv/bin/python -m pytest tests/unit/test_data_convert.py tests/unit/test_data_tokenize.py -q

Its own module so that tokenize needs neither convert nor validate (convert -> validate -> tokenize is the one
direction imports take inside una_hpc.data).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .formats import Prompt


@dataclass
class Example:
    example_id: int
    feedback: str
    """"pairwise", "binary" or "score"."""
    prompt: Prompt
    completions: list[str]
    """pairwise: [chosen, rejected]; binary / score: [completion]."""
    target: float
    """binary: label 0/1; score: score in [0, 1]; pairwise: nan."""
    rows: list[int] = field(default_factory=list)
    """The 1-based source rows it came from (for error messages)."""
