"""The metamorphic relations: Shift, Mute, Swap and Identity (the noise floor)."""

from relations.base import Judgement, MetamorphicRelation, RelationContext, Verdict
from relations.identity import Identity
from relations.mute import Mute
from relations.options import DEFAULT_OPTIONS, RelationOptions
from relations.shift import Shift
from relations.swap import Swap
from relations.truth import NO_TRUTH, truth

RELATIONS: dict[str, MetamorphicRelation] = {r.name: r for r in (Shift(), Mute(), Swap(), Identity())}

__all__ = [
    "DEFAULT_OPTIONS",
    "NO_TRUTH",
    "RELATIONS",
    "Identity",
    "Judgement",
    "MetamorphicRelation",
    "Mute",
    "RelationContext",
    "RelationOptions",
    "Shift",
    "Swap",
    "Verdict",
    "truth",
]
