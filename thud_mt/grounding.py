"""Short grounded reasons: what a clip's annotations say, in words, for a preference pair's answers.

A chosen answer is the value in the format the question asked for followed by
one reason read from the events ("No. The audio track is silent."). Reasons are
written so that ``thud_mt.probes.parse`` reads the whole answer back as the
same value: a numeric answer's reason repeats no other number, a choice's
reason names no other option unless it negates it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from thud_mt.clip import Clip, Event
from thud_mt.corpus.vocabulary import KIND_BY_LABEL
from thud_mt.probes import NO_SOUND, VISIBLE_MOMENTS, Question, sound_phrase, value_text

# How a sound is named as the subject of "... is heard": "the thud is heard 0.5 seconds after ...".
SOUND_NOUNS: dict[str, str] = {
    "thud": "the thud",
    "clap": "the clap",
    "door": "the slam of the door",
    "bell": "the ring of the bell",
    "glass": "the crash of the glass",
    "bark": "the bark",
}
# Closer than this (seconds), a sound and its visible event are "at the same moment" in a reason's words.
SAME_MOMENT_S = 0.04


# A negated alternative is named briefly: a phrase like "an object hitting the floor" would be
# read as a second answer by the source parser, which looks only a few words back for a "not".
SHORT_PHRASES: dict[str, str] = {"thud": "a thud"}


def short_phrase(sound: str) -> str:
    return SHORT_PHRASES.get(sound, sound_phrase(sound))


def sound_noun(sound: str) -> str:
    return SOUND_NOUNS.get(sound, f"the {sound.replace('_', ' ')} sound")


def picture_sound(event: Event) -> str | None:
    """The sound the picture suggests for ``event``: its visible action's usual sound, else the annotated one."""
    kind = KIND_BY_LABEL.get(event.label)
    return kind.sound if kind is not None else event.sound


def moment(event: Event) -> str:
    """The visible moment of ``event`` as a clause: "the object lands"."""
    sound = picture_sound(event)
    if sound in VISIBLE_MOMENTS:
        return VISIBLE_MOMENTS[sound]
    if event.description:
        return event.description
    return f"the {event.label.replace('_', ' ')} is seen"


def action(event: Event) -> str:
    """What is seen happening: the annotation's description, else the label in words."""
    kind = KIND_BY_LABEL.get(event.label)
    return event.description or (kind.description if kind is not None else event.label.replace("_", " "))


def seconds(value: float) -> str:
    """Seconds as ``value_text`` writes them, so an answer and its reason state the very same number."""
    return value_text(_SECONDS, float(value))


_SECONDS = Question("offset", 0, "")


def heard(clip_events: Sequence[Event]) -> list[Event]:
    return sorted((e for e in clip_events if e.audio_time is not None), key=lambda e: e.audio_time or 0.0)


def seen(clip_events: Sequence[Event]) -> list[Event]:
    return sorted((e for e in clip_events if e.visual_time is not None), key=lambda e: e.visual_time or 0.0)


def paired(clip_events: Sequence[Event]) -> Event | None:
    both = [e for e in seen(clip_events) if e.audio_time is not None]
    return both[0] if both else None


def is_silent(clip: Clip) -> bool:
    """Digital silence (what ``mute`` writes), as opposed to a track with no annotated sound."""
    return not np.any(clip.audio)


def no_sound_reason(clip: Clip) -> str:
    return "The audio track is silent." if is_silent(clip) else "No sound of an event can be heard."


def timing(event: Event, time: float) -> str:
    """Where a sound heard at ``time`` falls against ``event``'s visible moment: ", after the object lands"."""
    if event.visual_time is None:
        return ", with nothing visible making it"
    delta = time - event.visual_time
    if abs(delta) < SAME_MOMENT_S:
        return f", as {moment(event)}"
    return f", {'after' if delta > 0 else 'before'} {moment(event)}"


def offset_reason(event: Event, *, with_number: bool) -> str:
    """Sync and offset reasons: which way and (optionally) how far the sound is from its visible event."""
    assert event.audio_time is not None and event.visual_time is not None
    delta = event.audio_time - event.visual_time
    noun = sound_noun(event.sound or "")
    if abs(delta) < SAME_MOMENT_S:
        return f"{noun.capitalize()} is heard as {moment(event)}."
    how_far = f"{seconds(abs(delta))} " if with_number else ""
    if delta > 0:
        return f"The audio is delayed: {noun} is heard {how_far}after {moment(event)}."
    return f"The audio is early: {noun} is heard {how_far}before {moment(event)}."


def reason(probe: str, value: object, clip: Clip, *, picture: Sequence[Event] = ()) -> str:
    """One sentence of evidence for ``value`` as the answer to ``probe`` about ``clip``.

    ``picture`` are the events as the picture shows them (for a swapped clip:
    the original's, whose sound the picture suggests). The visual probe's
    reason names the picture alone, word for word the same for the original
    and any edit of its audio: a suffix for edited clips ("; only the audio was
    edited") taught a model to tell edited clips from originals, and its time
    for the picture moved with that (visual invariance fell 28 points).
    """
    events = clip.events
    first_heard = heard(events)[0] if heard(events) else None
    shown = seen(picture) or seen(events)
    suggested = next((s for s in (picture_sound(e) for e in shown) if s), None)
    if probe == "presence":
        if value and first_heard is not None:
            return f"{sound_phrase(first_heard.sound or 'sound').capitalize()} is heard."
        return no_sound_reason(clip)
    if probe == "sound_time":
        if value is None or first_heard is None:
            return no_sound_reason(clip)
        where = timing(shown[0], float(value)) if shown else ""  # type: ignore[arg-type]
        return f"That is when {sound_noun(first_heard.sound or '')} is heard{where}."
    if probe == "source":
        if value == NO_SOUND or first_heard is None:
            return no_sound_reason(clip)
        unlike = f", not {short_phrase(suggested)}" if suggested and suggested != value else ""
        return f"The sound is {sound_phrase(str(value))}{unlike}."
    if probe == "match":
        if first_heard is None:
            return no_sound_reason(clip)
        if value is False and suggested and suggested != first_heard.sound:
            return f"The sound is {sound_phrase(first_heard.sound or '')}, not {short_phrase(suggested)}."
        fits = f" fits what is seen: {action(shown[0])}" if shown else " is heard"
        return f"{sound_noun(first_heard.sound or '').capitalize()}{fits}."
    if probe in ("sync", "offset"):
        event = paired(events)
        return offset_reason(event, with_number=probe == "sync") if event is not None else no_sound_reason(clip)
    if probe == "visual":
        if not shown:
            return ""
        return f"That is when {moment(shown[0])}."
    raise ValueError(f"unknown probe {probe!r}")


def answer(question: Question, value: object, because: str) -> str:
    """The value as ``question`` asks for it, then the reason: "No. The audio track is silent."."""
    text = value_text(question, value)  # type: ignore[arg-type]
    if not because:
        return text
    return f"{text}{'' if text.endswith('.') else '.'} {because}"
