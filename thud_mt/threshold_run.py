"""``thud threshold`` wiring: a clip and a model become the ``respond`` callable the searches need.

The offset axis is the clip's audio-minus-picture offset (``relations.truth.av_offset``,
positive = audio late), so thresholds compare with the human window whatever
offset a clip starts with: asking at offset ``x`` shifts the clip by
``x - av_offset(clip)``. Each side is searched on its own: "lag" over
positive offsets, where detected means the parsed sync answer is
``audio_delayed``; "lead" over negative offsets, detected = ``audio_early``.
An invalid answer (unreadable) or an error (raised, timed out) counts as not
detected, and is counted so the report says how many there were; so is an
answer in the wrong direction.

Every question goes through ``CaseRunner.ask``: the answer cache and the
per-call timeout. A model that samples gets a fresh sample index for each
repeat at the same offset, so a rerun of the same search is answered from the
cache. The range searched on a side stops where the clip runs out: the shifted
sound stays ``margin`` inside the clip (the Shift relation's rule), since a
sound shifted out of the clip is not late, it is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from relations import RelationContext, Shift
from relations.truth import av_offset
from thud_mt.clip import Clip
from thud_mt.corpus.manifest import Corpus
from thud_mt.errors import ThudError
from thud_mt.interventions import shift
from thud_mt.models.base import Query
from thud_mt.probes import question
from thud_mt.runner import CaseRunner, read_answer
from thud_mt.threshold import DEFAULT_CHECKS, Search, Trial, bisect_threshold, psi_threshold

Side = Literal["lead", "lag"]
SIDES: tuple[Side, ...] = ("lead", "lag")
DIRECTION: dict[Side, str] = {"lead": "audio_early", "lag": "audio_delayed"}
SIGN: dict[Side, float] = {"lead": -1.0, "lag": 1.0}
MethodChoice = Literal["auto", "bisection", "psi"]
# Problems quoted per side: enough to see what went wrong, not a log of every call.
MAX_PROBLEMS = 3


@dataclass(frozen=True)
class ThresholdSettings:
    """How each side is searched.

    ``range_s``: the largest offset magnitude searched (less where the clip
    has no room). ``precision_s``: bisection stops when its bracket's
    half-width is this; Psi asks offsets on this grid. ``budget``: the most
    questions per side (cached answers count too, so a rerun repeats the
    search exactly). ``samples_per_offset``: repeats of each Psi offset for a
    model that samples (ignored for deterministic models). ``method``:
    ``auto`` = bisection for deterministic models, Psi for models that sample.
    ``checks``: bisection's reversal checks (``thud_mt.threshold``).
    ``paraphrase``: which sync question is asked.
    """

    range_s: float = 3.0
    precision_s: float = 0.025
    budget: int = 60
    samples_per_offset: int = 1
    method: MethodChoice = "auto"
    checks: int = DEFAULT_CHECKS
    confidence: float = 0.95
    paraphrase: int = 0

    def __post_init__(self) -> None:
        if not self.range_s > 0:
            raise ValueError(f"range must be > 0 s, got {self.range_s}")
        if not 0 < self.precision_s < self.range_s:
            raise ValueError(f"precision must be in (0, range), got {self.precision_s}")
        if self.budget < 2:
            raise ValueError(f"budget must be >= 2 calls per side, got {self.budget}")
        if self.samples_per_offset < 1:
            raise ValueError(f"samples per offset must be >= 1, got {self.samples_per_offset}")
        if self.method not in ("auto", "bisection", "psi"):
            raise ValueError(f"method must be auto, bisection or psi, got {self.method!r}")

    def to_json(self) -> dict[str, object]:
        return {
            "range_s": self.range_s,
            "precision_s": self.precision_s,
            "budget": self.budget,
            "samples_per_offset": self.samples_per_offset,
            "method": self.method,
            "checks": self.checks,
            "confidence": self.confidence,
            "paraphrase": self.paraphrase,
        }


@dataclass(frozen=True)
class ThresholdCase:
    """One suite test: a clip and a side of its window."""

    clip: str
    side: Side

    @property
    def id(self) -> str:
        return f"{self.clip} {self.side}"


@dataclass(frozen=True)
class SideResult:
    """One side of one clip's window: the search on magnitudes, and what the answers were.

    ``values`` runs parallel to ``search.trials``: the parsed sync answer,
    ``"invalid"`` or ``"error"``.
    """

    clip: str
    side: Side
    clip_offset: float  # the clip's own audio-minus-picture offset
    search: Search
    values: tuple[str, ...]
    invalid: int = 0
    errors: int = 0
    wrong_direction: int = 0
    problems: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        return self.search.status

    @property
    def threshold(self) -> float | None:
        """Signed: negative on the lead side."""
        t = self.search.threshold
        return None if t is None else SIGN[self.side] * t

    @property
    def interval(self) -> tuple[float | None, float | None] | None:
        """Signed and ordered (low, high); ``None`` at an end that is not bounded."""
        if self.search.interval is None:
            return None
        low, high = self.search.interval
        if self.side == "lag":
            return (low, high)
        return (None if high is None else -high, None if low is None else -low)

    @property
    def searched(self) -> float:
        """The largest magnitude searched on this side (seconds)."""
        return self.search.max_offset

    def signed_trials(self) -> tuple[Trial, ...]:
        return tuple(Trial(SIGN[self.side] * t.offset, t.detected) for t in self.search.trials)

    def to_json(self) -> dict[str, object]:
        s = self.search
        return {
            "clip": self.clip,
            "side": self.side,
            "direction": DIRECTION[self.side],
            "clip_offset_s": self.clip_offset,
            "method": s.method,
            "status": s.status,
            "threshold_s": self.threshold,
            "interval_s": list(self.interval) if self.interval is not None else None,
            "confidence": s.confidence,
            "precision_s": s.precision,
            "precise": s.precise,
            "searched_s": [0.0, SIGN[self.side] * s.max_offset],
            "calls": s.calls,
            "fit": None
            if s.fit is None
            else {"scale_s": s.fit.scale, "guess": s.fit.guess, "lapse": s.fit.lapse, "threshold_s": self.threshold},
            "reversals_s": [SIGN[self.side] * r for r in s.reversals],
            "budget_spent": s.budget_spent,
            "invalid": self.invalid,
            "errors": self.errors,
            "wrong_direction": self.wrong_direction,
            "problems": list(self.problems),
            "trials": [[SIGN[self.side] * t.offset, t.detected, v] for t, v in zip(s.trials, self.values, strict=True)],
        }


@dataclass(frozen=True)
class ModelThresholds:
    """Every searched side of every clip for one model."""

    model: str
    fingerprint: str
    settings: ThresholdSettings
    sides: tuple[SideResult, ...]
    model_calls: int  # calls that reached the model (the rest were answered by the cache)
    seconds: float
    skipped: tuple[str, ...] = ()  # clips with nothing both seen and heard, or unreadable, and why

    @property
    def queries(self) -> int:
        return sum(r.search.calls for r in self.sides)

    def side(self, side: Side) -> tuple[SideResult, ...]:
        return tuple(r for r in self.sides if r.side == side)


@dataclass
class _Tally:
    invalid: int = 0
    errors: int = 0
    wrong_direction: int = 0
    problems: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)

    def note(self, problem: str) -> None:
        if len(self.problems) < MAX_PROBLEMS and problem not in self.problems:
            self.problems.append(problem)


def threshold_cases(runner: CaseRunner, clips: int | None = None) -> list[ThresholdCase]:
    """Both sides of every clip whose annotations pair a seen and a heard event (no decoding), in manifest order."""
    ids = [e.id for e in runner.corpus.entries if av_offset(runner.annotated(e.id)) is not None]
    if clips is not None:
        ids = ids[:clips]
    return [ThresholdCase(clip, side) for clip in ids for side in SIDES]


def side_room(runner: CaseRunner, clip: Clip, side: Side, range_s: float) -> float:
    """The largest offset magnitude on ``side`` that keeps the shifted sound inside the clip, at most ``range_s``."""
    own = av_offset(clip)
    if own is None:
        raise ThudError(f"clip {clip.id}: no event is both seen and heard, so it has no sync offset to move")
    # offset_range clamps shifts to max_shift: make that no tighter than what reaching range_s needs.
    options = replace(runner.options, max_shift=range_s + abs(own))
    low, high = Shift().offset_range(clip, RelationContext(options, runner.clip, runner.donors))
    reach = own + high if side == "lag" else -(own + low)
    return max(0.0, min(range_s, reach))


def choose_method(runner: CaseRunner, settings: ThresholdSettings) -> Literal["bisection", "psi"]:
    if settings.method != "auto":
        return settings.method
    return "psi" if runner.model.capabilities.samples else "bisection"


def measure_side(runner: CaseRunner, clip_id: str, side: Side, settings: ThresholdSettings) -> SideResult:
    """Search one side of one clip's window through the runner (cache, timeout)."""
    clip = runner.clip(clip_id)
    own = av_offset(clip)
    if own is None:
        raise ThudError(f"clip {clip_id}: no event is both seen and heard, so it has no sync offset to move")
    room = side_room(runner, clip, side, settings.range_s)
    method = choose_method(runner, settings)
    samples = runner.model.capabilities.samples
    q = question("sync", settings.paraphrase, sound_labels=runner.sound_labels)
    want = DIRECTION[side]
    case = f"threshold {side}: {clip_id}"
    tally = _Tally()
    asked: dict[int, int] = {}  # shift in samples -> questions asked there (the next sample index)
    edited: dict[int, Clip] = {}

    def respond(magnitude: float) -> bool:
        k = int(round((SIGN[side] * magnitude - own) * clip.sample_rate))
        if k not in edited:
            edited[k] = shift(clip, k / clip.sample_rate)
        sample = asked.get(k, 0) if samples else 0
        asked[k] = asked.get(k, 0) + 1
        answer = runner.ask([Query(edited[k], q, sample, case)])[0]
        if answer.error is not None:
            tally.errors += 1
            tally.values.append("error")
            tally.note(f"at {SIGN[side] * magnitude:+.3f} s: {answer.error}")
            return False
        parsed = read_answer(q, answer)  # the runner's reading: text, or the best-scored choice
        if not parsed.valid:
            tally.invalid += 1
            tally.values.append("invalid")
            tally.note(f"at {SIGN[side] * magnitude:+.3f} s: {parsed.reason}")
            return False
        value = str(parsed.value)
        tally.values.append(value)
        if value != want and value != "synchronized":
            tally.wrong_direction += 1
        return value == want

    if method == "bisection":
        search = bisect_threshold(respond, room, settings.precision_s, budget=settings.budget, checks=settings.checks)
    else:
        search = psi_threshold(
            respond,
            room,
            settings.precision_s,
            budget=settings.budget,
            samples_per_offset=settings.samples_per_offset if samples else 1,
            confidence=settings.confidence,
        )
    return SideResult(
        clip=clip_id,
        side=side,
        clip_offset=own,
        search=search,
        values=tuple(tally.values),
        invalid=tally.invalid,
        errors=tally.errors,
        wrong_direction=tally.wrong_direction,
        problems=tuple(tally.problems),
    )


