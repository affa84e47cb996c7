"""`thud report` and the JUnit properties: numbers checked against the results they come from."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from thud_mt.cli import main
from thud_mt.corpus.synth import build_synthetic_corpus
from thud_mt.report.build import report_schema
from thud_mt.report.categories import CATEGORIES, CATEGORY_NAMES, categorize, count_categories
from thud_mt.report.junit import CaseTally, session_properties
from thud_mt.report.leaderboard import build_leaderboard, format_markdown, format_terminal, visual_invariance
from thud_mt.report.plots import plot_failure_heatmap
from thud_mt.report.predictions import tally_predictions
from thud_mt.results import CaseResult, read_results, summarize
from thud_mt.stats import wilson

ROOT = Path(__file__).resolve().parents[1]
RELATION_SUITES = [str(ROOT / "suites" / f"test_{r}.py") for r in ("identity", "shift", "mute", "swap")]


def case(relation: str, probe: str, verdict: str = "fail", model: str = "m", **fields: Any) -> CaseResult:
    """A result record with the fields a category or a metric reads; the rest are plausible fillers."""
    values: dict[str, Any] = {
        "case": f"{relation}: clip {probe}",
        "model": model,
        "fingerprint": f"{model}-1",
        "relation": relation,
        "probe": probe,
        "clip": "clip",
        "params": {},
        "paraphrase": 0,
        "question": "?",
        "edit": "an edit",
        "source_answer": "a",
        "followup_answer": "b",
        "source_value": None,
        "followup_value": None,
        "source_truth": None,
        "expected": None,
        "source_correct": True,
        "followup_correct": verdict == "pass",
        "verdict": verdict,
        "reason": "",
    }
    values.update(fields)
    return CaseResult(**values)


# --- failure taxonomy ---------------------------------------------------------------------------------------------

TAXONOMY = [
    ("audio hallucination", case("mute", "presence", followup_value=True, expected=False)),
    ("audio hallucination", case("mute", "source", followup_value="thud", expected="no sound")),
    ("audio hallucination", case("mute", "sound_time", followup_value=1.0, expected=None)),
    ("false sync", case("shift", "sync", followup_value="synchronized", expected="audio_delayed")),
    ("wrong direction", case("shift", "sync", followup_value="audio_early", expected="audio_delayed")),
    ("false sync alarm", case("shift", "sync", followup_value="audio_delayed", expected="synchronized")),
    (
        "false sync alarm",
        case(
            "shift",
            "sync",
            "source-failed",
            source_value="audio_early",
            source_truth="synchronized",
            source_correct=False,
        ),
    ),
    (
        "wrong on the original",
        case("shift", "sync", "source-failed", source_value="synchronized", source_truth="audio_delayed"),
    ),
    ("offset not moved", case("shift", "offset", followup_value=0.1, source_truth=0.0, expected=0.8)),
    ("offset off", case("shift", "offset", followup_value=1.5, source_truth=0.0, expected=0.8)),
    ("time not moved", case("shift", "sound_time", followup_value=1.0, source_truth=1.0, expected=2.0)),
    ("time off", case("shift", "sound_time", followup_value=2.6, source_truth=1.0, expected=2.0)),
    ("sound missed", case("shift", "sound_time", followup_value=None, source_truth=1.0, expected=2.0)),
    ("sound missed", case("shift", "presence", followup_value=False, expected=True)),
    ("sound missed", case("swap", "source", followup_value="no sound", source_truth="thud", expected="clap")),
    ("followed the picture", case("swap", "match", followup_value=True, expected=False)),
    ("followed the picture", case("swap", "source", followup_value="thud", source_truth="thud", expected="clap")),
    ("other wrong sound", case("swap", "source", followup_value="bell", source_truth="thud", expected="clap")),
    ("visual answer changed", case("mute", "visual", followup_value=2.0, expected=1.0)),
    ("unstable answer", case("identity", "visual", followup_value=2.0, expected=1.0)),
    ("unstable answer", case("identity", "presence", followup_value=False, expected=True)),
    ("unreadable answer", case("swap", "match", "invalid")),
    ("model error", case("mute", "presence", "error", source_answer=None, followup_answer=None)),
    ("other wrong answer", case("reverb", "presence", followup_value=False, expected=True)),
]


@pytest.mark.parametrize(("expected", "record"), TAXONOMY, ids=[f"{c} {r.relation}-{r.probe}" for c, r in TAXONOMY])
def test_each_failure_falls_in_the_category_that_describes_it(expected: str, record: CaseResult) -> None:
    assert categorize(record) == expected


def test_the_taxonomy_examples_cover_every_category_and_passes_have_none() -> None:
    assert {c for c, _ in TAXONOMY} == set(CATEGORY_NAMES)
    assert categorize(case("mute", "presence", "pass", followup_value=False, expected=False)) is None


def test_category_counts_list_every_category_in_order_with_hand_counted_numbers() -> None:
    records = [r for _, r in TAXONOMY] + [case("mute", "presence", "pass", followup_value=False)] * 3
    counts = count_categories(records)
    assert list(counts) == list(CATEGORY_NAMES)
    assert counts["audio hallucination"] == 3
    assert counts["sound missed"] == 3
    assert counts["false sync alarm"] == 2
    assert counts["wrong direction"] == 1
    assert sum(counts.values()) == len(TAXONOMY)  # the passes are in no category


def test_the_docs_table_lists_exactly_the_categories_and_their_descriptions() -> None:
    text = (ROOT / "docs" / "report.md").read_text()
    section = text.split("## Failure categories", 1)[1].split("##", 1)[0]
    rows = re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", section, flags=re.M)
    documented = {name: when for name, when in rows if name not in ("category", "---")}
    assert documented == {c.name: c.description for c in CATEGORIES}


# --- answer counts ------------------------------------------------------------------------------------------------


def test_prediction_counts_take_each_original_answer_once_and_split_shifts_by_direction() -> None:
    records = [
        # Three mute cases about one clip and paraphrase: one original answer, three muted answers.
        case("mute", "presence", source_value=True, followup_value=True, clip="a", params={"k": i})
        for i in range(3)
    ] + [
        case("mute", "presence", "pass", source_value=True, followup_value=False, clip="b"),
        case("shift", "sync", source_value="synchronized", followup_value="synchronized", expected="audio_delayed"),
        case(
            "shift", "sync", "pass", source_value="synchronized", followup_value="audio_early", expected="audio_early"
        ),
        case(
            "swap", "source", "pass", source_value="thud", source_truth="thud", followup_value="clap", expected="clap"
        ),
        case("swap", "source", "invalid", source_value="thud", source_truth="thud", followup_value=None, clip="c"),
        case("identity", "presence", "pass", source_value=True, followup_value=True, clip="d"),
    ]
    got = {(t.probe, t.condition): dict(t.counts) for t in tally_predictions(records)}
    assert got[("presence", "original")] == {"yes": 3}  # clips a, b, d
    assert got[("presence", "muted")] == {"yes": 3, "no": 1}
    assert got[("sync", "original")] == {"synchronized": 1}
    assert got[("sync", "shifted late")] == {"synchronized": 1}
    assert got[("sync", "shifted early")] == {"audio early": 1}
    assert got[("source", "swapped")] == {"donor's sound": 1, "unreadable": 1}
    assert ("presence", "identity") not in got


# --- leaderboard from constructed records --------------------------------------------------------------------------


def _two_models() -> list[CaseResult]:
    strong = [case("mute", "presence", "pass", "strong", followup_value=False, clip=f"s{i}") for i in range(4)]
    strong += [case("mute", "visual", "pass", "strong", followup_value=1.0, clip="s0")]
    weak = [case("mute", "presence", "fail", "weak", followup_value=True, clip=f"w{i}") for i in range(3)]
    weak += [case("mute", "presence", "pass", "weak", followup_value=False, clip="w3")]
    weak += [case("mute", "presence", "source-failed", "weak", source_correct=False, clip="w4")]
    weak += [case("mute", "visual", "fail", "weak", followup_value=2.0, expected=1.0, clip="w0")]
    weak += [case("shift", "offset", "fail", "weak", followup_value=0.0, source_truth=0.0, expected=0.5)]
    weak += [case("shift", "offset", "pass", "weak", followup_value=0.3, source_truth=0.0, expected=0.4, clip="w5")]
    return strong + weak


def test_the_leaderboard_ranks_by_combined_accuracy_with_hand_counted_rates() -> None:
    records = _two_models()
    by_model = {m: [r for r in records if r.model == m] for m in ("weak", "strong")}
    board = build_leaderboard(
        {m: summarize(rs) for m, rs in by_model.items()}, {m: visual_invariance(rs) for m, rs in by_model.items()}
    )
    assert [e.model for e in board.entries] == ["strong", "weak"]
    weak = board.entry("weak").values
    assert (weak["mute.pass_rate"].successes, weak["mute.pass_rate"].n) == (1, 5)  # 1 pass, 3 + 1 fails
    assert (weak["shift.pass_rate"].successes, weak["shift.pass_rate"].n) == (1, 2)
    assert (weak["combined"].successes, weak["combined"].n) == (2, 8)  # the source-failed case counts here
    assert weak["visual_invariance"].value == 0.0
    assert weak["offset_mae"] == pytest.approx((0.5 + 0.1) / 2)
    assert weak["identity.pass_rate"] is None  # no identity cases: "-"
    assert weak["combined"].interval == wilson(2, 8)

    markdown = format_markdown(board)
    lo, hi = wilson(1, 5)
    assert "| 2 | weak | 8 | 0.500 (1/2) [" in markdown  # rank, model, cases, then shift first (study order)
    assert f"0.200 (1/5) [{lo:.3f}, {hi:.3f}]" in markdown
    assert "| 1 | strong | 5 |" in markdown

    terminal = format_terminal(board).splitlines()
    assert terminal[0].split() == ["metric", "#1", "strong", "#2", "weak"]
    start = terminal[0].index("#2")  # every row's second model column starts at the same place
    assert all(line[start - 2 : start] == "  " for line in terminal if len(line) > start)


def test_a_heatmap_with_no_failures_is_still_an_image(tmp_path: Path) -> None:
    path = plot_failure_heatmap({"perfect": dict.fromkeys(CATEGORY_NAMES, 0)}, {"perfect": 7}, tmp_path / "h.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= 400


# --- real runs of the reference models ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """listener (measured, one process) and visual-only (-n 2, --junitxml) on 6 synthetic clips."""
    base = tmp_path_factory.mktemp("report")
    corpus = build_synthetic_corpus(base / "corpus", 6, 3, progress=False)
    results = base / "results"

    def suites(model: str, *extra: str) -> None:
        command = [sys.executable, "-m", "pytest", *RELATION_SUITES, f"--model={model}", f"--corpus={corpus}"]
        command += [f"--thud-cache={base / 'cache'}", f"--thud-results={results / f'{model}.jsonl'}"]
        command += ["--thud-max-examples=2", "-q", "-p", "no:cacheprovider", *extra]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(command, cwd=base, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
        assert (results / f"{model}.jsonl").stat().st_size, done.stdout[-3000:]

    suites("listener", "--thud-measure")
    suites("visual-only", "-n", "2", f"--junitxml={base / 'visual-only.xml'}")
    yield base


def _report(*args: str) -> Any:
    return CliRunner().invoke(main, ["report", *args], catch_exceptions=False)


def _md_rows(path: Path) -> dict[str, dict[str, str]]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = [dict(zip(head, (c.strip() for c in line.strip("|").split(" | ")), strict=True)) for line in lines[2:]]
    return {row["model"]: row for row in rows}


def _rate_cell(successes: int, n: int) -> str:
    lo, hi = wilson(successes, n)
    return f"{successes / n:.3f} ({successes}/{n}) [{lo:.3f}, {hi:.3f}]"


def test_report_of_two_reference_models_matches_their_results(runs: Path) -> None:
    out = runs / "report"
    outcome = _report(str(runs / "results"), "--out", str(out))
    assert outcome.exit_code == 0, outcome.output
    records = {m: read_results(runs / "results" / f"{m}.jsonl") for m in ("listener", "visual-only")}

    rows = _md_rows(out / "leaderboard.md")
    assert [rows[m]["rank"] for m in ("listener", "visual-only")] == ["1", "2"]  # the listener hears
    for model, rs in records.items():
        assert rows[model]["cases"] == str(len(rs))
        for relation in ("shift", "mute", "swap"):
            verdicts = Counter(r.verdict for r in rs if r.relation == relation)
            expected = _rate_cell(verdicts["pass"], verdicts["pass"] + verdicts["fail"])
            assert rows[model][f"{relation} pass rate"] == expected
        verdicts = Counter(r.verdict for r in rs)
        judged = verdicts["pass"] + verdicts["fail"] + verdicts["source-failed"] + verdicts["invalid"]
        assert rows[model]["combined accuracy"] == _rate_cell(verdicts["pass"], judged)
        summary = summarize(rs)
        assert rows[model]["false sync alarms"] == _rate_cell(
            summary.false_sync_alarm.successes, summary.false_sync_alarm.n
        )
        assert rows[model]["offset MAE (s)"] == f"{summary.offset_error.mae:.3f}"
    assert rows["visual-only"]["mute pass rate"] != rows["listener"]["mute pass rate"]

    doc = json.loads((out / "summary.json").read_text())
    jsonschema.validate(doc, report_schema())
    for model, rs in records.items():
        assert doc["models"][model]["summary"] == json.loads(json.dumps(summarize(rs).to_json()))
        assert doc["models"][model]["categories"] == dict(count_categories(rs))
    hallucinations = sum(
        r.verdict == "fail" and r.relation == "mute" and r.probe != "visual" for r in records["visual-only"]
    )
    assert hallucinations > 0
    assert doc["models"]["visual-only"]["categories"]["audio hallucination"] == hallucinations
    assert sum(doc["models"]["listener"]["categories"].values()) == 0

    for name in ("failure_heatmap.png", "predictions.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG"
            assert image.width >= 400 and image.height >= 400
            pixels = np.asarray(image.convert("RGB"))
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # drawn on, not a blank canvas

    printed = outcome.stdout
    assert re.search(r"^metric\s+#1 listener\s+#2 visual-only$", printed, flags=re.M)
    assert "wrote " + str(out / "leaderboard.md") in printed


def test_name_option_labels_a_file(runs: Path) -> None:
    file = runs / "results" / "listener.jsonl"
    outcome = _report("--name", "baseline=" + str(file), "--out", str(runs / "named"))
    assert outcome.exit_code == 0, outcome.output
    assert list(_md_rows(runs / "named" / "leaderboard.md")) == ["baseline"]


def test_a_malformed_file_is_named_by_line_and_the_other_models_still_reported(runs: Path, tmp_path: Path) -> None:
    good = runs / "results" / "listener.jsonl"
    bad = tmp_path / "broken.jsonl"
    lines = good.read_text().splitlines()
    bad.write_text(lines[0] + "\n{not json\n" + lines[1] + "\n")
    missing = tmp_path / "nowhere.jsonl"
    outcome = _report(str(good), str(bad), str(missing), "--out", str(tmp_path / "out"))
    assert outcome.exit_code == 2
    assert f"{bad}:2: not a JSON record" in outcome.stderr
    assert f"{missing}: no such results file or folder" in outcome.stderr
    assert list(_md_rows(tmp_path / "out" / "leaderboard.md")) == ["listener"]
    problems = json.loads((tmp_path / "out" / "summary.json").read_text())["problems"]
    assert any(p.startswith(f"{bad}:2:") for p in problems)


def test_no_results_at_all_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    outcome = _report(str(empty), "--out", str(tmp_path / "out"))
    assert outcome.exit_code == 2
    assert "no results to report" in outcome.stderr
    assert not (tmp_path / "out").exists()


# --- JUnit --------------------------------------------------------------------------------------------------------


def test_junit_properties_carry_the_session_rates_computed_on_the_xdist_controller(runs: Path) -> None:
    suite = ET.parse(runs / "visual-only.xml").getroot().find("testsuite")
    assert suite is not None
    props = {p.get("name"): p.get("value") for p in suite.iterfind("properties/property")}
    records = read_results(runs / "results" / "visual-only.jsonl")
    assert props["thud.model"] == "visual-only"
    for relation in ("identity", "shift", "mute", "swap"):
        verdicts = Counter(r.verdict for r in records if r.relation == relation)
        passed, n = verdicts["pass"], verdicts["pass"] + verdicts["fail"]
        assert float(props[f"thud.{relation}.pass_rate"]) == passed / n
        assert (
            float(props[f"thud.{relation}.pass_rate.low"]),
            float(props[f"thud.{relation}.pass_rate.high"]),
        ) == wilson(passed, n)
        assert int(props[f"thud.{relation}.pass_rate.n"]) == n
        assert int(props[f"thud.{relation}.cases"]) == sum(verdicts.values())
    presence = Counter(r.verdict for r in records if (r.relation, r.probe) == ("mute", "presence"))
    assert float(props["thud.mute.presence.pass_rate"]) == presence["pass"] / (presence["pass"] + presence["fail"])
    assert float(props["thud.all.pass_rate"]) == summarize(records).overall.pass_rate.value


def test_junit_test_cases_carry_their_own_draws_counted_once(runs: Path) -> None:
    suite = ET.parse(runs / "visual-only.xml").getroot().find("testsuite")
    assert suite is not None
    records = read_results(runs / "results" / "visual-only.jsonl")
    per_case = {
        case_name: Counter(r.verdict for r in records if r.case == case_name) for case_name in {r.case for r in records}
    }
    checked = 0
    for testcase in suite.iterfind("testcase"):
        props = {p.get("name"): p.get("value") for p in testcase.iterfind("properties/property")}
        relation = testcase.get("classname", "").rsplit("test_", 1)[-1]
        case_id = re.match(r".*?\[(.*)\]", testcase.get("name", "")).group(1)  # type: ignore[union-attr]
        verdicts = per_case[f"{relation}: {case_id}"]
        assert int(props["thud.draws"]) == sum(verdicts.values())
        assert {v: int(props[f"thud.verdict.{v}"]) for v in verdicts} == dict(verdicts)
        checked += 1
    assert checked == len(per_case)


def test_session_properties_leave_out_rates_with_nothing_to_measure() -> None:
    weak = [r for r in _two_models() if r.model == "weak"]
    props = dict(session_properties(summarize(weak), "weak"))
    assert props["thud.metric.direction_accuracy.n"] == 0
    assert "thud.metric.direction_accuracy" not in props
    assert props["thud.shift.offset.pass_rate"] == 0.5 and props["thud.shift.offset.pass_rate.n"] == 2
    assert props["thud.metric.offset_mae"] == pytest.approx(0.3)


def test_a_replayed_draw_counts_once_in_the_case_properties() -> None:
    tally = CaseTally()
    failing = case("mute", "presence", followup_value=True, params={"offset_s": 0.5})
    for record in (failing, failing, case("mute", "presence", "pass", params={"offset_s": 1.0})):
        tally.add(record)
    props = dict(tally.properties())
    assert (props["thud.draws"], props["thud.verdict.fail"], props["thud.verdict.pass"]) == (2, 1, 1)
    assert props["thud.pass_rate"] == "0.5"
