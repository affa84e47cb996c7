"""Adaptive search for a desync detection threshold: pure functions over ``respond(offset) -> detected``.

One side of the window at a time, on magnitudes: ``offset`` runs over
``[0, max_offset]`` seconds and ``respond`` says whether the model reported
the desync at that offset. ``thud_mt.threshold_run`` turns the side's sign,
the clip and the model into such a callable; nothing here knows about media.

Two methods:

- ``bisect_threshold`` for deterministic models: check both ends, then
  bisect until the bracket is at most ``2 * precision`` wide, so its midpoint
  is within ``precision`` of the switch. Bisection keeps "not detected below,
  detected above" by construction, so it cannot see answers that flip back
  above the switch it found; a few check offsets between that switch and the
  top of the range look for such reversals. A check that is not detected
  restarts the bisection above it, so the reported threshold is where
  detection starts and holds at every larger offset that was asked.
- ``psi_threshold`` for models that sample: the Psi-marginal method
  (Kontsevich & Tyler 1999; Prins 2013) on a grid of logistic psychometric
  functions. Each step asks the offset whose answer is expected to leave the
  least entropy in the threshold's posterior; slope, guess (false alarm) and
  lapse (miss) rates are nuisance parameters on their own grid axes, so a
  model that sometimes cries desync at zero offset, or sometimes misses a
  3 s shift, does not drag the threshold. With a flat prior the grid's log
  posterior is the log likelihood, so the same grid gives the final
  maximum-likelihood fit and its profile-likelihood confidence interval.

The threshold of a noisy model is the offset where P(detected) = 0.5 on the
fitted curve ``guess + (1 - guess - lapse) * logistic``; it is parameterised
directly, so it is a grid axis and its profile is exact on the grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

import numpy as np

Respond = Callable[[float], bool]
Method = Literal["bisection", "psi"]
# found: a threshold inside [0, max_offset]. none_in_range: not detected (or, for a noisy model, detected
# less than half the time) even at max_offset. at_zero: already detected at zero offset, a false alarm,
# so there is no switch to locate. no_room: the range is empty (the clip has no room to shift this way).
Status = Literal["found", "none_in_range", "at_zero", "no_room"]

# Bisection: check offsets above the switch found, looking for answers that flip back (see module doc).
DEFAULT_CHECKS = 2


@dataclass(frozen=True)
class Trial:
    offset: float
    detected: bool


@dataclass(frozen=True)
class Logistic:
    """P(detected | offset) = guess + (1 - guess - lapse) / (1 + exp(-((offset - threshold) / scale + shift))).

    ``shift`` places P = 0.5 exactly at ``threshold`` whatever the guess and
    lapse rates (both must stay under 0.5 for that point to exist).
    """

    threshold: float
    scale: float
    guess: float = 0.0
    lapse: float = 0.0

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if not (0.0 <= self.guess < 0.5 and 0.0 <= self.lapse < 0.5):
            raise ValueError(f"guess and lapse must be in [0, 0.5), got {self.guess}, {self.lapse}")

    @property
    def shift(self) -> float:
        return _midpoint_shift(self.guess, self.lapse)

    def p(self, offset: float | np.ndarray) -> np.ndarray:
        z = (np.asarray(offset, float) - self.threshold) / self.scale + self.shift
        return self.guess + (1.0 - self.guess - self.lapse) * expit(z)


def expit(z: float | np.ndarray) -> np.ndarray:
    """The logistic function, accurate in both tails (scipy's ``expit``; scipy is not imported at collection)."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(z, float)))


def _chi2_1_ppf(p: float) -> float:
    """Quantile of chi-squared with one degree of freedom: the square of a standard normal's two-sided one."""
    return NormalDist().inv_cdf((1.0 + p) / 2.0) ** 2


def _midpoint_shift(guess: float | np.ndarray, lapse: float | np.ndarray) -> np.ndarray:
    target = (0.5 - np.asarray(guess, float)) / (1.0 - np.asarray(guess, float) - np.asarray(lapse, float))
    return np.log(target / (1.0 - target))


@dataclass(frozen=True)
class Search:
    """One side's search: the trials asked and what they say.

    ``interval`` brackets the threshold: for bisection the last bracket (the
    switch is in ``(low, high]``), for Psi the profile-likelihood interval at
    ``confidence``, where ``None`` at an end means it is not bounded within
    the hypotheses considered. ``threshold`` and ``interval`` are ``None``
    unless ``status == "found"``.
    """

    method: Method
    status: Status
    threshold: float | None
    interval: tuple[float | None, float | None] | None
    max_offset: float
    precision: float
    trials: tuple[Trial, ...]
    fit: Logistic | None = None
    reversals: tuple[float, ...] = ()  # offsets above a found switch that were not detected
    confidence: float | None = None
    budget_spent: bool = False  # bisection: the budget stopped it before the bracket reached the precision

    @property
    def calls(self) -> int:
        return len(self.trials)

    @property
    def precise(self) -> bool:
        """Whether the interval is bounded and at most ``2 * precision`` wide (half-width <= precision)."""
        if self.interval is None or None in self.interval:
            return False
        low, high = self.interval
        assert low is not None and high is not None
        return high - low <= 2 * self.precision + 1e-12


def _check_range(max_offset: float, precision: float, budget: int | None) -> None:
    if not math.isfinite(max_offset) or max_offset < 0:
        raise ValueError(f"max_offset must be a finite number >= 0, got {max_offset}")
    if not precision > 0:
        raise ValueError(f"precision must be > 0, got {precision}")
    if budget is not None and budget < 1:
        raise ValueError(f"budget must be >= 1 call, got {budget}")


def grid_sweep_calls(max_offset: float, precision: float) -> int:
    """Calls a sweep over ``[0, max_offset]`` in ``precision`` steps makes: what the searches are measured against."""
    return int(math.floor(max_offset / precision + 1e-9)) + 1


# ------------------------------------------------------------------------------------------------- bisection


def bisect_threshold(
    respond: Respond,
    max_offset: float,
    precision: float,
    *,
    budget: int | None = None,
    checks: int = DEFAULT_CHECKS,
) -> Search:
    """Locate a deterministic model's switch from not detected to detected within ``precision``.

    Calls: 2 (both ends) + ``ceil(log2(max_offset / (2 * precision)))`` + ``checks``
    when answers are monotone. ``budget`` caps the calls; a search it stops
    early keeps the bracket it reached (``budget_spent``).
    """
    _check_range(max_offset, precision, budget)
    trials: list[Trial] = []

    def ask(offset: float) -> bool:
        detected = bool(respond(offset))
        trials.append(Trial(offset, detected))
        return detected

    def done(status: Status, low: float | None = None, high: float | None = None, **extra: object) -> Search:
        found = status == "found" and low is not None and high is not None
        return Search(
            method="bisection",
            status=status,
            threshold=(low + high) / 2 if found else None,  # type: ignore[operator]
            interval=(low, high) if found else None,
            max_offset=max_offset,
            precision=precision,
            trials=tuple(trials),
            **extra,  # type: ignore[arg-type]
        )

    def spent() -> bool:
        return budget is not None and len(trials) >= budget

    if max_offset <= 0:
        return done("no_room")
    if not ask(max_offset):
        return done("none_in_range")
    if spent():
        return done("found", 0.0, max_offset, budget_spent=True)
    if ask(0.0):
        return done("at_zero")
    low, high = 0.0, max_offset
    reversals: list[float] = []
    while True:
        while high - low > 2 * precision and not spent():
            mid = (low + high) / 2
            if ask(mid):
                high = mid
            else:
                low = mid
        reversal = _check_above(ask, spent, high, max_offset, precision, checks)
        if reversal is None:
            break
        # Detection did not hold above the switch: the real start of detection is above the reversal,
        # below the first detected offset asked above it (the top of the range at worst).
        reversals.append(reversal)
        low = reversal
        high = min(t.offset for t in trials if t.detected and t.offset > reversal)
    return done("found", low, high, reversals=tuple(reversals), budget_spent=high - low > 2 * precision + 1e-12)


def _check_above(
    ask: Respond, spent: Callable[[], bool], high: float, top: float, precision: float, checks: int
) -> float | None:
    """Ask ``checks`` evenly spaced offsets in ``(high, top)``; the first not detected, or ``None``."""
    for k in range(1, checks + 1):
        offset = high + (top - high) * k / (checks + 1)
        # Closer than the precision to an asked offset says nothing new; and the budget rules.
        if offset - high < precision or top - offset < precision or spent():
            return None
        if not ask(offset):
            return offset
    return None


# ------------------------------------------------------------------------------------------------- psi


@dataclass(frozen=True)
class PsiGrid:
    """The hypotheses (threshold x scale x guess x lapse) and the offsets that may be asked.

    Thresholds run past both ends of the range by ``extend`` (a fraction of
    it), so "never detected in range" and "always detected" are hypotheses
    like any other, in steps of half the precision. Scales are log-spaced
    from a quarter of the precision (as sharp as the stimuli can tell) to a
    quarter of the range (barely rising across it). Stimuli are the range in
    steps of the precision.
    """

    thresholds: np.ndarray
    scales: np.ndarray
    guesses: np.ndarray
    lapses: np.ndarray
    stimuli: np.ndarray

    @staticmethod
    def build(
        max_offset: float,
        precision: float,
        *,
        n_scales: int = 8,
        guesses: Sequence[float] = (0.0, 0.03, 0.1, 0.25),
        lapses: Sequence[float] = (0.0, 0.03, 0.1),
        extend: float = 0.25,
    ) -> PsiGrid:
        step = precision / 2
        reach = max(extend * max_offset, 4 * precision)
        n = int(math.ceil((max_offset + 2 * reach) / step)) + 1
        thresholds = -reach + step * np.arange(n)
        n_stimuli = grid_sweep_calls(max_offset, precision)
        stimuli = np.linspace(0.0, max_offset, max(n_stimuli, 2))
        top_scale = max(max_offset / 4, precision)
        scales = np.geomspace(precision / 4, top_scale, n_scales)
        return PsiGrid(thresholds, scales, np.asarray(guesses, float), np.asarray(lapses, float), stimuli)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.thresholds), len(self.scales), len(self.guesses), len(self.lapses))

    def p(self, offsets: np.ndarray) -> np.ndarray:
        """P(detected) for each offset (rows) and hypothesis (columns, threshold-major)."""
        t = self.thresholds[:, None, None, None]
        s = self.scales[None, :, None, None]
        g = self.guesses[None, None, :, None]
        lam = self.lapses[None, None, None, :]
        rows = []
        for x in np.asarray(offsets, float):
            z = (x - t) / s + _midpoint_shift(g, lam)
            rows.append((g + (1.0 - g - lam) * expit(z)).reshape(-1))
        # Never exactly 0 or 1: one lapse must lower a hypothesis's likelihood, not erase it.
        return np.clip(np.asarray(rows), 1e-9, 1 - 1e-9)


