"""The Model protocol: what every model adapter provides, and what it is asked and answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from thud_mt.clip import Clip
from thud_mt.probes import Question


@dataclass(frozen=True)
class Capabilities:
    """What a model can take in; the plugin skips what a model cannot be asked."""

    audio: bool = True
    video: bool = True
    audio_in_video: bool = True
    max_seconds: float | None = None
    samples: bool = False  # answers vary between calls (temperature > 0)
    logprobs: bool = False  # can score each allowed answer


@dataclass(frozen=True, eq=False)
class Query:
    """One question about one clip; ``sample`` separates repeated draws of a sampling model."""

    clip: Clip
    question: Question
    sample: int = 0
    case: str = ""  # the test case asking, for error messages


@dataclass(frozen=True)
class Answer:
    """A model's reply: raw text, optional per-choice log-probabilities, or an error."""

    text: str
    scores: Mapping[str, float] | None = None
    error: str | None = None
    cached: bool = False
    meta: Mapping[str, object] = field(default_factory=dict)


@runtime_checkable
class Model(Protocol):
    name: str
    capabilities: Capabilities

    @property
    def fingerprint(self) -> str:
        """Identifies weights + settings: part of every cache key."""
        ...

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        """Answer a batch, one Answer per Query, in order."""
        ...
