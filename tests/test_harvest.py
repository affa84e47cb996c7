"""Harvesting preference pairs: from failed suite cases (``--thud-harvest``) and from annotated clips."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import wave
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from relations import DEFAULT_OPTIONS, RELATIONS
from relations.truth import agrees
from thud_mt.cache import NullCache, media_digest
from thud_mt.cli import main
from thud_mt.clip import Clip
from thud_mt.corpus.manifest import ClipEntry, Corpus, load_corpus, write_manifest
from thud_mt.corpus.synth import build_synthetic_corpus
from thud_mt.harvest import Harvester
from thud_mt.harvest_general import GENERAL_KINDS, harvest_general
from thud_mt.interventions import mute, shift, swap
from thud_mt.media import read_clip, write_clip
from thud_mt.models.base import Answer, Capabilities, Query
from thud_mt.pairs import PairDraft, PairsError, PairWriter, PreferencePair, read_pairs, split_of
from thud_mt.probes import parse, question, sound_phrase
from thud_mt.runner import CaseRunner, CaseSpec

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "suites"
# visual-only fails every audio relation; identity passes, so its suite adds time and no pairs.
SUITE_FILES = ("test_mute.py", "test_shift.py", "test_swap.py")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --- fixtures -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Seed 3: four clips in train and two in eval, one per event kind (every swap has a donor).
    return build_synthetic_corpus(tmp_path_factory.mktemp("corpus"), 6, 3, progress=False)


@pytest.fixture(scope="module")
def corpus(corpus_path: Path) -> Corpus:
    return load_corpus(corpus_path)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


def run_suites(
    work: Path, corpus_path: Path, out: Path, *args: str, files: tuple[str, ...] = SUITE_FILES
) -> subprocess.CompletedProcess[str]:
    """The suites in a fresh pytest process, as a user runs them, with the answer cache shared between runs."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [
        sys.executable,
        "-m",
        "pytest",
        *(str(SUITES / name) for name in files),
        "--model=visual-only",
        f"--corpus={corpus_path}",
        f"--thud-cache={work / 'cache'}",
        f"--thud-results={out / 'results.jsonl'}",
        f"--thud-harvest={out}",
        "--thud-max-examples=2",
        "--thud-measure",  # every draw, as `thud harvest run` does
        "-p",
        "no:cacheprovider",
        "-q",
        *args,
    ]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # 1: visual-only fails cases
    return done


@dataclass(frozen=True)
class Harvest:
    folder: Path
    output: str  # what `thud harvest run` printed


@pytest.fixture(scope="module")
def harvest_run(work: Path, corpus_path: Path) -> Harvest:
    """``thud harvest run``: the suites with --thud-harvest in a fresh pytest process, then the counts."""
    out = work / "pairs"
    args = ["--model", "visual-only", "--out", str(out), "--corpus", str(corpus_path), "--suites", str(SUITES)]
    marks = " or ".join(name.removeprefix("test_").removesuffix(".py") for name in SUITE_FILES)
    pytest_args = ["-m", marks, f"--thud-cache={work / 'cache'}", "--thud-max-examples=2"]
    result = CliRunner().invoke(main, ["harvest", "run", *args, "--", *pytest_args])
    assert result.exit_code == 0, result.output
    return Harvest(out, result.output)


@pytest.fixture(scope="module")
def harvested(harvest_run: Harvest) -> Path:
    return harvest_run.folder


def pairs_of(folder: Path) -> list[PreferencePair]:
    return read_pairs(folder / "pairs.jsonl")


def results_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


# --- pairs from a suite run -----------------------------------------------------------------------------------------


