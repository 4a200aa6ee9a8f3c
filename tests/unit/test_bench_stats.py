"""The replicate report's intervals against references computed here: the normal-theory interval of a mean for one
seed, the spread across seeds for several, and each verdict of a claim.

    .venv/bin/python -m pytest tests/unit/test_bench_stats.py -q
"""

from __future__ import annotations

import math
import random

import pytest

from una_hpc.bench.stats import Interval, cluster_bootstrap, difference, verdict


def _normal_ci(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    half = 1.96 * sd / math.sqrt(len(xs))
    return m - half, m + half


def test_one_seed_is_the_prompt_bootstrap_close_to_the_normal_interval():
    rng = random.Random(0)
    xs = [rng.random() for _ in range(400)]
    iv = cluster_bootstrap([xs])
    lo, hi = _normal_ci(xs)
    assert iv.mean == pytest.approx(sum(xs) / len(xs), abs=1e-12)
    assert iv.lo == pytest.approx(lo, abs=0.006) and iv.hi == pytest.approx(hi, abs=0.006)


def test_seed_spread_widens_the_interval():
    """Three seeds whose means differ by far more than their prompt noise: the interval must span the seed means'
    spread, which a pooled prompt bootstrap (treating 600 samples as independent) would hide."""
    rng = random.Random(1)
    groups = [[c + 0.01 * rng.random() for _ in range(200)] for c in (0.2, 0.5, 0.8)]
    iv = cluster_bootstrap(groups)
    pooled = cluster_bootstrap([sum(groups, [])])
    assert iv.hi - iv.lo > 10 * (pooled.hi - pooled.lo)
    assert iv.lo <= 0.3 and iv.hi >= 0.7  # resampling 3 seeds reaches (0.2, 0.2, 0.5) and (0.5, 0.8, 0.8)


def test_difference_of_two_methods():
    rng = random.Random(2)
    a = [[0.6 + 0.1 * rng.random() for _ in range(300)] for _ in range(3)]
    b = [[0.5 + 0.1 * rng.random() for _ in range(300)] for _ in range(3)]
    d = difference(a, b)
    assert d.mean == pytest.approx(0.1, abs=0.01)
    assert 0 < d.lo < d.mean < d.hi < 0.2


def test_difference_on_the_same_prompts_is_paired():
    """Prompt difficulty shared by both methods (spread 1.0) dwarfs a constant 0.05 advantage: resampling prompts
    jointly leaves the difference's interval as narrow as the seed noise (0.01), independent resampling does not."""
    rng = random.Random(3)
    difficulty = [rng.random() for _ in range(200)]
    a = [[d + 0.05 + 0.01 * rng.random() for d in difficulty] for _ in range(3)]
    b = [[d + 0.01 * rng.random() for d in difficulty] for _ in range(3)]
    paired = difference(a, b)
    unpaired = difference(a, [g[:-1] for g in b])  # one prompt fewer: no longer the same prompts
    assert paired.mean == pytest.approx(0.05, abs=0.002)
    assert 0.04 < paired.lo < paired.hi < 0.06
    assert unpaired.hi - unpaired.lo > 5 * (paired.hi - paired.lo)


@pytest.mark.parametrize(
    "lo,hi,claim,expected",
    [
        (0.1, 0.2, ">", "holds"),
        (-0.1, 0.2, ">", "not shown"),
        (-0.2, -0.1, ">", "contradicted"),
        (-0.1, 0.2, ">=", "consistent"),
        (-0.2, -0.1, ">=", "contradicted"),
        (-0.1, 0.2, "~", "holds"),
        (0.1, 0.2, "~", "does not hold"),
        (0.1, 0.2, "vs", "a ahead"),
        (-0.2, -0.1, "vs", "b ahead"),
        (-0.1, 0.2, "vs", "no difference shown"),
    ],
)
def test_verdicts(lo, hi, claim, expected):
    assert verdict(Interval((lo + hi) / 2, lo, hi), claim).startswith(expected)


def test_empty_seed_is_refused():
    with pytest.raises(ValueError, match="at least one sample"):
        cluster_bootstrap([[0.1], []])
