"""Intervals for a method trained with several seeds and evaluated on the same held-out prompts.

    .venv/bin/python -m pytest tests/unit/test_bench_stats.py -q

A method's score is the mean over (seed, prompt) samples. Two sources of noise: which training seed (runs differ)
and which prompts (a finite eval set). A two-level (cluster) bootstrap resamples seeds with replacement, then prompts
within each drawn seed, so the interval carries both; with one seed it is the prompt bootstrap alone. With 3 seeds
the seed level is coarse (3^3 = 27 distinct draws): the intervals are honest about that by being wide. Differences
between two methods evaluated on the same prompts resample those prompts jointly (paired by prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 4000


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float
    hi: float

    def fmt(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi}


def _draws(groups: Sequence[Sequence[float]], rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` bootstrap means of the pooled samples: seeds resampled, then samples within each drawn seed."""
    arrays = [np.asarray(g, dtype=np.float64) for g in groups]
    out = np.empty(n)
    for i in range(n):
        picked = rng.integers(len(arrays), size=len(arrays)) if len(arrays) > 1 else [0]
        parts = [arrays[k][rng.integers(len(arrays[k]), size=len(arrays[k]))] for k in picked]
        out[i] = np.concatenate(parts).mean()
    return out


def cluster_bootstrap(groups: Sequence[Sequence[float]], *, seed: int = 0, n: int = RESAMPLES) -> Interval:
    """Mean of all samples and its 95% percentile interval; `groups` holds one list of per-prompt values per seed."""
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("every seed needs at least one sample")
    draws = _draws(groups, np.random.default_rng(seed), n)
    mean = float(np.concatenate([np.asarray(g, dtype=np.float64) for g in groups]).mean())
    return Interval(mean, float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5)))


def difference(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], *, seed: int = 0, n: int = RESAMPLES
) -> Interval:
    """mean(a) - mean(b) with a 95% interval. When every seed of both holds the same number of values, they are
    taken as scores of the same prompts in the same order (a replicate eval): one prompt resample is shared by both
    sides, so a prompt that is hard for every method does not count as noise, and each side's seeds are resampled
    on their own (different trainings). Otherwise both sides are resampled independently."""
    rng = np.random.default_rng(seed)
    pooled = [np.concatenate([np.asarray(g, dtype=np.float64) for g in x]).mean() for x in (a, b)]
    sizes = {len(g) for g in [*a, *b]}
    if len(sizes) == 1:
        A, B = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)  # [seeds, prompts]
        P = sizes.pop()
        draws = np.empty(n)
        for i in range(n):
            p = rng.integers(P, size=P)
            sa, sb = rng.integers(len(A), size=len(A)), rng.integers(len(B), size=len(B))
            draws[i] = A[sa][:, p].mean() - B[sb][:, p].mean()
    else:
        draws = _draws(a, rng, n) - _draws(b, rng, n)
    return Interval(float(pooled[0] - pooled[1]), float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5)))


def verdict(diff: Interval, claim: str) -> str:
    """How a measured difference a - b stands against a claim about a and b: ">" (a better), ">=", "~", or "vs"
    (no claim: which side is ahead, if either)."""
    above, below = diff.lo > 0, diff.hi < 0
    if claim == "vs":  # a comparison the paper makes no claim about
        return "a ahead" if above else "b ahead" if below else "no difference shown"
    if claim == "~":
        return "holds (interval contains 0)" if not (above or below) else "does not hold (interval excludes 0)"
    if below:
        return "contradicted (a below b, interval below 0)"
    if above:
        return "holds (interval above 0)"
    if claim == ">=":
        return "consistent (interval contains 0)"
    return "not shown (interval contains 0)"