def test_every_failed_case_becomes_one_valid_pair_about_the_edited_clip(harvested: Path) -> None:
    pairs = pairs_of(harvested)  # schema-checked, every media file present
    failed = [r for r in results_of(harvested) if r["verdict"] == "fail"]
    assert failed and all(r["source_correct"] for r in failed)  # visual-only is right on every original
    # A swap pair carries its donor's sound: one whose donor is in the other split is left out.
    same_split = [r for r in failed if split_of(r["clip"]) == split_of(str(r["params"].get("donor", r["clip"])))]
    assert len(same_split) < len(failed)
    key = lambda case, params, paraphrase: (case, json.dumps(params, sort_keys=True), paraphrase)  # noqa: E731
    assert sorted(key(p.meta["case"], p.meta["params"], p.meta["paraphrase"]) for p in pairs) == sorted(
        key(r["case"], r["params"], r["paraphrase"]) for r in same_split
    )
    by_case = {key(r["case"], r["params"], r["paraphrase"]): r for r in failed}
    for pair in pairs:
        result = by_case[key(pair.meta["case"], pair.meta["params"], pair.meta["paraphrase"])]
        assert pair.kind == "intervention" and pair.category == result["relation"] == pair.meta["relation"]
        assert pair.question == result["question"]
        assert pair.rejected == result["followup_answer"] and pair.chosen != pair.rejected
        assert pair.source_clip == result["clip"] and pair.split == split_of(result["clip"])
        assert pair.meta["model"] == "visual-only" and pair.meta["fingerprint"] == result["fingerprint"]
        assert pair.meta["verdict"] == "fail" and pair.meta["about"] == "edited"
    assert {p.category for p in pairs} == {"mute", "shift", "swap"}
    assert len({p.id for p in pairs}) == len(pairs)


def test_chosen_answers_state_the_expected_value_with_a_grounded_reason(harvested: Path, corpus: Corpus) -> None:
    labels = corpus.sound_labels
    for pair in pairs_of(harvested):
        q = question(pair.meta["probe"], pair.meta["paraphrase"], sound_labels=labels)
        assert q.text == pair.question
        chosen, rejected = parse(q, pair.chosen), parse(q, pair.rejected)
        # The chosen answer, reason and all, reads back as the value the relation expects; the rejected does not.
        assert chosen.valid and agrees(q.probe, chosen.value, pair.meta["chosen_value"], DEFAULT_OPTIONS), pair.chosen
        assert not (rejected.valid and agrees(q.probe, rejected.value, pair.meta["chosen_value"], DEFAULT_OPTIONS))
        assert len(pair.chosen.split(". ", 1)) == 2  # the answer, then a reason
        if pair.category == "mute" and q.probe == "presence":
            assert pair.chosen == "No. The audio track is silent."
        if pair.category == "mute" and q.probe == "source":
            assert pair.chosen.endswith("no sound. The audio track is silent.")
        if pair.category == "swap":
            donor = corpus.entry(pair.meta["params"]["donor"]).events[0].sound
            own = corpus.entry(pair.source_clip).events[0].sound
            assert (
                f"The sound is {sound_phrase(donor)}, not " in pair.chosen and own not in pair.chosen.split("not ")[0]
            )
        if q.probe == "sync":
            direction = "early" if pair.meta["chosen_value"] == "audio_early" else "delayed"
            assert f"The audio is {direction}:" in pair.chosen


def test_pair_media_are_the_edited_clip_as_mp4_and_its_audio_as_wav(harvested: Path, corpus: Corpus) -> None:
    pairs = pairs_of(harvested)
    checked = set()
    for pair in pairs:
        if pair.video in checked:
            continue
        checked.add(pair.video)
        video, audio = harvested / pair.video, harvested / pair.audio
        with av.open(str(video)) as container:
            assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
            assert container.streams.video[0].codec_context.name == "h264"
            assert container.streams.audio[0].codec_context.name == "aac"
        clip = read_clip(video, lazy=False)
        assert clip.duration == pytest.approx(4.0) and clip.frames.shape[0] == 100
        with wave.open(str(audio)) as wav:
            assert wav.getsampwidth() == 2
            assert wav.getnframes() / wav.getframerate() == pytest.approx(4.0)
            samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
        assert (not samples.any()) == (pair.category == "mute")  # a muted clip's track is silent, no other is
    # Content addressing: every muted clip has the same silent track, so one wav serves them all.
    assert len({p.audio for p in pairs if p.category == "mute"}) == 1
    assert len(list((harvested / "media").glob("*.mp4"))) == len({p.video for p in pairs})


def test_a_rerun_appends_nothing(harvested: Path, work: Path, corpus_path: Path) -> None:
    again = work / "again"
    shutil.copytree(harvested, again)
    before = (again / "pairs.jsonl").read_bytes()
    run_suites(work, corpus_path, again)
    assert (again / "pairs.jsonl").read_bytes() == before


