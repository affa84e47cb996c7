"""Bounds and tolerances of the relations, with their documented defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RelationOptions:
    """What counts as right.

    ``sync_window``: offsets (audio minus picture, seconds) a person cannot
    detect: ITU-R BT.1359 puts detectability at 45 ms of audio lead and 125 ms
    of lag. Inside it the right answer is "synchronized".
    ``must_detect``: from this absolute offset on, a desync must be reported,
    with its direction. Between the window and this bound nothing is expected,
    and no case is drawn there.
    ``offset_tolerance`` / ``time_tolerance``: how far a stated offset or
    sound / event time may be from the truth.
    ``max_shift``: the largest shift drawn, in seconds.
    ``margin``: a shifted sound stays this far inside the clip, so "the sound
    is still there" stays true.
    """

    sync_window: tuple[float, float] = (-0.045, 0.125)
    must_detect: float = 0.3
    offset_tolerance: float = 0.25
    time_tolerance: float = 0.2
    max_shift: float = 3.0
    margin: float = 0.25

    def __post_init__(self) -> None:
        early, late = self.sync_window
        if not early <= 0 <= late:
            raise ValueError(f"sync_window must contain 0, got {self.sync_window}")
        if self.must_detect < max(-early, late):
            raise ValueError("must_detect must lie outside the sync window")


DEFAULT_OPTIONS = RelationOptions()
