"""Case results: JSON round trips, the results.jsonl writer and reader, and the study's metrics."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import run_together
from thud_mt.errors import ThudError
from thud_mt.results import (
    CaseResult,
    ResultsError,
    ResultsWriter,
    format_side_by_side,
    format_summary,
    read_results,
    summarize,
    summarize_by_model,
)

REPO = Path(__file__).resolve().parents[1]


def case(**changes: Any) -> CaseResult:
    """A passing shift/sync case; tests override what they are about."""
    fields: dict[str, Any] = {
        "case": "suites/test_shift.py::test_sync[synth-0001-p0-+0.5]",
        "model": "listener",
        "fingerprint": "fp-1",
        "relation": "shift",
        "probe": "sync",
        "clip": "synth-0001",
        "params": {"offset_s": 0.5},
        "paraphrase": 0,
        "question": "Is the sound in sync with the picture?",
        "edit": "audio delayed by 0.500 s",
        "source_answer": "synchronized",
        "followup_answer": "the audio is delayed",
        "source_value": "synchronized",
        "followup_value": "audio_delayed",
        "source_truth": "synchronized",
        "expected": "audio_delayed",
        "source_correct": True,
        "followup_correct": True,
        "verdict": "pass",
        "reason": "answer moved from synchronized to audio_delayed",
    }
    fields.update(changes)
    return CaseResult(**fields)


# --- records ------------------------------------------------------------------------------------------------------


def test_a_result_survives_a_json_round_trip() -> None:
    r = case(samples=5, pass_rate=0.8, interval=(0.376, 0.964), seconds=1.25, params={"donor": "synth-0003"})
    doc = json.loads(json.dumps(r.to_json()))
    assert CaseResult.from_json(doc) == r
    assert doc["interval"] == [0.376, 0.964] and doc["params"] == {"donor": "synth-0003"}


def test_numpy_values_become_plain_json() -> None:
    r = case(source_value=np.bool_(True), followup_value=np.float64(0.25), params={"offset_s": np.float32(0.5)})
    doc = r.to_json()
    assert json.loads(json.dumps(doc))["followup_value"] == 0.25
    assert type(doc["source_value"]) is bool and type(doc["params"]["offset_s"]) is float


def test_params_cannot_be_changed_through_the_record() -> None:
    params = {"offset_s": 0.5}
    r = case(params=params)
    params["offset_s"] = 9.0
    assert r.params["offset_s"] == 0.5
    with pytest.raises(TypeError):
        r.params["offset_s"] = 1.0  # type: ignore[index]


def test_an_unknown_verdict_is_refused() -> None:
    with pytest.raises(ValueError, match="verdict"):
        case(verdict="maybe")


# --- the results file ---------------------------------------------------------------------------------------------


def test_written_results_read_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.jsonl"
    results = [case(), case(verdict="fail", followup_correct=False, interval=(0.1, 0.9)), case(clip="synth-0002")]
    with ResultsWriter(path) as w:
        w.write_all(results)
    assert read_results(path) == results
    assert path.read_text().count("\n") == 3


def test_a_second_writer_appends_rather_than_truncates(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    with ResultsWriter(path) as w:
        w.write(case(clip="first"))
    with ResultsWriter(path) as w:
        w.write(case(clip="second"))
    assert [r.clip for r in read_results(path)] == ["first", "second"]


def test_an_unfinished_last_line_is_skipped_by_the_reader_and_cut_by_the_next_writer(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    whole = json.dumps(case(clip="whole").to_json())
    path.write_text(whole + "\n" + whole[:300])  # a writer killed mid-record
    with pytest.warns(UserWarning, match=r"results\.jsonl:2: skipped an unfinished last record"):
        assert [r.clip for r in read_results(path)] == ["whole"]
    with ResultsWriter(path) as w:
        w.write(case(clip="after"))
    assert path.read_text().splitlines() == [whole, json.dumps(case(clip="after").to_json(), separators=(",", ":"))]


def test_a_whole_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(case(clip="edited-by-hand").to_json()))
    with ResultsWriter(path) as w:
        w.write(case(clip="after"))
    assert [r.clip for r in read_results(path)] == ["edited-by-hand", "after"]


def test_a_broken_line_before_the_end_is_an_error_not_skipped(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"case": "torn\n' + json.dumps(case().to_json()) + "\n")
    with pytest.raises(ResultsError, match=r"results\.jsonl:1: not a JSON record"):
        read_results(path)


def test_the_writer_refuses_records_the_reader_would_refuse(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    with ResultsWriter(path) as w:
        with pytest.raises(ValueError, match="NaN"):
            w.write(case(pass_rate=math.nan))
        with pytest.raises(ValueError, match="/pass_rate"):
            w.write(case(pass_rate=1.5))
    assert path.read_text() == ""


def _kill_me_script(path: Path) -> str:
    return f"""