def test_two_xdist_workers_write_the_same_pairs_each_once(harvested: Path, work: Path, corpus_path: Path) -> None:
    out = work / "xdist"
    run_suites(work, corpus_path, out, "-n", "2", files=("test_mute.py", "test_swap.py"))  # two suites keep it short
    lines = (out / "pairs.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""  # every record is a whole line
    ids = [json.loads(line)["id"] for line in lines[:-1]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {p.id for p in pairs_of(harvested) if p.category in ("mute", "swap")}
    assert pairs_of(out)  # and the file reads back whole


def test_no_clip_is_in_both_splits(harvested: Path, corpus: Corpus, tmp_path: Path) -> None:
    harvest_general(corpus, tmp_path)
    splits = defaultdict(set)
    for pair in pairs_of(harvested) + pairs_of(tmp_path):
        for clip in {pair.source_clip, pair.meta.get("params", {}).get("donor", pair.source_clip)}:
            splits[clip].add(pair.split)
    assert all(len(s) == 1 for s in splits.values()), dict(splits)
    assert {s for both in splits.values() for s in both} == {"train", "eval"}


def test_every_grounded_answer_reads_back_as_the_value_it_states(corpus: Corpus) -> None:
    """Whatever the probe, paraphrase and edit, the reason never makes the answer say something else."""
    from relations.truth import NO_TRUTH, truth
    from thud_mt import grounding
    from thud_mt.probes import PROBE_KINDS, questions

    labels = corpus.sound_labels
    checked = 0
    for i, clip_id in enumerate(corpus.ids):
        original = corpus.load_clip(clip_id)
        donor = corpus.load_clip(corpus.ids[(i + 1) % len(corpus)])
        edits = [original, mute(original), shift(original, 0.7), shift(original, -0.6), swap(original, donor)]
        for clip in edits:
            for probe in PROBE_KINDS:
                value = truth(clip, probe, DEFAULT_OPTIONS)
                if value is NO_TRUTH:
                    continue
                because = grounding.reason(probe, value, clip, picture=original.events)
                for q in questions(probe, sound_labels=labels):
                    said = parse(q, grounding.answer(q, value, because))
                    assert said.valid and agrees(probe, said.value, value, DEFAULT_OPTIONS), (clip.edits, q, because)
                    checked += 1
    assert checked > 300


# --- source-failed and invalid cases --------------------------------------------------------------------------------


class Scripted:
    """A model with one scripted mistake; otherwise it answers from the clip's annotations."""

    capabilities = Capabilities()

    def __init__(self, mistake: str) -> None:
        self.name = self.mistake = mistake

    @property
    def fingerprint(self) -> str:
        return f"scripted-{self.mistake}"

    def answer(self, queries: list[Query]) -> list[Answer]:
        from relations.truth import truth
        from thud_mt.probes import value_text

        out = []
        for q in queries:
            probe = q.question.probe
            if self.mistake == "garbage":
                out.append(Answer(text="purple elephants"))
            elif self.mistake == "never-hears" and probe == "presence":
                out.append(Answer(text="No."))
            elif self.mistake == "moves-the-picture" and probe == "visual" and not q.clip.audio.any():
                out.append(Answer(text="0.5 seconds"))
            else:
                out.append(Answer(text=value_text(q.question, truth(q.clip, probe, DEFAULT_OPTIONS))))
        return out


def harvest_case(corpus: Corpus, out: Path, mistake: str, probe: str, clip_id: str) -> CaseRunner:
    runner = CaseRunner(model=Scripted(mistake), corpus=corpus, cache=NullCache(), observers=[Harvester(out)])
    runner.run(RELATIONS["mute"], CaseSpec("mute", clip_id, probe), {}, 0, f"mute[{clip_id} {probe}]")  # type: ignore[arg-type]
    return runner


def test_a_source_failed_case_gives_a_pair_about_the_original_clip(corpus: Corpus, tmp_path: Path) -> None:
    clip_id = corpus.ids[0]
    runner = harvest_case(corpus, tmp_path, "never-hears", "presence", clip_id)
    (pair,) = pairs_of(tmp_path)
    assert pair.meta["verdict"] == "source-failed" and pair.category == "original" and pair.meta["about"] == "original"
    assert pair.chosen == "Yes. A thud of an object hitting the floor is heard." and pair.rejected == "No."
    assert pair.video == f"media/{media_digest(runner.clip(clip_id))}.mp4"  # the original, not the muted copy


def test_an_unreadable_answer_is_the_rejected_one(corpus: Corpus, tmp_path: Path) -> None:
    harvest_case(corpus, tmp_path, "garbage", "presence", corpus.ids[0])
    pairs = {p.meta["about"]: p for p in pairs_of(tmp_path)}
    assert set(pairs) == {"edited", "original"} and all(p.meta["verdict"] == "invalid" for p in pairs.values())
    assert pairs["edited"].chosen == "No. The audio track is silent." and pairs["edited"].rejected == "purple elephants"
    assert pairs["original"].chosen.startswith("Yes.") and pairs["original"].rejected == "purple elephants"


def test_a_broken_invariance_prefers_the_unchanged_picture_answer(corpus: Corpus, tmp_path: Path) -> None:
    clip_id = corpus.ids[0]
    seen_at = corpus.entry(clip_id).events[0].visual_time
    harvest_case(corpus, tmp_path, "moves-the-picture", "visual", clip_id)
    (pair,) = pairs_of(tmp_path)
    assert pair.category == "mute" and pair.meta["verdict"] == "fail" and pair.rejected == "0.5 seconds"
    # word for word the original's answer: nothing in it tells an edited clip from the original
    assert pair.chosen == f"{seen_at:g} seconds. That is when the object lands."


# --- the writer: resume, concurrency, SIGKILL -----------------------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from thud_mt.clip import Clip
from thud_mt.pairs import PairDraft, PairWriter

out, first, n, pad, pause = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
frames = np.zeros((10, 16, 16, 3), np.uint8)
clips = [
    Clip(id=f"c{i}", video=frames + 40 * i, fps=10.0, audio=np.full((16000, 1), 0.01 * (i + 1), np.float32),
         sample_rate=16000)
    for i in range(3)
]
with PairWriter(out) as writer:
    for i in range(first, first + n):
        draft = PairDraft("general", "description", f"question {i}", f"chosen {i}", "rejected", clips[i % 3],
                          f"c{i % 3}", {"padding": "x" * pad})
        writer.add(draft)
        time.sleep(pause)
"""


def write_pairs(folder: Path, first: int, n: int, *, pad: int = 0, pause: float = 0.0) -> subprocess.Popen[bytes]:
    script = folder.parent / "writer.py"
    if not script.is_file():
        script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    args = [sys.executable, str(script), str(folder), str(first), str(n), str(pad), str(pause)]
    return subprocess.Popen(args, env=env)


def whole_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    return [json.loads(line) for line in data.split(b"\n")[:-1]]  # what follows the last newline is not a record


def test_a_writer_killed_mid_run_leaves_whole_records_and_a_resumed_run_completes_them(tmp_path: Path) -> None:
    out = tmp_path / "pairs"
    writer = write_pairs(out, 0, 40, pad=200_000, pause=0.01)
    path = out / "pairs.jsonl"
    deadline = time.monotonic() + 60
    while not (path.is_file() and path.read_bytes().count(b"\n") >= 5) and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(writer.pid, signal.SIGKILL)
    assert writer.wait(30) == -signal.SIGKILL
    survivors = whole_lines(path)
    assert 5 <= len(survivors) < 40
    assert [p.id for p in read_pairs(path)] == [d["id"] for d in survivors]  # media there for every record
    assert write_pairs(out, 0, 40).wait(60) == 0  # resumed: the same 40 pairs
    records = whole_lines(path)
    assert path.read_bytes().endswith(b"\n")
    assert sorted(d["question"] for d in records) == sorted(f"question {i}" for i in range(40))
    assert records[: len(survivors)] == survivors  # nothing written before the kill was lost or repeated


def tiny_drafts(first: int, n: int) -> list[PairDraft]:
    frames = np.zeros((10, 16, 16, 3), np.uint8)
    clip = Clip(id="c", video=frames, fps=10.0, audio=np.full((16000, 1), 0.1, np.float32), sample_rate=16000)
    return [
        PairDraft("general", "description", f"question {i}", "chosen", "rejected", clip, "c")
        for i in range(first, first + n)
    ]


def test_an_unfinished_last_line_is_cut_off_before_the_next_record(tmp_path: Path) -> None:
    with PairWriter(tmp_path) as writer:
        assert all(writer.add(d) is not None for d in tiny_drafts(0, 2))
    path = tmp_path / "pairs.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"format": "thud-pairs/1", "id": "0123')  # a writer killed mid-record
    assert len(read_pairs(path)) == 2  # readers skip it
    with PairWriter(tmp_path) as writer:
        assert [writer.add(d) is not None for d in tiny_drafts(1, 2)] == [False, True]
    data = path.read_bytes()
    assert data.startswith(whole) and data.count(b"\n") == 3 and len(whole_lines(path)) == 3


def test_two_processes_adding_overlapping_pairs_write_each_once(tmp_path: Path) -> None:
    writers = [write_pairs(tmp_path / "pairs", first, 30, pause=0.005) for first in (0, 10)]
    assert [w.wait(60) for w in writers] == [0, 0]
    records = whole_lines(tmp_path / "pairs" / "pairs.jsonl")
    assert sorted(d["question"] for d in records) == sorted(f"question {i}" for i in range(40))


def varied_drafts(n: int) -> list[PairDraft]:
    """Drafts over five clips: many share media, one repeats an earlier draft exactly."""
    frames = np.zeros((10, 16, 16, 3), np.uint8)
    clips = [
        Clip(
            id=f"c{i}",
            video=frames + 30 * i,
            fps=10.0,
            audio=np.full((16000, 1), 0.02 * (i + 1), np.float32),
            sample_rate=16000,
        )
        for i in range(5)
    ]
    drafts = [
        PairDraft("general", "description", f"q {i}", "chosen", "rejected", clips[i % 5], f"c{i % 5}") for i in range(n)
    ]
    return [*drafts, drafts[3]]


def test_media_encoded_on_threads_give_the_same_file_as_one_thread(tmp_path: Path) -> None:
    drafts = varied_drafts(23)
    with PairWriter(tmp_path / "one") as writer:
        one = [writer.add(d) for d in drafts]
    with PairWriter(tmp_path / "four", workers=4) as writer:
        four = [writer.add(d) for d in drafts]
        assert four[-1] is None  # the repeat adds nothing
    assert [p is None for p in four] == [p is None for p in one] == [False] * 23 + [True]
    assert (tmp_path / "four" / "pairs.jsonl").read_bytes() == (tmp_path / "one" / "pairs.jsonl").read_bytes()
    assert sorted(f.name for f in (tmp_path / "four" / "media").iterdir()) == sorted(
        f.name for f in (tmp_path / "one" / "media").iterdir()
    )
    assert len(read_pairs(tmp_path / "four" / "pairs.jsonl")) == 23  # every record's media are there


def test_a_failed_media_write_on_a_thread_names_its_pair_and_the_others_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import thud_mt.media

    real = thud_mt.media.write_clip
    bad = media_digest(varied_drafts(5)[2].clip)

    def write_clip(clip: Clip, path: Path, **kw: object) -> Path:
        if bad in Path(path).name:
            raise OSError(28, "No space left on device", str(path))
        return real(clip, path, **kw)

    monkeypatch.setattr(thud_mt.media, "write_clip", write_clip)
    writer = PairWriter(tmp_path, workers=3)
    for d in varied_drafts(10):
        writer.add(d)
    with pytest.raises(OSError, match="No space left") as failed:
        writer.close()
    notes = " ".join(failed.value.__notes__)
    assert "source clip c2" in notes and "and 1 more pairs failed" in notes  # q 2 and q 7 show clip c2
    assert sorted(p.question for p in read_pairs(tmp_path / "pairs.jsonl")) == sorted(
        f"q {i}" for i in range(10) if i % 5 != 2
    )


# --- general pairs --------------------------------------------------------------------------------------------------


def test_general_pairs_of_four_kinds_from_synthetic_clips(corpus: Corpus, tmp_path: Path) -> None:
    done = harvest_general(corpus, tmp_path, seed=1)
    pairs = pairs_of(tmp_path)
    assert done.written == len(pairs) and not done.errors
    assert {p.category for p in pairs} == set(GENERAL_KINDS) and {p.kind for p in pairs} == {"general"}
    by_clip = defaultdict(dict)
    for p in pairs:
        by_clip[p.source_clip][p.category] = p
        assert p.chosen != p.rejected and p.split == split_of(p.source_clip)
    assert len(by_clip) == len(corpus) and all(len(kinds) == 4 for kinds in by_clip.values())
    for clip_id, kinds in by_clip.items():
        event = corpus.entry(clip_id).events[0]
        phrase = sound_phrase(event.sound or "")
        # Picture and sound agree in a synthetic scene: the rejected answers name a wrong sound or time.
        description = kinds["description"]
        assert phrase in description.chosen.casefold() and phrase not in description.rejected.casefold()
        assert kinds["attribution"].chosen.startswith(f"The sound is {phrase}")
        assert not kinds["attribution"].rejected.startswith(f"The sound is {phrase}")
        assert {kinds[k].meta["error"] for k in ("description", "attribution")} == {"wrong_sound"}
        local = kinds["localisation"]
        q = question("sound_time", local.meta["paraphrase"])
        assert parse(q, local.chosen).value == pytest.approx(event.audio_time)
        assert abs(parse(q, local.rejected).value - event.audio_time) > 2 * DEFAULT_OPTIONS.time_tolerance
        qa = kinds["audio_qa"]
        assert qa.chosen.split(".")[0] in ("Yes", "No") and qa.rejected.split(".")[0] != qa.chosen.split(".")[0]
        assert qa.chosen.startswith("Yes") == (qa.meta["asked"] == event.sound)
    # Both answers occur as the chosen one, so the pairs do not teach "no" for its own sake.
    assert {by_clip[c]["audio_qa"].chosen.split(".")[0] for c in by_clip} == {"Yes", "No"}
    assert harvest_general(corpus, tmp_path, seed=1).written == 0  # resumed: nothing twice


def mismatched_corpus(corpus: Corpus, folder: Path) -> Corpus:
    """Clips whose sound is not what the picture suggests: swapped, muted and delayed audio."""
    falls, claps, bell, bark = (corpus.load_clip(corpus.ids[i]) for i in (0, 1, 3, 5))
    clips = {
        "swapped": swap(falls, claps).replace(id="swapped"),
        "muted": mute(bell).replace(id="muted"),
        "delayed": shift(bark, 1.0).replace(id="delayed"),
    }
    entries = []
    for name, clip in clips.items():
        path = write_clip(clip, folder / "clips" / f"{name}.mp4")
        entries.append(ClipEntry(id=name, path=path.resolve(), events=clip.events, licence="CC0-1.0"))
    return load_corpus(write_manifest(folder / "manifest.json", name="mismatched", description="", clips=entries))


def test_general_pairs_reject_the_visual_prior_where_picture_and_sound_disagree(corpus: Corpus, tmp_path: Path) -> None:
    harvest_general(mismatched_corpus(corpus, tmp_path / "corpus"), tmp_path / "pairs")
    pairs = {(p.source_clip, p.category, p.meta.get("question_type")): p for p in pairs_of(tmp_path / "pairs")}
    thud, clap, bell = (sound_phrase(s) for s in ("thud", "clap", "bell"))

    # Swapped: a box falls, a clap is heard. The picture suggests a thud.
    assert clap in pairs["swapped", "description", None].chosen.casefold()
    assert f"{thud.capitalize()} is heard at" in pairs["swapped", "description", None].rejected
    assert pairs["swapped", "attribution", None].chosen == f"The sound is {clap}; nothing visible makes it."
    assert pairs["swapped", "attribution", None].rejected == f"The sound is {thud}, made as the object lands."
    qa = pairs["swapped", "audio_qa", "label"]
    assert qa.question == f"Is the sound heard in this video {thud}? Answer yes or no."
    assert qa.chosen == f"No. The sound is {clap}, not a thud." and qa.rejected.startswith("Yes.")
    assert qa.meta["error"] == "visual_prior"

    # Muted: a bell is struck and nothing is heard.
    assert pairs["muted", "localisation", None].chosen.startswith("None.")
    assert pairs["muted", "localisation", None].meta["error"] == "visual_prior"
    assert pairs["muted", "attribution", None].chosen.startswith("Nothing does: no sound is heard")
    assert pairs["muted", "audio_qa", "count"].chosen == "0. No sound is heard."
    assert pairs["muted", "audio_qa", "count"].rejected.startswith("1.")
    assert (
        bell in pairs["muted", "description", None].rejected.casefold()
        and bell not in pairs["muted", "description", None].chosen.casefold()
    )

    # Delayed by 1 s: the bark is heard a second after the dog is seen opening its mouth.
    local = pairs["delayed", "localisation", None]
    event = next(e for e in local_events(tmp_path / "corpus", "delayed") if e.audio_time is not None)
    q = question("sound_time", local.meta["paraphrase"])
    assert parse(q, local.chosen).value == pytest.approx(event.audio_time, abs=1e-3)
    assert parse(q, local.rejected).value == pytest.approx(event.visual_time, abs=1e-3)
    assert local.meta["error"] == "visual_prior"


def local_events(folder: Path, clip_id: str):
    return load_corpus(folder / "manifest.json").entry(clip_id).events


# --- bad input ------------------------------------------------------------------------------------------------------


def test_a_malformed_pairs_file_names_the_file_and_line(corpus: Corpus, tmp_path: Path) -> None:
    harvest_general(corpus, tmp_path)
    path = tmp_path / "pairs.jsonl"
    lines = path.read_text().splitlines()
    broken = json.loads(lines[1])
    broken["split"] = "holdout"
    path.write_text("\n".join([lines[0], json.dumps(broken), *lines[2:]]) + "\n")
    with pytest.raises(PairsError, match=rf"{path}:2: not a valid preference pair at /split"):
        read_pairs(path)
    path.write_text("\n".join([lines[0], lines[1], "{not json", *lines[2:]]) + "\n")
    with pytest.raises(PairsError, match=rf"{path}:3: not a JSON record"):
        read_pairs(path)
    result = CliRunner().invoke(main, ["harvest", "summary", str(tmp_path)])
    assert result.exit_code == 2 and f"{path}:3: not a JSON record" in result.output


def test_missing_media_is_an_error_naming_the_pair(corpus: Corpus, tmp_path: Path) -> None:
    harvest_general(corpus, tmp_path)
    first = pairs_of(tmp_path)[0]
    (tmp_path / first.audio).unlink()
    with pytest.raises(PairsError, match=rf"pairs.jsonl:1: pair {first.id}: its audio file .* is missing"):
        read_pairs(tmp_path / "pairs.jsonl")
    result = CliRunner().invoke(main, ["harvest", "summary", str(tmp_path)])
    assert result.exit_code == 2 and "is missing" in result.output


def test_an_unreadable_clip_is_reported_and_the_others_are_harvested(corpus_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "corpus"
    shutil.copytree(corpus_path.parent, copy)
    broken = load_corpus(copy / "manifest.json").entries[2]
    broken.path.write_bytes(b"not a video")
    result = CliRunner().invoke(
        main, ["harvest", "general", "--corpus", str(copy / "manifest.json"), "--out", str(tmp_path / "pairs")]
    )
    assert result.exit_code == 2
    assert f"clip {broken.id}: {broken.path}" in result.output and "1 of 6 clips gave no pairs" in result.output
    assert {p.source_clip for p in pairs_of(tmp_path / "pairs")} == set(load_corpus(copy / "manifest.json").ids) - {
        broken.id
    }


def test_thud_harvest_run_counts_the_pairs_per_relation_and_split(harvest_run: Harvest) -> None:
    pairs = pairs_of(harvest_run.folder)
    for relation in ("mute", "shift", "swap"):
        row = next(line for line in harvest_run.output.splitlines() if line.startswith(f"intervention  {relation} "))
        mine = [p for p in pairs if p.category == relation]
        train, evals = (sum(p.split == s for p in mine) for s in ("train", "eval"))
        assert row.split()[2:] == [str(train), str(evals), str(len(mine))]
    assert f"{len(pairs)} new pairs; {len(pairs)} in {harvest_run.folder / 'pairs.jsonl'}" in harvest_run.output
