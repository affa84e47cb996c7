"""Sound banks: recordings of each sound class, real or synthesized.

The synthetic renderer lays a recording from a bank onto a rendered scene at
the visual event. The real-media builder (``thud_mt.corpus.debian``) fills a
bank from recorded Debian sound effects; without it, ``synthesized_bank``
makes one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Recording:
    """One sound of a class; ``onset`` is where the sound starts, in seconds into ``audio``."""

    sound: str
    audio: np.ndarray  # (N, C) float32
    sample_rate: int
    onset: float
    licence: str
    attribution: str
    source: str  # file (package/path) or "synthesized:<sound>:<seed>"


@dataclass(frozen=True)
class SoundBank:
    recordings: Mapping[str, tuple[Recording, ...]] = field(default_factory=dict)

    @property
    def sounds(self) -> tuple[str, ...]:
        return tuple(sorted(self.recordings))

    def pick(self, sound: str, rng: np.random.Generator) -> Recording:
        """A recording of ``sound`` chosen by ``rng`` (deterministic for a seeded generator)."""
        options = self.recordings.get(sound, ())
        if not options:
            raise KeyError(f"sound bank has no recording of {sound!r} (has {', '.join(self.sounds) or 'none'})")
        return options[int(rng.integers(len(options)))]
