"""Ground truth for each probe, read from a clip's annotated events.

The interventions move the events with the audio, so the truth of an edited
clip is read the same way as the truth of an original: one rule per probe.
"""

from __future__ import annotations

import math

from relations.options import RelationOptions
from thud_mt.clip import Clip, Event
from thud_mt.probes import NO_SOUND, ProbeKind


class _NoTruth:
    """Nothing is right or wrong here (a gray-zone offset, a probe that does not apply)."""

    def __repr__(self) -> str:
        return "NO_TRUTH"


NO_TRUTH = _NoTruth()


def _heard(clip: Clip) -> list[Event]:
    return sorted((e for e in clip.events if e.audio_time is not None), key=lambda e: e.audio_time or 0.0)


def _seen(clip: Clip) -> list[Event]:
    return sorted((e for e in clip.events if e.visual_time is not None), key=lambda e: e.visual_time or 0.0)


def _paired(clip: Clip) -> Event | None:
    """The first event both seen and heard: what sync and offset are about."""
    both = [e for e in _seen(clip) if e.audio_time is not None]
    return both[0] if both else None


def av_offset(clip: Clip) -> float | None:
    """Audio minus picture time of the first seen-and-heard event (positive: audio late)."""
    event = _paired(clip)
    if event is None:
        return None
    assert event.audio_time is not None and event.visual_time is not None
    return event.audio_time - event.visual_time


def sync_class(offset: float, options: RelationOptions) -> str | _NoTruth:
    early, late = options.sync_window
    eps = 1e-9  # an offset computed from event times a shift of exactly the bound moved: float error
    if early - eps <= offset <= late + eps:
        return "synchronized"
    if offset >= options.must_detect - eps:
        return "audio_delayed"
    if offset <= -options.must_detect + eps:
        return "audio_early"
    return NO_TRUTH


def truth(clip: Clip, probe: ProbeKind, options: RelationOptions) -> object:
    """The right answer to ``probe`` about ``clip``, or ``NO_TRUTH``."""
    heard, seen = _heard(clip), _seen(clip)
    if probe == "presence":
        return bool(heard)
    if probe == "sound_time":
        return heard[0].audio_time if heard else None
    if probe == "source":
        return (heard[0].sound or NO_SOUND) if heard else NO_SOUND
    if probe == "visual":
        return seen[0].visual_time if seen else NO_TRUTH
    if probe == "match":
        if _paired(clip) is not None:
            return True
        return False if heard and seen else NO_TRUTH
    offset = av_offset(clip)
    if offset is None:
        return NO_TRUTH
    if probe == "offset":
        return offset
    if probe == "sync":
        return sync_class(offset, options)
    raise ValueError(f"unknown probe {probe!r}")


def agrees(probe: ProbeKind, value: object, reference: object, options: RelationOptions) -> bool:
    """Whether an answer ``value`` agrees with ``reference`` (a truth or another answer)."""
    if reference is NO_TRUTH:
        return True
    if probe in ("offset", "sound_time", "visual"):
        if value is None or reference is None:
            return value is None and reference is None
        tolerance = options.offset_tolerance if probe == "offset" else options.time_tolerance
        return math.isfinite(float(value)) and abs(float(value) - float(reference)) <= tolerance  # type: ignore[arg-type]
    return value == reference
