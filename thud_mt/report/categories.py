"""The failure taxonomy: what a model did wrong in a case that did not pass, as one named category.

The taxonomy is data: ``CATEGORIES`` names and describes each category (the
table in ``docs/report.md`` is checked against it), ``RULES`` says which cases
fall in it. The first rule that matches a case decides; a failed case that no
rule knows (a relation added later) is ``other wrong answer``, never dropped.
Every category is read from the record alone (relation, probe, expected value
and the two parsed answers), so a results file from any run can be categorised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from thud_mt.probes import NO_SOUND
from thud_mt.results import SYNC_DESYNC, CaseResult


@dataclass(frozen=True)
class Category:
    """One kind of failure; ``description`` says what the model did, in the docs and in summary.json."""

    name: str
    description: str


CATEGORIES: tuple[Category, ...] = (
    Category(
        "audio hallucination",
        "mute: says there is a sound, names one, or gives its time on a clip with a silent audio track",
    ),
    Category(
        "false sync",
        "shift: says synchronized although the audio was moved beyond the must-detect bound (a missed desync)",
    ),
    Category("wrong direction", "shift: reports a desync, but audio early where it is delayed or the reverse"),
    Category(
        "false sync alarm",
        "sync: says out of sync where synchronized is right (a synchronized original, or a shift inside the window)",
    ),
    Category("offset not moved", "shift: the stated offset stayed nearer the original's than the shifted one"),
    Category("offset off", "shift: the stated offset moved, but lies beyond the offset tolerance"),
    Category("time not moved", "shift: the stated sound time stayed nearer where the picture has it (the original)"),
    Category("time off", "shift: the stated sound time moved, but lies beyond the time tolerance"),
    Category("followed the picture", "swap: says the sound fits the picture, or names the original's sound"),
    Category("other wrong sound", "swap: names a sound that is neither the original's nor the donor's"),
    Category("sound missed", "shift / swap: says silent (no sound, no time) where a sound is heard"),
    Category("visual answer changed", "an audio edit changed the answer about the picture (over-correction)"),
    Category("unstable answer", "identity: a re-encode that changes nothing audible changed the answer"),
    Category("wrong on the original", "source-failed: already wrong on the unedited clip, so the edit proves nothing"),
    Category("unreadable answer", "invalid: the parser could not read the answer on the original or the edited clip"),
    Category("model error", "error: the model raised, timed out, or the clip could not be read"),
    Category("other wrong answer", "a failed case that none of the rules above describes"),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
FALLBACK = "other wrong answer"


def _always(result: CaseResult) -> bool:
    return True


@dataclass(frozen=True)
class Rule:
    """Cases with one of ``verdicts`` (and ``relations`` / ``probes``, None = any) for which ``when`` holds."""

    category: str
    verdicts: frozenset[str]
    relations: frozenset[str] | None = None
    probes: frozenset[str] | None = None
    when: Callable[[CaseResult], bool] = _always

    def matches(self, result: CaseResult) -> bool:
        return (
            result.verdict in self.verdicts
            and (self.relations is None or result.relation in self.relations)
            and (self.probes is None or result.probe in self.probes)
            and self.when(result)
        )


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _claims_sound(r: CaseResult) -> bool:
    """The follow-up answer says a sound is there: yes, a sound's name, or a time."""
    v = r.followup_value
    if r.probe == "presence":
        return v is True
    if r.probe == "source":
        return isinstance(v, str) and v != NO_SOUND
    return _number(v)


def _claims_silence(r: CaseResult) -> bool:
    v = r.followup_value
    return v is False if r.probe == "presence" else v is None or v == NO_SOUND


def _missed_desync(r: CaseResult) -> bool:
    return r.expected in SYNC_DESYNC and r.followup_value == "synchronized"


def _swapped_direction(r: CaseResult) -> bool:
    return r.expected in SYNC_DESYNC and r.followup_value in SYNC_DESYNC and r.followup_value != r.expected


def _alarm(r: CaseResult) -> bool:
    return r.expected == "synchronized" and r.followup_value in SYNC_DESYNC


def _alarm_on_original(r: CaseResult) -> bool:
    return r.source_truth == "synchronized" and r.source_value in SYNC_DESYNC


def _not_moved(r: CaseResult) -> bool:
    """A number nearer the original's truth than the edited clip's: the answer did not follow the audio."""
    v, before, after = r.followup_value, r.source_truth, r.expected
    if not (_number(v) and _number(before) and _number(after)):
        return False
    return abs(float(v) - float(before)) < abs(float(v) - float(after))  # type: ignore[arg-type]


def _moved_off(r: CaseResult) -> bool:
    return _number(r.followup_value) and not _not_moved(r)


def _original_sound(r: CaseResult) -> bool:
    return r.followup_value is not None and r.followup_value == r.source_truth


def _set(*names: str) -> frozenset[str]:
    return frozenset(names)


FAIL = _set("fail")
AUDIO_EDITS = _set("shift", "mute", "swap")

RULES: tuple[Rule, ...] = (
    Rule("model error", _set("error")),
    Rule("unreadable answer", _set("invalid")),
    Rule("false sync alarm", _set("source-failed"), probes=_set("sync"), when=_alarm_on_original),
    Rule("wrong on the original", _set("source-failed")),
    Rule("unstable answer", FAIL, relations=_set("identity")),
    Rule("visual answer changed", FAIL, relations=AUDIO_EDITS, probes=_set("visual")),
    Rule("audio hallucination", FAIL, _set("mute"), _set("presence", "source", "sound_time"), _claims_sound),
    Rule("false sync", FAIL, probes=_set("sync"), when=_missed_desync),
    Rule("wrong direction", FAIL, probes=_set("sync"), when=_swapped_direction),
    Rule("false sync alarm", FAIL, probes=_set("sync"), when=_alarm),
    Rule("offset not moved", FAIL, _set("shift"), _set("offset"), _not_moved),
    Rule("offset off", FAIL, _set("shift"), _set("offset"), _moved_off),
    Rule("time not moved", FAIL, _set("shift"), _set("sound_time"), _not_moved),
    Rule("time off", FAIL, _set("shift"), _set("sound_time"), _moved_off),
    Rule("followed the picture", FAIL, _set("swap"), _set("match"), lambda r: r.followup_value is True),
    Rule("followed the picture", FAIL, _set("swap"), _set("source"), _original_sound),
    Rule("sound missed", FAIL, _set("shift", "swap"), _set("presence", "source", "sound_time"), _claims_silence),
    Rule("other wrong sound", FAIL, _set("swap"), _set("source"), lambda r: isinstance(r.followup_value, str)),
)


def categorize(result: CaseResult, rules: Iterable[Rule] = RULES) -> str | None:
    """The failure category of a case; ``None`` for a pass."""
    if result.verdict == "pass":
        return None
    for rule in rules:
        if rule.matches(result):
            return rule.category
    return FALLBACK


def count_categories(results: Iterable[CaseResult]) -> Mapping[str, int]:
    """Cases per category, every category listed (zeros included) in the taxonomy's order."""
    counts = dict.fromkeys(CATEGORY_NAMES, 0)
    for r in results:
        name = categorize(r)
        if name is not None:
            counts[name] += 1
    return MappingProxyType(counts)


def _check_rules() -> None:
    unknown = {r.category for r in RULES} - set(CATEGORY_NAMES)
    if unknown:  # a typo in a rule would otherwise count cases under a name no table shows
        raise ValueError(f"rules name unknown categories: {', '.join(sorted(unknown))}")


_check_rules()
