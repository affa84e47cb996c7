"""The metamorphic relations: Shift, Mute, Swap and Identity (the noise floor).

The relations load on first use (PEP 562 ``__getattr__``): they pull in
PyAV, SciPy and Hypothesis, which a process that only reads
``RelationOptions`` or the truth (the pytest-xdist controller checking
``--thud-relation-option`` before it starts the workers) never needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Light, and eager on purpose: importing the submodule ``relations.truth`` binds the package attribute
# ``truth`` to the module, which would shadow the function a lazy lookup returns.
from relations.options import DEFAULT_OPTIONS, RelationOptions
from relations.truth import NO_TRUTH, truth

if TYPE_CHECKING:
    from relations.base import Judgement, MetamorphicRelation, RelationContext, Verdict
    from relations.identity import Identity
    from relations.mute import Mute
    from relations.shift import Shift
    from relations.swap import Swap

    RELATIONS: dict[str, MetamorphicRelation]

# Where each exported name lives.
_HOMES = {
    "Judgement": "relations.base",
    "MetamorphicRelation": "relations.base",
    "RelationContext": "relations.base",
    "Verdict": "relations.base",
    "Identity": "relations.identity",
    "Mute": "relations.mute",
    "Shift": "relations.shift",
    "Swap": "relations.swap",
}

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


def __getattr__(name: str) -> Any:
    if name == "RELATIONS":
        from relations.identity import Identity
        from relations.mute import Mute
        from relations.shift import Shift
        from relations.swap import Swap

        value: Any = {r.name: r for r in (Shift(), Mute(), Swap(), Identity())}
    elif name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
    else:
        raise AttributeError(f"module 'relations' has no attribute {name!r}")
    globals()[name] = value  # once: RELATIONS stays one dict of one instance per relation
    return value
