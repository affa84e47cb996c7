"""Anchor pairs: each harvested pair about an edited clip, asked again about the original clip.

A harvested pair says "on the muted clip, prefer *No* to *Yes*". Learned
alone it teaches "answer *No*", which is as deaf as the habit it replaces. Its
anchor asks the same question about the same picture with the original sound:
the truth there (*Yes, a thud is heard*) is chosen and the edited clip's right
answer rejected. Only the audio differs between the two, so only hearing
satisfies both: the pair and its anchor are a counterfactual couple.

Anchors are ``kind="intervention"`` pairs of category ``original`` (as the
harvester names pairs about unedited clips) with ``meta["anchor_of"]`` naming
the pair they balance. A pair whose question the original answers the same
way (a shift inside the tolerance) gets no anchor.

Visual guards protect the other side: a model that has learned to listen may
start answering the *visual* question from the sound. A guard asks the visual
question about a muted, shifted or swapped copy of a training clip; the
picture's answer is chosen and the sound's (where the shifted sound is heard,
else another moment) rejected. It is the pair the harvester writes when the
visual invariance fails, written before it can fail (``meta["guard"]``). With
``originals`` the clip as recorded is asked too: the recipe then sees each
picture under every sound with one visual answer, not the edited sounds alone.

Presence guards protect the sound that is still there. Muted clips are the
easiest edit to hear, and a model trained on their pairs learns "edited, so
silent": on shifted and swapped copies it starts to deny the sound (a closed
loop on the CPU profile answered *No* to "is there any sound?" on 14 of 36
shifted training clips). A presence guard asks that question about a shifted
or swapped copy, chooses *Yes* with the sound heard, and rejects the muted
clip's answer.

Blind guards keep the sound out of the visual answer where the picture cannot
be memorised. A visual guard on a training clip is learned by heart: the
model that knows a picture's time has no reason to listen, and none not to on
a picture it has never seen. There its visual answer is a guess, and a guess
that reads the sound moves with every edit. A blind guard asks the visual
question about a picture the recipe sees once (a clip of another corpus),
muted, or with its own or another clip's sound moved to a time drawn
independently of the picture's: no sound in it says when the event is seen.
Its variants are not learned as answers (fitting times to pictures it cannot
see made the guesses less stable, not more) but made to agree: the recipe's
``sound_invariance`` term penalises every difference between the model's
answers to the same question about the same picture under these sounds.
Fresh pictures with their sound in sync (originals, swaps, short shifts)
would teach the opposite: the sound is the best clue to the picture's time
(docs/architecture.md).

Kept guards are blind guards answered by the base model instead: it is asked
the visual question about each muted picture, and its own time is chosen for
every version (category ``kept``), the time where that version's sound is
heard rejected. A guess the base made from the picture alone is a function a
model of its size can learn and carry to pictures it has not seen, unlike the
picture's true time, which it cannot see; learned under every sound, it is
the answer the sound must not move. With ``sound_invariance`` the recipe also
folds each picture's kept pairs into a consistency group, so their versions'
answers must agree as well as be right.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from relations.options import DEFAULT_OPTIONS, RelationOptions
from relations.truth import NO_TRUTH, agrees, truth
from thud_mt import grounding
from thud_mt.clip import Clip
from thud_mt.corpus.donors import eligible_donors
from thud_mt.corpus.manifest import Corpus
from thud_mt.errors import ThudError
from thud_mt.interventions import mute, shift, swap
from thud_mt.media import writer_threads
from thud_mt.pairs import PairDraft, PairWriter, PreferencePair
from thud_mt.probes import N_PARAPHRASES, Question, question

CATEGORY = "original"
BLIND = "blind"  # blind guards' category: groups whose answers must agree, not answers to learn
KEPT = "kept"  # blind guards answered with the base model's own guess: learned like any pair
_DONOR_WINDOW = 6  # blind guards draw a swap's donor from this many preceding clips


@dataclass(frozen=True)
class Anchors:
    written: int
    skipped: int  # pairs with no anchor: about an original already, same answer, or clip not in the corpus


def write_anchors(
    pairs: Iterable[PreferencePair], corpus: Corpus, out: Path, *, options: RelationOptions = DEFAULT_OPTIONS
) -> Anchors:
    """An anchor for every harvested pair about an edited clip of ``corpus`` (see the module docstring)."""
    labels = corpus.sound_labels
    written = skipped = 0
    clips: dict[str, Clip | None] = {}
    with PairWriter(out, workers=writer_threads()) as writer:
        for pair in pairs:
            draft = _anchor(pair, corpus, labels, clips, options)
            if draft is None:
                skipped += 1
                continue
            written += writer.add(draft) is not None
    return Anchors(written, skipped)


def _anchor(
    pair: PreferencePair,
    corpus: Corpus,
    labels: tuple[str, ...],
    clips: dict[str, Clip | None],
    options: RelationOptions,
) -> PairDraft | None:
    meta = pair.meta
    if pair.kind != "intervention" or meta.get("about") != "edited":
        return None
    probe, paraphrase, clip_id = meta.get("probe"), meta.get("paraphrase"), meta.get("clip")
    if probe not in N_PARAPHRASES or not isinstance(paraphrase, int) or clip_id not in corpus.ids:
        return None
    q = question(probe, paraphrase, sound_labels=labels)
    if q.text != pair.question:  # asked under other options than this corpus offers
        return None
    clip_id = str(clip_id)
    if clip_id not in clips:
        try:
            clips[clip_id] = corpus.load_clip(clip_id)
        except ThudError:
            clips[clip_id] = None
    original = clips[clip_id]
    if original is None:
        return None
    right = truth(original, probe, options)
    if right is NO_TRUTH or agrees(probe, meta.get("chosen_value"), right, options):
        return None
    because = grounding.reason(probe, right, original, picture=original.events)
    return PairDraft(
        kind="intervention",
        category=CATEGORY,
        question=pair.question,
        chosen=grounding.answer(q, right, because),
        rejected=pair.chosen,
        clip=original,
        source_clip=pair.source_clip,
        meta={
            "anchor_of": pair.id,
            "relation": meta.get("relation"),
            "probe": probe,
            "paraphrase": paraphrase,
            "clip": clip_id,
            "about": CATEGORY,
            "chosen_value": right,
            "rejected_value": meta.get("chosen_value"),
        },
    )


def write_guards(
    corpus: Corpus,
    out: Path,
    *,
    per_variant: int = 1,
    presence: int = 0,
    copies: int = 1,
    originals: bool = False,
    seed: int = 0,
    options: RelationOptions = DEFAULT_OPTIONS,
) -> Anchors:
    """``per_variant`` visual questions about each edited copy of each clip of ``corpus``, and ``presence``
    presence questions about each shifted and swapped copy that still sounds (module docstring).

    ``copies`` sets of edited copies are drawn per clip: other offsets and donors, and the one muted copy
    again (with other paraphrases and other wrong times). ``originals`` asks the visual questions about each clip
    as recorded too (category ``original``), so the recorded sound is not the one sound the recipe never
    pairs with the visual answer.
    """
    from alignment.clever_hans import variants

    labels = corpus.sound_labels
    rng = np.random.default_rng(seed)
    clips = [corpus.load_clip(entry) for entry in corpus.entries]
    written = skipped = 0
    with PairWriter(out, workers=writer_threads()) as writer:
        for clip in clips:
            drawn = [v for _ in range(copies) for v in variants(clip, clips, rng, options)[1:]]
            for variant in [clip, *drawn] if originals else drawn:
                is_edited = bool(variant.edits)
                relation = variant.edits[-1].op if is_edited else CATEGORY
                seen = truth(variant, "visual", options)
                if seen is NO_TRUTH:
                    skipped += 1
                    continue
                for paraphrase in rng.permutation(N_PARAPHRASES["visual"])[:per_variant]:
                    q = question("visual", int(paraphrase), sound_labels=labels)
                    wrong = _sound_prior(variant, float(seen), rng)  # type: ignore[arg-type]
                    draft = _visual_guard(clip, variant, q, seen, wrong, category=relation, relation=relation)
                    written += writer.add(draft) is not None
                if relation in ("shift", "swap") and truth(variant, "presence", options) is True:
                    for paraphrase in rng.permutation(N_PARAPHRASES["presence"])[:presence]:
                        written += writer.add(_presence_guard(clip, variant, relation, int(paraphrase))) is not None
    return Anchors(written, skipped)


def _visual_guard(
    clip: Clip, variant: Clip, q: Question, seen: object, wrong: float, *, category: str, relation: str
) -> PairDraft:
    """The visual question about ``variant`` (``clip`` or an edit of it): the picture's time ``seen`` chosen,
    ``wrong`` rejected."""
    because = grounding.reason("visual", seen, variant, picture=clip.events)
    return PairDraft(
        kind="intervention",
        category=category,
        question=q.text,
        chosen=grounding.answer(q, seen, because),
        rejected=grounding.answer(q, wrong, ""),
        clip=variant,
        source_clip=clip.id,
        meta={
            "guard": True,
            "probe": "visual",
            "paraphrase": q.paraphrase,
            "clip": clip.id,
            "about": "edited" if variant.edits else CATEGORY,
            "relation": relation,
            "chosen_value": seen,
            "rejected_value": wrong,
        },
    )


def _presence_guard(clip: Clip, edited: Clip, relation: str, paraphrase: int) -> PairDraft:
    """ "Is there any sound?" about an edited copy that still sounds: yes, over the muted clip's answer."""
    q = question("presence", paraphrase)
    return PairDraft(
        kind="intervention",
        category=relation,
        question=q.text,
        chosen=grounding.answer(q, True, grounding.reason("presence", True, edited)),
        rejected=grounding.answer(q, False, grounding.no_sound_reason(mute(clip))),
        clip=edited,
        source_clip=clip.id,
        meta={
            "guard": True,
            "probe": "presence",
            "paraphrase": paraphrase,
            "clip": clip.id,
            "about": "edited",
            "relation": relation,
            "chosen_value": True,
            "rejected_value": False,
        },
    )


