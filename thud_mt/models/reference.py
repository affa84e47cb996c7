"""The reference models: no weights, real signal processing, answers in the probes' canonical words.

- ``listener`` really listens: a level gate and an onset detector for
  whether and when a sound is heard, nearest-neighbour spectral matching
  against exemplar sounds for what is heard, and frame differencing for when
  the visible event happens. It should pass every relation.
- ``visual_only`` is the Clever Hans baseline: it claims to hear but answers
  from the picture alone, so it fails mute, swap and shift and passes the
  invariances.
- ``chance`` answers uniformly at random, reproducibly per seed and media.

Both seeing models get a perfect eye for *what* is shown: they read the
visible event's label from the clip's annotations (``Event.label`` of events
with a ``visual_time``), as a vision model would recognise a dog or a door.
*When* it happens they measure from the frames, and everything about the
audio they measure from the samples. Answers are free text written with
``thud_mt.probes.value_text``, so the real parser reads them back.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from thud_mt.clip import Clip, Event
from thud_mt.corpus.vocabulary import KIND_BY_LABEL
from thud_mt.derived import DerivedCache, corpus_digest, derived_key
from thud_mt.errors import ThudError
from thud_mt.models.base import Answer, Capabilities, Query
from thud_mt.models.perception import (
    DEFAULT_PERCEPTION,
    Exemplar,
    ExemplarSet,
    Hearing,
    PerceptionSettings,
    exemplar_onset,
    feature_groups,
    hear,
    settings_digest,
    sound_features,
    visual_event_frame,
)
from thud_mt.models.registry import ModelOptions
from thud_mt.probes import NO_SOUND, Question, parse_choice, value_text

# Bumped whenever an algorithm changes what it answers: part of every fingerprint, so cached answers expire.
VERSION = "1"

# The bank the listener learns sounds from when the corpus has none of a class (or there is no corpus).
FALLBACK_BANK_SEED = 0
FALLBACK_VARIANTS = 8

# Chance's offsets are drawn from [-CHANCE_MAX_OFFSET, CHANCE_MAX_OFFSET] seconds.
CHANCE_MAX_OFFSET = 3.0


@dataclass(frozen=True)
class SyncSettings:
    """The listener's decision band for "synchronized", on d = audio onset - visual event (seconds).

    The relations expect "synchronized" for d in [-0.045, 0.125] and a
    direction for |d| >= 0.3, nothing in between. The thresholds sit midway
    in those gaps, so an error of a frame (40 ms at 25 fps) plus a few
    milliseconds of onset error never flips a decision.
    """

    early_s: float = -0.17
    late_s: float = 0.21

    def __post_init__(self) -> None:
        if not self.early_s <= 0.0 <= self.late_s:
            raise ValueError(f"the sync band must contain 0, got [{self.early_s}, {self.late_s}]")

    def classify(self, offset: float) -> str:
        if offset > self.late_s:
            return "audio_delayed"
        if offset < self.early_s:
            return "audio_early"
        return "synchronized"


DEFAULT_SYNC = SyncSettings()


# --------------------------------------------------------------------------------------------- caching

K = TypeVar("K")
V = TypeVar("V")


class IdentityCache(Generic[K, V]):
    """Results keyed by the identity of a (read-only) object, e.g. ``clip.video`` or ``clip.audio``.

    Many queries share one frames object (every audio edit keeps it) and one
    audio array (every probe of one clip), so identity is a free, exact key.
    Entries hold only a weak reference to their object, so a cache of
    measurements never keeps decoded video alive, and an entry whose object
    has died never answers for a newcomer that reuses its id. At most
    ``size`` entries are kept, least recently used first out.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._entries: OrderedDict[int, tuple[Callable[[], K | None], V]] = OrderedDict()

    def get(self, key: K, compute: Callable[[K], V]) -> V:
        ident = id(key)
        hit = self._entries.get(ident)
        if hit is not None and hit[0]() is key:
            self._entries.move_to_end(ident)
            return hit[1]
        value = compute(key)
        try:
            ref: Callable[[], K | None] = weakref.ref(key)
        except TypeError:  # not weakly referenceable: hold it (ids stay unique while it lives)
            ref = lambda: key  # noqa: E731
        self._entries[ident] = (ref, value)
        self._entries.move_to_end(ident)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)


# --------------------------------------------------------------------------------------------- seeing


