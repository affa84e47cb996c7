"""The ``Clip``: frames, audio, timings and annotated events, immutable.

Time zero of a clip is the presentation time of its first video frame; audio
sample ``i`` plays at ``i / sample_rate`` seconds. Readers convert every
container's timestamps (``pts * time_base``) into this one clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Event:
    """One annotated event: what is seen, when, and what is heard, when.

    ``label`` names the visible action (``"glass_breaks"``); ``sound`` names
    the sound class heard (``"glass"``). ``visual_time`` is ``None`` for a
    sound with nothing visible (a swapped-in donor sound); ``audio_time`` is
    ``None`` when the event makes no audible sound (after mute or swap).
    """

    label: str
    visual_time: float | None
    audio_time: float | None
    sound: str | None
    description: str = ""


@dataclass(frozen=True)
class Edit:
    """One intervention applied to a clip, with its exact parameters."""

    op: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.op}({args})"


@dataclass(frozen=True)
class Provenance:
    """Where a clip came from and what was done to it since."""

    source: str
    licence: str = "unknown"
    attribution: str = ""
    edits: tuple[Edit, ...] = ()

    def with_edit(self, edit: Edit) -> Provenance:
        return dataclasses.replace(self, edits=(*self.edits, edit))


@dataclass(frozen=True)
class VideoSource:
    """The file a clip's frames were decoded from, unchanged.

    Present only when the frames are exactly the source stream's frames
    (no fps or size change), so writers may copy the compressed stream
    instead of re-encoding it. ``start`` / ``end`` are in source seconds.
    """

    path: Path
    stream_index: int
    codec: str
    start: float
    end: float
    n_frames: int


class LazyFrames:
    """Frames decoded on first use: editing audio never pays for video."""

    def __init__(self, n_frames: int, shape: tuple[int, int], load: Callable[[], np.ndarray]) -> None:
        self.n_frames = n_frames
        self.height, self.width = shape
        self._load = load
        self._frames: np.ndarray | None = None

    def materialize(self) -> np.ndarray:
        if self._frames is None:
            frames = self._load()
            frames.flags.writeable = False
            self._frames = frames
        return self._frames


@dataclass(frozen=True, eq=False)
class Clip:
    """An audio-visual clip. Arrays are read-only; edits return new clips.

    ``video`` holds the frames ``(T, H, W, 3) uint8`` or a ``LazyFrames``;
    read them through ``frames``. ``audio`` is ``(N, C) float32`` in [-1, 1].
    """

    id: str
    video: np.ndarray | LazyFrames = field(repr=False)
    fps: float
    audio: np.ndarray = field(repr=False)
    sample_rate: int
    events: tuple[Event, ...] = ()
    provenance: Provenance = field(default_factory=lambda: Provenance(source="memory"))
    video_source: VideoSource | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        audio = np.asarray(self.audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[:, None]
        if audio.ndim != 2 or audio.shape[1] < 1:
            raise ValueError(f"clip {self.id}: audio must be (samples, channels), got {audio.shape}")
        if audio.flags.writeable:  # copy so the caller's array cannot change the clip
            audio = audio.copy()
            audio.flags.writeable = False
        object.__setattr__(self, "audio", audio)
        if isinstance(self.video, np.ndarray):
            video = self.video
            if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
                raise ValueError(f"clip {self.id}: frames must be (T, H, W, 3) uint8, got {video.shape} {video.dtype}")
            if video.flags.writeable:
                video = video.copy()
                video.flags.writeable = False
            object.__setattr__(self, "video", video)
        if self.fps <= 0 or self.sample_rate <= 0:
            raise ValueError(f"clip {self.id}: fps and sample_rate must be positive")
        object.__setattr__(self, "events", tuple(self.events))

    @property
    def frames(self) -> np.ndarray:
        if isinstance(self.video, LazyFrames):
            return self.video.materialize()
        return self.video

    @property
    def n_frames(self) -> int:
        return self.video.n_frames if isinstance(self.video, LazyFrames) else int(self.video.shape[0])

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(height, width)`` of the frames."""
        if isinstance(self.video, LazyFrames):
            return (self.video.height, self.video.width)
        return (int(self.video.shape[1]), int(self.video.shape[2]))

    @property
    def duration(self) -> float:
        """Seconds of picture: ``n_frames / fps``; the audio spans the same."""
        return self.n_frames / self.fps

    @property
    def n_channels(self) -> int:
        return int(self.audio.shape[1])

    @property
    def edits(self) -> tuple[Edit, ...]:
        return self.provenance.edits

    def replace(self, **changes: Any) -> Clip:
        return dataclasses.replace(self, **changes)


def audio_length_for(n_frames: int, fps: float, sample_rate: int) -> int:
    """Samples that span ``n_frames`` frames: the one rule for clip lengths."""
    return int(round(n_frames / fps * sample_rate))
