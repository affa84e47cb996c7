"""Real media from Debian packages: recorded sound effects and a video with sound.

``fetch_debian_packages`` downloads the catalogue's packages with
``apt-get download`` and unpacks them with ``dpkg-deb -x`` into a cache;
``debian_sound_bank`` turns the recordings into a ``SoundBank`` for the scene
renderer; ``build_debian_corpus`` writes one manifest listing the real videos
(events measured from their own pixels and samples) and rendered scenes that
carry the real recordings.

Cache layout (``$THUD_CACHE/debian`` or ``~/.cache/thud-mt/debian``)::

    debs/<package>_<version>_<arch>.deb   as apt served it
    root/<package>/usr/...                its files, as dpkg-deb -x lays them out
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from thud_mt.clip import Clip, Event
from thud_mt.corpus.debian_catalog import CATALOGUE, VIDEO, DebianPackage, MediaFile, VisualCue
from thud_mt.corpus.manifest import ClipEntry, load_corpus, write_manifest
from thud_mt.corpus.sounds import Recording, SoundBank
from thud_mt.corpus.vocabulary import SOUND_CLASSES
from thud_mt.errors import CorpusBuildError, MediaError
from thud_mt.locking import file_lock
from thud_mt.signal import first_onset, onset_times

# Recordings: keep at most MAX_LEAD_S of the file before its onset and make
# sure at least MIN_LEAD_S of silence precedes it (files that start on the
# attack get zeros), so the onset is a real transition wherever it is laid.
MIN_LEAD_S = 0.02
MAX_LEAD_S = 0.05
# A tolling bell rings for seconds; scenes last a few. The tail is faded, so
# the cut adds no click an onset detector could take for a sound.
MAX_RECORDING_S = 2.0
FADE_S = 0.05
# The level of the synthesized bank, so real and synthesized scenes match.
PEAK_DBFS = -6.0

# Videos up to this long are copied unchanged; longer ones are cut and re-encoded.
MAX_VIDEO_S = 10.0
# Frames are measured at this size: enough for luma in a region, 16x less work than 640 px.
MEASURE_SIDE = 160
# A hard cut: mean |luma difference| between two frames at least this many
# levels (of 255) and this many times the video's median difference.
CUT_MIN_LEVELS = 20.0
CUT_MIN_RATIO = 10.0

_APT_TIMEOUT_S = 900
_TAIL_CHARS = 800


# --------------------------------------------------------------------- fetching


def default_cache_dir() -> Path:
    """``$THUD_CACHE/debian``, else ``~/.cache/thud-mt/debian``."""
    base = os.environ.get("THUD_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "thud-mt") / "debian"


def fetch_debian_packages(
    cache: Path,
    packages: Sequence[str] | None = None,
    *,
    progress: bool = True,
    catalogue: Sequence[DebianPackage] = CATALOGUE,
) -> Path:
    """Download and unpack ``packages`` (default: the catalogue's) into ``cache``; returns the unpacked root.

    A package already unpacked, or whose ``.deb`` is already in ``cache/debs``,
    is not downloaded again. Raises ``CorpusBuildError`` naming the package
    when apt-get is missing or fails, and naming package and file when a
    catalogue file is not in the package apt served.
    """
    cache = Path(cache)
    names = tuple(packages) if packages is not None else tuple(p.name for p in catalogue)
    debs, root = cache / "debs", cache / "root"
    root.mkdir(parents=True, exist_ok=True)
    debs.mkdir(parents=True, exist_ok=True)
    # pytest-xdist workers each fetch in their own session: one at a time.
    with file_lock(cache / ".lock"):
        for name in tqdm(names, desc="debian packages", unit="pkg", disable=not progress):
            if (root / name).is_dir():
                continue
            deb = _cached_deb(debs, name) or _download(debs, name)
            _extract(deb, root / name)
    for package in catalogue:
        if package.name in names:
            for media in package.files:
                media_path(root, package.name, media)
    return root


def debian_media_root(cache: Path | None = None, *, fetch: bool = False) -> Path | None:
    """The unpacked root when every catalogue file is in ``cache``; else fetch it, or ``None`` without ``fetch``."""
    cache = Path(cache) if cache is not None else default_cache_dir()
    root = cache / "root"
    present = all((root / p.name / f.path).is_file() for p in CATALOGUE for f in p.files)
    if present:
        return root
    return fetch_debian_packages(cache) if fetch else None


def media_path(root: Path, package: str, media: MediaFile) -> Path:
    """Where ``media`` of ``package`` lies under ``root``; ``CorpusBuildError`` naming both when it is missing."""
    path = Path(root) / package / media.path
    if not path.is_file():
        raise CorpusBuildError(
            f"Debian package {package} has no file /{media.path} (looked for {path}); the version apt served"
            " differs from the catalogue in thud_mt/corpus/debian_catalog.py"
        )
    return path


def package_files(cache: Path) -> dict[str, str]:
    """``{package: .deb file name}`` of what is in the cache, e.g. for provenance."""
    found: dict[str, str] = {}
    for deb in sorted((Path(cache) / "debs").glob("*.deb")):
        found[deb.name.split("_", 1)[0]] = deb.name
    return found


def _cached_deb(debs: Path, name: str) -> Path | None:
    # Debian package names cannot contain "_", so "<name>_" never matches another package.
    found = sorted(debs.glob(f"{name}_*.deb"))
    return found[-1] if found else None


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _TAIL_CHARS else "..." + text[-_TAIL_CHARS:]


def _run(command: list[str], *, cwd: Path, what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_APT_TIMEOUT_S,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CorpusBuildError(f"{what}: `{' '.join(command)}` took over {_APT_TIMEOUT_S} s") from None


def _download(debs: Path, name: str) -> Path:
    if shutil.which("apt-get") is None:
        raise CorpusBuildError(
            f"cannot fetch Debian package {name}: apt-get not found (a Debian or Ubuntu system is needed;"
            f" or put {name}_*.deb into {debs})"
        )
    # Download into a private folder and move the finished file in, so an
    # interrupted download never leaves a .deb that looks complete.
    work = Path(tempfile.mkdtemp(prefix=f".download-{name}-", dir=debs))
    try:
        done = _run(["apt-get", "download", name], cwd=work, what=f"downloading Debian package {name}")
        found = sorted(work.glob(f"{name}_*.deb"))
        if done.returncode != 0 or not found:
            raise CorpusBuildError(
                f"cannot download Debian package {name}: apt-get download exited {done.returncode}:"
                f" {_tail(done.stderr) or '(no message)'}\n"
                "If apt does not know the package, run `apt-get update` (as root) and try again."
            )
        target = debs / found[-1].name
        os.replace(found[-1], target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _extract(deb: Path, target: Path) -> None:
    if shutil.which("dpkg-deb") is None:
        raise CorpusBuildError(f"cannot unpack {deb.name}: dpkg-deb not found (a Debian or Ubuntu system is needed)")
    # Unpack beside the target and rename: the target exists only when complete.
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        done = _run(["dpkg-deb", "-x", str(deb), str(work)], cwd=target.parent, what=f"unpacking {deb.name}")
        if done.returncode != 0:
            deb.unlink(missing_ok=True)  # most likely a damaged download: the next run fetches it again
            raise CorpusBuildError(
                f"cannot unpack Debian package {target.name} ({deb.name}, now deleted so the next run downloads"
                f" it again): dpkg-deb exited {done.returncode}: {_tail(done.stderr) or '(no message)'}"
            )
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------- recordings


def prepare_recording(audio: np.ndarray, sample_rate: int, *, source: str) -> tuple[np.ndarray, float]:
    """Trim the lead-in, cap the length, set the peak level; returns (audio, onset seconds).

    The onset is measured with ``thud_mt.signal.first_onset`` on the audio
    returned, so it is where a detector will find the sound once laid down.
    """
    audio = np.asarray(audio, dtype=np.float32)
    audio = audio[:, None] if audio.ndim == 1 else audio
    onset = first_onset(audio, sample_rate)
    if onset is None:
        raise CorpusBuildError(f"{source}: no sound onset found (silent, or no attack to time)")
    at = int(round(onset * sample_rate))
    start = max(0, at - int(round(MAX_LEAD_S * sample_rate)))
    pad = max(0, int(round(MIN_LEAD_S * sample_rate)) - at)
    out = np.concatenate([np.zeros((pad, audio.shape[1]), np.float32), audio[start:]])
    limit = int(round(MAX_RECORDING_S * sample_rate))
    if out.shape[0] > limit:
        out = out[:limit].copy()
        fade = min(limit, int(round(FADE_S * sample_rate)))
        out[limit - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    peak = float(np.max(np.abs(out)))
    if peak == 0.0:
        raise CorpusBuildError(f"{source}: decodes to digital silence")
    out = (out * (10 ** (PEAK_DBFS / 20) / peak)).astype(np.float32)
    measured = first_onset(out, sample_rate)
    if measured is None:  # cannot happen after the lead-in above, but never annotate a guess
        raise CorpusBuildError(f"{source}: onset lost after trimming")
    return out, measured


def debian_sound_bank(root: Path, *, catalogue: Sequence[DebianPackage] = CATALOGUE) -> SoundBank:
    """The catalogue's recordings, decoded (mono, at their own rate) and prepared by ``prepare_recording``."""
    from thud_mt.media import read_audio  # PyAV is loaded only when media is read

    recordings: dict[str, list[Recording]] = {}
    for package in catalogue:
        for media in package.files:
            if media.kind == VIDEO:
                continue
            path = media_path(root, package.name, media)
            source = f"{package.name}:/{media.path}"
            try:
                audio, rate = read_audio(path, channels=1)
            except MediaError as exc:
                raise CorpusBuildError(f"{source}: cannot be decoded: {exc.problem}") from exc
            audio, onset = prepare_recording(audio, rate, source=source)
            recordings.setdefault(media.kind, []).append(
                Recording(media.kind, audio, rate, onset, media.licence, media.attribution, source)
            )
    missing = [s for s in SOUND_CLASSES if s not in recordings]
    if missing:
        raise CorpusBuildError(f"the Debian catalogue has no recording of {', '.join(missing)}")
    return SoundBank({sound: tuple(found) for sound, found in recordings.items()})


# --------------------------------------------------------------------- videos


def debian_videos(root: Path, *, catalogue: Sequence[DebianPackage] = CATALOGUE) -> list[tuple[str, MediaFile, Path]]:
    """``(package, catalogue entry, path)`` of each real video."""
    return [
        (package.name, media, media_path(root, package.name, media))
        for package in catalogue
        for media in package.files
        if media.kind == VIDEO
    ]


def luma(frames: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3) uint8`` -> ``(T, H, W) float32`` BT.601 luma."""
    return frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def shot_cuts(lum: np.ndarray) -> list[int]:
    """Indices of frames that start a new shot (a hard cut before them)."""
    if lum.shape[0] < 2:
        return []
    diff = np.abs(np.diff(lum, axis=0)).mean(axis=(1, 2))
    floor = max(float(np.median(diff)), 1e-3)
    return [i + 1 for i, d in enumerate(diff) if d >= CUT_MIN_LEVELS and d >= CUT_MIN_RATIO * floor]


def cue_visual_frame(lum: np.ndarray, fps: float, cue: VisualCue, cuts: Sequence[int]) -> int | None:
    """First frame of the cue's shot whose ROI luma rises ``min_rise`` over its recent median."""
    bounds = [0, *cuts, lum.shape[0]]
    if cue.shot >= len(bounds) - 1:
        return None
    first, end = bounds[cue.shot], bounds[cue.shot + 1]
    height, width = lum.shape[1:]
    left, top, right, bottom = cue.roi
    rows = slice(int(top * height), max(int(bottom * height), int(top * height) + 1))
    cols = slice(int(left * width), max(int(right * width), int(left * width) + 1))
    level = lum[first:end, rows, cols].mean(axis=(1, 2))
    history = max(1, int(round(cue.baseline_s * fps)))
    for i in range(history, level.shape[0]):
        if level[i] - float(np.median(level[i - history : i])) >= cue.min_rise:
            return first + i
    return None


def cue_audio_time(clip: Clip, cue: VisualCue, visual_time: float) -> float | None:
    """First onset of the cue's detector from ``max_audio_lead`` before to ``max_audio_lag`` after ``visual_time``."""
    onsets = onset_times(clip.audio, clip.sample_rate, hop_s=cue.onset_hop_s, threshold_db=cue.onset_threshold_db)
    window = (visual_time - cue.max_audio_lead, visual_time + cue.max_audio_lag)
    return next((t for t in onsets if window[0] <= t <= window[1]), None)


def measure_video_events(clip: Clip, cue: VisualCue, *, source: str = "") -> tuple[Event, ...]:
    """The cue's event (both times measured), then one sound-less ``shot_cut`` event per hard cut."""
    name = source or clip.id
    lum = luma(clip.frames)
    cuts = shot_cuts(lum)
    frame = cue_visual_frame(lum, clip.fps, cue, cuts)
    if frame is None:
        raise CorpusBuildError(f"{name}: no rise of {cue.min_rise} luma levels in roi {cue.roi} of shot {cue.shot}")
    visual = frame / clip.fps
    audio = cue_audio_time(clip, cue, visual)
    if audio is None:
        raise CorpusBuildError(
            f"{name}: no sound onset from {cue.max_audio_lead} s before to {cue.max_audio_lag} s after"
            f" the visual event at {visual:.3f} s"
        )
    events = [Event(cue.label, round(visual, 6), round(audio, 6), cue.sound, cue.description)]
    for cut in cuts:
        events.append(Event("shot_cut", round(cut / clip.fps, 6), None, None, "hard cut to another shot"))
    return tuple(events)


def timing_text(cue: VisualCue) -> str:
    """How ``measure_video_events`` times a video, for the manifest's ``timing`` field."""
    return (
        f"Measured on the file as thud_mt.media.read_clip decodes it (frames at max side {MEASURE_SIDE} px)."
        f" visual_time of {cue.label}: t = frame index / fps of the first frame of shot {cue.shot} whose mean"
        f" BT.601 luma in the region (left, top, right, bottom) = {cue.roi} of the frame rises"
        f" >= {cue.min_rise:g} levels over the median of the previous {cue.baseline_s:g} s."
        f" audio_time: first onset by energy-rise detection (thud_mt.signal.onset_times,"
        f" {cue.onset_hop_s * 1000:g} ms hop, {cue.onset_threshold_db:g} dB threshold) from"
        f" {cue.max_audio_lead:g} s before to {cue.max_audio_lag:g} s after visual_time."
        f" shot_cut: frames whose mean |luma difference| to the previous frame is >= {CUT_MIN_LEVELS:g} levels"
        f" and >= {CUT_MIN_RATIO:g}x the median difference; no sound."
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_atomic(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _video_entry(root: Path, package: str, media: MediaFile, folder: Path, max_seconds: float, deb: str) -> ClipEntry:
    from thud_mt.media import read_clip, write_clip

    assert media.cue is not None
    source = media_path(root, package, media)
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(media.name).stem
    try:
        # Reading a second past the limit tells whether the file is longer without decoding all of it.
        if read_clip(source, max_duration=max_seconds + 1.0).duration <= max_seconds + 1e-9:
            target = folder / media.name
            _copy_atomic(source, target)
            how = f"copied unchanged from /{media.path}"
        else:
            target = write_clip(read_clip(source, max_duration=max_seconds), folder / f"{stem}.mp4")
            how = f"first {max_seconds:g} s of /{media.path}, re-encoded by thud_mt.media.write_clip"
        clip = read_clip(target, max_side=MEASURE_SIDE, lazy=False)
    except MediaError as exc:
        raise CorpusBuildError(f"{package}:/{media.path}: {exc.problem}") from exc
    events = measure_video_events(clip, media.cue, source=f"{package}:/{media.path}")
    return ClipEntry(
        id=f"debian-{stem}",
        path=target.resolve(),
        events=events,
        licence=media.licence,
        attribution=f"{media.attribution}; from Debian package {package} ({deb})",
        timing=f"{how}. {timing_text(media.cue)}",
        sha256=_sha256(target),
        tags=("real", "debian", "video"),
    )


# --------------------------------------------------------------------- corpus


def build_debian_corpus(
    out: Path,
    *,
    cache: Path | None = None,
    n_scenes: int = 12,
    seed: int = 0,
    progress: bool = True,
    max_video_seconds: float = MAX_VIDEO_S,
) -> Path:
    """Fetch the Debian media set and write ``out/manifest.json``; returns its path.

    The manifest lists the real videos (``out/videos/``, events measured, see
    each entry's ``timing``) and ``n_scenes`` rendered scenes
    (``out/scenes/``, also listed alone in ``out/scenes/manifest.json``)
    that carry the real recordings at their visual events.
    """
    out = Path(out)
    cache = Path(cache) if cache is not None else default_cache_dir()
    root = fetch_debian_packages(cache, progress=progress)
    debs = package_files(cache)
    entries = [
        _video_entry(root, package, media, out / "videos", max_video_seconds, debs.get(package, "version unknown"))
        for package, media, _ in debian_videos(root)
    ]
    if n_scenes > 0:
        from thud_mt.corpus.synth import build_synthetic_corpus

        scenes = build_synthetic_corpus(out / "scenes", n_scenes, seed, bank=debian_sound_bank(root), progress=progress)
        for entry in load_corpus(scenes):
            tags = entry.tags if "debian-sounds" in entry.tags else (*entry.tags, "debian-sounds")
            entries.append(dataclasses.replace(entry, tags=tags))
    return write_manifest(
        out / "manifest.json",
        name="debian",
        description="Real media from Debian packages: videos with sound (events measured from their pixels and"
        " samples) and rendered scenes carrying real recorded sound effects.",
        clips=entries,
        generator={
            "tool": "thud_mt.corpus.debian.build_debian_corpus",
            "packages": debs,
            "n_scenes": n_scenes,
            "seed": seed,
            "max_video_seconds": max_video_seconds,
        },
    )