@dataclass(frozen=True)
class LikelihoodFit:
    """The maximum-likelihood hypothesis on the grid and the threshold's profile-likelihood interval."""

    fit: Logistic
    interval: tuple[float | None, float | None]


@dataclass
class _Psi:
    grid: PsiGrid
    table: np.ndarray  # P(detected), stimuli x hypotheses
    loglik: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.loglik = np.zeros(self.table.shape[1])
        self._log_p = np.log(self.table)
        self._log_q = np.log1p(-self.table)
        # Threshold-major float32 copy for choosing stimuli: the per-step cost is this product.
        table3 = self.table.reshape(len(self.table), self.grid.shape[0], -1).transpose(1, 0, 2)
        self._by_threshold = np.ascontiguousarray(table3, dtype=np.float32)

    def update(self, stimulus: int, detected: bool) -> None:
        self.loglik += self._log_p[stimulus] if detected else self._log_q[stimulus]

    def next_stimulus(self) -> int:
        """The offset whose answer is expected to leave the least entropy in the threshold's marginal."""
        post = np.exp(self.loglik - self.loglik.max())
        post /= post.sum()
        n_t = self.grid.shape[0]
        by_threshold = post.reshape(n_t, -1)
        # P(yes, threshold) per stimulus: one batched matrix-vector product per threshold.
        joint_yes = np.matmul(self._by_threshold, by_threshold[:, :, None].astype(np.float32))[:, :, 0].T
        marginal = by_threshold.sum(-1)
        joint_no = np.clip(marginal[None, :] - joint_yes, 0.0, None)
        p_yes = joint_yes.sum(-1)
        expected = p_yes * _entropy(joint_yes) + (1 - p_yes) * _entropy(joint_no)
        # Ties (common while the posterior is flat) go to the middle of the range, not its edge.
        middle = np.abs(self.grid.stimuli - self.grid.stimuli[-1] / 2)
        return int(np.lexsort((middle, np.round(expected, 12)))[0])

    def profile(self) -> np.ndarray:
        """Max log likelihood over the nuisance axes, for each threshold on the grid."""
        return self.loglik.reshape(self.grid.shape[0], -1).max(-1)


