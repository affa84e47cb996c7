"""The event types the corpora annotate and the sound class each one makes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventKind:
    label: str  # the visible action, as in Event.label
    sound: str  # the sound class it makes, as in Event.sound
    description: str


EVENT_KINDS: tuple[EventKind, ...] = (
    EventKind("object_falls", "thud", "a box falls and hits the floor"),
    EventKind("hands_clap", "clap", "two hands clap together"),
    EventKind("door_closes", "door", "a door swings shut"),
    EventKind("bell_struck", "bell", "a hammer strikes a bell"),
    EventKind("glass_breaks", "glass", "a glass falls and shatters on the floor"),
    EventKind("dog_barks", "bark", "a dog opens its mouth and barks"),
)

SOUND_CLASSES: tuple[str, ...] = tuple(k.sound for k in EVENT_KINDS)
KIND_BY_LABEL = {k.label: k for k in EVENT_KINDS}
KIND_BY_SOUND = {k.sound: k for k in EVENT_KINDS}
