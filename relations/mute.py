"""Mute: silence the audio; presence -> no, source -> no sound, sound time -> none."""

from __future__ import annotations

from hypothesis import strategies as st

from relations.base import MetamorphicRelation, Params, RelationContext
from thud_mt.clip import Clip
from thud_mt.interventions import mute
from thud_mt.probes import ProbeKind


class Mute(MetamorphicRelation):
    name = "mute"
    truth_probes: tuple[ProbeKind, ...] = ("presence", "source", "sound_time")

    def parameters(self, clip: Clip, probe: ProbeKind, ctx: RelationContext) -> st.SearchStrategy[Params]:
        return st.just({})

    def transform(self, clip: Clip, params: Params, ctx: RelationContext) -> Clip:
        return mute(clip)

    def describe(self, params: Params) -> str:
        return "muted clip"