def _entropy(joint: np.ndarray) -> np.ndarray:
    total = joint.sum(-1, keepdims=True)
    p = joint / np.where(total > 0, total, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(-1)


def profile_fit(grid: PsiGrid, loglik: np.ndarray, confidence: float) -> LikelihoodFit:
    """ML hypothesis, and the thresholds whose profile log likelihood is within chi2(1)/2 of the best."""
    n_t = grid.shape[0]
    profile = loglik.reshape(n_t, -1).max(-1)
    best = int(np.argmax(profile))
    t_hat = float(grid.thresholds[best])
    plateau = _plateau(profile, best)
    if plateau != (best, best):
        # A flat top (a step seen between two stimuli): every threshold on it explains the answers equally.
        t_hat = float(grid.thresholds[plateau[0]] + grid.thresholds[plateau[1]]) / 2
    elif 0 < best < n_t - 1:
        # Sub-grid refinement by a parabola through a strict peak.
        left, mid, right = profile[best - 1], profile[best], profile[best + 1]
        curvature = left - 2 * mid + right
        if left < mid and right < mid and curvature < 0:
            step = grid.thresholds[1] - grid.thresholds[0]
            t_hat += float(0.5 * (left - right) / curvature * step)
    cut = profile[best] - _chi2_1_ppf(confidence) / 2
    low = _crossing(grid.thresholds, profile, best, cut, -1)
    high = _crossing(grid.thresholds, profile, best, cut, 1)
    # Answers at the stimuli cannot tell apart thresholds between two neighbouring stimuli (a step anywhere
    # in that gap answers alike), so the interval always spans the gap that holds the estimate.
    below = grid.stimuli[grid.stimuli <= t_hat]
    above = grid.stimuli[grid.stimuli >= t_hat]
    if low is not None and len(below):
        low = min(low, float(below[-1]))
    if high is not None and len(above):
        high = max(high, float(above[0]))
    interval = (low, high)
    _, s, g, lam = np.unravel_index(int(np.argmax(loglik)), grid.shape)
    fit = Logistic(t_hat, float(grid.scales[s]), float(grid.guesses[g]), float(grid.lapses[lam]))
    return LikelihoodFit(fit, interval)


def _plateau(ys: np.ndarray, start: int, tolerance: float = 1e-9) -> tuple[int, int]:
    """The first and last index of the run of values equal (within ``tolerance``) to ``ys[start]``."""
    low = high = start
    while low > 0 and abs(ys[low - 1] - ys[start]) <= tolerance:
        low -= 1
    while high < len(ys) - 1 and abs(ys[high + 1] - ys[start]) <= tolerance:
        high += 1
    return low, high


def _crossing(xs: np.ndarray, ys: np.ndarray, start: int, cut: float, direction: int) -> float | None:
    """Where ``ys`` first falls under ``cut`` walking from ``start``; ``None`` if it never does on the grid."""
    i = start
    while 0 <= i + direction < len(xs):
        j = i + direction
        if ys[j] < cut:
            frac = (ys[i] - cut) / (ys[i] - ys[j])
            return float(xs[i] + frac * (xs[j] - xs[i]))
        i = j
    return None


def psi_threshold(
    respond: Respond,
    max_offset: float,
    precision: float,
    *,
    budget: int = 60,
    samples_per_offset: int = 1,
    confidence: float = 0.95,
    grid: PsiGrid | None = None,
) -> Search:
    """Estimate a noisy model's 50% point with the Psi-marginal method, in at most ``budget`` calls.

    Each chosen offset is asked ``samples_per_offset`` times (a model that
    samples answers each afresh). The budget is the only stopping rule: stopping
    as soon as the interval looked narrow enough was tried, and it let the
    95% interval miss the planted threshold one time in five.
    """
    _check_range(max_offset, precision, budget)
    if samples_per_offset < 1:
        raise ValueError(f"samples_per_offset must be >= 1, got {samples_per_offset}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if max_offset <= 0:
        return Search("psi", "no_room", None, None, max_offset, precision, (), confidence=confidence)
    grid = grid or PsiGrid.build(max_offset, precision)
    state = _Psi(grid, grid.p(grid.stimuli))
    trials: list[Trial] = []
    while len(trials) < budget:
        stimulus = state.next_stimulus()
        offset = float(grid.stimuli[stimulus])
        for _ in range(min(samples_per_offset, budget - len(trials))):
            detected = bool(respond(offset))
            trials.append(Trial(offset, detected))
            state.update(stimulus, detected)
    result = profile_fit(grid, state.loglik, confidence)
    t_hat = result.fit.threshold
    status: Status = "found"
    if t_hat > max_offset:
        status = "none_in_range"
    elif t_hat < 0:
        status = "at_zero"
    found = status == "found"
    return Search(
        method="psi",
        status=status,
        threshold=t_hat if found else None,
        interval=result.interval if found else None,
        max_offset=max_offset,
        precision=precision,
        trials=tuple(trials),
        fit=result.fit,
        confidence=confidence,
    )


# ------------------------------------------------------------------------------------------------- planted models


def step_responder(threshold: float) -> Respond:
    """A deterministic planted model: detects exactly from ``threshold`` on."""
    return lambda offset: offset >= threshold


def logistic_responder(curve: Logistic, seed: int = 0) -> Respond:
    """A sampling planted model: detects with probability ``curve.p(offset)``, reproducibly per seed."""
    rng = np.random.default_rng(seed)
    return lambda offset: bool(rng.random() < float(curve.p(offset)))
