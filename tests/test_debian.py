"""The real-media set from Debian packages: fetching, the sound bank, the video, the built corpus."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from thud_mt.clip import Clip
from thud_mt.corpus import debian
from thud_mt.corpus.debian import (
    MAX_LEAD_S,
    MAX_RECORDING_S,
    MEASURE_SIDE,
    MIN_LEAD_S,
    PEAK_DBFS,
    build_debian_corpus,
    cue_audio_time,
    cue_visual_frame,
    debian_sound_bank,
    debian_videos,
    default_cache_dir,
    fetch_debian_packages,
    luma,
    measure_video_events,
    media_path,
    prepare_recording,
    shot_cuts,
)
from thud_mt.corpus.debian_catalog import CATALOGUE, VIDEO, MediaFile, VisualCue
from thud_mt.corpus.manifest import load_corpus
from thud_mt.corpus.vocabulary import SOUND_CLASSES
from thud_mt.errors import CorpusBuildError
from thud_mt.media import read_clip
from thud_mt.signal import first_onset, is_silent, onset_times, peak_dbfs, rms_dbfs

# The session fixtures debian_root and debian_video (tests/conftest.py may import them too).


# How debian/copyright spells each SPDX id the catalogue records.
COPYRIGHT_NAMES = {
    "CC-BY-SA-3.0": ("CC-BY-SA-3.0",),
    "CC-BY-3.0": ("CC-BY-3.0",),
    "CC0-1.0": ("CC0", "CC0-1.0"),
    "MIT": ("MIT", "Expat"),
}
ONSET_TOLERANCE_S = 0.010
# Rendered scenes are AAC: FFmpeg's encoder smears a sharp attack (the Scratch
# hand clap, the Sonic Pi bell) up to 12 ms ahead of where it was laid, so the
# onset measured on the file may come that much early (late: the usual 10 ms).
SCENE_EARLY_S = 0.015


# --------------------------------------------------------------------- catalogue and fetching


@pytest.mark.debian
def test_catalogue_files_exist_after_fetch(debian_root: Path) -> None:
    for package in CATALOGUE:
        for media in package.files:
            path = media_path(debian_root, package.name, media)
            assert path.stat().st_size > 1000, f"{package.name}:/{media.path} is suspiciously small"


@pytest.mark.debian
def test_recorded_licences_appear_in_each_packages_copyright(debian_root: Path) -> None:
    for package in CATALOGUE:
        text = (debian_root / package.name / "usr/share/doc" / package.name / "copyright").read_text("utf-8")
        stated = set(re.findall(r"^License:\s*(\S+)", text, flags=re.MULTILINE))
        for media in package.files:
            assert stated & set(COPYRIGHT_NAMES[media.licence]), (
                f"{package.name}:/{media.path} is recorded as {media.licence}, copyright states {sorted(stated)}"
            )


@pytest.mark.debian
def test_a_second_fetch_uses_the_cache(debian_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> Path:
        raise AssertionError("fetched again although the cache has every package")

    monkeypatch.setattr(debian, "_download", no_network)
    assert fetch_debian_packages(default_cache_dir(), progress=False) == debian_root


@pytest.mark.debian
def test_unknown_package_names_it_and_suggests_apt_update(tmp_path: Path) -> None:
    with pytest.raises(CorpusBuildError, match=r"(?s)thud-mt-no-such-package.*apt-get update"):
        fetch_debian_packages(tmp_path, ["thud-mt-no-such-package"], progress=False, catalogue=())
    assert not list((tmp_path / "debs").iterdir()), "a failed download must leave nothing behind"


def test_missing_apt_get_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    with pytest.raises(CorpusBuildError, match=r"cannot fetch Debian package sonic-pi-samples: apt-get not found"):
        fetch_debian_packages(tmp_path, ["sonic-pi-samples"], progress=False, catalogue=())


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is Debian's; elsewhere there is none to fail")
def test_damaged_deb_is_reported_and_removed(tmp_path: Path) -> None:
    debs = tmp_path / "debs"
    debs.mkdir()
    bad = debs / "thud-fake_1.0_all.deb"
    bad.write_bytes(b"!<arch>\nnot really a package")
    with pytest.raises(CorpusBuildError, match=r"cannot unpack Debian package thud-fake .*dpkg-deb exited"):
        fetch_debian_packages(tmp_path, ["thud-fake"], progress=False, catalogue=())
    assert not bad.exists(), "the damaged .deb must go so the next run downloads it again"
    assert not (tmp_path / "root" / "thud-fake").exists(), "no half-unpacked package may look complete"


def test_missing_catalogue_file_names_package_and_file(tmp_path: Path) -> None:
    (tmp_path / "lugaru-data").mkdir()
    ghost = MediaFile("usr/share/games/lugaru/Sounds/Nope.ogg", "thud", "CC-BY-SA-3.0", "nobody")
    with pytest.raises(CorpusBuildError, match=r"lugaru-data has no file /usr/share/games/lugaru/Sounds/Nope\.ogg"):
        media_path(tmp_path, "lugaru-data", ghost)


def test_catalogue_covers_every_sound_class_and_has_a_video() -> None:
    kinds = {m.kind for p in CATALOGUE for m in p.files}
    assert set(SOUND_CLASSES) <= kinds
    assert VIDEO in kinds
    with pytest.raises(ValueError, match="visual cue"):
        MediaFile("usr/share/x.webm", VIDEO, "MIT", "someone")


def test_ci_script_prepares_apt_for_exactly_the_catalogue_packages() -> None:
    script = (Path(__file__).parent.parent / ".ci" / "debian-deps.sh").read_text("utf-8")
    listed = re.search(r'^PACKAGES="([^"]*)"', script, flags=re.MULTILINE)
    assert listed, ".ci/debian-deps.sh must set PACKAGES"
    assert sorted(listed.group(1).split()) == sorted(p.name for p in CATALOGUE)


# --------------------------------------------------------------------- recordings


def _burst(rate: int, at: float, length: float, total: float) -> np.ndarray:
    audio = np.zeros((int(total * rate), 1), np.float32)
    n = int(length * rate)
    rng = np.random.default_rng(0)
    start = int(at * rate)
    audio[start : start + n, 0] = rng.normal(0, 0.3, n) * np.exp(-np.linspace(0, 5, n))
    return audio


def test_prepare_recording_gives_a_lead_in_to_a_sound_that_starts_at_once() -> None:
    audio, onset = prepare_recording(_burst(16000, 0.0, 0.2, 0.5), 16000, source="test")
    assert onset == pytest.approx(MIN_LEAD_S, abs=0.002)
    assert not np.any(audio[: int(0.9 * MIN_LEAD_S * 16000)]), "the lead-in must be silence"


def test_prepare_recording_trims_long_leading_silence_and_caps_length() -> None:
    audio, onset = prepare_recording(_burst(16000, 1.3, 3.0, 5.0), 16000, source="test")
    assert onset == pytest.approx(MAX_LEAD_S, abs=0.002)
    assert audio.shape[0] == int(MAX_RECORDING_S * 16000)
    assert peak_dbfs(audio) == pytest.approx(PEAK_DBFS, abs=0.01)
    assert abs(float(audio[-1, 0])) < 1e-6, "a capped recording ends faded out"
    assert onset_times(audio, 16000) == [onset], "the fade must not add an onset"


def test_prepare_recording_refuses_silence() -> None:
    with pytest.raises(CorpusBuildError, match="no sound onset"):
        prepare_recording(np.zeros((16000, 1), np.float32), 16000, source="pkg:/silent.wav")


@pytest.mark.debian
def test_every_sound_class_has_a_real_recording_with_an_onset(debian_root: Path) -> None:
    bank = debian_sound_bank(debian_root)
    assert set(bank.sounds) == set(SOUND_CLASSES)
    for sound in SOUND_CLASSES:
        for rec in bank.recordings[sound]:
            name = rec.source
            assert rec.source.split(":")[0] in {p.name for p in CATALOGUE}
            assert not is_silent(rec.audio), name
            assert rms_dbfs(rec.audio) > -45.0, f"{name} is too quiet to be heard in a scene"
            assert peak_dbfs(rec.audio) == pytest.approx(PEAK_DBFS, abs=0.01), name
            assert rec.audio.shape[0] <= MAX_RECORDING_S * rec.sample_rate, name
            assert MIN_LEAD_S - 0.005 <= rec.onset <= MAX_LEAD_S + 0.005, f"{name}: onset {rec.onset}"
            assert first_onset(rec.audio, rec.sample_rate) == pytest.approx(rec.onset, abs=1e-9), name
            at = int(rec.onset * rec.sample_rate)
            before = rec.audio[max(0, at - int(0.01 * rec.sample_rate)) : max(1, at - 8)]
            after = rec.audio[at : at + int(0.05 * rec.sample_rate)]
            assert rms_dbfs(after) - rms_dbfs(before) >= 20.0, f"{name}: the onset is not a clear attack"
            assert rec.licence in COPYRIGHT_NAMES and rec.attribution, name


# --------------------------------------------------------------------- the real video


@pytest.mark.debian
def test_real_video_reads_with_both_streams(debian_video: Path) -> None:
    from fixtures_debian import MIN_VIDEO_S  # imported here: pytest loads the module as a plugin first

    with av.open(str(debian_video)) as container:
        assert container.streams.video and container.streams.audio
    clip = read_clip(debian_video, lazy=False)
    assert clip.duration >= MIN_VIDEO_S
    assert clip.frames.shape == (clip.n_frames, *clip.frame_size, 3)
    assert clip.frames.std() > 10.0, "frames should show a picture, not a flat colour"
    assert clip.audio.shape[0] == pytest.approx(clip.duration * clip.sample_rate, abs=2)
    assert not is_silent(clip.audio)
    assert rms_dbfs(clip.audio) > -50.0


@pytest.mark.debian
def test_video_events_are_where_a_person_sees_and_hears_them(debian_root: Path) -> None:
    # Checked by eye on the OA-4 launch video: the engine flame first glows
    # in frames 51-52 (2.13-2.17 s), the roar rises at 2.39 s, and the wide
    # shot cuts to a close-up at frame 74 (3.08 s).
    (_, media, path), *_ = debian_videos(debian_root)
    assert media.cue is not None
    clip = read_clip(path, max_side=MEASURE_SIDE, lazy=False)
    ignition, *cuts = measure_video_events(clip, media.cue)
    assert ignition.label == "rocket_ignites" and ignition.sound == "rocket"
    assert ignition.visual_time == pytest.approx(2.15, abs=0.1)
    assert ignition.audio_time == pytest.approx(2.39, abs=0.05)
    assert [c.visual_time for c in cuts] == [pytest.approx(74 / 24, abs=0.05)]
    assert all(c.audio_time is None and c.sound is None for c in cuts)


def test_cue_detectors_on_a_drawn_video() -> None:
    # A grey picture; a bright square appears in the ROI at frame 30, a hard cut at frame 60.
    fps, rate = 25.0, 16000
    frames = np.full((80, 40, 40, 3), 90, np.uint8)
    frames[30:, 24:32, 16:24] = 250
    frames[60:] = 20
    audio = _burst(rate, 1.3, 0.3, 80 / fps)
    clip = Clip(id="drawn", video=frames, fps=fps, audio=audio, sample_rate=rate)
    cue = VisualCue("flash", "bang", "a flash", roi=(0.4, 0.6, 0.6, 0.8), onset_hop_s=0.002, onset_threshold_db=20)
    lum = luma(clip.frames)
    assert shot_cuts(lum) == [60]
    assert cue_visual_frame(lum, fps, cue, [60]) == 30
    assert cue_visual_frame(lum, fps, dataclasses.replace(cue, shot=1), [60]) is None, "shot 1 has no flash"
    assert cue_audio_time(clip, cue, 30 / fps) == pytest.approx(1.3, abs=0.002)
    assert cue_audio_time(clip, cue, 0.5) is None, "an onset 0.8 s after the flash is not its sound"
    with pytest.raises(CorpusBuildError, match="no sound onset"):
        measure_video_events(clip.replace(audio=np.zeros_like(audio)), cue)


# --------------------------------------------------------------------- the built corpus


@pytest.fixture(scope="module")
def debian_manifest(debian_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("debian-corpus")
    return build_debian_corpus(out, cache=debian_root.parent, n_scenes=3, seed=1, progress=False)


@pytest.mark.debian
def test_built_manifest_loads_with_licences_and_hashes(debian_manifest: Path) -> None:
    corpus = load_corpus(debian_manifest)
    videos = [e for e in corpus if "video" in e.tags]
    scenes = [e for e in corpus if "debian-sounds" in e.tags]
    assert len(videos) == sum(m.kind == VIDEO for p in CATALOGUE for m in p.files)
    assert len(scenes) == 3
    for entry in corpus:
        assert entry.licence != "unknown" and entry.attribution, entry.id
    for entry in videos:
        assert entry.sha256 == hashlib.sha256(entry.path.read_bytes()).hexdigest()
        assert "onset_times" in entry.timing and "luma" in entry.timing
        assert "Debian package" in entry.attribution
    assert corpus.generator["packages"].keys() >= {p.name for p in CATALOGUE}


@pytest.mark.debian
def test_built_manifest_times_match_its_files(debian_manifest: Path) -> None:
    corpus = load_corpus(debian_manifest)
    catalogue_cues = {f"debian-{Path(m.path).stem}": m.cue for p in CATALOGUE for m in p.files if m.cue}
    for entry in corpus:
        clip = corpus.load_clip(entry, max_side=MEASURE_SIDE, lazy=False)
        heard = [e for e in entry.events if e.audio_time is not None]
        assert heard, f"{entry.id} has no heard event"
        if entry.id in catalogue_cues:
            remeasured = measure_video_events(clip, catalogue_cues[entry.id])
            assert [e.label for e in remeasured] == [e.label for e in entry.events]
            for old, new in zip(entry.events, remeasured, strict=True):
                assert new.visual_time == pytest.approx(old.visual_time, abs=0.5 / clip.fps), entry.id
                if old.audio_time is not None:
                    assert new.audio_time == pytest.approx(old.audio_time, abs=ONSET_TOLERANCE_S), entry.id
        else:
            onsets = onset_times(clip.audio, clip.sample_rate)
            for event in heard:
                assert event.audio_time is not None
                near = [t for t in onsets if -SCENE_EARLY_S <= t - event.audio_time <= ONSET_TOLERANCE_S]
                assert near, f"{entry.id}: {event.sound} annotated at {event.audio_time}, onsets {onsets}"


@pytest.mark.debian
def test_a_video_longer_than_the_limit_is_cut_reencoded_and_measured_again(debian_root: Path, tmp_path: Path) -> None:
    manifest = build_debian_corpus(
        tmp_path, cache=debian_root.parent, n_scenes=0, max_video_seconds=4.0, progress=False
    )
    (entry,) = load_corpus(manifest).entries
    assert entry.path.suffix == ".mp4" and "re-encoded" in entry.timing
    clip = read_clip(entry.path)
    assert clip.duration == pytest.approx(4.0, abs=1.5 / clip.fps)
    (_, media, source), *_ = debian_videos(debian_root)
    assert media.cue is not None
    original = measure_video_events(read_clip(source, max_side=MEASURE_SIDE, lazy=False), media.cue)
    # Same events as the uncut file: the cut and the AAC encode move nothing by more than the tolerance.
    assert [e.label for e in entry.events] == [e.label for e in original]
    for cut, full in zip(entry.events, original, strict=True):
        assert cut.visual_time == pytest.approx(full.visual_time, abs=0.5 / clip.fps)
        if full.audio_time is not None:
            assert cut.audio_time == pytest.approx(full.audio_time, abs=ONSET_TOLERANCE_S)
