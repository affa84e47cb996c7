"""Harvesting: every failed case becomes a DPO preference pair (``--thud-harvest DIR``, ``thud harvest run``).

For a case the model failed on the *edited* clip, the pair asks the same
question about the edited clip: ``chosen`` is the answer the relation implies,
in the format the question asked for, with a short reason read from the
annotations ("No. The audio track is silent."); ``rejected`` is what the model
said. When the model was already wrong on the *original* (source-failed, or a
wrong or unreadable original answer in any failed case) a pair about the
original is written too, category ``original``: the truth against the model's
source answer. Invariant probes (the visual question under an audio edit,
everything under identity) prefer the truth of the edited clip, which is the
original's: the edit cannot move it.

A swap pair carries the donor's sound, so a pair whose donor falls in the
other split than its source clip is left out: an eval clip's audio never
reaches train.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from relations import DEFAULT_OPTIONS, NO_TRUTH, RelationContext, RelationOptions, truth
from relations.truth import agrees
from thud_mt import grounding
from thud_mt.clip import Clip
from thud_mt.errors import ThudError
from thud_mt.pairs import DEFAULT_EVAL_FRACTION, PairDraft, PairWriter, split_of
from thud_mt.probes import Question, value_text
from thud_mt.runner import CaseEvidence

# Verdicts whose cases hold a wrong (or unreadable) answer worth a pair; pass and error do not.
HARVESTED = ("fail", "invalid", "source-failed")
ORIGINAL = "original"  # the category of pairs about an unedited clip


class Harvester:
    """A ``CaseRunner`` observer that writes each failed case's pairs to ``folder`` (see ``PairWriter``)."""

    def __init__(
        self,
        folder: str | Path,
        *,
        options: RelationOptions = DEFAULT_OPTIONS,
        eval_fraction: float = DEFAULT_EVAL_FRACTION,
    ) -> None:
        self.writer = PairWriter(folder, eval_fraction=eval_fraction)
        self.options = options
        self.counts: Counter[str] = Counter()  # written, already-there, and why cases gave no pair

    def __call__(self, evidence: CaseEvidence) -> None:
        for draft in intervention_drafts(evidence, self.options, self.counts, self.writer.eval_fraction):
            self.counts["written" if self.writer.add(draft) is not None else "already there"] += 1

    def close(self) -> None:
        self.writer.close()


def intervention_drafts(
    evidence: CaseEvidence,
    options: RelationOptions = DEFAULT_OPTIONS,
    skipped: Counter[str] | None = None,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
) -> list[PairDraft]:
    """The pairs one case yields: about the edited clip, the original, both, or none."""
    skipped = skipped if skipped is not None else Counter()
    result = evidence.result
    if result.verdict not in HARVESTED:
        return []
    drafts: list[PairDraft] = []
    if result.verdict != "source-failed":
        edited = _edited_draft(evidence, options, skipped, eval_fraction)
        if edited is not None:
            drafts.append(edited)
    original = _original_draft(evidence, options, skipped)
    if original is not None:
        drafts.append(original)
    return drafts


def _edited_draft(
    evidence: CaseEvidence, options: RelationOptions, skipped: Counter[str], eval_fraction: float
) -> PairDraft | None:
    result, q = evidence.result, evidence.question
    expected = evidence.relation.expected(evidence.source, evidence.followup, q.probe, _context(options))
    valid = result.followup_correct is not None
    if result.followup_answer is None:
        return _skip(skipped, "no answer on the edited clip")
    if expected is NO_TRUTH:
        return _skip(skipped, "nothing expected on the edited clip")
    if valid and agrees(q.probe, result.followup_value, expected, options):
        return _skip(skipped, "right on the edited clip")  # an invariance broken by a wrong original
    clips = [result.clip] + ([str(result.params["donor"])] if "donor" in result.params else [])
    if len({split_of(c, eval_fraction) for c in clips}) > 1:
        return _skip(skipped, "donor in the other split")
    rejected = _rejected(q, evidence.followup_answer.text, result.followup_value, valid)
    because = grounding.reason(q.probe, expected, evidence.followup, picture=evidence.source.events)
    return _draft(evidence, "edited", evidence.followup, expected, grounding.answer(q, expected, because), rejected)


def _original_draft(evidence: CaseEvidence, options: RelationOptions, skipped: Counter[str]) -> PairDraft | None:
    result, q = evidence.result, evidence.question
    right = truth(evidence.source, q.probe, options)
    if result.source_answer is None or right is NO_TRUTH or result.source_correct is True:
        return None
    valid = result.source_correct is not None
    rejected = _rejected(q, evidence.source_answer.text, result.source_value, valid)
    because = grounding.reason(q.probe, right, evidence.source, picture=evidence.source.events)
    return _draft(evidence, ORIGINAL, evidence.source, right, grounding.answer(q, right, because), rejected)


def _draft(evidence: CaseEvidence, about: str, clip: Clip, value: object, chosen: str, rejected: str) -> PairDraft:
    result = evidence.result
    doc = result.to_json()
    meta: dict[str, Any] = {
        key: doc[key]
        for key in ("relation", "params", "probe", "clip", "paraphrase", "model", "fingerprint", "verdict", "case")
    }
    meta.update(
        reason=result.reason,
        edit=result.edit if about != ORIGINAL else "none",
        about=about,
        chosen_value=value,
        rejected_value=doc["followup_value"] if about != ORIGINAL else doc["source_value"],
    )
    return PairDraft(
        kind="intervention",
        category=result.relation if about != ORIGINAL else ORIGINAL,
        question=result.question,
        chosen=chosen,
        rejected=rejected,
        clip=clip,
        source_clip=result.clip,
        meta=meta,
    )


def _rejected(q: Question, text: str, value: object, valid: bool) -> str:
    """The model's own words; a log-prob scorer's reply has none, so its choice is written out."""
    if text.strip() or not valid:
        return text
    return value_text(q, value)  # type: ignore[arg-type]


def _context(options: RelationOptions) -> RelationContext:
    def no_clip(clip_id: str) -> Clip:
        raise ThudError(f"harvest: the expected answer needs clip {clip_id}, which the case did not carry")

    return RelationContext(options=options, clip=no_clip, donors=lambda clip: [])


def _skip(skipped: Counter[str], why: str) -> None:
    skipped[why] += 1
    return None
