"""Swap: replace the audio with a donor clip's; match -> no, source -> the donor's sound."""

from __future__ import annotations

from hypothesis import strategies as st

from relations.base import MetamorphicRelation, Params, RelationContext
from thud_mt.clip import Clip
from thud_mt.interventions import swap
from thud_mt.probes import ProbeKind


class Swap(MetamorphicRelation):
    name = "swap"
    truth_probes: tuple[ProbeKind, ...] = ("match", "source", "presence")

    def applies(self, clip: Clip, probe: ProbeKind, ctx: RelationContext) -> bool:
        return super().applies(clip, probe, ctx) and bool(ctx.donors(clip))

    def parameters(self, clip: Clip, probe: ProbeKind, ctx: RelationContext) -> st.SearchStrategy[Params]:
        return st.builds(lambda donor: {"donor": donor}, st.sampled_from(ctx.donors(clip)))

    def transform(self, clip: Clip, params: Params, ctx: RelationContext) -> Clip:
        return swap(clip, ctx.clip(str(params["donor"])))

    def describe(self, params: Params) -> str:
        return f"audio swapped for {params['donor']}'s"
