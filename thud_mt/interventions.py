"""The audio interventions: pure functions Clip -> Clip.

Each edit changes only the audio, moves the annotated ``audio_time``s the way
the edit moves the sound, and appends an ``Edit`` to the provenance, so a
follow-up clip always says what was done to it. Edits compose.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np

from thud_mt.clip import Clip, Edit, Event
from thud_mt.errors import InterventionError
from thud_mt.media import audio_roundtrip
from thud_mt.signal import first_onset, fit_length, remix, resample

SwapAlign = Literal["event", "start"]


def _edited(clip: Clip, audio: np.ndarray, events: tuple[Event, ...], edit: Edit) -> Clip:
    return clip.replace(audio=audio, events=events, provenance=clip.provenance.with_edit(edit))


def shift(clip: Clip, offset_s: float) -> Clip:
    """Delay the audio by ``offset_s`` seconds (negative: play it early).

    The shift is quantised to whole samples, ``k = round(offset_s * sr)``; the
    audio keeps its length (silence fills the opened end, the other end is
    trimmed), and events move by exactly ``k / sr``. An event pushed out of the
    clip is no longer heard: its ``audio_time`` becomes ``None``.
    """
    sr = clip.sample_rate
    k = int(round(offset_s * sr))
    n = clip.audio.shape[0]
    out = np.zeros_like(clip.audio)
    if 0 <= k < n:
        out[k:] = clip.audio[: n - k]
    elif -n < k < 0:
        out[: n + k] = clip.audio[-k:]
    moved = k / sr
    events = tuple(replace(e, audio_time=_moved_time(e.audio_time, moved, n / sr)) for e in clip.events)
    return _edited(clip, out, events, Edit("shift", {"offset_s": float(offset_s), "samples": k, "applied_s": moved}))


def _moved_time(t: float | None, by: float, duration: float) -> float | None:
    if t is None:
        return None
    moved = t + by
    return moved if 0.0 <= moved < duration else None


def mute(clip: Clip) -> Clip:
    """Silence the audio (exact zeros) but keep the track: no event is heard."""
    events = tuple(replace(e, audio_time=None, sound=None) for e in clip.events)
    return _edited(clip, np.zeros_like(clip.audio), events, Edit("mute"))


def swap(clip: Clip, donor: Clip, *, align: SwapAlign = "event") -> Clip:
    """Replace the audio with the donor's, resampled and re-channelled to the recipient.

    Fitting to the recipient's duration: with ``align="event"`` (default) the
    donor's first sound onset is placed at the recipient's first visual event,
    so the new sound is as much in sync as the old one and only *what* is heard
    changes; ``align="start"`` keeps the donor's own timing from its start.
    Either way the donor is never looped or stretched: what does not fit is
    trimmed, what is missing is silence. The recipient's events keep what is
    seen and lose their sound; the donor's heard events join as sounds with
    nothing visible (``visual_time=None``).
    """
    if donor.id == clip.id and donor.provenance.source == clip.provenance.source:
        raise InterventionError(f"swap: clip {clip.id} cannot be its own donor")
    sr = clip.sample_rate
    donor_audio = remix(resample(donor.audio, donor.sample_rate, sr), clip.n_channels)
    offset = _swap_offset(clip, donor, donor_audio, align)
    k = int(round(offset * sr))
    n = clip.audio.shape[0]
    out = np.zeros((n, clip.n_channels), np.float32)
    src_start, dst_start = (0, k) if k >= 0 else (-k, 0)
    length = max(0, min(donor_audio.shape[0] - src_start, n - dst_start))
    out[dst_start : dst_start + length] = donor_audio[src_start : src_start + length]
    moved = k / sr
    duration = n / sr
    own = tuple(replace(e, audio_time=None, sound=None) for e in clip.events if e.visual_time is not None)
    heard = tuple(
        Event(label=e.label, visual_time=None, audio_time=t, sound=e.sound, description=e.description)
        for e in donor.events
        if e.sound is not None and (t := _moved_time(e.audio_time, moved, duration)) is not None
    )
    edit = Edit("swap", {"donor": donor.id, "align": align, "donor_offset_s": moved})
    return _edited(clip, out, own + heard, edit)


def _swap_offset(clip: Clip, donor: Clip, donor_audio: np.ndarray, align: SwapAlign) -> float:
    """Seconds to delay the donor's audio by so its sound lands where ``align`` says."""
    if align == "start":
        return 0.0
    if align != "event":
        raise InterventionError(f"swap: align must be 'event' or 'start', not {align!r}")
    target = next((e.visual_time for e in clip.events if e.visual_time is not None), None)
    source = next((e.audio_time for e in donor.events if e.audio_time is not None), None)
    if source is None:
        source = first_onset(donor_audio, clip.sample_rate)
    if target is None or source is None:
        return 0.0  # nothing to align to: keep the donor's own timing
    return target - source


def identity(clip: Clip) -> Clip:
    """A re-encode: the audio goes through AAC and back, timing kept.

    The noise floor of the relations: every answer must survive the codec
    loss that every edited clip also suffers.
    """
    audio = fit_length(audio_roundtrip(clip), clip.audio.shape[0])
    return _edited(clip, audio, clip.events, Edit("identity", {"codec": "aac"}))
