"""The built-in synthetic corpus: rendered scenes with a recording laid exactly on each visual event.

``build_synthetic_corpus`` writes ``out/clips/<id>.mp4`` and ``out/manifest.json``.
Clip ``i`` of seed ``s`` depends only on ``(s, i)`` and the options, so a
larger corpus extends a smaller one with the same clips. Event kinds cycle,
so any ``n >= 6`` covers every kind.
"""

from __future__ import annotations

import hashlib
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy import signal as sps
from tqdm import tqdm

from thud_mt import __version__
from thud_mt.clip import Clip, Event, Provenance, audio_length_for
from thud_mt.corpus.scenes import SceneSpec, random_spec, render
from thud_mt.corpus.sounds import Recording, SoundBank
from thud_mt.corpus.synthsounds import LICENCE, synthesized_bank
from thud_mt.corpus.vocabulary import EVENT_KINDS
from thud_mt.errors import CorpusBuildError
from thud_mt.signal import remix, resample

# Room tone level range (RMS dBFS): enough that the track is never digitally
# silent, far under the -50 dBFS floor onset detectors ignore.
ROOM_TONE_DBFS = (-70.0, -60.0)
TIMING = "rendered: the visual event is frame {frame}; the recording's onset is placed at the same time"


def clip_id(seed: int, index: int, kind: str) -> str:
    return f"synth-s{seed}-{index:04d}-{kind}"


def combined_licence(recording_licence: str) -> str:
    """SPDX expression for a rendered scene (CC0) together with the recording's licence."""
    if recording_licence == LICENCE:
        return LICENCE
    inner = f"({recording_licence})" if " " in recording_licence.strip() else recording_licence
    return f"{LICENCE} AND {inner}"


def room_tone(n: int, channels: int, level_dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Quiet noise tilted toward low frequencies (as ventilation and traffic are), at ``level_dbfs`` RMS."""
    noise = rng.standard_normal((n, channels))
    tone = sps.lfilter([0.15], [1.0, -0.85], noise, axis=0)
    tone *= 10 ** (level_dbfs / 20) / (np.sqrt(np.mean(tone**2)) + 1e-12)
    return tone.astype(np.float32)


def place_recording(track: np.ndarray, recording: Recording, onset_time: float, sample_rate: int) -> int:
    """Add ``recording`` into ``track`` (in place) so its onset lands on sample ``round(onset_time * sr)``.

    The recording is resampled and remixed to the track first; material
    before its onset that would fall before the clip's start is cut, the tail
    past the clip's end is cut. Returns the onset sample.
    """
    audio = remix(resample(recording.audio, recording.sample_rate, sample_rate), track.shape[1])
    onset = int(round(onset_time * sample_rate))
    start = onset - int(round(recording.onset * sample_rate))
    if start < 0:
        audio, start = audio[-start:], 0
    stop = min(track.shape[0], start + audio.shape[0])
    track[start:stop] += audio[: stop - start]
    return onset


def render_clip(
    index: int,
    seed: int,
    *,
    bank: SoundBank,
    fps: float = 25.0,
    size: tuple[int, int] = (160, 120),
    sample_rate: int = 16000,
    duration: float = 4.0,
    channels: int = 1,
) -> tuple[Clip, SceneSpec]:
    """Clip ``index`` of the corpus of ``seed``, in memory, with the scene it was rendered from."""
    kind = EVENT_KINDS[index % len(EVENT_KINDS)]
    rng = np.random.default_rng([seed, index])
    spec = random_spec(kind.label, rng, fps=fps, size=size, duration=duration)
    frames = render(spec)
    try:
        recording = bank.pick(kind.sound, rng)
    except KeyError as exc:
        raise CorpusBuildError(f"cannot build {clip_id(seed, index, kind.label)}: {exc.args[0]}") from None
    n_samples = audio_length_for(spec.n_frames, fps, sample_rate)
    track = room_tone(n_samples, channels, float(rng.uniform(*ROOM_TONE_DBFS)), rng)
    onset = place_recording(track, recording, spec.event_time, sample_rate)
    np.clip(track, -1.0, 1.0, out=track)
    event = Event(
        label=kind.label,
        visual_time=spec.event_frame / fps,
        audio_time=onset / sample_rate,
        sound=kind.sound,
        description=kind.description,
    )
    provenance = Provenance(
        source=f"thud-mt synthetic scene (seed {seed}, clip {index}); sound {recording.source}",
        licence=combined_licence(recording.licence),
        attribution=f"scene: thud-mt renderer; sound: {recording.attribution} ({recording.source})",
    )
    clip = Clip(
        id=clip_id(seed, index, kind.label),
        video=frames,
        fps=fps,
        audio=track,
        sample_rate=sample_rate,
        events=(event,),
        provenance=provenance,
    )
    return clip, spec


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_synthetic_corpus(
    out: Path,
    n: int = 24,
    seed: int = 0,
    *,
    bank: SoundBank | None = None,
    fps: float = 25.0,
    size: tuple[int, int] = (160, 120),
    sample_rate: int = 16000,
    duration: float = 4.0,
    channels: int = 1,
    progress: bool = True,
) -> Path:
    """Render ``n`` clips into ``out/clips/`` and write ``out/manifest.json``; returns the manifest path.

    ``bank`` supplies the recordings (default: ``synthesized_bank(sample_rate, seed)``);
    ``size`` is ``(width, height)``. Frames and audio are identical for equal
    arguments; the mp4 bytes may differ only in encoder metadata.
    """
    from thud_mt import media  # imported here: rendering in memory needs no PyAV
    from thud_mt.corpus.manifest import ClipEntry, write_manifest

    if n < 1:
        raise ValueError(f"a synthetic corpus needs at least one clip, got n={n}")
    out = Path(out)
    given_bank = bank is not None
    bank = bank if bank is not None else synthesized_bank(sample_rate, seed)

    def build(index: int) -> ClipEntry:
        clip, spec = render_clip(
            index,
            seed,
            bank=bank,
            fps=fps,
            size=size,
            sample_rate=sample_rate,
            duration=duration,
            channels=channels,
        )
        path = media.write_clip(clip, out / "clips" / f"{clip.id}.mp4")
        return ClipEntry(
            id=clip.id,
            path=path.resolve(),
            events=clip.events,
            licence=clip.provenance.licence,
            attribution=clip.provenance.attribution,
            timing=TIMING.format(frame=spec.event_frame),
            sha256=_sha256(path),
            tags=("synthetic", spec.kind, clip.events[0].sound or "none"),
        )

    # Each clip is a function of its index alone, so threads change nothing but the wall time.
    with ThreadPoolExecutor(media.writer_threads()) as pool:
        built = tqdm(
            pool.map(build, range(n)),
            total=n,
            desc="synthetic corpus",
            unit="clip",
            file=sys.stderr,
            disable=not progress,
        )
        entries = list(built)
    w, h = size
    return write_manifest(
        out / "manifest.json",
        name=f"synthetic-s{seed}",
        description=(
            f"{n} rendered scenes ({w}x{h}, {fps:g} fps, {duration:g} s) with "
            f"{'given' if given_bank else 'synthesized'} sounds placed on the visual events"
        ),
        clips=entries,
        generator={
            "tool": "thud_mt.corpus.synth",
            "version": __version__,
            "seed": seed,
            "n": n,
            "fps": fps,
            "size": [w, h],
            "sample_rate": sample_rate,
            "duration": duration,
            "channels": channels,
            "bank": "given" if given_bank else "synthesized",
        },
    )
