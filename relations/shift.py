"""Shift: delay (or advance) the audio by d seconds; sync, offset and sound time must follow."""

from __future__ import annotations

from hypothesis import strategies as st

from relations.base import MetamorphicRelation, Params, RelationContext
from relations.truth import av_offset
from thud_mt.clip import Clip
from thud_mt.interventions import shift
from thud_mt.probes import ProbeKind


class Shift(MetamorphicRelation):
    name = "shift"
    truth_probes: tuple[ProbeKind, ...] = ("sync", "offset", "sound_time", "presence")

    def offset_range(self, clip: Clip, ctx: RelationContext) -> tuple[float, float]:
        """Shifts that keep the first heard sound inside the clip (by ``margin``)."""
        heard = [e.audio_time for e in clip.events if e.audio_time is not None]
        limit = ctx.options.max_shift
        if not heard:
            return (-limit, limit)
        t = min(heard)
        low = max(-limit, ctx.options.margin - t)
        high = min(limit, clip.duration - ctx.options.margin - t)
        return (low, high)

    def parameters(self, clip: Clip, probe: ProbeKind, ctx: RelationContext) -> st.SearchStrategy[Params]:
        low, high = self.offset_range(clip, ctx)
        if probe != "sync":
            return st.builds(lambda d: {"offset_s": d}, st.floats(low, high, allow_nan=False))
        # Sync answers are only defined inside the detectability window and past
        # the must-detect bound: draw from there, never from the gray zone between.
        base = av_offset(clip) or 0.0
        early, late = ctx.options.sync_window
        bound = ctx.options.must_detect
        ranges = [(low, -bound - base), (early - base, late - base), (bound - base, high)]
        parts = [st.floats(max(low, a), min(high, b), allow_nan=False) for a, b in ranges if min(high, b) > max(low, a)]
        return st.builds(lambda d: {"offset_s": d}, st.one_of(*parts))

    def transform(self, clip: Clip, params: Params, ctx: RelationContext) -> Clip:
        return shift(clip, float(params["offset_s"]))  # type: ignore[arg-type]

    def describe(self, params: Params) -> str:
        d = float(params["offset_s"])  # type: ignore[arg-type]
        if d >= 0:
            return f"audio delayed by {d:.3f} s"
        return f"audio advanced by {-d:.3f} s"
