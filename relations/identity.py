"""Identity: a re-encode that changes nothing a listener could tell; every answer must stay."""

from __future__ import annotations

from hypothesis import strategies as st

from relations.base import MetamorphicRelation, Params, RelationContext
from thud_mt.clip import Clip
from thud_mt.interventions import identity
from thud_mt.probes import ProbeKind


class Identity(MetamorphicRelation):
    name = "identity"
    truth_probes: tuple[ProbeKind, ...] = ()
    invariant_probes: tuple[ProbeKind, ...] = ("presence", "sync", "offset", "sound_time", "match", "source", "visual")

    def parameters(self, clip: Clip, probe: ProbeKind, ctx: RelationContext) -> st.SearchStrategy[Params]:
        return st.just({})

    def transform(self, clip: Clip, params: Params, ctx: RelationContext) -> Clip:
        return identity(clip)

    def describe(self, params: Params) -> str:
        return "re-encoded clip (nothing changed)"
