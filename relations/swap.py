"""Swap: replace the audio with a donor clip's; match -> no, source -> the donor's sound."""

from __future__ import annotations

from hypothesis import strategies as st

from relations.base import MetamorphicRelation, Params, RelationContext, case_salt, rotated
from thud_mt.clip import Clip
from thud_mt.errors import DonorError
from thud_mt.interventions import swap
from thud_mt.probes import ProbeKind


class Swap(MetamorphicRelation):
    name = "swap"
    truth_probes: tuple[ProbeKind, ...] = ("match", "source", "presence")

    def parameters(self, clip: Clip, probe: ProbeKind, ctx: RelationContext) -> st.SearchStrategy[Params]:
        donors = ctx.donors(clip)
        if not donors:
            raise DonorError(
                f"clip {clip.id}: no clip in the corpus can be its swap donor (different sound, not silent)"
            )
        # rotated: the first donor drawn differs from clip to clip (relations.base.case_salt)
        return st.builds(lambda donor: {"donor": donor}, st.sampled_from(rotated(donors, case_salt(clip.id, probe))))

    def transform(self, clip: Clip, params: Params, ctx: RelationContext) -> Clip:
        return swap(clip, ctx.clip(str(params["donor"])))

    def describe(self, params: Params) -> str:
        return f"audio swapped for {params['donor']}'s"