import sys
sys.path.insert(0, "tests")  # the tests' own helpers module
from tests.test_results import case
from thud_mt.results import ResultsWriter
w = ResultsWriter({str(path)!r})
i = 0
while True:  # killed from outside; lines are large so a kill lands mid-record often
    w.write(case(clip=f"c{{i}}", reason="x" * 200_000))
    i += 1
"""


def test_a_killed_writer_leaves_only_whole_records(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", _kill_me_script(path)], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while (not path.exists() or path.read_bytes().count(b"\n") < 20) and time.monotonic() < deadline:
            assert proc.poll() is None, "the writer died on its own"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with warnings.catch_warnings():  # the kill may or may not have landed mid-record
        warnings.simplefilter("ignore")
        results = read_results(path)
    assert len(results) >= 20
    assert [r.clip for r in results] == [f"c{i}" for i in range(len(results))]
    # The next run appends after the last whole record, whatever the kill left.
    with ResultsWriter(path) as w:
        w.write(case(clip="next-run"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r.clip for r in read_results(path)] == [*(r.clip for r in results), "next-run"]


def _append_many(path: str, worker: int, n: int, start: Any) -> None:
    start.wait()
    with ResultsWriter(path) as w:
        for i in range(n):
            # Records past the pipe buffer size: only the lock keeps them whole.
            w.write(case(clip=f"w{worker}-{i}", reason=str(worker) * 70_000))


def test_two_processes_appending_at_once_interleave_whole_records(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    run_together(_append_many, (str(path), 0, 200), (str(path), 1, 200))
    clips = [r.clip for r in read_results(path)]
    assert sorted(clips) == sorted(f"w{k}-{i}" for k in range(2) for i in range(200))
    for k in range(2):  # each worker's own records keep their order
        assert [c for c in clips if c.startswith(f"w{k}-")] == [f"w{k}-{i}" for i in range(200)]


def _lines(path: Path, *docs: Any) -> Path:
    path.write_text("".join((d if isinstance(d, str) else json.dumps(d)) + "\n" for d in docs))
    return path


def test_a_schema_violation_names_the_file_the_line_and_the_field(tmp_path: Path) -> None:
    bad = case().to_json() | {"verdict": "maybe"}
    path = _lines(tmp_path / "results.jsonl", case().to_json(), "", bad)
    with pytest.raises(ResultsError) as info:
        read_results(path)
    assert isinstance(info.value, ThudError)
    assert info.value.line == 3, "blank lines still count"
    assert str(info.value).startswith(f"{path}:3: ")
    assert "/verdict" in str(info.value)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d.pop("reason"), "'reason' is a required property"),
        (lambda d: d.update(paraphrase=-1), "/paraphrase"),
        (lambda d: d.update(interval=[0.2]), "/interval"),
        (lambda d: d.update(source_correct="yes"), "/source_correct"),
        (lambda d: d.update(surprise=1), "surprise"),
    ],
)
def test_each_kind_of_bad_record_is_refused(tmp_path: Path, edit: Any, needle: str) -> None:
    doc = case().to_json()
    edit(doc)
    path = _lines(tmp_path / "results.jsonl", case().to_json(), doc)
    with pytest.raises(ResultsError, match=r":2: ") as info:
        read_results(path)
    assert needle in str(info.value)


def test_non_json_and_nan_lines_are_refused_with_their_line(tmp_path: Path) -> None:
    nan_line = json.dumps(case().to_json()).replace('"seconds": 0.0', '"seconds": NaN')
    path = _lines(tmp_path / "results.jsonl", case().to_json(), nan_line)
    with pytest.raises(ResultsError, match=r":2: not a JSON record"):
        read_results(path)
    with pytest.raises(ResultsError, match=r":1: not a JSON record"):
        read_results(_lines(tmp_path / "other.jsonl", "{not json"))


def test_a_missing_results_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no such results file"):
        read_results(tmp_path / "absent.jsonl")


# --- metrics ------------------------------------------------------------------------------------------------------


def sync_case(
    clip: str,
    paraphrase: int,
    source_value: object,
    expected: object,
    followup_value: object,
    verdict: str,
    *,
    followup_correct: bool | None = None,
    source_answer: str | None = "an answer",
) -> CaseResult:
    return case(
        clip=clip,
        paraphrase=paraphrase,
        source_answer=source_answer,
        source_value=source_value,
        source_correct=None if source_answer is None else source_value == "synchronized",
        expected=expected,
        followup_answer=None if source_answer is None else "an answer",
        followup_value=followup_value,
        followup_correct=followup_correct,
        verdict=verdict,
    )


def offset_case(clip: str, expected: float, value: object, verdict: str, correct: bool | None) -> CaseResult:
    return case(
        probe="offset",
        clip=clip,
        source_truth=0.0,
        source_value=0.0,
        expected=expected,
        followup_value=value,
        followup_correct=correct,
        verdict=verdict,
    )


def presence_case(verdict: str, followup_correct: bool) -> CaseResult:
    return case(
        relation="mute",
        probe="presence",
        params={},
        source_truth=True,
        source_value=verdict != "source-failed",
        expected=False,
        followup_value=not followup_correct,
        followup_correct=followup_correct,
        verdict=verdict,
    )


# Hand-made results of one model, numbered as in the comments of the tests below.
RESULTS = [
    # shift / sync: every source is synchronized
    sync_case("c1", 0, "synchronized", "audio_delayed", "audio_delayed", "pass", followup_correct=True),  # 1
    sync_case("c1", 0, "synchronized", "audio_early", "audio_delayed", "fail", followup_correct=False),  # 2
    sync_case("c2", 0, "audio_delayed", "audio_delayed", "audio_delayed", "source-failed", followup_correct=True),  # 3
    sync_case("c3", 0, "synchronized", "audio_early", None, "invalid"),  # 4: unparseable follow-up
    sync_case("c4", 1, None, None, None, "error", source_answer=None),  # 5: the call failed
    sync_case("c1", 1, "audio_early", "synchronized", "synchronized", "source-failed", followup_correct=True),  # 6
    # shift / offset
    offset_case("c1", 0.5, 0.4, "pass", True),  # 7: error -0.1
    offset_case("c2", -0.5, 0.0, "fail", False),  # 8: error +0.5
    offset_case("c3", 1.0, 1.3, "pass", True),  # 9: error +0.3
    offset_case("c4", 0.5, None, "invalid", None),  # 10
    offset_case("c5", 0.5, True, "invalid", None),  # 11: a bool is not a number of seconds
    # mute / presence
    presence_case("pass", True),  # 12
    presence_case("pass", True),  # 13
    presence_case("fail", False),  # 14
    presence_case("source-failed", True),  # 15
]


def test_verdicts_are_counted_per_relation_and_probe() -> None:
    s = summarize(RESULTS)
    sync = s.group("shift", "sync")
    assert sync is not None and sync.n == 6
    assert dict(sync.counts) == {"pass": 1, "fail": 1, "source-failed": 2, "invalid": 1, "error": 1}
    offset = s.group("shift", "offset")
    assert offset is not None and dict(offset.counts) == {
        "pass": 2,
        "fail": 1,
        "source-failed": 0,
        "invalid": 2,
        "error": 0,
    }
    shift = s.group("shift")
    assert shift is not None and shift.n == 11 and shift.counts["invalid"] == 3
    assert s.overall.n == 15 and s.n == 15
    assert [(g.relation, g.probe) for g in s.groups] == [("shift", "sync"), ("shift", "offset"), ("mute", "presence")]
    assert s.group("swap") is None


def test_pass_rate_leaves_out_what_could_not_be_judged_and_combined_does_not() -> None:
    s = summarize(RESULTS)
    sync, offset, shift, mute = s.group("shift", "sync"), s.group("shift", "offset"), s.group("shift"), s.group("mute")
    assert sync and offset and shift and mute
    # pass / (pass + fail)
    assert (sync.pass_rate.successes, sync.pass_rate.n) == (1, 2)
    assert offset.pass_rate.value == pytest.approx(2 / 3)
    assert (shift.pass_rate.successes, shift.pass_rate.n) == (3, 5)
    assert mute.pass_rate.value == pytest.approx(2 / 3)
    # pass / (pass + fail + source-failed + invalid): errors are not the model's answer
    assert (sync.combined.successes, sync.combined.n) == (1, 5)
    assert offset.combined.value == pytest.approx(2 / 5)
    assert shift.combined.value == pytest.approx(3 / 10)
    assert mute.combined.value == pytest.approx(2 / 4)
    assert sync.pass_rate.interval == pytest.approx((0.0945, 0.9055), abs=5e-4)


def test_accuracy_per_intervention_counts_judged_follow_ups() -> None:
    acc = summarize(RESULTS).accuracy_by_relation
    assert (acc["shift"].successes, acc["shift"].n) == (5, 7)  # cases 1, 3, 6, 7, 9 right; 2, 8 wrong
    assert (acc["mute"].successes, acc["mute"].n) == (3, 4)


def test_false_sync_alarms_count_each_answered_original_once() -> None:
    alarm = summarize(RESULTS).false_sync_alarm
    # originals (c1, 0) sync, (c2, 0) delayed, (c3, 0) sync, (c1, 1) early; (c4, 1) never answered
    assert (alarm.successes, alarm.n) == (2, 4)


def test_direction_accuracy_only_counts_directed_answers_on_desynced_clips() -> None:
    direction = summarize(RESULTS).direction_accuracy
    assert (direction.successes, direction.n) == (2, 3)  # cases 1 and 3 right, 2 wrong; 4 and 6 do not count


def test_three_class_sync_accuracy_covers_originals_and_follow_ups() -> None:
    acc = summarize(RESULTS).sync_accuracy
    # originals: 2 of 4 right; follow-ups with an expectation: 1, 3, 6 right, 2 and 4 (unparseable) wrong
    assert (acc.successes, acc.n) == (2 + 3, 4 + 5)


def test_offset_error_over_numeric_answers() -> None:
    err = summarize(RESULTS).offset_error
    assert err.n == 3
    assert err.mae == pytest.approx(0.3)
    assert err.median == pytest.approx(0.3)
    assert err.bias == pytest.approx((-0.1 + 0.5 + 0.3) / 3)


def test_no_results_give_empty_rates_not_errors() -> None:
    s = summarize([])
    assert s.n == 0 and s.groups == () and s.false_sync_alarm.value is None
    assert s.offset_error.mae is None
    alarms = next(line for line in format_summary(s, "empty").splitlines() if line.startswith("false sync alarms:"))
    assert alarms.split() == ["false", "sync", "alarms:", "-"]


def test_the_summary_is_json() -> None:
    doc = json.loads(json.dumps(summarize(RESULTS).to_json(), allow_nan=False))
    assert doc["false_sync_alarm"] == {
        "successes": 2,
        "n": 4,
        "value": 0.5,
        "interval": pytest.approx([0.15, 0.85], abs=0.01),
    }
    assert doc["groups"][0]["counts"]["source-failed"] == 2
    assert doc["accuracy_by_relation"]["mute"]["n"] == 4


def test_the_text_table_is_aligned_and_ends_with_the_metrics() -> None:
    text = format_summary(summarize(RESULTS), "listener on synth")
    lines = text.splitlines()
    assert lines[0] == "listener on synth"
    header, rows = lines[1], lines[2:8]
    column = header.index("pass rate")
    sync_row = next(r for r in rows if r.split()[:2] == ["shift", "sync"])
    assert sync_row[column:].startswith("0.500 [0.095, 0.905]")
    assert sync_row.split()[2:8] == ["6", "1", "1", "2", "1", "1"]
    assert sync_row.rstrip().endswith("0.200")
    assert any(r.split()[:2] == ["shift", "(all)"] for r in rows)
    assert "false sync alarms:" in text and "0.500 (2/4)" in text
    assert "sync direction accuracy:" in text and "0.667 (2/3)" in text
    assert "MAE 0.300 s, median 0.300 s" in text
    assert "accuracy after mute:" in text and "(3/4)" in text


def test_two_models_read_side_by_side() -> None:
    # A visual-only model that never notices the mute: every presence follow-up wrong.
    deaf = [
        CaseResult.from_json(r.to_json() | {"model": "clever-hans", "verdict": "fail", "followup_correct": False})
        for r in RESULTS[11:]
    ]
    summaries = summarize_by_model([*RESULTS, *deaf])
    assert list(summaries) == ["clever-hans", "listener"]
    text = format_side_by_side({"listener": summaries["listener"], "clever-hans": summaries["clever-hans"]})
    lines = text.splitlines()
    assert lines[0].index("listener") < lines[0].index("clever-hans")
    mute = next(line for line in lines if line.split()[:2] == ["mute", "presence"])
    assert mute.index("0.667") < mute.index("0.000"), "listener block first, then clever-hans"
    sync = next(line for line in lines if line.split()[:2] == ["shift", "sync"])
    assert sync.count("[") == 1, "a model with no such cases shows an empty block"
    alarms = next(line for line in lines if line.startswith("false sync alarms:"))
    assert "0.500 (2/4)" in alarms and alarms.rstrip().endswith("-")
