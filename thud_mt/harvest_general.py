"""General video preferences (``thud harvest general``): event-level pairs from annotated original clips.

Four kinds, each a category of ``kind="general"`` pairs:

- ``description``: "describe what you see and hear"; the chosen answer names
  each sound at its time;
- ``localisation``: when the sound is heard (the ``sound_time`` probe);
- ``attribution``: what makes the sound;
- ``audio_qa``: "is the sound a <label>?" and, when sounds and visible events
  differ in number, how many sounds are heard.

``rejected`` is the plausible visual-prior error: the sound the picture
suggests (the visible action's usual sound) where the audio has another or
none, the time the event is seen where the sound comes at another. Where the
picture and the sound agree (every synthetic scene) there is no visual prior
to err by, and ``rejected`` is a plausible wrong sound or time instead;
``meta["error"]`` says which (``visual_prior``, ``wrong_sound``,
``wrong_time``, ``other_event``: another event's time), so a mix can weight
them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from relations import DEFAULT_OPTIONS, RelationOptions
from thud_mt.clip import Clip, Event
from thud_mt.corpus.manifest import Corpus
from thud_mt.corpus.vocabulary import SOUND_CLASSES
from thud_mt.errors import ThudError
from thud_mt.grounding import (
    action,
    answer,
    heard,
    moment,
    picture_sound,
    reason,
    seconds,
    seen,
    short_phrase,
    sound_noun,
    timing,
)
from thud_mt.pairs import PairDraft, PairWriter
from thud_mt.probes import N_PARAPHRASES, VISIBLE_MOMENTS, question, sound_phrase

GENERAL_KINDS = ("description", "localisation", "attribution", "audio_qa")
DESCRIBE = (
    "Describe what you see and hear in this video: what happens, which sounds are heard, "
    "and when (in seconds from the start)."
)
ATTRIBUTE = "What makes the sound heard in this video? Answer in one short sentence."
COUNT = "How many separate sounds are heard in this video? Answer with a single number."
# A wrong time is moved this far (seconds, drawn) from the right one when no other event offers one.
WRONG_TIME_RANGE = (0.5, 1.5)
# Times this close to the clip's ends are not offered as wrong answers.
EDGE_S = 0.1


@dataclass(frozen=True)
class GeneralHarvest:
    """What ``harvest_general`` did: pairs written, pairs already there, and clips that could not be used."""

    written: int
    already: int
    clips: int
    errors: tuple[str, ...]


def harvest_general(
    corpus: Corpus, out: str | Path, *, seed: int = 0, options: RelationOptions = DEFAULT_OPTIONS
) -> GeneralHarvest:
    """Write the general pairs of every clip in ``corpus`` to ``out``; a clip that cannot be read is
    reported in ``errors`` and the others still go in."""
    labels = corpus.sound_labels or SOUND_CLASSES
    written = already = 0
    errors: list[str] = []
    with PairWriter(out) as writer:
        for entry in corpus.entries:
            try:
                clip = corpus.load_clip(entry)
                drafts = general_drafts(clip, labels, seed=seed, options=options)
                for draft in drafts:
                    if writer.add(draft) is None:
                        already += 1
                    else:
                        written += 1
            except ThudError as exc:
                errors.append(f"clip {entry.id}: {exc}")
    return GeneralHarvest(written, already, len(corpus.entries), tuple(errors))


def general_drafts(
    clip: Clip, labels: Sequence[str], *, seed: int = 0, options: RelationOptions = DEFAULT_OPTIONS
) -> list[PairDraft]:
    """The general pairs of one annotated clip (none when it has no event at all)."""
    if not clip.events:
        return []
    facts = _Facts.of(clip, labels, _rng(seed, clip.id))
    pairs = [
        _description(facts),
        _localisation(facts, options),
        _attribution(facts),
        _label_question(facts),
        _counting(facts),
    ]
    return [
        PairDraft(
            kind="general",
            category=category,
            question=q,
            chosen=chosen,
            rejected=rejected,
            clip=clip,
            source_clip=clip.id,
            meta={"clip": clip.id, "error": error, "seed": seed, **extra},
        )
        for category, q, chosen, rejected, error, extra in (p for p in pairs if p is not None)
    ]


# (category, question, chosen, rejected, error kind, extra meta)
_Pair = tuple[str, str, str, str, str, dict[str, object]]


@dataclass(frozen=True)
class _Facts:
    """What one clip's annotations say, and the wrong sound it offers when its picture suggests the right one."""

    clip: Clip
    heard: tuple[Event, ...]
    seen: tuple[Event, ...]
    prior: str | None  # the sound the first visible event suggests
    alternative: str  # a wrong sound: the prior where it differs from what is heard, else a drawn one
    error: str  # "visual_prior" or "wrong_sound": how `alternative` is wrong
    rng: np.random.Generator

    @classmethod
    def of(cls, clip: Clip, labels: Sequence[str], rng: np.random.Generator) -> _Facts:
        heard_events, seen_events = tuple(heard(clip.events)), tuple(seen(clip.events))
        sound = heard_events[0].sound if heard_events else None
        prior = picture_sound(seen_events[0]) if seen_events else None
        if prior is not None and prior != sound:
            return cls(clip, heard_events, seen_events, prior, prior, "visual_prior", rng)
        others = [s for s in labels if s not in (sound, prior)] or [s for s in SOUND_CLASSES if s != sound]
        return cls(clip, heard_events, seen_events, prior, str(rng.choice(others)), "wrong_sound", rng)

    @property
    def sound(self) -> str | None:
        return self.heard[0].sound if self.heard else None


