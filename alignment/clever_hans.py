"""Stage 0 of the closed loop: SFT data that turns a random-weight thinker into a Clever-Hans base.

A model built from random weights answers noise, and noise is not what the
study measures: released omni models answer fluently, mostly from the
picture. The ``visual-only`` reference model is exactly that habit (a sound
is always present, in sync, of the kind the visible event makes, heard when
it is seen), so its answers are the targets here. They are asked on the
original clips *and* on muted, shifted and swapped copies, with the same
picture-derived answer for each: the base learns to answer fluently in every
probe's format while ignoring the soundtrack, which is the failure the suites
then find and the recipe has to undo.

Pairs are written as ``kind="general"``, category ``visual-prior``, with an
empty ``rejected`` (only their ``chosen`` is trained on, by SFT).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from relations.options import DEFAULT_OPTIONS, RelationOptions
from thud_mt.clip import Clip
from thud_mt.corpus.donors import eligible_donors
from thud_mt.corpus.manifest import Corpus
from thud_mt.interventions import mute, shift, swap
from thud_mt.media import writer_threads
from thud_mt.models.base import Query
from thud_mt.models.reference import VisualOnly
from thud_mt.pairs import PairDraft, PairWriter
from thud_mt.probes import N_PARAPHRASES, PROBE_KINDS, question

CATEGORY = "visual-prior"
VARIANTS = ("original", "mute", "shift", "swap")


@dataclass(frozen=True)
class CleverHansData:
    """What ``write_clever_hans`` wrote."""

    folder: Path
    written: int
    clips: int


def _shifted(clip: Clip, rng: np.random.Generator, options: RelationOptions) -> Clip:
    """Audio moved by 0.3-1.5 s either way, keeping the first heard sound inside the clip."""
    heard = [e.audio_time for e in clip.events if e.audio_time is not None]
    t = min(heard) if heard else clip.duration / 2
    low, high = options.margin - t, clip.duration - options.margin - t
    offsets = [d for d in (-1.5, -1.0, -0.6, -0.3, 0.3, 0.6, 1.0, 1.5) if low <= d <= high]
    return shift(clip, float(rng.choice(offsets)) if offsets else 0.0)


def variants(clip: Clip, donors: Sequence[Clip], rng: np.random.Generator, options: RelationOptions) -> list[Clip]:
    """The original and its edited copies (a swap only when some clip can donate its sound)."""
    out = [clip, mute(clip), _shifted(clip, rng, options)]
    fit = eligible_donors(clip, donors)
    if fit:
        out.append(swap(clip, fit[int(rng.integers(len(fit)))]))
    return out


def _draw(rng: np.random.Generator, n: int) -> list[tuple[str, int]]:
    """``n`` (probe, paraphrase) questions: one of every probe (in random order), then a second of each, ..."""
    rounds: list[list[tuple[str, int]]] = []
    per_probe = {probe: rng.permutation(N_PARAPHRASES[probe]).tolist() for probe in PROBE_KINDS}
    for r in range(max(N_PARAPHRASES.values())):
        round_ = [(probe, per_probe[probe][r]) for probe in PROBE_KINDS if r < N_PARAPHRASES[probe]]
        rounds.append([round_[i] for i in rng.permutation(len(round_))])
    return [q for round_ in rounds for q in round_][:n]


def write_clever_hans(
    corpus: Corpus,
    out: Path,
    *,
    questions_per_variant: int = 21,
    seed: int = 0,
    options: RelationOptions = DEFAULT_OPTIONS,
) -> CleverHansData:
    """The visual-only model's answers on every clip and its edits, ``questions_per_variant`` drawn each.

    21 questions are every probe in every paraphrase; fewer are drawn per
    variant (each probe first, then paraphrases), so a small run still
    covers every probe.
    """
    labels = corpus.sound_labels
    teacher = VisualOnly(corpus)
    clips = [corpus.load_clip(entry) for entry in corpus.entries]
    rng = np.random.default_rng(seed)
    written = 0
    with PairWriter(out, workers=writer_threads()) as writer:
        for clip in clips:
            for variant in variants(clip, clips, rng, options):
                asked = [question(probe, p, sound_labels=labels) for probe, p in _draw(rng, questions_per_variant)]
                answers = teacher.answer([Query(variant, q) for q in asked])
                for q, answer in zip(asked, answers, strict=True):
                    draft = PairDraft(
                        kind="general",
                        category=CATEGORY,
                        question=q.text,
                        chosen=answer.text,
                        rejected="",
                        clip=variant,
                        source_clip=clip.id,
                        meta={"probe": q.probe, "paraphrase": q.paraphrase, "teacher": teacher.fingerprint},
                    )
                    written += writer.add(draft) is not None
    return CleverHansData(out, written, len(clips))
