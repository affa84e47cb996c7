"""Desync detection thresholds: the searches recover planted thresholds, and ``thud threshold`` reports them."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from relations import DEFAULT_OPTIONS
from relations.truth import av_offset
from thud_mt.cache import NullCache
from thud_mt.cli import main
from thud_mt.corpus.manifest import Corpus, load_corpus
from thud_mt.corpus.synth import build_synthetic_corpus
from thud_mt.interventions import shift
from thud_mt.models.base import Answer, Capabilities, Query
from thud_mt.models.reference import Listener
from thud_mt.probes import question, value_text
from thud_mt.runner import CaseRunner
from thud_mt.threshold import (
    Logistic,
    PsiGrid,
    bisect_threshold,
    grid_sweep_calls,
    logistic_responder,
    profile_fit,
    psi_threshold,
    step_responder,
)
from thud_mt.threshold_report import (
    format_leaderboard,
    format_run,
    median_interval,
    plot_run,
    report_json,
    side_window,
    write_json,
)
from thud_mt.threshold_run import (
    ModelThresholds,
    ThresholdSettings,
    build_runner,
    failure,
    measure_model,
    measure_side,
    side_room,
    threshold_cases,
)

RANGE, PRECISION = 3.0, 0.025
# A listener decision is off by at most one video frame (25 fps) from the annotated event time.
FRAME_S = 1 / 25


def bisection_calls(max_offset: float, precision: float, checks: int = 2) -> int:
    """What monotone answers cost: both ends, the halvings down to a 2 * precision bracket, the checks."""
    return 2 + max(0, math.ceil(math.log2(max_offset / (2 * precision)))) + checks


# ------------------------------------------------------------------------------------------------- bisection


@given(
    threshold=st.floats(0.001, RANGE),
    precision=st.sampled_from([0.005, 0.01, 0.025, 0.05]),
)
def test_bisection_finds_a_planted_step_within_the_precision_in_logarithmic_calls(
    threshold: float, precision: float
) -> None:
    search = bisect_threshold(step_responder(threshold), RANGE, precision)
    assert search.status == "found"
    assert search.threshold is not None and abs(search.threshold - threshold) <= precision
    low, high = search.interval  # type: ignore[misc]
    assert low < threshold <= high and search.precise
    assert search.calls <= bisection_calls(RANGE, precision)
    assert search.calls <= 2 * math.log2(RANGE / precision)  # the target; a sweep asks RANGE / precision
    assert search.reversals == ()


def test_a_model_that_never_notices_has_no_threshold_not_a_number() -> None:
    search = bisect_threshold(lambda offset: False, RANGE, PRECISION)
    assert search.status == "none_in_range"
    assert search.threshold is None and search.interval is None
    assert search.calls == 1  # the top of the range answers it


def test_a_model_that_reports_desync_at_zero_offset_is_a_false_alarm_with_no_threshold() -> None:
    search = bisect_threshold(lambda offset: True, RANGE, PRECISION)
    assert search.status == "at_zero"
    assert search.threshold is None
    assert [t.offset for t in search.trials] == [RANGE, 0.0]


def test_detection_that_flips_back_moves_the_threshold_to_where_detection_holds() -> None:
    # Detects on [0.5, 1.6], misses on (1.6, 2.5), detects from 2.5: plain bisection stops near 0.5.
    def respond(offset: float) -> bool:
        return 0.5 <= offset <= 1.6 or offset >= 2.5

    search = bisect_threshold(respond, RANGE, PRECISION)
    assert search.status == "found"
    assert search.threshold is not None and abs(search.threshold - 2.5) <= PRECISION
    assert search.reversals and all(1.6 < r < 2.5 for r in search.reversals)
    above = [t for t in search.trials if t.offset > search.threshold]
    assert above and all(t.detected for t in above)


def test_bisection_stops_at_the_budget_with_the_bracket_it_reached() -> None:
    search = bisect_threshold(step_responder(0.7), RANGE, PRECISION, budget=4)
    assert search.calls == 4 and search.budget_spent and not search.precise
    low, high = search.interval  # type: ignore[misc]
    assert low < 0.7 <= high


def test_a_side_without_room_asks_nothing() -> None:
    asked: list[float] = []
    search = bisect_threshold(lambda x: asked.append(x) or True, 0.0, PRECISION)
    assert search.status == "no_room" and not asked


def test_the_grid_sweep_the_searches_are_compared_with() -> None:
    assert grid_sweep_calls(3.0, 0.025) == 121
    assert grid_sweep_calls(1.0, 0.3) == 4


# ------------------------------------------------------------------------------------------------- psychometric


@given(
    threshold=st.floats(-1, 3),
    scale=st.floats(0.005, 1),
    guess=st.floats(0, 0.45),
    lapse=st.floats(0, 0.45),
)
def test_the_threshold_of_a_noisy_model_is_its_fifty_percent_point(
    threshold: float, scale: float, guess: float, lapse: float
) -> None:
    curve = Logistic(threshold, scale, guess, lapse)
    assert float(curve.p(threshold)) == pytest.approx(0.5, abs=1e-9)
    xs = np.linspace(threshold - 3, threshold + 3, 50)
    assert np.all(np.diff(curve.p(xs)) >= 0)
    assert guess - 1e-12 <= float(curve.p(threshold - 1e3)) and float(curve.p(threshold + 1e3)) <= 1 - lapse + 1e-12


def test_psi_recovers_a_noisy_threshold_with_an_interval_under_100_ms_in_60_calls() -> None:
    curve = Logistic(0.2, 0.04, guess=0.02, lapse=0.02)
    searches = [psi_threshold(logistic_responder(curve, seed), RANGE, PRECISION, budget=60) for seed in range(12)]
    assert all(s.status == "found" and s.calls == 60 for s in searches)
    widths = [s.interval[1] - s.interval[0] for s in searches]  # type: ignore[index,operator]
    assert float(np.median(widths)) <= 0.1
    covered = sum(s.interval[0] <= 0.2 <= s.interval[1] for s in searches)  # type: ignore[index,operator]
    assert covered >= 10  # a 95% interval: 12 of 12 expected, 10 tolerates bad luck, a biased fit does not pass
    assert all(abs(s.threshold - 0.2) <= 0.05 for s in searches)  # type: ignore[operator]


def test_psi_finds_the_fifty_percent_point_of_a_model_with_false_alarms_and_misses() -> None:
    curve = Logistic(0.8, 0.05, guess=0.1, lapse=0.05)
    errors = [
        psi_threshold(logistic_responder(curve, seed), RANGE, PRECISION, budget=80).threshold - 0.8  # type: ignore[operator]
        for seed in range(6)
    ]
    assert abs(float(np.median(errors))) <= 0.03


@pytest.mark.parametrize("rate", [0.0, 0.05, 1 / 3])
def test_a_noisy_model_that_never_reaches_half_has_no_threshold(rate: float) -> None:
    for seed in range(3):
        rng = np.random.default_rng(seed)
        search = psi_threshold(lambda _x, rng=rng: bool(rng.random() < rate), RANGE, PRECISION, budget=40)
        assert search.status == "none_in_range" and search.threshold is None


def test_a_noisy_model_that_mostly_reports_desync_at_zero_is_a_false_alarm() -> None:
    rng = np.random.default_rng(0)
    search = psi_threshold(lambda _x: bool(rng.random() < 0.9), RANGE, PRECISION, budget=40)
    assert search.status == "at_zero"


def test_psi_asks_each_offset_as_many_times_as_told_and_never_past_the_budget() -> None:
    search = psi_threshold(logistic_responder(Logistic(0.3, 0.04)), 1.0, PRECISION, budget=20, samples_per_offset=3)
    offsets = [t.offset for t in search.trials]
    assert len(offsets) == 20
    runs = [offsets[i : i + 3] for i in range(0, 18, 3)]
    assert all(len(set(r)) == 1 for r in runs)


def test_a_sampling_model_that_never_wavers_gets_the_gap_between_stimuli_as_its_interval() -> None:
    search = psi_threshold(step_responder(0.13), RANGE, PRECISION, budget=40)
    low, high = search.interval  # type: ignore[misc]
    assert low <= 0.13 <= high and high - low <= 2 * PRECISION


def test_the_profile_interval_is_unbounded_where_the_answers_do_not_bound_it() -> None:
    grid = PsiGrid.build(1.0, PRECISION)
    fit = profile_fit(grid, np.zeros(int(np.prod(grid.shape))), 0.95)  # no answers yet
    assert fit.interval == (None, None)


# ------------------------------------------------------------------------------------------------- with models


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_corpus(tmp_path_factory.mktemp("corpus"), 6, 0, progress=False)


@pytest.fixture(scope="module")
def corpus(manifest: Path) -> Corpus:
    return load_corpus(manifest)


@pytest.fixture(scope="module")
def listener_run(corpus: Corpus) -> tuple[CaseRunner, ModelThresholds]:
    runner = build_runner("listener", corpus, cache_dir=None)
    return runner, measure_model(runner, ThresholdSettings())


def test_the_listeners_window_is_its_decision_band_within_the_precision(
    listener_run: tuple[CaseRunner, ModelThresholds],
) -> None:
    runner, run = listener_run
    listener = runner.model
    assert isinstance(listener, Listener)
    q = question("sync", 0)
    assert len(run.sides) == 12 and all(r.search.method == "bisection" for r in run.sides)
    for result in run.sides:
        assert result.status == "found", result.to_json()
        # Where the listener switches: its band edge minus the offset it measures on the unshifted clip.
        measured = listener.value(Query(runner.clip(result.clip), q))[1]["offset"]
        edge = listener.sync.late_s if result.side == "lag" else listener.sync.early_s
        assert result.threshold == pytest.approx(edge - measured, abs=PRECISION)  # type: ignore[arg-type]
        assert result.threshold == pytest.approx(edge, abs=PRECISION + FRAME_S)
        assert result.search.calls <= bisection_calls(result.searched, PRECISION)
    lead, lag = side_window(run, "lead"), side_window(run, "lag")
    assert lead.median == pytest.approx(listener.sync.early_s, abs=PRECISION + FRAME_S)
    assert lag.median == pytest.approx(listener.sync.late_s, abs=PRECISION + FRAME_S)
    assert failure(run.sides[0], 0.5) is None
    assert "beyond the bound 0.1 s" in (failure(run.side("lag")[0], 0.1) or "")


def test_a_rerun_is_answered_from_the_cache(corpus: Corpus, tmp_path: Path) -> None:
    first = measure_model(build_runner("listener", corpus, cache_dir=tmp_path), ThresholdSettings(), clips=2)
    again = measure_model(build_runner("listener", corpus, cache_dir=tmp_path), ThresholdSettings(), clips=2)
    assert first.model_calls > 0 and again.model_calls == 0
    assert [r.threshold for r in again.sides] == [r.threshold for r in first.sides]


def test_the_searched_range_keeps_the_shifted_sound_inside_the_clip(corpus: Corpus) -> None:
    runner = build_runner("visual-only", corpus, cache_dir=None)
    for case in threshold_cases(runner):
        clip = runner.clip(case.clip)
        room = side_room(runner, clip, case.side, 10.0)
        moved = shift(clip, (room if case.side == "lag" else -room) - (av_offset(clip) or 0.0))
        heard = [e.audio_time for e in moved.events if e.audio_time is not None]
        assert heard and DEFAULT_OPTIONS.margin - 1e-3 <= min(heard) <= clip.duration - DEFAULT_OPTIONS.margin + 1e-3


def test_visual_only_never_notices_and_is_reported_without_a_number(corpus: Corpus, tmp_path: Path) -> None:
    runner = build_runner("visual-only", corpus, cache_dir=None)
    run = measure_model(runner, ThresholdSettings(), clips=2)
    assert {r.status for r in run.sides} == {"none_in_range"}
    doc = json.loads(write_json(tmp_path / "t.json", [run]).read_text())
    sides = doc["models"][0]["sides"]
    assert all(s["threshold_s"] is None and s["interval_s"] is None and s["status"] == "none_in_range" for s in sides)
    assert doc["models"][0]["window"]["lag"]["threshold_s"] is None
    assert "none within +" in format_run(run) and "none within -" in format_run(run)
    message = failure(run.sides[0], 0.5)
    assert message is not None and "no threshold within the searched range" in message


class Scripted:
    """A test model: answers the sync question with ``decide(offset, sample)``, logging every query."""

    def __init__(self, decide, *, samples: bool = False, name: str = "scripted") -> None:
        self.decide = decide
        self.name = name
        self.capabilities = Capabilities(samples=samples)
        self.asked: list[tuple[float, int]] = []

    @property
    def fingerprint(self) -> str:
        return f"{self.name}-1"

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        out = []
        for q in queries:
            offset = av_offset(q.clip)
            assert offset is not None
            self.asked.append((offset, q.sample))
            value = self.decide(offset, q.sample)
            out.append(Answer(text=value if value == "purple elephants" else value_text(q.question, value)))
        return out


def _runner(model: Scripted, corpus: Corpus) -> CaseRunner:
    return CaseRunner(model=model, corpus=corpus, cache=NullCache(), options=DEFAULT_OPTIONS)


def test_unreadable_answers_count_as_not_detected_and_are_reported(corpus: Corpus) -> None:
    runner = _runner(Scripted(lambda offset, sample: "purple elephants"), corpus)
    result = measure_side(runner, corpus.entries[0].id, "lag", ThresholdSettings())
    assert result.status == "none_in_range"
    assert result.invalid == result.search.calls and result.problems
    assert "1 invalid" in (failure(result, 0.5) or "")


def test_a_sampling_model_is_searched_adaptively_with_fresh_samples_per_offset(corpus: Corpus) -> None:
    late, early = Logistic(0.2, 0.04, 0.02, 0.02), Logistic(0.1, 0.03, 0.02, 0.02)

    def decide(offset: float, sample: int) -> str:
        digest = hashlib.sha256(f"{offset:.5f}/{sample}".encode()).digest()
        u = np.random.default_rng(int.from_bytes(digest[:8], "big")).random()
        if offset > 0 and u < float(late.p(offset)):
            return "audio_delayed"
        if offset < 0 and u < float(early.p(-offset)):
            return "audio_early"
        return "synchronized"

    model = Scripted(decide, samples=True, name="sampler")
    runner = _runner(model, corpus)
    clip = corpus.entries[0].id
    lag = measure_side(runner, clip, "lag", ThresholdSettings(budget=60))
    lead = measure_side(runner, clip, "lead", ThresholdSettings(budget=60))
    assert lag.search.method == lead.search.method == "psi"
    for result, truth in ((lag, 0.2), (lead, -0.1)):
        low, high = result.interval  # type: ignore[misc]
        assert low is not None and high is not None and low <= truth <= high and high - low <= 0.1
    asked = [(round(offset, 4), sample) for offset, sample in model.asked]
    assert len(set(asked)) == len(asked)  # a repeat at the same offset is a new sample, not a cache hit


# ------------------------------------------------------------------------------------------------- report


def test_the_median_interval_comes_from_order_statistics() -> None:
    assert median_interval([]) is None
    mid, low, high, coverage = median_interval([5.0, 1.0, 3.0, 2.0, 4.0, 6.0])  # type: ignore[misc]
    assert (mid, low, high) == (3.5, 1.0, 6.0) and coverage == pytest.approx(1 - 2 / 64)
    mid, low, high, coverage = median_interval([float(i) for i in range(1, 21)])  # type: ignore[misc]
    assert (low, high) == (6.0, 15.0) and coverage >= 0.95
    _, _, high, _ = median_interval([0.2, 0.3, math.inf])  # type: ignore[misc]
    assert math.isinf(high)


def test_the_report_has_a_leaderboard_row_per_model_json_and_a_png(
    listener_run: tuple[CaseRunner, ModelThresholds], corpus: Corpus, tmp_path: Path
) -> None:
    _, listening = listener_run
    deaf = measure_model(build_runner("visual-only", corpus, cache_dir=None), ThresholdSettings())
    board = format_leaderboard([listening, deaf]).splitlines()
    assert board[1].startswith("human (ITU-R BT.1359)") and "-0.045" in board[1] and "+0.125" in board[1]
    assert board[2].startswith("listener") and "12/12" in board[2]
    assert board[3].startswith("visual-only") and "none (6/6 clips)" in board[3] and "0/12" in board[3]
    doc = report_json([listening, deaf])
    assert doc["human_window_s"] == {"lead": -0.045, "lag": 0.125, "source": "ITU-R BT.1359"}
    window = doc["models"][0]["window"]
    assert window["lead"]["threshold_s"] < 0 < window["lag"]["threshold_s"]
    json.dumps(doc, allow_nan=False)
    png = plot_run(listening, tmp_path / "listener.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_thud_threshold_writes_the_table_json_and_plots(manifest: Path, tmp_path: Path) -> None:
    args = ["threshold", "--model", "listener", "--model", "visual-only", "--corpus", str(manifest)]
    args += ["--clips", "1", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "listener" in result.output and "none (1/1 clips)" in result.output
    doc = json.loads((tmp_path / "out" / "thresholds.json").read_text())
    assert [m["model"] for m in doc["models"]] == ["listener", "visual-only"]
    assert (tmp_path / "out" / "threshold-listener.png").is_file()
    bad = CliRunner().invoke(main, ["threshold", "--model", "listener", "--range", "0.1", "--precision", "0.2"])
    assert bad.exit_code == 2 and "--precision 0.2 must be smaller than --range 0.1" in bad.output


def test_settings_refuse_values_that_cannot_search() -> None:
    with pytest.raises(ValueError, match="precision"):
        ThresholdSettings(precision_s=0)
    with pytest.raises(ValueError, match="budget"):
        ThresholdSettings(budget=1)
    with pytest.raises(ValueError, match="method"):
        ThresholdSettings(method="grid")  # type: ignore[arg-type]


def test_the_logistic_and_the_chi2_quantile_are_scipys_without_importing_it() -> None:
    from scipy import special, stats

    from thud_mt.threshold import _chi2_1_ppf, expit

    z = np.linspace(-700.0, 700.0, 2001)
    np.testing.assert_allclose(expit(z), special.expit(z), rtol=1e-8, atol=0)
    for confidence in (0.5, 0.9, 0.95, 0.99):
        assert _chi2_1_ppf(confidence) == pytest.approx(stats.chi2.ppf(confidence, 1), rel=1e-12)