# Asks a model one visual question per picture and returns its times (None where it gave none).
Guess = Callable[[Sequence[tuple[Clip, Question]]], Sequence[float | None]]


@dataclass(frozen=True)
class _Blind:
    clip: Clip
    edited: tuple[Clip, ...]  # muted first
    question: Question
    seen: float
    wrong: float


def write_blind_guards(
    corpus: Corpus,
    out: Path,
    *,
    seed: int = 0,
    options: RelationOptions = DEFAULT_OPTIONS,
    guess: Guess | None = None,
    originals: bool = False,
    chunk: int = 16,
) -> Anchors:
    """One visual question about each clip of ``corpus``, asked muted, with its sound at a random time and
    with another clip's sound at a random time (module docstring).

    Without ``guess``: a group of category ``blind`` whose answers the recipe makes agree
    (``sound_invariance``) rather than learns; ``chosen`` is the picture's time (the answer the agreement
    is measured on), ``rejected`` another moment, drawn without the sound. With ``guess`` (the base model,
    asked about the muted pictures ``chunk`` at a time): pairs of category ``kept`` that choose the base's
    own time for every version and reject where the version's sound is heard; a picture the base gives no
    time for is skipped. ``originals`` (with ``guess``) adds the clip as recorded, its sound in sync, to the
    versions.
    """
    labels = corpus.sound_labels
    rng = np.random.default_rng(seed)
    rejects = np.random.default_rng([seed, 1])  # kept guards' wrong times: the versions stay those of ``blind``
    written = skipped = 0
    recent: list[Clip] = []  # donors: the last few clips, not the whole corpus in memory
    pending: list[_Blind] = []

    def flush(writer: PairWriter) -> None:
        nonlocal written, skipped
        if not pending:
            return
        times = guess([(b.edited[0], b.question) for b in pending]) if guess else [b.seen for b in pending]
        for b, value in zip(pending, times, strict=True):
            if value is None:
                skipped += 1
                continue
            for variant in [b.clip, *b.edited] if guess is not None and originals else b.edited:
                # A swap moved afterwards is still about the swap.
                relation = variant.edits[0].op if variant.edits else CATEGORY
                wrong = b.wrong if guess is None else _sound_prior(variant, value, rejects)
                category = BLIND if guess is None else KEPT
                draft = _visual_guard(b.clip, variant, b.question, value, wrong, category=category, relation=relation)
                written += writer.add(draft) is not None
        pending.clear()

    with PairWriter(out, workers=writer_threads()) as writer:
        for entry in corpus.entries:
            clip = corpus.load_clip(entry)
            seen = truth(clip, "visual", options)
            fit = eligible_donors(clip, recent)
            recent = [*recent[-(_DONOR_WINDOW - 1) :], clip]
            if seen is NO_TRUTH:
                skipped += 1
                continue
            edited = [mute(clip), resounded(clip, rng, options)]
            if fit:
                edited.append(resounded(swap(clip, fit[int(rng.integers(len(fit)))]), rng, options))
            paraphrase = int(rng.integers(N_PARAPHRASES["visual"]))
            q = question("visual", paraphrase, sound_labels=labels)
            wrong = _elsewhere(float(seen), clip.duration, rng)  # type: ignore[arg-type]
            pending.append(_Blind(clip, tuple(edited), q, float(seen), wrong))  # type: ignore[arg-type]
            if len(pending) >= chunk:
                flush(writer)
        flush(writer)
    return Anchors(written, skipped)


