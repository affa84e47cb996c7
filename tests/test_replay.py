"""Cassettes: recording any model's answers and replaying them with ``--model=replay:PATH``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from helpers import make_clip, run_together
from thud_mt.corpus.synth import build_synthetic_corpus
from thud_mt.errors import ThudError
from thud_mt.interventions import mute, shift
from thud_mt.models.base import Answer, Capabilities, Query
from thud_mt.models.reference import Chance
from thud_mt.models.registry import ModelOptions, ModelSpecError, create
from thud_mt.models.replay import CASSETTE_FORMAT, CassetteError, Replay, record, session_only
from thud_mt.probes import question

ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = ["pytester"]


class Scorer:
    """Answers presence questions with log-prob scores, and fails on the visual question."""

    name = "scorer"
    capabilities = Capabilities(logprobs=True)
    fingerprint = "scorer/1 temperature=0"

    def __init__(self) -> None:
        self.calls = 0

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        self.calls += len(queries)
        out = []
        for q in queries:
            if q.question.probe == "visual":
                out.append(Answer(text="", error="HTTP 503 Service Unavailable"))
            else:
                out.append(Answer(text="", scores={"yes": -0.1, "no": -2.5}, meta={"finish_reason": "stop"}))
        return out


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_recorded_session_replays_the_same_answers_without_the_model(tmp_path: Path) -> None:
    cassette = tmp_path / "chance.jsonl"
    clip = make_clip()
    queries = [
        Query(clip, question(probe, paraphrase), sample)
        for probe in ("presence", "sync", "sound_time")
        for paraphrase in (0, 1)
        for sample in (0, 1)
    ] + [Query(shift(clip, 0.5), question("sync")), Query(mute(clip), question("presence"))]
    live = Chance(seed=3)
    recorded = record(live, cassette).answer(queries)
    replay = Replay(cassette)
    assert [a.text for a in replay.answer(queries)] == [a.text for a in recorded]
    assert replay.fingerprint == live.fingerprint  # so answer-cache keys agree with the recorded run
    assert replay.capabilities == live.capabilities and replay.name == "replay:chance"
    assert len(replay) == len(queries)


def test_the_cassette_is_a_header_and_one_line_per_answer(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    clip = make_clip(clip_id="clip-7")
    record(Scorer(), cassette).answer([Query(clip, question("presence"))])
    header, entry = lines(cassette)
    assert header == {
        "cassette": CASSETTE_FORMAT,
        "model": "scorer",
        "fingerprint": "scorer/1 temperature=0",
        "capabilities": {
            "audio": True,
            "video": True,
            "audio_in_video": True,
            "max_seconds": None,
            "samples": False,
            "logprobs": True,
        },
    }
    assert entry["probe"] == "presence" and entry["prompt"] == question("presence").text
    assert entry["clip"] == "clip-7" and entry["sample"] == 0 and len(entry["media"]) == 64
    assert entry["scores"] == {"yes": -0.1, "no": -2.5} and entry["meta"] == {"finish_reason": "stop"}


def test_scores_replay_and_failed_calls_are_not_recorded(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    clip = make_clip()
    queries = [Query(clip, question("presence")), Query(clip, question("visual"))]
    record(Scorer(), cassette).answer(queries)
    scored, failed = Replay(cassette).answer(queries)
    assert scored.text == "" and scored.scores == {"yes": -0.1, "no": -2.5} and scored.error is None
    assert scored.meta["replayed"] == str(cassette)
    assert failed.error is not None and failed.error.startswith(f"not in cassette {cassette}: visual question")


def test_a_question_the_cassette_lacks_is_an_error_naming_it(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    clip = make_clip(clip_id="dog")
    record(Chance(), cassette).answer([Query(shift(clip, 0.5), question("sync"))])
    replay = Replay(cassette)
    other_edit, other_sample = replay.answer(
        [Query(shift(clip, 0.25), question("sync")), Query(clip, question("sync"), 2)]
    )
    assert other_edit.error == (
        f"not in cassette {cassette}: sync question about clip dog; record it again with --thud-record"
    )
    assert other_sample.error is not None and "clip dog (sample 2)" in other_sample.error


def test_one_cassette_holds_one_model(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    record(Chance(seed=1), cassette).answer([Query(make_clip(), question("presence"))])
    record(Chance(seed=1), cassette).answer([Query(make_clip(seed=2), question("presence"))])  # same model: appends
    assert len(lines(cassette)) == 3
    with pytest.raises(CassetteError, match=r"holds answers of 'chance' .*seed=1.*record to another file"):
        record(Chance(seed=2), cassette)


def _record_many(path: str, worker: int, n: int, start) -> None:
    start.wait()
    model = record(Chance(seed=5), path)
    for i in range(n):
        model.answer(
            [Query(make_clip(clip_id=f"w{worker}-{i}", seed=worker * 1000 + i, duration=0.4), question("sync"))]
        )


def test_workers_append_whole_lines_under_one_header(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    run_together(_record_many, (str(cassette), 0, 40), (str(cassette), 1, 40))
    rows = lines(cassette)  # every line parses: none interleaved
    assert sum("cassette" in r for r in rows) == 1 and "cassette" in rows[0]
    assert sorted(r["clip"] for r in rows[1:]) == sorted(f"w{k}-{i}" for k in range(2) for i in range(40))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ('{"probe": "presence"}\n', r":1: the first line is not a cassette header|:1: an answer before the header"),
        ('{"cassette": "thud-cassette/9", "model": "m", "fingerprint": "f"}\n', r":1: format 'thud-cassette/9'"),
        ('{"cassette": "thud-cassette/1", "model": "m", "fingerprint": "f"}\nnot json\n{}\n', r":2: not JSON"),
        (
            '{"cassette": "thud-cassette/1", "model": "m", "fingerprint": "f"}\n{"probe": 3}\n',
            r":2: 'probe' is missing",
        ),
        (
            '{"cassette": "thud-cassette/1", "model": "m", "fingerprint": "f"}\n'
            '{"cassette": "thud-cassette/1", "model": "n", "fingerprint": "g"}\n',
            r":2: a second header names another model",
        ),
    ],
)
def test_a_bad_cassette_names_the_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    cassette = tmp_path / "bad.jsonl"
    cassette.write_text(content)
    with pytest.raises(CassetteError, match=message):
        Replay(cassette)


def test_a_last_line_cut_short_by_a_killed_run_is_skipped(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    query = Query(make_clip(), question("presence"))
    record(Chance(), cassette).answer([query])
    with cassette.open("a") as f:
        f.write('{"probe": "sync", "prom')
    with pytest.warns(UserWarning, match="unfinished last line"):
        replay = Replay(cassette)
    assert replay.answer([query])[0].error is None


def test_replay_is_a_model_spec(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    record(Chance(), cassette).answer([Query(make_clip(), question("presence"))])
    assert create(f"replay:{cassette}", ModelOptions()).name == "replay:chance"
    with pytest.raises(CassetteError, match=r"nowhere.jsonl: no such file \(record one with --thud-record PATH\)"):
        create(f"replay:{tmp_path / 'nowhere.jsonl'}", ModelOptions())
    with pytest.raises(ModelSpecError, match="name the cassette"):
        create("replay:", ModelOptions())
    assert issubclass(CassetteError, ThudError)  # the plugin reports it as a usage error


def test_recording_reuses_only_answers_given_in_this_session(tmp_path: Path) -> None:
    from thud_mt.cache import AnswerCache

    with AnswerCache(tmp_path / "answers.sqlite") as store:
        store.put("earlier", Answer(text="Yes."))
        cache = session_only(store)
        assert cache.get("earlier") is None  # stored before: the model is asked, so the cassette gets it
        assert cache.put("now", Answer(text="No."))
        assert cache.get("now") is not None and cache.get("now").text == "No."
        assert not cache.put("failed", Answer(text="", error="boom")) and cache.get("failed") is None
        assert cache.stats().misses >= 2


# --------------------------------------------------------------------------------------------- through the plugin


@pytest.fixture
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_corpus(tmp_path_factory.mktemp("corpus"), 3, 4, progress=False)


def suite(pytester: pytest.Pytester, corpus: Path, model: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        str(ROOT / "suites" / "test_shift.py"),
        f"--model={model}",
        f"--corpus={corpus}",
        f"--thud-cache={pytester.path / 'cache'}",
        f"--thud-results={pytester.path / 'results.jsonl'}",
        "--thud-max-examples=2",
        "-p",
        "no:cacheprovider",
        *args,
    )


def verdicts(pytester: pytest.Pytester) -> dict[tuple, str]:
    rows = lines(pytester.path / "results.jsonl")
    return {(r["case"], json.dumps(r["params"], sort_keys=True), r["paraphrase"]): r["verdict"] for r in rows}


def test_a_recorded_run_is_rechecked_without_the_model(pytester: pytest.Pytester, corpus: Path) -> None:
    cassette = pytester.path / "chance.jsonl"
    suite(pytester, corpus, "chance", f"--thud-record={cassette}")
    live = verdicts(pytester)
    recorded = lines(cassette)
    assert live and recorded[0]["model"] == "chance" and len(recorded) > len(live)
    # Again with the answers already cached: the cassette is still the whole session.
    suite(pytester, corpus, "chance", f"--thud-record={cassette}")
    assert sorted(map(json.dumps, lines(cassette))) == sorted(map(json.dumps, recorded))
    outcome = suite(pytester, corpus, f"replay:{cassette}", "--thud-no-cache")
    assert verdicts(pytester) == live
    assert "not in cassette" not in outcome.stdout.str()
    outcome.stdout.fnmatch_lines(["*thud-mt summary: replay:*"])


def test_a_replay_of_another_corpus_errors_its_cases_and_the_session_goes_on(
    pytester: pytest.Pytester, corpus: Path, tmp_path: Path
) -> None:
    cassette = pytester.path / "chance.jsonl"
    suite(pytester, corpus, "chance", f"--thud-record={cassette}")
    other = build_synthetic_corpus(tmp_path / "other", 2, 9, progress=False)
    outcome = suite(pytester, other, f"replay:{cassette}", "--thud-no-cache")
    outcome.stdout.fnmatch_lines([f"*not in cassette {cassette}: * question about clip synth-s9-*"])
    assert set(verdicts(pytester).values()) == {"error"}
    assert outcome.ret == 1 and "Traceback" not in outcome.stdout.str()


def test_a_missing_cassette_is_one_usage_error(pytester: pytest.Pytester, corpus: Path) -> None:
    outcome = suite(pytester, corpus, "replay:nowhere.jsonl")
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    outcome.stderr.fnmatch_lines(["*cassette nowhere.jsonl: no such file (record one with --thud-record PATH)*"])
