"""The metamorphic relation: an edit, the probes it speaks about, and how answers must change."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from hypothesis import strategies as st

from relations.options import RelationOptions
from relations.truth import NO_TRUTH, agrees, truth
from thud_mt.clip import Clip
from thud_mt.probes import Parsed, ProbeKind

Verdict = Literal["pass", "fail", "source-failed", "invalid", "error"]
Mode = Literal["truth", "invariant"]
Params = Mapping[str, object]
T = TypeVar("T")


@dataclass(frozen=True)
class RelationContext:
    """What a relation may look up besides the clip: other clips (swap donors) and the options."""

    options: RelationOptions
    clip: Callable[[str], Clip]
    donors: Callable[[Clip], list[str]]


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str
    source_correct: bool | None
    followup_correct: bool | None


class MetamorphicRelation(ABC):
    """Subclasses name the edit, the probes it covers, how to draw its parameters and how to apply it.

    A probe in ``truth_probes`` is checked against the ground truth of the edited
    clip (which the edit moved); one in ``invariant_probes`` must be answered
    the same on the original and the edited clip.
    """

    name: str
    truth_probes: tuple[ProbeKind, ...] = ()
    invariant_probes: tuple[ProbeKind, ...] = ("visual",)

    @property
    def probes(self) -> tuple[ProbeKind, ...]:
        return self.truth_probes + self.invariant_probes

    def mode(self, probe: ProbeKind) -> Mode:
        return "invariant" if probe in self.invariant_probes else "truth"

    def applies(self, clip: Clip, probe: ProbeKind, ctx: RelationContext) -> bool:
        """Whether the case can be asked at all: the original has a truth for the probe.

        Decided from the annotations alone (no media decoded), so suites can be
        collected before any clip is read.
        """
        return probe in self.probes and truth(clip, probe, ctx.options) is not NO_TRUTH

    @abstractmethod
    def parameters(self, clip: Clip, probe: ProbeKind, ctx: RelationContext) -> st.SearchStrategy[Params]:
        """A Hypothesis strategy for the edit's parameters on this clip and probe."""

    @abstractmethod
    def transform(self, clip: Clip, params: Params, ctx: RelationContext) -> Clip:
        """The edited clip (the follow-up)."""

    @abstractmethod
    def describe(self, params: Params) -> str:
        """The edit in words, for failure messages: "audio delayed by 0.500 s"."""

    def expected(self, source: Clip, followup: Clip, probe: ProbeKind, ctx: RelationContext) -> object:
        """The right follow-up answer for a truth probe; ``NO_TRUTH`` where nothing is expected."""
        return truth(followup, probe, ctx.options)

    def judge(
        self,
        probe: ProbeKind,
        source: Parsed,
        followup: Parsed,
        source_truth: object,
        expected: object,
        ctx: RelationContext,
    ) -> Judgement:
        """The verdict of one case from the two parsed answers."""
        opts = ctx.options
        src_ok = agrees(probe, source.value, source_truth, opts) if source.valid else None
        if self.mode(probe) == "invariant":
            fol_ok = agrees(probe, followup.value, expected, opts) if followup.valid else None
            if not source.valid or not followup.valid:
                return Judgement("invalid", _invalid_reason(source, followup), src_ok, fol_ok)
            same = agrees(probe, followup.value, source.value, opts)
            reason = "answer unchanged" if same else f"answer changed from {source.value!r} to {followup.value!r}"
            return Judgement("pass" if same else "fail", reason, src_ok, fol_ok)
        fol_ok = agrees(probe, followup.value, expected, opts) if followup.valid else None
        if not source.valid or not followup.valid:
            return Judgement("invalid", _invalid_reason(source, followup), src_ok, fol_ok)
        if not src_ok:
            reason = f"wrong on the original already: {source.value!r} where {source_truth!r} is right"
            return Judgement("source-failed", reason, src_ok, fol_ok)
        if fol_ok:
            return Judgement("pass", f"answered {followup.value!r} as expected", src_ok, fol_ok)
        return Judgement("fail", f"answered {followup.value!r} where {expected!r} is right", src_ok, fol_ok)


def _invalid_reason(source: Parsed, followup: Parsed) -> str:
    parts = []
    if not source.valid:
        parts.append(f"original: {source.reason}")
    if not followup.valid:
        parts.append(f"edited: {followup.reason}")
    return "unparseable answer (" + "; ".join(parts) + ")"


def case_salt(clip_id: str, probe: ProbeKind) -> int:
    """A stable number per (clip, probe): what sets each case's draws apart.

    Derandomized Hypothesis seeds every parametrization of a test alike, so
    every case makes the same choices: with two draws per case, every clip was
    asked the same paraphrase and shifted the same way (never delayed).
    Strategies rotate their options by this salt, so the first, simplest draw
    differs from clip to clip and the corpus covers each option.
    """
    return int.from_bytes(hashlib.sha256(f"{clip_id}\0{probe}".encode()).digest()[:8], "big")


def rotated(items: Sequence[T], salt: int) -> list[T]:
    """``items`` starting at ``salt`` (modulo their number), wrapping round: a per-case order."""
    k = salt % len(items) if items else 0
    return [*items[k:], *items[:k]]


def paraphrases(probe: ProbeKind, salt: int = 0) -> st.SearchStrategy[int]:
    """A paraphrase index; ``salt`` (``case_salt``) picks which one a case is asked first."""
    from thud_mt.probes import N_PARAPHRASES

    n = N_PARAPHRASES[probe]
    return st.integers(min_value=0, max_value=n - 1).map(lambda i: (i + salt) % n)
