"""HelpSteer2-style attributes (0-4) -> one score in [0, 1]: how the data layer reads scored rows.

    .venv/bin/python -m pytest tests/unit/test_losses.py tests/unit/test_data_convert.py -q

Each attribute is mapped to [0, 1] by /4 and combined with weights (default data.attribute_weights: helpfulness
0.65, correctness 0.8, coherence 0.45, as in the UNA paper); dividing by the weight sum renormalizes the result to
[0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping

from ..config import DataConfig

DEFAULT_ATTRIBUTE_WEIGHTS: Mapping[str, float] = DataConfig().attribute_weights  # one definition: the config's
ATTRIBUTE_MAX = 4.0


def combine_attributes(attributes: Mapping[str, float], weights: Mapping[str, float] | None = None) -> float:
    weights = DEFAULT_ATTRIBUTE_WEIGHTS if weights is None else weights
    if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"attribute weights must be non-negative with a positive sum, got {dict(weights)}")
    total = 0.0
    for name, w in weights.items():
        if name not in attributes:
            raise ValueError(f"missing attribute {name!r}")
        v = float(attributes[name])
        if not 0 <= v <= ATTRIBUTE_MAX:
            raise ValueError(f"attribute {name!r} must be in [0, {ATTRIBUTE_MAX:g}], got {v:g}")
        total += w * v / ATTRIBUTE_MAX
    return total / sum(weights.values())
