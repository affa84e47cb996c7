"""Small statistics the study reports: Wilson intervals, exact McNemar, majority votes."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from statistics import NormalDist
from typing import TypeVar

T = TypeVar("T", bound=Hashable)


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n``.

    Chosen over the normal (Wald) interval because suites are small and rates
    are often near 0 or 1, where Wald collapses to a zero-width interval.
    ``n == 0`` says nothing: ``(0.0, 1.0)``.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson: need 0 <= successes <= n, got {successes} of {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"wilson: confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)  # stdlib, not scipy.stats: that import costs ~0.5 s
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Exact ends where the data sit at a boundary; rounding would otherwise give 1e-17 or 0.9999999.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for paired outcomes.

    ``b`` and ``c`` are the discordant pairs (right before and wrong after, and
    the reverse). Under the null each discordant pair is a fair coin, so the
    p-value is twice the smaller binomial tail, capped at 1. No discordant
    pairs is no evidence: 1.0.
    """
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar: counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    from scipy import stats as _scipy

    return float(min(1.0, 2.0 * _scipy.binom.cdf(min(b, c), n, 0.5)))


def majority(values: Iterable[T]) -> T:
    """The most frequent value; a tie goes to the tied value seen first.

    Seen-first makes the vote deterministic given the order, and callers pass
    samples in sample order, so a tie goes to the earliest sample's answer.
    Values compare by ``==`` (so ``1`` and ``1.0`` and ``True`` are one value);
    ``None`` (an unparseable answer) is a value like any other: filter it out
    first if it should not win.
    """
    counts: dict[T, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    if not counts:
        raise ValueError("majority of no values")
    best = max(counts.values())
    # dicts keep insertion order: the first key with the top count was seen first.
    return next(v for v, k in counts.items() if k == best)