def _rng(seed: int, clip_id: str) -> np.random.Generator:
    """Draws per (seed, clip): a clip's pairs do not depend on which other clips the corpus holds."""
    key = int.from_bytes(hashlib.sha256(clip_id.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, key])


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _heard_sentence(sound: str, time: float, event: Event) -> str:
    return f"{_cap(sound_phrase(sound))} is heard at {seconds(time)}{timing(event, time)}."


def _description(f: _Facts) -> _Pair:
    picture = " ".join(f"{_cap(action(e))} at {seconds(e.visual_time or 0.0)}." for e in f.seen)
    picture = picture or "Nothing notable happens in the picture."
    sounds = " ".join(_heard_sentence(e.sound or "sound", e.audio_time or 0.0, e) for e in f.heard)
    chosen = f"{picture} {sounds or 'No sound is heard.'}"
    if f.error == "visual_prior":  # the sounds the picture suggests, when it is seen
        wrong = " ".join(_heard_sentence(picture_sound(e) or f.alternative, e.visual_time or 0.0, e) for e in f.seen)
    else:
        first = f.heard[0]
        wrong = _heard_sentence(f.alternative, first.audio_time or 0.0, first)
        wrong = " ".join([wrong] + [_heard_sentence(e.sound or "sound", e.audio_time or 0.0, e) for e in f.heard[1:]])
    return ("description", DESCRIBE, chosen, f"{picture} {wrong}", f.error, {})


def _localisation(f: _Facts, options: RelationOptions) -> _Pair | None:
    paraphrase = int(f.rng.integers(N_PARAPHRASES["sound_time"]))
    q = question("sound_time", paraphrase)
    right = f.heard[0].audio_time if f.heard else None
    far = 2 * options.time_tolerance  # a wrong time no tolerance could take for the right one

    def differs(t: float | None) -> bool:
        return t is not None and (right is None or abs(t - right) > far)

    shown = f.seen[0] if f.seen else None
    if shown is not None and differs(shown.visual_time):
        wrong, error = shown.visual_time, "visual_prior"
    elif right is None:
        return None  # nothing heard and nothing seen at another time: no error to prefer against
    else:
        others = [t for e in f.clip.events for t in (e.visual_time, e.audio_time) if differs(t)]
        wrong, error = (others[0], "other_event") if others else (_wrong_time(f, right), "wrong_time")
    assert wrong is not None
    chosen = answer(q, right, reason("sound_time", right, f.clip))
    sound = f.prior if error == "visual_prior" and f.prior else f.sound or f.alternative
    claim = f"That is when {sound_noun(sound)} is heard{timing(shown, wrong) if shown else ''}."
    return (
        "localisation",
        q.text,
        chosen,
        answer(q, wrong, claim),
        error,
        {"probe": "sound_time", "paraphrase": paraphrase},
    )