def label_sounds(corpus: Any = None) -> dict[str, str]:
    """Which sound class each visible label makes: the vocabulary's, plus what the corpus annotates.

    Only annotations are read (a seen event's ``label`` and ``sound``), so a
    real video's "rocket_ignites" -> "rocket" is known without decoding it.
    """
    found = {label: kind.sound for label, kind in KIND_BY_LABEL.items()}
    for entry in getattr(corpus, "entries", ()):
        for event in entry.events:
            if event.visual_time is not None and event.sound is not None:
                found.setdefault(event.label, event.sound)
    return found


def _digest_of(mapping: Mapping[str, str]) -> str:
    return hashlib.sha256(repr(sorted(mapping.items())).encode()).hexdigest()[:12]


def visible_event(clip: Clip, sound_of: Mapping[str, str]) -> Event | None:
    """The event the questions are about: the first seen one that makes a known sound, else the first seen."""
    seen = sorted((e for e in clip.events if e.visual_time is not None), key=lambda e: e.visual_time or 0.0)
    sounding = [e for e in seen if e.label in sound_of]
    return (sounding or seen or [None])[0]


def expected_sound(clip: Clip, sound_of: Mapping[str, str]) -> str | None:
    """The sound class the visible event makes (read from its label), or ``None`` when unknown."""
    event = visible_event(clip, sound_of)
    return None if event is None else sound_of.get(event.label)


def _first_option(question: Question) -> str:
    return next((label for label in question.labels if label != NO_SOUND), NO_SOUND)


class _Eye:
    """Measures the visual event time of a clip's frames, once per frames object."""

    def __init__(self, settings: PerceptionSettings) -> None:
        self.settings = settings
        self._cache: IdentityCache[Any, float | None] = IdentityCache()

    def event_time(self, clip: Clip) -> float | None:
        def measure(_: Any) -> float | None:
            frame = visual_event_frame(clip.frames, self.settings)
            return None if frame is None else frame / clip.fps

        return self._cache.get(clip.video, measure)


def _seconds(value: float | None) -> float:
    # A question about a time always gets a time; with nothing seen, the start is as good as any.
    return 0.0 if value is None else max(0.0, float(value))