def measure_model(
    runner: CaseRunner,
    settings: ThresholdSettings,
    *,
    clips: int | None = None,
    progress: Callable[[ThresholdCase], None] | None = None,
) -> ModelThresholds:
    """Both sides of the first ``clips`` clips (all by default) that have a sync offset."""
    started = time.perf_counter()
    calls_before = runner.calls
    results: list[SideResult] = []
    skipped: list[str] = []
    for case in threshold_cases(runner, clips):
        if progress is not None:
            progress(case)
        try:
            results.append(measure_side(runner, case.clip, case.side, settings))
        except ThudError as exc:  # one unreadable clip is reported, the rest are measured
            if case.side == SIDES[0]:
                skipped.append(f"{case.clip}: {exc}")
    return ModelThresholds(
        model=runner.model.name,
        fingerprint=runner.model.fingerprint,
        settings=settings,
        sides=tuple(results),
        model_calls=runner.calls - calls_before,
        seconds=time.perf_counter() - started,
        skipped=tuple(skipped),
    )


def failure(result: SideResult, max_s: float) -> str | None:
    """Why a suite test of this side fails, or ``None``: no threshold, or one beyond ``max_s``."""
    direction = DIRECTION[result.side].replace("_", " ")
    s = result.search
    where = f"{result.clip} {result.side}"
    answers = _answers_note(result)
    if s.status == "no_room":
        return f"{where}: no threshold: the clip has no room to move its sound this way"
    if s.status == "none_in_range":
        reach = f"{SIGN[result.side] * s.max_offset:+.3f} s"
        said = f'did not answer "{direction}"'
        if s.method == "psi":
            said = f'answered "{direction}" less than half the time'
        return (
            f"{where}: no threshold within the searched range (0 to {reach}): the model {said} "
            f"even at {reach} ({_questions(s.calls)}{answers})"
        )
    if s.status == "at_zero":
        return (
            f'{where}: no threshold: the model already answers "{direction}" at 0 s offset, a false alarm '
            f"({_questions(s.calls)}{answers})"
        )
    threshold = result.threshold
    assert threshold is not None
    if abs(threshold) > max_s:
        return (
            f"{where}: threshold {threshold:+.3f} s {format_interval(result.interval)} is beyond the bound "
            f'{max_s:g} s (--thud-threshold-max): the model answers "{direction}" only from there '
            f"({_questions(s.calls)}{answers})"
        )
    return None