def resounded(clip: Clip, rng: np.random.Generator, options: RelationOptions) -> Clip:
    """The clip with its first heard sound moved to a time drawn uniformly inside the clip, whatever the
    picture's time: where the sound is says nothing about where the event is seen."""
    heard = grounding.heard(clip.events)
    if not heard:
        return mute(clip)
    target = float(rng.uniform(options.margin, clip.duration - options.margin))
    return shift(clip, target - heard[0].audio_time)  # type: ignore[operator]


def _sound_prior(clip: Clip, seen: float, rng: np.random.Generator) -> float:
    """The time a model that listens instead of looking would give: when the sound is heard, if it is not
    when the event is seen; else a moment 0.6-1.2 s away, inside the clip."""
    heard = [e.audio_time for e in clip.events if e.audio_time is not None]
    if heard and abs(heard[0] - seen) >= 0.3:
        return round(float(heard[0]), 3)
    return _elsewhere(seen, clip.duration, rng)


def _elsewhere(seen: float, duration: float, rng: np.random.Generator) -> float:
    """A moment 0.6-1.2 s from ``seen``, inside the clip."""
    step = float(rng.uniform(0.6, 1.2))
    later, earlier = seen + step, seen - step
    return round(later if later < duration - 0.1 or earlier < 0.1 else earlier, 3)
