"""Shift: delay (or advance) the audio by d seconds; sync, offset and sound time must follow."""

from __future__ import annotations

from hypothesis import strategies as st

from relations.base import MetamorphicRelation, Params, RelationContext, case_salt, rotated
from relations.truth import av_offset
from thud_mt.clip import Clip
from thud_mt.errors import InterventionError
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

    def offset_ranges(self, clip: Clip, probe: ProbeKind, ctx: RelationContext) -> list[tuple[float, float]]:
        """The intervals shifts are drawn from, in the order a case tries them (rotated per case).

        Every drawn shift must be noticed: delays and advances of at least
        ``must_detect`` (smaller ones move the heard time by less than the
        tolerances and would test nothing); for sync also shifts that keep the
        clip inside the sync window, never the gray zone between.
        """
        low, high = self.offset_range(clip, ctx)
        bound = ctx.options.must_detect
        if probe == "sync":  # sync classes are about the resulting offset, wherever the original's lies
            base = av_offset(clip) or 0.0
            early, late = ctx.options.sync_window
            wanted = [(bound - base, high), (low, -bound - base), (early - base, late - base)]
        else:
            wanted = [(bound, high), (low, -bound)]  # delayed, advanced
        ranges = [(max(low, a), min(high, b)) for a, b in wanted]
        return rotated([(a, b) for a, b in ranges if b > a], case_salt(clip.id, probe))

    def parameters(self, clip: Clip, probe: ProbeKind, ctx: RelationContext) -> st.SearchStrategy[Params]:
        ranges = self.offset_ranges(clip, probe, ctx)
        if not ranges:
            low, high = self.offset_range(clip, ctx)
            raise InterventionError(
                f"clip {clip.id}: no shift of {ctx.options.must_detect:g} s or more keeps its sound inside the "
                f"clip (shifts from {low:.3f} to {high:.3f} s fit)"
            )
        # Hypothesis's simplest draw is the first interval's bound: the smallest shift that must be noticed
        return st.builds(lambda d: {"offset_s": d}, st.one_of(*(st.floats(a, b, allow_nan=False) for a, b in ranges)))

    def transform(self, clip: Clip, params: Params, ctx: RelationContext) -> Clip:
        return shift(clip, float(params["offset_s"]))  # type: ignore[arg-type]

    def describe(self, params: Params) -> str:
        d = float(params["offset_s"])  # type: ignore[arg-type]
        if d >= 0:
            return f"audio delayed by {d:.3f} s"
        return f"audio advanced by {-d:.3f} s"