def _questions(n: int) -> str:
    return f"{n} question" if n == 1 else f"{n} questions"


def _answers_note(result: SideResult) -> str:
    parts = []
    if result.invalid:
        parts.append(f"{result.invalid} invalid")
    if result.errors:
        parts.append(f"{result.errors} errors")
    if result.wrong_direction:
        parts.append(f"{result.wrong_direction} in the wrong direction")
    note = f"; {', '.join(parts)}" if parts else ""
    if result.problems:
        note += f"; e.g. {result.problems[0]}"
    return note


def format_interval(interval: tuple[float | None, float | None] | None) -> str:
    if interval is None:
        return "[-]"
    low, high = interval
    left = "-inf" if low is None else f"{low:+.3f}"
    right = "+inf" if high is None else f"{high:+.3f}"
    return f"[{left}, {right}]"


def build_runner(
    model: str,
    corpus: Corpus,
    *,
    cache_dir: Path | None,
    model_path: str | None = None,
    seed: int = 0,
    timeout_s: float | None = None,
) -> CaseRunner:
    """A runner as the pytest plugin builds one (``thud_mt.plugin._runner``), without a results file."""
    from relations import DEFAULT_OPTIONS
    from thud_mt.cache import AnswerCache, NullCache
    from thud_mt.derived import DerivedCache
    from thud_mt.models.registry import ModelOptions, create

    options = ModelOptions(model_path=model_path, corpus=corpus, seed=seed, timeout_s=timeout_s, cache_dir=cache_dir)
    created = create(model, options)
    cache = AnswerCache(cache_dir / "answers.sqlite") if cache_dir is not None else NullCache()
    derived = DerivedCache(cache_dir / "derived") if cache_dir is not None else None
    return CaseRunner(
        model=created, corpus=corpus, cache=cache, options=DEFAULT_OPTIONS, timeout_s=timeout_s, derived=derived
    )


def clip_ids(results: Iterable[SideResult]) -> list[str]:
    """Clips in first-seen order."""
    return list(dict.fromkeys(r.clip for r in results))


def sides_of(results: Sequence[SideResult], clip: str) -> dict[Side, SideResult]:
    return {r.side: r for r in results if r.clip == clip}
