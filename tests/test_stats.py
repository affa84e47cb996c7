"""Wilson intervals, exact McNemar and majority votes against hand-computed values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thud_mt.stats import majority, mcnemar, wilson


@pytest.mark.parametrize(
    ("successes", "n", "lo", "hi"),
    [
        (8, 10, 0.4902, 0.9433),
        (50, 100, 0.4038, 0.5962),
        (1, 2, 0.0945, 0.9055),
        (0, 10, 0.0, 0.2775),  # upper end z^2 / (n + z^2)
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_matches_known_intervals(successes: int, n: int, lo: float, hi: float) -> None:
    got = wilson(successes, n)
    assert got == pytest.approx((lo, hi), abs=5e-4)


def test_wilson_ends_are_exact_at_the_boundaries() -> None:
    assert wilson(0, 7)[0] == 0.0
    assert wilson(7, 7)[1] == 1.0


def test_wilson_of_nothing_says_nothing() -> None:
    assert wilson(0, 0) == (0.0, 1.0)


def test_higher_confidence_gives_a_wider_interval() -> None:
    lo95, hi95 = wilson(8, 10, 0.95)
    lo99, hi99 = wilson(8, 10, 0.99)
    assert lo99 < lo95 and hi99 > hi95


@pytest.mark.parametrize(("successes", "n", "confidence"), [(-1, 3, 0.95), (4, 3, 0.95), (1, 3, 1.0), (1, 3, 0.0)])
def test_wilson_refuses_impossible_input(successes: int, n: int, confidence: float) -> None:
    with pytest.raises(ValueError, match="wilson"):
        wilson(successes, n, confidence)


@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_the_estimate_and_mirrors_failures(case: tuple[int, int]) -> None:
    successes, n = case
    lo, hi = wilson(successes, n)
    assert 0.0 <= lo <= successes / n <= hi <= 1.0
    flo, fhi = wilson(n - successes, n)
    assert lo == pytest.approx(1 - fhi, abs=1e-12) and hi == pytest.approx(1 - flo, abs=1e-12)


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (0, 0, 1.0),
        (5, 5, 1.0),
        (0, 5, 0.0625),  # 2 * (1/2)^5
        (1, 9, 0.021484375),  # 2 * 11 / 1024
        (7, 3, 0.34375),  # 2 * 176 / 1024
        (0, 20, 2 / 2**20),
    ],
)
def test_mcnemar_matches_the_exact_binomial_test(b: int, c: int, p: float) -> None:
    assert mcnemar(b, c) == pytest.approx(p, rel=1e-9)


@given(st.integers(0, 60), st.integers(0, 60))
def test_mcnemar_is_symmetric_and_twice_the_smaller_tail(b: int, c: int) -> None:
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n if n else 0.5
    assert mcnemar(b, c) == pytest.approx(min(1.0, 2 * tail), rel=1e-9)
    assert mcnemar(b, c) == mcnemar(c, b)


def test_mcnemar_refuses_negative_counts() -> None:
    with pytest.raises(ValueError):
        mcnemar(-1, 2)


def test_majority_takes_the_most_frequent_value() -> None:
    assert majority(["no", "yes", "yes", None, "no", "yes"]) == "yes"


def test_a_tie_goes_to_the_tied_value_seen_first() -> None:
    assert majority(["early", "delayed", "delayed", "early"]) == "early"
    assert majority(["delayed", "early", "early", "delayed"]) == "delayed"
    # "x" is seen first but is not tied for the top, so it cannot win the tie.
    assert majority(["x", "b", "a", "a", "b"]) == "b"


def test_majority_counts_none_like_any_answer() -> None:
    assert majority([None, None, "yes"]) is None


def test_majority_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        majority([])