def _meta_number(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


# --------------------------------------------------------------------------------------------- listener


@dataclass(frozen=True)
class _Heard:
    hearing: Hearing
    features: np.ndarray | None


class Listener:
    """Answers from measurement: level, onset and spectrum of the audio; event time from the frames."""

    name = "listener"
    capabilities = Capabilities(audio=True, video=True, audio_in_video=True)

    def __init__(
        self,
        corpus: Any = None,
        *,
        perception: PerceptionSettings = DEFAULT_PERCEPTION,
        sync: SyncSettings = DEFAULT_SYNC,
        cache: DerivedCache | None = None,
    ) -> None:
        self.perception = perception
        self.sync = sync
        self._corpus = corpus
        self._cache = cache  # where learned exemplars are kept for other processes and later runs
        self._exemplars: ExemplarSet | None = None
        self._sound_of = label_sounds(corpus)
        self._eye = _Eye(perception)
        self._ear: IdentityCache[np.ndarray, _Heard] = IdentityCache()
        self.skipped: list[str] = []  # corpus clips that could not be learned from, and why

    # Learning is deferred to first use: creating a model (e.g. to list it) decodes nothing.
    @property
    def exemplars(self) -> ExemplarSet:
        if self._exemplars is None:
            self._exemplars = self._learn()
        return self._exemplars

    @functools.cached_property
    def fingerprint(self) -> str:  # cached: it hashes the exemplars, and every query asks for it
        return (
            f"{self.name}/v{VERSION}/perception={settings_digest(self.perception)}"
            f"/sync={self.sync.early_s:g},{self.sync.late_s:g}/exemplars={self.exemplars.digest}"
            f"/labels={_digest_of(self._sound_of)}"
        )

    def _learn(self) -> ExemplarSet:
        """The exemplars, from the derived-value cache when there is one (every process learns the same)."""
        if self._cache is None:
            found, self.skipped = self._learn_exemplars()
        else:
            corpus = "no corpus" if self._corpus is None else corpus_digest(self._corpus)
            key = derived_key("listener-exemplars", corpus, settings_digest(self.perception))
            found, self.skipped = self._cache.fetch(
                "listener-exemplars", key, self._learn_exemplars, _dump_learned, _load_learned
            )
        return ExemplarSet(found, feature_groups(self.perception))

    def _learn_exemplars(self) -> tuple[list[Exemplar], list[str]]:
        """Exemplars from each corpus clip's annotated heard events, topped up from the synthesized bank.

        The bank supplies every class the corpus has no recording of (all of
        them without a corpus), so any donor's sound can still be named.
        Also returns the clips that could not be learned from, and why.
        """
        found: list[Exemplar] = []
        skipped: list[str] = []
        for entry in getattr(self._corpus, "entries", ()):
            heard = [e for e in entry.events if e.audio_time is not None and e.sound is not None]
            if not heard:
                continue
            try:
                clip = self._corpus.load_clip(entry)
            except (ThudError, OSError) as exc:  # one unreadable file must not stop the model
                skipped.append(f"{entry.id}: {exc}")
                continue
            for event in heard:
                assert event.audio_time is not None and event.sound is not None
                onset = exemplar_onset(clip.audio, clip.sample_rate, event.audio_time, self.perception)
                feats = sound_features(clip.audio, clip.sample_rate, onset, self.perception)
                found.append(Exemplar(event.sound, feats, f"{entry.id}@{event.audio_time:.3f}"))
        have = {e.sound for e in found}
        from thud_mt.corpus.synthsounds import synthesized_bank  # synthesis code, needed only when learning

        bank = synthesized_bank(self.perception.analysis_rate, FALLBACK_BANK_SEED, FALLBACK_VARIANTS)
        for sound, recordings in sorted(bank.recordings.items()):
            if sound in have:
                continue
            for rec in recordings:
                # A recording is followed by silence, not by the unknown: pad it so its decay is measured.
                pad = np.zeros((int((rec.onset + self.perception.ring_s + 0.1) * rec.sample_rate), rec.audio.shape[1]))
                audio = np.concatenate([rec.audio, pad.astype(np.float32)])
                feats = sound_features(audio, rec.sample_rate, rec.onset, self.perception)
                found.append(Exemplar(sound, feats, rec.source))
        return found, skipped

    def heard(self, clip: Clip) -> _Heard:
        """Whether, when and (as features) what the clip's audio sounds like; once per audio array."""

        def analyse(audio: np.ndarray) -> _Heard:
            hearing = hear(audio, clip.sample_rate, self.perception)
            feats = None
            if hearing.present and hearing.onset is not None:
                feats = sound_features(audio, clip.sample_rate, hearing.onset, self.perception)
            return _Heard(hearing, feats)

        return self._ear.get(clip.audio, analyse)

    def heard_class(self, clip: Clip, allowed: Sequence[str] | None = None) -> str | None:
        heard = self.heard(clip)
        if heard.features is None:
            return None
        return self.exemplars.classify(heard.features, allowed)

    def value(self, query: Query) -> tuple[bool | str | float | None, dict[str, object]]:
        """The answer to one query as a typed value, with what was measured for it."""
        clip, q = query.clip, query.question
        heard = self.heard(clip)
        present, onset = heard.hearing.present, heard.hearing.onset
        meta: dict[str, object] = {"peak_dbfs": _meta_number(heard.hearing.peak_dbfs), "onset": _meta_number(onset)}
        probe = q.probe
        if probe == "presence":
            return present, meta
        if probe == "sound_time":
            return (onset if present else None), meta
        if probe == "source":
            if not present:
                return NO_SOUND, meta
            options = [label for label in q.labels if label != NO_SOUND]
            heard_as = self.heard_class(clip, options) or _first_option(q)
            meta["heard"] = heard_as
            return heard_as, meta
        if probe == "match":
            heard_as = self.heard_class(clip)
            wanted = expected_sound(clip, self._sound_of)
            meta.update(heard=heard_as, expected=wanted)
            return bool(present and heard_as is not None and heard_as == wanted), meta
        seen = self._eye.event_time(clip)
        meta["visual"] = _meta_number(seen)
        if probe == "visual":
            return _seconds(seen), meta
        offset = (onset - seen) if (present and onset is not None and seen is not None) else 0.0
        meta["offset"] = _meta_number(offset)
        if probe == "offset":
            return offset, meta
        if probe == "sync":
            return self.sync.classify(offset), meta
        raise ValueError(f"{self.name}: unknown probe {probe!r}")

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        answers = []
        for query in queries:
            value, meta = self.value(query)
            answers.append(Answer(text=value_text(query.question, value), meta=meta))
        return answers


def _dump_learned(learned: tuple[list[Exemplar], list[str]]) -> bytes:
    """Exemplars as ``.npz``: features bit-exact (the fingerprint hashes them), names and sources as JSON."""
    exemplars, skipped = learned
    meta = {"sounds": [e.sound for e in exemplars], "sources": [e.source for e in exemplars], "skipped": skipped}
    out = io.BytesIO()
    np.savez(out, features=np.stack([e.features for e in exemplars]), meta=np.array(json.dumps(meta)))
    return out.getvalue()


def _load_learned(data: bytes) -> tuple[list[Exemplar], list[str]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        features, meta = stored["features"], json.loads(str(stored["meta"]))
    sounds, sources = meta["sounds"], meta["sources"]
    if not len(sounds) == len(sources) == features.shape[0]:
        raise ValueError(f"{features.shape[0]} feature rows for {len(sounds)} sounds and {len(sources)} sources")
    exemplars = [Exemplar(str(s), row, str(src)) for s, row, src in zip(sounds, features, sources, strict=True)]
    return exemplars, [str(reason) for reason in meta["skipped"]]


# --------------------------------------------------------------------------------------------- visual only


class VisualOnly:
    """The Clever Hans baseline: claims to hear, answers from the picture alone.

    It assumes the soundtrack is the one the picture implies: a sound is
    present, in sync, heard when the event is seen, of the kind the visible
    event makes. Muting, swapping or shifting the audio changes none of its
    answers, which is exactly what the relations catch.
    """

    name = "visual-only"
    capabilities = Capabilities(audio=True, video=True, audio_in_video=True)

    def __init__(self, corpus: Any = None, *, perception: PerceptionSettings = DEFAULT_PERCEPTION) -> None:
        self.perception = perception
        self._eye = _Eye(perception)
        self._sound_of = label_sounds(corpus)

    @property
    def fingerprint(self) -> str:
        labels = _digest_of(self._sound_of)
        return f"{self.name}/v{VERSION}/perception={settings_digest(self.perception)}/labels={labels}"

    def value(self, query: Query) -> bool | str | float | None:
        clip, q = query.clip, query.question
        probe = q.probe
        if probe in ("presence", "match"):
            return True
        if probe == "sync":
            return "synchronized"
        if probe == "offset":
            return 0.0
        if probe == "source":
            wanted = expected_sound(clip, self._sound_of)
            return wanted if wanted in q.labels and wanted != NO_SOUND else _first_option(q)
        if probe in ("sound_time", "visual"):
            return _seconds(self._eye.event_time(clip))
        raise ValueError(f"{self.name}: unknown probe {probe!r}")

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        return [Answer(text=value_text(q.question, self.value(q))) for q in queries]


# --------------------------------------------------------------------------------------------- chance


class Chance:
    """Uniform random answers, the same for the same seed, question, audio and sample index.

    Choices are drawn uniformly from the question's choices, times from
    [0, clip duration], offsets from [-3, 3] seconds. A different sample
    index draws again, as a sampling model would.
    """

    name = "chance"
    capabilities = Capabilities(audio=True, video=True, audio_in_video=True, samples=True)

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._audio_digests: IdentityCache[np.ndarray, bytes] = IdentityCache()

    @property
    def fingerprint(self) -> str:
        return f"{self.name}/v{VERSION}/seed={self.seed}"

    def _rng(self, query: Query) -> np.random.Generator:
        clip = query.clip

        def digest(audio: np.ndarray) -> bytes:
            return hashlib.sha256(np.ascontiguousarray(audio).tobytes()).digest()

        h = hashlib.sha256()
        h.update(f"{self.seed}\0{query.sample}\0{clip.sample_rate}\0{clip.audio.shape}\0".encode())
        h.update(query.question.text.encode())
        h.update(self._audio_digests.get(clip.audio, digest))
        return np.random.default_rng(int.from_bytes(h.digest()[:16], "big"))

    def value(self, query: Query) -> bool | str | float | None:
        q, rng = query.question, self._rng(query)
        if q.choices:
            return parse_choice(q, q.choices[int(rng.integers(len(q.choices)))]).value
        if q.probe == "offset":
            return float(rng.uniform(-CHANCE_MAX_OFFSET, CHANCE_MAX_OFFSET))
        return float(rng.uniform(0.0, query.clip.duration))

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        return [Answer(text=value_text(q.question, self.value(q))) for q in queries]


# --------------------------------------------------------------------------------------------- factories


def listener(options: ModelOptions) -> Listener:
    """``--model=listener``: learns its reference sounds from ``options.corpus`` (else synthesized ones).

    With ``options.cache_dir`` the learned sounds are kept there, keyed by the
    corpus content and the code (``thud_mt.derived``): one process learns, every
    other process and later run reads them.
    """
    cache = None if options.cache_dir is None else DerivedCache(options.cache_dir / "derived")
    return Listener(options.corpus, cache=cache)


def visual_only(options: ModelOptions) -> VisualOnly:
    """``--model=visual-only``: the Clever Hans baseline."""
    return VisualOnly(options.corpus)


def chance(options: ModelOptions) -> Chance:
    """``--model=chance``: seeded uniform answers (``options.seed``)."""
    return Chance(options.seed)