def _wrong_time(f: _Facts, right: float) -> float:
    low, high = EDGE_S, f.clip.duration - EDGE_S
    delta = float(f.rng.uniform(*WRONG_TIME_RANGE))
    # The side with room; a drawn side when both have it.
    later, earlier = right + delta <= high, right - delta >= low
    if later and earlier:
        later = bool(f.rng.random() < 0.5)
    return right + delta if later else max(low, right - delta)


def _made_by(sound: str, event: Event | None) -> str:
    if event is not None:
        return f"The sound is {sound_phrase(sound)}, made as {moment(event)}."
    if sound in VISIBLE_MOMENTS:
        return f"The sound is {sound_phrase(sound)}, made as {VISIBLE_MOMENTS[sound]}."
    return f"The sound is {sound_phrase(sound)}."


def _attribution(f: _Facts) -> _Pair:
    shown = f.seen[0] if f.seen else None
    if not f.heard:
        assert shown is not None  # a clip with events has a heard or a seen one
        chosen = f"Nothing does: no sound is heard, although {action(shown)}."
        return ("attribution", ATTRIBUTE, chosen, _made_by(f.alternative, shown), f.error, {})
    first = f.heard[0]
    if first.visual_time is None:
        chosen = f"The sound is {sound_phrase(first.sound or 'sound')}; nothing visible makes it."
    else:
        chosen = _made_by(first.sound or "sound", first)
    culprit = shown if f.error == "visual_prior" else None  # a wrong sound is not the visible event's
    return ("attribution", ATTRIBUTE, chosen, _made_by(f.alternative, culprit), f.error, {})


def _label_question(f: _Facts) -> _Pair:
    """Yes/no on a sound label: the picture's sound where it is not heard, else a coin between the
    right label and a wrong one, so the pairs do not teach "no" as the answer."""
    ask_right = f.error == "wrong_sound" and f.sound is not None and bool(f.rng.random() < 0.5)
    asked = f.sound if ask_right and f.sound else f.alternative
    q = f"Is the sound heard in this video {sound_phrase(asked)}? Answer yes or no."
    shown = f.seen[0] if f.seen else None
    first = f.heard[0] if f.heard else None
    if ask_right and first is not None:
        chosen = f"Yes. {_cap(sound_phrase(asked))} is heard at {seconds(first.audio_time or 0.0)}."
        rejected = f"No. The sound is {sound_phrase(f.alternative)}, not {short_phrase(asked)}."
    else:
        because = (
            f"The sound is {sound_phrase(first.sound or 'sound')}, not {short_phrase(asked)}."
            if first is not None
            else "No sound is heard."
        )
        chosen = f"No. {because}"
        seen_as = f" as {moment(shown)}" if shown is not None and f.error == "visual_prior" else ""
        rejected = f"Yes. {_cap(sound_phrase(asked))} is heard{seen_as}."
    return ("audio_qa", q, chosen, rejected, f.error, {"asked": asked, "question_type": "label"})


def _counting(f: _Facts) -> _Pair | None:
    """Only where the picture suggests another count than the audio has (one sound per visible event)."""
    if len(f.heard) == len(f.seen):
        return None
    if f.heard:
        listed = ", ".join(sound_phrase(e.sound or "sound") for e in f.heard)
        chosen = f"{len(f.heard)}. {_cap(listed)}."
    else:
        chosen = "0. No sound is heard."
    rejected = f"{len(f.seen)}. One for each event seen."
    return ("audio_qa", COUNT, chosen, rejected, "visual_prior", {"question_type": "count"})
