"""The built-in synthetic corpus: synthesized sounds, rendered scenes, and the corpus builder."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from thud_mt.corpus.manifest import load_corpus
from thud_mt.corpus.scenes import EARLIEST_EVENT_S, LATEST_EVENT_GAP_S, SceneSpec, random_spec, render
from thud_mt.corpus.sounds import Recording, SoundBank
from thud_mt.corpus.synth import build_synthetic_corpus, render_clip
from thud_mt.corpus.synthsounds import ONSET_S, synthesize, synthesized_bank
from thud_mt.corpus.vocabulary import EVENT_KINDS, SOUND_CLASSES
from thud_mt.errors import CorpusBuildError
from thud_mt.signal import first_onset, peak_dbfs, rms_dbfs

KINDS = [k.label for k in EVENT_KINDS]
SMALL = (96, 72)


def motion(frames: np.ndarray, threshold: int = 12) -> np.ndarray:
    """Fraction of pixels that change visibly from frame k-1 to frame k; entry k-1 of the result."""
    diff = np.abs(np.diff(frames.astype(np.int16), axis=0)).max(axis=3)
    return (diff > threshold).mean(axis=(1, 2))


def visual_event_frame(frames: np.ndarray) -> int:
    """The frame that differs most from the one before it."""
    return int(np.argmax(motion(frames))) + 1


def features(rec: Recording) -> np.ndarray:
    """Spectral shape (share of energy in 16 log-spaced bands) and how long the sound rings."""
    x = rec.audio[:, 0].astype(np.float64)
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / rec.sample_rate)
    edges = np.geomspace(50.0, 0.45 * rec.sample_rate, 17)
    bands = np.array([power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in itertools.pairwise(edges)])
    bands = np.log10(bands / bands.sum() + 1e-3)  # shares under -30 dB count as empty
    hop = int(0.01 * rec.sample_rate)
    env = np.array([np.mean(x[i : i + hop] ** 2) for i in range(0, x.size - hop, hop)])
    loud = np.nonzero(env > env.max() * 1e-3)[0]  # within 30 dB of the peak
    ring = (loud[-1] - loud[0] + 1) * 0.01
    return np.concatenate([bands, [3.0 * np.log10(ring)]])


def same_audio(a: Recording, b: Recording) -> bool:
    return a.audio.shape == b.audio.shape and np.array_equal(a.audio, b.audio)


def centroid_hz(rec: Recording) -> float:
    x = rec.audio[:, 0].astype(np.float64)
    power = np.abs(np.fft.rfft(x)) ** 2
    return float(np.sum(power * np.fft.rfftfreq(x.size, 1 / rec.sample_rate)) / np.sum(power))


# ---------------------------------------------------------------- sounds


@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("sound", SOUND_CLASSES)
def test_each_sound_is_silent_until_its_onset_then_starts_sharply_at_minus_6_dbfs(sound: str, sample_rate: int) -> None:
    rec = synthesize(sound, sample_rate, np.random.default_rng(0))
    lead = int(round(ONSET_S * sample_rate))
    assert rec.audio.dtype == np.float32 and rec.audio.ndim == 2 and rec.audio.shape[1] == 1
    assert rec.onset == pytest.approx(ONSET_S) and rec.sample_rate == sample_rate and rec.sound == sound
    assert not np.any(rec.audio[:lead]), "nothing may sound before the onset"
    assert peak_dbfs(rec.audio) == pytest.approx(-6.0, abs=0.01)
    assert peak_dbfs(rec.audio[lead : lead + int(0.005 * sample_rate)]) > -20.0, "the attack must be sharp"
    assert abs(rec.audio[-1, 0]) < 1e-3, "the tail is faded, so cutting it adds no click"
    assert (rec.licence, rec.attribution) == ("CC0-1.0", "thud-mt synthesizer")


@pytest.mark.parametrize("sound", SOUND_CLASSES)
def test_a_detector_finds_each_sound_onset_within_a_millisecond(sound: str) -> None:
    sr = 16000
    for v in range(3):
        rec = synthesize(sound, sr, np.random.default_rng(v))
        quiet = np.random.default_rng(99).normal(0.0, 10 ** (-65 / 20), (sr, 1)).astype(np.float32)
        quiet[sr // 4 : sr // 4 + rec.audio.shape[0]] += rec.audio[: 3 * sr // 4]
        assert first_onset(quiet, sr) == pytest.approx(0.25 + rec.onset, abs=0.0015)


def test_sound_classes_are_told_apart_by_a_nearest_centroid_classifier_on_spectrum_and_decay() -> None:
    bank = synthesized_bank(16000, seed=5, variants=6)
    feats = {s: np.array([features(r) for r in bank.recordings[s]]) for s in SOUND_CLASSES}
    for sound in SOUND_CLASSES:
        for i in range(6):  # leave one out: the held-out recording must sit nearest its own class
            centroids = {
                s: np.delete(f, i, axis=0).mean(axis=0) if s == sound else f.mean(axis=0) for s, f in feats.items()
            }
            guess = min(centroids, key=lambda s: np.linalg.norm(feats[sound][i] - centroids[s]))
            assert guess == sound, f"{sound} variant {i} looks like {guess}"


def test_sound_classes_sit_in_their_expected_frequency_ranges() -> None:
    bank = synthesized_bank(16000, seed=1, variants=4)
    mean = {s: np.mean([centroid_hz(r) for r in recs]) for s, recs in bank.recordings.items()}
    assert mean["thud"] < 200 < mean["door"] < 400 < mean["bark"] < mean["bell"] < mean["clap"] < mean["glass"]
    assert mean["glass"] > 3000, "glass is the brightest sound"


def test_bell_rings_far_longer_than_a_clap() -> None:
    sr = 16000
    bell, clap = (synthesize(s, sr, np.random.default_rng(0)) for s in ("bell", "clap"))
    half_second = int((ONSET_S + 0.5) * sr)
    assert rms_dbfs(bell.audio[half_second:]) > -40.0
    assert clap.audio.shape[0] < half_second or rms_dbfs(clap.audio[half_second:]) < -80.0


def test_unknown_sound_and_too_low_sample_rate_are_refused() -> None:
    with pytest.raises(ValueError, match="known sounds are"):
        synthesize("trumpet", 16000, np.random.default_rng(0))
    with pytest.raises(ValueError, match="too low"):
        synthesize("bell", 4000, np.random.default_rng(0))


def test_synthesized_bank_has_every_class_and_each_variant_is_fixed_by_seed_and_index() -> None:
    bank = synthesized_bank(22050, seed=3, variants=2)
    assert bank.sounds == tuple(sorted(SOUND_CLASSES))
    assert all(len(recs) == 2 for recs in bank.recordings.values())
    bigger = synthesized_bank(22050, seed=3, variants=3)
    other = synthesized_bank(22050, seed=4, variants=2)
    for sound in SOUND_CLASSES:
        a, b = bank.recordings[sound]
        assert not same_audio(a, b), "variants of a class differ"
        assert same_audio(a, bigger.recordings[sound][0]), "asking for more variants keeps the first ones"
        assert not same_audio(a, other.recordings[sound][0]), "another seed gives other sounds"
        assert a.source == f"synthesized:{sound}:3:0" and a.sample_rate == 22050
    with pytest.raises(ValueError, match="at least one variant"):
        synthesized_bank(16000, seed=0, variants=0)


# ---------------------------------------------------------------- scenes


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_frames_of_the_asked_size_with_the_event_in_range(kind: str) -> None:
    spec = random_spec(kind, np.random.default_rng(0), fps=20.0, size=SMALL, duration=2.5)
    frames = render(spec)
    assert frames.shape == (50, 72, 96, 3) and frames.dtype == np.uint8
    assert EARLIEST_EVENT_S <= spec.event_time <= 2.5 - LATEST_EVENT_GAP_S
    assert spec.event_time * 20.0 == spec.event_frame
    assert motion(frames).max() > 0.01, "something visibly moves"


@pytest.mark.parametrize("kind", KINDS)
def test_the_largest_frame_change_is_exactly_the_event_frame(kind: str) -> None:
    index = KINDS.index(kind)
    for seed in range(6):
        spec = random_spec(kind, np.random.default_rng([seed, index]))
        assert visual_event_frame(render(spec)) == spec.event_frame, f"seed {seed}"


@pytest.mark.parametrize("kind", KINDS)
def test_the_event_frame_is_found_within_one_frame_on_small_frames_and_other_rates(kind: str) -> None:
    index = KINDS.index(kind)
    for seed, (fps, size) in enumerate([(25.0, SMALL), (12.0, (80, 60)), (30.0, (128, 96))]):
        spec = random_spec(kind, np.random.default_rng([seed, index]), fps=fps, size=size, duration=3.0)
        assert abs(visual_event_frame(render(spec)) - spec.event_frame) <= 1, f"{fps} fps {size}"


@pytest.mark.parametrize("kind", KINDS)
def test_the_picture_is_still_before_the_motion_that_leads_to_the_event(kind: str) -> None:
    spec = random_spec(kind, np.random.default_rng(7), size=SMALL)
    change = motion(render(spec))
    still_until = spec.event_frame - int(np.ceil(spec.motion * spec.fps)) - 1
    assert still_until > 0 and not change[:still_until].any()
    assert change[spec.event_frame - 1] > 0


def test_scene_timing_position_and_backdrop_vary_with_the_generator() -> None:
    specs = [random_spec("object_falls", np.random.default_rng(s)) for s in range(40)]
    assert len({s.event_frame for s in specs}) > 15
    assert len({s.background.style for s in specs}) == 4
    assert np.ptp([s.position for s in specs]) > 0.2 and np.ptp([s.scale for s in specs]) > 0.2
    assert {s.mirror for s in specs} == {True, False}


def test_scene_spec_refuses_events_between_frames_and_scenes_too_short_for_an_event() -> None:
    spec = random_spec("bell_struck", np.random.default_rng(0), size=SMALL)
    with pytest.raises(ValueError, match="not a frame time"):
        dataclasses.replace(spec, event_time=spec.event_time + 0.01)
    with pytest.raises(ValueError, match="unknown scene kind"):
        dataclasses.replace(spec, kind="cat_meows")
    with pytest.raises(ValueError, match="too short"):
        random_spec("bell_struck", np.random.default_rng(0), duration=1.5)


def test_rendering_is_a_pure_function_of_the_spec() -> None:
    spec: SceneSpec = random_spec("glass_breaks", np.random.default_rng(3), size=SMALL)
    assert np.array_equal(render(spec), render(spec))
    assert not np.array_equal(render(spec), render(dataclasses.replace(spec, seed=spec.seed + 1)))


# ---------------------------------------------------------------- clips

SR = 16000


def small_clip(index: int, seed: int = 0, bank: SoundBank | None = None):
    bank = bank if bank is not None else synthesized_bank(SR, seed, variants=2)
    return render_clip(index, seed, bank=bank, size=SMALL, sample_rate=SR, duration=3.0)


def test_same_seed_gives_identical_frames_and_audio_and_another_seed_differs() -> None:
    for index in range(6):
        (a, _), (b, _) = small_clip(index), small_clip(index)
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
        assert a.events == b.events and a.id == b.id == f"synth-s0-{index:04d}-{KINDS[index]}"
        c, _ = small_clip(index, seed=1)
        assert not np.array_equal(a.frames, c.frames) and not np.array_equal(a.audio, c.audio)


@pytest.mark.parametrize("index", range(6))
def test_the_sound_onset_is_heard_within_5_ms_of_its_annotation_and_at_the_seen_time(index: int) -> None:
    clip, spec = small_clip(index)
    (event,) = clip.events
    kind = EVENT_KINDS[index]
    assert (event.label, event.sound, event.description) == (kind.label, kind.sound, kind.description)
    assert event.visual_time == spec.event_frame / clip.fps
    assert event.audio_time == round(event.visual_time * SR) / SR
    assert first_onset(clip.audio, SR) == pytest.approx(event.audio_time, abs=0.005)
    assert visual_event_frame(clip.frames) == spec.event_frame


def test_the_track_carries_faint_room_tone_not_digital_silence() -> None:
    clip, _ = small_clip(3)
    before = clip.audio[: int((clip.events[0].audio_time - 0.01) * SR)]
    assert -71.0 < rms_dbfs(before) < -59.0
    assert peak_dbfs(before) < -45.0
    assert clip.audio.shape == (3 * SR, 1) and clip.n_frames == 75


def test_a_foreign_recording_is_resampled_remixed_and_its_onset_still_lands_on_the_event() -> None:
    rate, onset = 44100, 1.5  # onset later than any event: the head before it must be cut, not shifted
    n = int(2.0 * rate)
    audio = np.random.default_rng(0).normal(0, 1e-4, (n, 2)).astype(np.float32)
    start = int(onset * rate)
    decay = np.exp(-np.arange(n - start) / 2000.0)[:, None]
    audio[start:] += (np.random.default_rng(1).normal(0, 0.3, (n - start, 2)) * decay).astype(np.float32)
    rec = Recording("thud", audio, rate, onset, "GPL-2.0-or-later", "Some Game Team", "sounds-pkg/thud.wav")
    bank = SoundBank({"thud": (rec,)})
    clip, _ = small_clip(0, bank=bank)
    (event,) = clip.events
    assert clip.sample_rate == SR and clip.n_channels == 1
    assert first_onset(clip.audio, SR) == pytest.approx(event.audio_time, abs=0.002)
    assert clip.provenance.licence == "CC0-1.0 AND GPL-2.0-or-later"
    assert "Some Game Team" in clip.provenance.attribution and "sounds-pkg/thud.wav" in clip.provenance.attribution


def test_a_bank_without_the_needed_sound_fails_naming_the_clip() -> None:
    bank = SoundBank({"thud": synthesized_bank(SR, 0, variants=1).recordings["thud"]})
    with pytest.raises(CorpusBuildError, match=r"synth-s0-0001-hands_clap.*clap"):
        small_clip(1, bank=bank)


# ---------------------------------------------------------------- corpus


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    build_synthetic_corpus(out, n=7, seed=2, size=SMALL, duration=2.5, progress=False)
    return out


def test_built_corpus_loads_with_every_kind_annotated(corpus_dir: Path) -> None:
    corpus = load_corpus(corpus_dir / "manifest.json")
    assert len(corpus) == 7 and corpus.name == "synthetic-s2"
    assert [e.events[0].label for e in corpus] == [*KINDS, KINDS[0]]
    for entry in corpus:
        assert re.fullmatch(r"synth-s2-\d{4}-[a-z_]+", entry.id)
        assert entry.path == (corpus_dir / "clips" / f"{entry.id}.mp4").resolve()
        assert entry.sha256 == hashlib.sha256(entry.path.read_bytes()).hexdigest()
        assert entry.licence == "CC0-1.0" and "thud-mt synthesizer" in entry.attribution
        assert f"frame {round(entry.events[0].visual_time * 25)}" in entry.timing
        assert set(entry.tags) == {"synthetic", entry.events[0].label, entry.events[0].sound}
    assert corpus.generator["seed"] == 2 and corpus.generator["size"] == list(SMALL)


def test_clips_read_back_keep_their_events_and_both_times_survive_encoding(corpus_dir: Path) -> None:
    corpus = load_corpus(corpus_dir / "manifest.json")
    for entry in corpus:
        clip = corpus.load_clip(entry, lazy=False)
        (event,) = clip.events
        assert clip.frame_size == (72, 96) and clip.fps == pytest.approx(25.0) and clip.n_frames == 62
        assert abs(visual_event_frame(clip.frames) / clip.fps - event.visual_time) <= 1 / clip.fps + 1e-9
        # AAC can smear a sharp attack ~10 ms early (pre-echo); a frame is still the bound.
        assert first_onset(clip.audio, clip.sample_rate) == pytest.approx(event.audio_time, abs=1 / clip.fps)


def test_build_shows_progress_on_stderr_and_refuses_an_empty_corpus(tmp_path: Path, capsys) -> None:
    manifest = build_synthetic_corpus(tmp_path, n=1, size=(48, 36), duration=2.0)
    assert manifest == tmp_path / "manifest.json" and manifest.exists()
    err = capsys.readouterr().err
    assert "synthetic corpus" in err and "1/1" in err
    with pytest.raises(ValueError, match="at least one clip"):
        build_synthetic_corpus(tmp_path, n=0)
