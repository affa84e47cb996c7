"""What models answered, per question kind and condition: the counts behind the stacked prediction bars.

A condition is the original clip or one audio edit (muted, swapped, shifted;
sync answers on shifted clips split by the expected direction, so "late",
"early" and "inside the window" are not averaged together). The original's
answer is shared by every case asked about the same clip and paraphrase, so
it is counted once per (model, clip, paraphrase), as ``summarize`` does for
sync sources. Identity is the noise floor and has its own leaderboard column.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from thud_mt.probes import NO_SOUND
from thud_mt.results import RELATION_ORDER, CaseResult

UNREADABLE = "unreadable"
NO_ANSWER = "no answer"
ORIGINAL = "original"


@dataclass(frozen=True)
class Panel:
    """One question kind: its title and its answers in stacking order."""

    probe: str
    title: str
    answers: tuple[str, ...]


PANELS: tuple[Panel, ...] = (
    Panel("presence", "Is there any sound?", ("yes", "no", UNREADABLE, NO_ANSWER)),
    Panel(
        "sync",
        "Are audio and picture synchronized?",
        ("synchronized", "audio delayed", "audio early", UNREADABLE, NO_ANSWER),
    ),
    Panel("match", "Does the sound fit the picture?", ("yes", "no", UNREADABLE, NO_ANSWER)),
    Panel(
        "source",
        "Which sound is it?",
        ("original's sound", "donor's sound", "another sound", "no sound", UNREADABLE, NO_ANSWER),
    ),
)
PANEL_PROBES = tuple(p.probe for p in PANELS)

EDITED = {"shift": "shifted", "mute": "muted", "swap": "swapped"}
SHIFTED_SYNC = {"synchronized": "shifted, in window", "audio_delayed": "shifted late", "audio_early": "shifted early"}


@dataclass(frozen=True)
class Tally:
    """Answers of one model to one question kind under one condition."""

    model: str
    probe: str
    condition: str
    counts: Mapping[str, int]

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "probe": self.probe, "condition": self.condition, "counts": dict(self.counts)}


def answer_label(probe: str, value: object, answer: str | None, *, original: object, donor: object = None) -> str:
    """The bar segment an answer falls in; ``original`` / ``donor`` are the two clips' sounds (source)."""
    if answer is None:
        return NO_ANSWER
    if value is None:
        return UNREADABLE
    if probe in ("presence", "match"):
        return "yes" if value is True else "no"
    if probe == "sync":
        return str(value).replace("_", " ")
    if value == NO_SOUND:
        return NO_SOUND
    if value == original:
        return "original's sound"
    if donor is not None and value == donor:
        return "donor's sound"
    return "another sound"


def condition_of(result: CaseResult) -> str | None:
    """The follow-up's condition, or None for edits the bars leave out (identity)."""
    if result.relation == "identity":
        return None
    if result.relation == "shift" and result.probe == "sync":
        return SHIFTED_SYNC.get(str(result.expected), "shifted")
    return EDITED.get(result.relation, result.relation)


def tally_predictions(results: Sequence[CaseResult], models: Sequence[str] = ()) -> tuple[Tally, ...]:
    """Counts per (model, probe, condition): in panel order, the original first, then the study's edit order,
    then ``models``' order (a leaderboard's ranking; by name where not given)."""
    counts: dict[tuple[str, str, str], Counter[str]] = {}
    seen_sources: set[tuple[str, str, str, int]] = set()
    for r in results:
        if r.probe not in PANEL_PROBES:
            continue
        source_key = (r.model, r.probe, r.clip, r.paraphrase)
        if source_key not in seen_sources and r.source_answer is not None:
            seen_sources.add(source_key)
            label = answer_label(r.probe, r.source_value, r.source_answer, original=r.source_truth)
            counts.setdefault((r.model, r.probe, ORIGINAL), Counter())[label] += 1
        condition = condition_of(r)
        if condition is None:
            continue
        donor = r.expected if r.relation == "swap" else None
        label = answer_label(r.probe, r.followup_value, r.followup_answer, original=r.source_truth, donor=donor)
        counts.setdefault((r.model, r.probe, condition), Counter())[label] += 1
    conditions = [ORIGINAL, *(EDITED.get(r, r) for r in RELATION_ORDER), *SHIFTED_SYNC.values()]
    model_rank = {m: i for i, m in enumerate(models)}

    def order(key: tuple[str, str, str]) -> tuple[int, int, str, int, str]:
        model, probe, condition = key
        rank = conditions.index(condition) if condition in conditions else len(conditions)
        return (PANEL_PROBES.index(probe), rank, condition, model_rank.get(model, len(model_rank)), model)

    return tuple(
        Tally(model, probe, condition, MappingProxyType(dict(c)))
        for (model, probe, condition), c in sorted(counts.items(), key=lambda kv: order(kv[0]))
    )


def by_panel(tallies: Sequence[Tally]) -> Mapping[str, tuple[Tally, ...]]:
    """The tallies of each panel that has any, in panel order."""
    return MappingProxyType(
        {
            p.probe: tuple(t for t in tallies if t.probe == p.probe)
            for p in PANELS
            if any(t.probe == p.probe for t in tallies)
        }
    )
