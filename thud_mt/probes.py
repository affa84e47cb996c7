"""The questions a relation asks, the answers each allows, and the parsers that read what models write.

Seven probe kinds, each with several paraphrases that all carry explicit answer
instructions. ``parse`` turns free model text into a typed value and never
raises on model text: an answer it cannot read comes back ``valid=False`` with
a reason quoting the (truncated) text, so the verdict can say "invalid" instead
of guessing. When an answer says two incompatible things (two options, both
"in sync" and "audio late"), it is invalid rather than resolved by a rule of
thumb: a metamorphic verdict built on a guess would be noise.

Time values are seconds on the clip's clock; offsets follow the intervention
sign: positive = audio delayed (the sound is heard after the event is seen).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from thud_mt.corpus.vocabulary import SOUND_CLASSES

ProbeKind = Literal["presence", "sync", "offset", "sound_time", "match", "source", "visual"]
PROBE_KINDS: tuple[ProbeKind, ...] = ("presence", "sync", "offset", "sound_time", "match", "source", "visual")

SyncValue = Literal["synchronized", "audio_delayed", "audio_early"]
SYNC_VALUES: tuple[SyncValue, ...] = ("synchronized", "audio_delayed", "audio_early")
NO_SOUND = "no sound"

# How each sound class is offered as an option; a label without a phrase is shown as itself.
SOUND_PHRASES: dict[str, str] = {
    "thud": "a thud of an object hitting the floor",
    "clap": "a hand clap",
    "door": "a door closing",
    "bell": "a bell ringing",
    "glass": "glass breaking",
    "bark": "a dog barking",
    NO_SOUND: NO_SOUND,
}

# The visible moment of each class's event, named in the visual question so "when" has one answer.
VISIBLE_MOMENTS: dict[str, str] = {
    "thud": "the object lands",
    "clap": "the hands meet",
    "door": "the door shuts",
    "bell": "the hammer hits the bell",
    "glass": "the glass shatters",
    "bark": "the dog opens its mouth",
}

# Canonical answer texts round numbers to milliseconds: finer than any tolerance a
# relation uses, and what a person (or a preference pair's chosen answer) would write.
TIME_DECIMALS = 3

_YES_NO = ("yes", "no")
_SYNC_CHOICES = ("synchronized", "audio delayed", "audio early")
_OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Question:
    """One prompt. ``choices`` are the model-facing answers a log-prob scorer scores, in order.

    presence / match: ``("yes", "no")``; sync: ``("synchronized", "audio delayed",
    "audio early")``; source: the option lines as shown (``"(B) a hand clap"``),
    parallel to ``labels``; numeric kinds have none.
    """

    probe: ProbeKind
    paraphrase: int
    text: str
    choices: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Parsed:
    """A typed answer: bool (presence, match), a ``SYNC_VALUES`` or label string, seconds, or None (no sound)."""

    probe: ProbeKind
    value: bool | str | float | None
    valid: bool
    reason: str = ""


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# --- questions ---------------------------------------------------------------------------------------------------

# (question, answer instructions) per paraphrase. Every sync paraphrase asks whether
# the streams ARE in time, so a bare "yes" always means synchronized.
_TEMPLATES: dict[ProbeKind, tuple[tuple[str, str], ...]] = {
    "presence": (
        ("Is there any sound in this video?", "Answer yes or no."),
        (
            "Can you hear anything at all in this clip, or is it silent?",
            "Answer with one word: yes if there is any sound, no if it is silent.",
        ),
        ("Does the audio track of this video contain any audible sound?", "Reply with yes or no only."),
    ),
    "sync": (
        (
            "Are the audio and the picture in this video synchronized?",
            "Answer with one of: synchronized, audio delayed (the sound comes after the visible event), "
            "audio early (the sound comes before it).",
        ),
        (
            "Is the sound in this video in time with the event you see?",
            "Reply with exactly one of: synchronized; audio delayed (the sound is heard after the event is seen); "
            "audio early (the sound is heard before the event is seen).",
        ),
        (
            "Watch when the visible event happens and listen for its sound. Do the two line up in time?",
            "Choose one answer: synchronized, audio delayed (sound after the event), "
            "or audio early (sound before the event).",
        ),
    ),
    "offset": (
        (
            "By how many seconds is the audio offset from the picture in this video?",
            "Answer with a single number of seconds: positive if the audio is delayed (the sound is heard after "
            "the event is seen), negative if the audio is early (heard before it is seen), 0 if they are in sync.",
        ),
        (
            "How far apart in time are the sound of the event and the moment the event is seen?",
            "Reply with one signed number of seconds, e.g. 0.5 when the sound comes half a second after the event, "
            "-0.5 when it comes half a second before, 0 when they coincide.",
        ),
        (
            "Estimate the audio-visual offset of this clip.",
            "Give it as a number of seconds: positive = audio delayed, negative = audio early, 0 = in sync.",
        ),
    ),
    "sound_time": (
        (
            "At what time, in seconds from the start of the video, is the sound of the event heard?",
            "Answer with a single number of seconds, or none if no sound is heard.",
        ),
        (
            "When do you hear the event's sound in this clip?",
            "Reply with the time in seconds from the start (for example 1.5), or none if there is no sound.",
        ),
        (
            "Listen to the audio: how many seconds after the video starts does the sound of the event occur?",
            "Give one number of seconds; answer none if nothing can be heard.",
        ),
    ),
    "match": (
        (
            "Does the sound in this video fit what is seen?",
            "Judge only the kind of sound, not its timing. Answer yes or no.",
        ),
        (
            "Could the sound you hear have been made by what happens in the picture?",
            "Ignore timing; consider only what kind of sound it is. Reply with yes or no only.",
        ),
        (
            "Is the audio the right kind of sound for the visible event?",
            "Timing does not matter here. Answer with one word: yes or no.",
        ),
    ),
    "source": (
        ("Which sound is heard in this video?", "Answer with the letter of one option."),
        ("What do you hear in this clip?", "Reply with a single option letter, e.g. (A)."),
        (
            "Listen to the audio track. Which of these sounds does it contain?",
            "Choose exactly one option and answer with its letter.",
        ),
    ),
    "visual": (
        (
            "Looking only at the picture: at what time, in seconds from the start of the video, "
            "does the visible event happen{moments}?",
            "Answer with a single number of seconds.",
        ),
        (
            "Ignore the sound. When, in seconds from the start, does the event you see take place{moments}?",
            "Reply with one number of seconds, for example 1.5.",
        ),
        (
            "Based on the images alone, how many seconds into the video does the visible event occur{moments}?",
            "Give the time as a number of seconds.",
        ),
    ),
}

N_PARAPHRASES: dict[ProbeKind, int] = {kind: len(_TEMPLATES[kind]) for kind in PROBE_KINDS}


def sound_phrase(label: str) -> str:
    """How a sound label is offered as an option: ``"bell"`` -> ``"a bell ringing"``."""
    return SOUND_PHRASES.get(label, label.replace("_", " "))


def _option_labels(sound_labels: Sequence[str]) -> tuple[str, ...]:
    labels = [label for label in sound_labels if label != NO_SOUND]
    if len(set(labels)) != len(labels) or not all(label.strip() for label in labels):
        raise ValueError(f"sound labels must be distinct and non-empty, got {tuple(sound_labels)!r}")
    if len(labels) + 1 > len(_OPTION_LETTERS):
        raise ValueError(f"at most {len(_OPTION_LETTERS) - 1} sound labels fit the lettered options")
    return (*labels, NO_SOUND)  # "no sound" always last, so its letter is the last one


def _moments_clause(sound_labels: Sequence[str]) -> str:
    moments = [VISIBLE_MOMENTS[label] for label in sound_labels if label in VISIBLE_MOMENTS]
    if not moments:
        return ""
    listed = moments[0] if len(moments) == 1 else f"{', '.join(moments[:-1])}, or {moments[-1]}"
    return f" ({listed})"


def question(probe: ProbeKind, paraphrase: int = 0, *, sound_labels: Sequence[str] = SOUND_CLASSES) -> Question:
    """The ``paraphrase``-th wording of ``probe``; ``sound_labels`` sets source's options and visual's examples."""
    if probe not in _TEMPLATES:
        raise ValueError(f"unknown probe kind {probe!r}; expected one of {PROBE_KINDS}")
    templates = _TEMPLATES[probe]
    if not 0 <= paraphrase < len(templates):
        raise ValueError(f"{probe} has paraphrases 0..{len(templates) - 1}, got {paraphrase}")
    ask, instruction = templates[paraphrase]
    if probe == "source":
        labels = _option_labels(sound_labels)
        options = tuple(f"({_OPTION_LETTERS[i]}) {sound_phrase(label)}" for i, label in enumerate(labels))
        return Question(probe, paraphrase, "\n".join((ask, *options, instruction)), options, labels)
    if probe == "visual":
        ask = ask.format(moments=_moments_clause(sound_labels))
    choices = {"presence": _YES_NO, "match": _YES_NO, "sync": _SYNC_CHOICES}.get(probe, ())
    return Question(probe, paraphrase, f"{ask} {instruction}", choices)


def questions(probe: ProbeKind, *, sound_labels: Sequence[str] = SOUND_CLASSES) -> tuple[Question, ...]:
    """Every paraphrase of ``probe``, in index order."""
    if probe not in _TEMPLATES:
        raise ValueError(f"unknown probe kind {probe!r}; expected one of {PROBE_KINDS}")
    return tuple(question(probe, i, sound_labels=sound_labels) for i in range(N_PARAPHRASES[probe]))


# --- canonical values and texts --------------------------------------------------------------------------------------


def _choice_values(q: Question) -> tuple[bool | str, ...]:
    if q.probe in ("presence", "match"):
        return (True, False)
    if q.probe == "sync":
        return SYNC_VALUES
    if q.probe == "source":
        return q.labels
    return ()


def parse_choice(question: Question, choice: str) -> Parsed:
    """The value of one of ``question.choices`` (case and surrounding space ignored), for log-prob scoring."""
    if not question.choices:
        return _invalid(question.probe, f"{question.probe} questions have no choices to score")
    key = choice.strip().casefold()
    for allowed, value in zip(question.choices, _choice_values(question), strict=True):
        if allowed.casefold() == key:
            return Parsed(question.probe, value, True)
    return _invalid(question.probe, f"{_quote(choice)} is not one of the choices {question.choices}")


def _seconds_text(value: float, *, signed: bool) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected a finite number of seconds, got {value!r}")
    rounded = round(float(value), TIME_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    if rounded < 0 and not signed:
        raise ValueError(f"a time from the start cannot be negative, got {value!r}")
    number = f"{rounded:.{TIME_DECIMALS}f}".rstrip("0").rstrip(".")
    return f"{number} {'second' if abs(rounded) == 1 else 'seconds'}"


def value_text(question: Question, value: bool | str | float | None) -> str:
    """A short answer stating ``value`` in the format ``question`` asks for; ``parse`` reads it back.

    Seconds are rounded to ``TIME_DECIMALS`` places. Raises ``ValueError`` for a
    value the probe cannot have (a programming error, never model output).
    """
    probe = question.probe
    if probe in ("presence", "match"):
        if not isinstance(value, bool):
            raise ValueError(f"{probe} values are bools, got {value!r}")
        return "Yes." if value else "No."
    if probe == "sync":
        if value not in SYNC_VALUES:
            raise ValueError(f"sync values are {SYNC_VALUES}, got {value!r}")
        return _SYNC_CHOICES[SYNC_VALUES.index(value)].capitalize() + "."
    if probe == "source":
        if value not in question.labels:
            raise ValueError(f"{value!r} is not one of this question's labels {question.labels}")
        return question.choices[question.labels.index(value)]
    if probe == "sound_time" and value is None:
        return "None."
    if value is None or isinstance(value, str):
        raise ValueError(f"{probe} values are seconds, got {value!r}")
    return _seconds_text(value, signed=probe == "offset")


# --- text preparation -----------------------------------------------------------------------------------------------

_QUOTE_LIMIT = 60


def _quote(text: str) -> str:
    flat = " ".join(str(text).split())
    return f'"{flat if len(flat) <= _QUOTE_LIMIT else flat[: _QUOTE_LIMIT - 1] + "…"}"'


def _invalid(probe: ProbeKind, reason: str) -> Parsed:
    return Parsed(probe, None, False, reason)


_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.S | re.I)  # reasoning models' scratchpad is not the answer
_JSON_OBJECT = re.compile(r"\{.*\}", re.S)
_JSON_KEYS = ("answer", "value", "response", "result", "choice", "option", "label", "time", "offset", "seconds")
_JSON_PAIR = re.compile(
    r"""["']?(?P<key>answer|value|response|result|choice|option|label|time|offset|seconds)["']?\s*:\s*"""
    r"""(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^,}\n]+))""",
    re.I,
)
_ANSWER_MARKER = re.compile(r"\b(?:final\s+|correct\s+|my\s+)?answer\s*(?:is\s*:?|:|=)\s*", re.I)
_TRANSLATE = str.maketrans(
    {"’": "'", "‘": "'", "“": '"', "”": '"', "−": "-", "–": "-", "—": " - ", "_": " ", "*": "", "`": "", "#": ""}
)
_FILLER = re.compile(
    r"^(?:(?:well|sure|okay|ok|so|hmm|alright|certainly|assistant|response)\s*[,:.!-]\s*"
    r"|(?:i\s+(?:think|believe|guess|would\s+say|'d\s+say)|it\s+(?:seems|appears|looks|sounds)(?:\s+like|\s+that)?"
    r"|based\s+on\s+[^,]{0,60},|after\s+(?:watching|listening|viewing)[^,]{0,60},"
    r"|in\s+(?:this|the)\s+(?:video|clip),)\s*)"
)


def _json_value(obj: object) -> str | None:
    if isinstance(obj, bool):
        return "yes" if obj else "no"
    if obj is None:
        return "none"
    if isinstance(obj, (int, float, str)):
        return str(obj)
    if isinstance(obj, list) and len(obj) == 1:
        return _json_value(obj[0])
    if isinstance(obj, dict):
        lowered = {str(k).lower(): v for k, v in obj.items()}
        for key in _JSON_KEYS:
            if key in lowered:
                return _json_value(lowered[key])
        if len(lowered) == 1:
            return _json_value(next(iter(lowered.values())))
    return None


def _unwrap_json(text: str) -> str:
    """The answer field of a JSON-ish reply (``{"answer": "yes"}``, single quotes too); else the text."""
    found = _JSON_OBJECT.search(text)
    if found is None:
        return text
    raw = found.group(0)
    for candidate in (raw, raw.replace("'", '"')):
        try:
            value = _json_value(json.loads(candidate))
        except ValueError:
            continue
        return text if value is None else value
    pair = _JSON_PAIR.search(raw)
    if pair is None:
        return text
    return next(g for g in (pair.group("dq"), pair.group("sq"), pair.group("bare")) if g is not None)


def _prepare(text: str) -> str:
    """Lower-cased answer text without reasoning, JSON wrapping, markdown, "the answer is" or leading filler."""
    text = _unwrap_json(_THINK.sub(" ", str(text)))
    markers = list(_ANSWER_MARKER.finditer(text))
    if markers and text[markers[-1].end() :].strip():
        text = text[markers[-1].end() :]
    text = " ".join(text.translate(_TRANSLATE).lower().split()).strip(" \"'")
    while True:
        stripped = _FILLER.sub("", text, count=1).strip(" \"'")
        if stripped == text:
            return text
        text = stripped


# --- yes / no -------------------------------------------------------------------------------------------------------

_LEADING_YES = re.compile(r"^(?:yes|yeah|yep|yup|true|correct|affirmative)\b")
# A leading "no" is an answer only before punctuation or a new clause: "no sound" / "no delay" are noun phrases.
_LEADING_NO = re.compile(
    r"^(?:nope|false|negative)\b|^no\b(?=\s*(?:$|[.,!;:)-]|(?:it|it's|its|they|there|the|this|that|i|we|you)\b))"
)
_BARE_YES = re.compile(r"\byes\b")
_BARE_NO = re.compile(r"\bno\b(?=\s*(?:$|[.,!;:)]))")
_NEGATOR = r"(?:\bnot|n't|\bnever|\bcannot|\bno\s+longer)"
_SOUND_NOUN = r"(?:sounds?|audio|noises?|thud|clap|bang|bark\w*|ring\w*|crash|music|speech|voices?)"
# Naming a sound says there is one: "A loud thud." answers "is there any sound?".
_EVENT_SOUND = (
    r"\b(?:thud\w*|thump\w*|clap\w*|bang\w*|bark\w*|ringing|chim\w*|crash\w*|slam\w*|shatter\w*|music|speech)\b"
)

_PRESENCE_NOT_SILENT = re.compile(rf"{_NEGATOR}\s+(?:\w+\s+){{0,2}}?(?:silent|silence|muted?|inaudible)\b")
_PRESENCE_NEGATIVE = re.compile(
    r"\bno\s+(?:\w+\s+){0,2}?(?:sounds?|audio|noises?)\b"
    rf"|{_NEGATOR}\s+(?:\w+\s+){{0,3}}?(?:any\s+)?(?:sounds?|audio|noises?|hear\w*|audible|anything)\b"
    r"|\bsilen(?:t|ce)\b|\bmuted?\b|\binaudible\b|\bwithout\s+(?:any\s+)?(?:sound|audio)\b"
    r"|\bnothing\s+(?:\w+\s+){0,2}?(?:heard|audible|hear)\b|\b(?:audio|sound)\s+track\s+is\s+empty\b"
)
_PRESENCE_POSITIVE = re.compile(
    rf"\bthere\s+(?:is|are|'s)\s+(?:\w+\s+){{0,3}}?{_SOUND_NOUN}\b"
    r"|\b(?:i|we|you|one)\s+(?:can\s+)?(?:clearly\s+)?hear\b|\b(?:is|are|can\s+be)\s+(?:clearly\s+)?heard\b"
    r"|\baudible\b"
    rf"|\b(?:contains?|has|have|includes?)\s+(?:\w+\s+){{0,2}}?{_SOUND_NOUN}\b"
    r"|\b(?:sounds?|audio|noise)\s+(?:of|is\s+present|present)\b"
    rf"|{_EVENT_SOUND}"
)
_MATCH_WORD = r"(?:match\w*|fit\w*|consistent|correspond\w*|plausible|appropriate|make\s+sense|belong\w*|right)"
_MATCH_NOT_MISMATCHED = re.compile(
    rf"(?:{_NEGATOR}|\bno)\s+(?:\w+\s+){{0,2}}?(?:mismatch\w*|inconsistent|incongruent|unrelated|wrong)\b"
)
_MATCH_NEGATIVE = re.compile(
    rf"{_NEGATOR}\s+(?:\w+\s+){{0,3}}?{_MATCH_WORD}\b"
    r"|\bmismatch\w*|\binconsistent\b|\bincongruent\b|\bunrelated\b|\bwrong\s+(?:kind\s+of\s+)?sound\b"
    r"|\bno\s+match\b"
)
_MATCH_POSITIVE = re.compile(
    r"\bmatch(?:es|ed|ing)?\b|\bfits?\b|\bconsistent\b|\bcorrespond\w*|\bplausible\b|\bmakes\s+sense\b"
    r"|\bappropriate\b|\bcongruent\b"
)


def _leading_yes_no(text: str) -> bool | None:
    if _LEADING_YES.search(text):
        return True
    if _LEADING_NO.search(text):
        return False
    return None


def _yes_no(
    probe: ProbeKind, text: str, raw: str, phrases: tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]
) -> Parsed:
    """``phrases``: negated negatives (positive), negatives, positives, each cut out before the next is looked for."""
    leading = _leading_yes_no(text)
    if leading is not None:
        return Parsed(probe, leading, True)
    # Cut in order so each phrase counts once: "not silent" is not "silent", "no sound" is not "sound".
    double_negative, negative, positive = phrases
    rest, n_double = double_negative.subn(" , ", text)
    rest, n_negative = negative.subn(" , ", rest)
    n_positive = n_double + len(positive.findall(rest))
    if n_negative and n_positive:
        return _invalid(probe, f"both a yes and a no in {_quote(raw)}")
    if n_negative or n_positive:
        return Parsed(probe, n_positive > 0, True)
    says_yes, says_no = bool(_BARE_YES.search(text)), bool(_BARE_NO.search(text))
    if says_yes != says_no:
        return Parsed(probe, says_yes, True)
    return _invalid(probe, f"no yes/no found in {_quote(raw)}")


# --- sync evidence --------------------------------------------------------------------------------------------------

_SYNC_CORE = (
    r"(?:in[\s-]+sync\w*|synchron\w*|synced|aligned|simultaneous\w*|at\s+the\s+same\s+(?:time|moment)|coincid\w*"
    r"|lined?\s+up|lines\s+up|match(?:es)?\s+up|in\s+time)"
)
_SYNC_NEGATED = re.compile(
    rf"{_NEGATOR}\s+(?:\w+\s+){{0,3}}?{_SYNC_CORE}"
    r"|\bout[\s-]+of[\s-]+(?:sync\w*|step|time)\b|\bsync\w*\s+(?:issues?|problems?|errors?)\b"
    r"|\b(?:un|de|non-?|a)synchron\w*|\bdesync\w*|\bmis-?aligned\b"
    r"|\boff\s+sync\b"
)
_SYNC_POSITIVE = re.compile(
    rf"\b{_SYNC_CORE}\b|\bno\s+(?:\w+\s+)?(?:offset|delay|lag|shift|gap)\b|\bzero\s+(?:offset|delay|lag)\b"
    r"|\b(?:exactly|right)\s+when\b|\bsame\s+time\b"
)
_SYNC_MISMATCH = re.compile(r"\b(?:offset|mismatch|discrepancy)\b")
_LATE = r"delay(?:ed|s)?|late|later|lag(?:s|ging|ged)?|behind|after|afterwards|trail(?:s|ing)?|follows?"
_EARLY = r"early|earlier|ahead|before|beforehand|lead(?:s|ing)?|precede[sd]?|preceding|too\s+soon|prior|in\s+advance"
_DIRECTION = re.compile(rf"\b(?:(?P<late>{_LATE})|(?P<early>{_EARLY}))\b")
_DIRECTION_NEGATED = re.compile(
    rf"(?:{_NEGATOR}|\bneither|\bnor)\s+(?:\w+\s+){{0,2}}?(?:{_LATE}|{_EARLY})\b"
    rf"(?:\s+(?:or|nor)\s+(?:\w+\s+)?(?:{_LATE}|{_EARLY})\b)?"
)
_AUDIO_WORDS = _words(
    "audio sound sounds soundtrack noise thud thump clap bang bark barking ring ringing chime crash slam "
    "hear hears heard hearing"
)
_VISUAL_WORDS = _words(
    "video picture image images visual visuals frame frames footage action event motion movement impact "
    "screen see sees seen visible shown lips mouth"
)
_CLAUSE_BREAK = re.compile(r"[;:!?,()\n]|(?<!\d)\.|\.(?!\d)")
_WORD = re.compile(r"[a-z']+")


@dataclass(frozen=True)
class _SyncEvidence:
    in_sync: bool
    out_of_sync: bool
    delayed: bool
    early: bool


def _stream_of(before: list[str], after: list[str]) -> str:
    """Which stream a direction word is about: the nearest subject before it, else the opposite of its object."""
    for i in range(len(before) - 1, -1, -1):
        word = before[i]
        # "the sound of the impact comes late" is about the sound: skip nouns inside an "of" phrase.
        inside_of = (i >= 1 and before[i - 1] == "of") or (i >= 2 and before[i - 2] == "of")
        if inside_of:
            continue
        if word in _AUDIO_WORDS:
            return "audio"
        if word in _VISUAL_WORDS:
            return "visual"
    for word in after:
        if word in _AUDIO_WORDS:
            return "visual"  # "the glass shatters before the crash": the subject is the picture
        if word in _VISUAL_WORDS:
            return "audio"
    return "audio"  # "out of sync, delayed" / "1.5 seconds ahead": answers are about the audio by default


def _sync_evidence(text: str) -> _SyncEvidence:
    # Spans are cut out in order so each phrase counts once: "not in sync" is not also "in sync",
    # "no delay" is not also "delay", "not late" is no direction at all.
    rest, n_negated = _SYNC_NEGATED.subn(" , ", text)
    rest, n_positive = _SYNC_POSITIVE.subn(" , ", rest)
    rest = _DIRECTION_NEGATED.sub(" , ", rest)
    out_of_sync = n_negated > 0 or bool(_SYNC_MISMATCH.search(rest))
    delayed = early = False
    for clause in _CLAUSE_BREAK.split(rest):
        for found in _DIRECTION.finditer(clause):
            stream = _stream_of(_WORD.findall(clause[: found.start()]), _WORD.findall(clause[found.end() :]))
            late = (found.group("late") is not None) == (stream == "audio")
            delayed, early = delayed or late, early or not late
    return _SyncEvidence(in_sync=n_positive > 0, out_of_sync=out_of_sync, delayed=delayed, early=early)


def _parse_sync(q: Question, text: str, raw: str) -> Parsed:
    evidence = _sync_evidence(text)
    leading = _leading_yes_no(text)
    in_sync = evidence.in_sync or leading is True
    out_of_sync = evidence.out_of_sync or leading is False
    if evidence.delayed and evidence.early:
        return _invalid(q.probe, f"says both audio delayed and audio early in {_quote(raw)}")
    direction = "audio_delayed" if evidence.delayed else "audio_early" if evidence.early else None
    if direction is not None and in_sync:
        return _invalid(q.probe, f"says both synchronized and {direction.replace('_', ' ')} in {_quote(raw)}")
    if direction is not None:
        return Parsed(q.probe, direction, True)
    if in_sync and out_of_sync:
        return _invalid(q.probe, f"says both in sync and out of sync in {_quote(raw)}")
    if in_sync:
        return Parsed(q.probe, "synchronized", True)
    if out_of_sync:
        return _invalid(q.probe, f"out of sync but the direction (audio delayed or early) is unknown: {_quote(raw)}")
    return _invalid(q.probe, f"no synchronized / audio delayed / audio early found in {_quote(raw)}")


# --- seconds --------------------------------------------------------------------------------------------------------

_NUMBER_WORDS = dict(
    zip(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"), range(11), strict=True)
)
_NUMBER_WORD = rf"\b(?P<word>{'|'.join(_NUMBER_WORDS)})"
_WORD_REWRITES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(rf"{_NUMBER_WORD}\s+and\s+a\s+half\b"), lambda m: f"{_NUMBER_WORDS[m['word']] + 0.5}"),
    (re.compile(r"\b(?:a\s+)?half\s+(?:of\s+)?a\s+second\b|\ba\s+half\s+second\b"), lambda m: "0.5 seconds"),
    (re.compile(r"\b(?:a\s+)?quarter\s+(?:of\s+)?a\s+second\b"), lambda m: "0.25 seconds"),
    (re.compile(rf"{_NUMBER_WORD}(?=\s+(?:full\s+)?(?:milli)?seconds?\b)"), lambda m: str(_NUMBER_WORDS[m["word"]])),
    (
        re.compile(
            r"\b(?P<cue>about|around|roughly|approximately|nearly|almost|over|under|within|than|by|just|after)"
            r"\s+(?:a|one)\s+(?:full\s+)?second\b"
        ),
        lambda m: f"{m['cue']} 1 second",
    ),
)
_TIMESTAMP = re.compile(r"(?<![\d:.])(?:(?P<h>\d{1,2}):)?(?P<m>\d{1,2}):(?P<s>\d{2}(?:\.\d+)?)(?![\d:])")
_UNIT = r"(?:milliseconds?|millisecs?|msecs?|ms|seconds?|secs?|s|minutes?|mins?|frames?|fps|hz|khz|db|%)"
_RANGE = re.compile(
    rf"(?:\bbetween\s+(?P<a1>\d+(?:\.\d+)?)\s*{_UNIT}?\s+and\s+(?P<b1>\d+(?:\.\d+)?)"
    rf"|(?<![\w.])(?P<a2>\d+(?:\.\d+)?)\s*{_UNIT}?\s*(?:-|to)\s*(?P<b2>\d+(?:\.\d+)?))(?![\d.])"
)
# A number glued to letters is no number ("3rd", "2.7ited"); the lookahead refuses ".7" too, so that a
# decimal is never read as its integer part.
_NUMBER = re.compile(
    rf"(?<![\w.])(?P<sign>[+-]?)(?P<num>\d+(?:\.\d+)?|\.\d+)(?:\s*-?\s*(?P<unit>{_UNIT}))?(?![a-z0-9]|\.\d)"
)
_NOT_SECONDS = re.compile(r"^(?:frames?|fps|hz|khz|db|%)$")
_NOT_A_TIME_BEFORE = re.compile(r"(?:frame|frames|option|step|number|no\.)\s*$")
_TIME_CUE = re.compile(r"(?:\bat|\baround|\babout|\bapproximately|\broughly|~|@|\bnear)\s*(?:the\s+)?$")
_OFFSET_CUE = re.compile(
    r"(?:\bby|\bof|\boffset|\bdelay|\blag|\boff|\bshift)\s*(?:about|around|approximately|roughly|~|some|nearly|almost)?\s*$"
)
_UNIT_SCALE = {"ms": 1e-3, "mil": 1e-3, "mse": 1e-3, "min": 60.0}  # by the unit's first three letters


@dataclass(frozen=True)
class _Seconds:
    value: float | None  # None: no number in the text
    reason: str = ""  # non-empty: numbers there, but no single answer among them


def _unit_scale(unit: str | None) -> float:
    return 1.0 if unit is None else _UNIT_SCALE.get(unit[:3], 1.0)


def _midpoint(m: re.Match[str]) -> str:
    a, b = (m["a1"], m["b1"]) if m["a1"] is not None else (m["a2"], m["b2"])
    return str((float(a) + float(b)) / 2)


def _find_seconds(text: str, cue: re.Pattern[str], raw: str) -> _Seconds:
    """The one number of seconds ``text`` states; several different ones are narrowed to those after ``cue``."""
    for pattern, rewrite in _WORD_REWRITES:
        text = pattern.sub(rewrite, text)
    text = _TIMESTAMP.sub(lambda m: f"{int(m['h'] or 0) * 3600 + int(m['m']) * 60 + float(m['s'])} seconds", text)
    text = _RANGE.sub(_midpoint, text)  # "0.3-0.5 s", "between 1 and 2 seconds": the middle
    found: list[tuple[float, bool]] = []  # (seconds, preceded by the cue)
    skipped: list[str] = []
    for m in _NUMBER.finditer(text):
        unit, before = m["unit"], text[max(0, m.start() - 30) : m.start()]
        if (unit is not None and _NOT_SECONDS.match(unit)) or _NOT_A_TIME_BEFORE.search(before):
            skipped.append(m.group(0).strip())
            continue
        value = float(m["num"]) * _unit_scale(unit) * (-1.0 if m["sign"] == "-" else 1.0)
        found.append((value, bool(cue.search(before))))
    if not found:
        if skipped:
            return _Seconds(None, f"no number of seconds, only {', '.join(skipped)}, in {_quote(raw)}")
        return _Seconds(None)
    distinct = sorted({round(v, 9) for v, _ in found})
    if len(distinct) > 1:
        cued = sorted({round(v, 9) for v, is_cued in found if is_cued})
        if len(cued) != 1:
            listed = ", ".join(f"{v:g}" for v in distinct)
            return _Seconds(None, f"several different numbers ({listed}) in {_quote(raw)}")
        distinct = cued
    return _Seconds(distinct[0] + 0.0)


def _parse_offset(q: Question, text: str, raw: str) -> Parsed:
    seconds = _find_seconds(text, _OFFSET_CUE, raw)
    if seconds.reason:
        return _invalid(q.probe, seconds.reason)
    evidence = _sync_evidence(text)
    if evidence.delayed and evidence.early:
        return _invalid(q.probe, f"says both audio delayed and audio early in {_quote(raw)}")
    if seconds.value is None:
        if evidence.in_sync and not (evidence.out_of_sync or evidence.delayed or evidence.early):
            return Parsed(q.probe, 0.0, True)
        return _invalid(q.probe, f"no number of seconds found in {_quote(raw)}")
    # Words beat the sign: "300 ms early" is -0.3 and so is "-0.3 s (audio early)".
    if evidence.delayed:
        return Parsed(q.probe, abs(seconds.value), True)
    if evidence.early:
        return Parsed(q.probe, -abs(seconds.value) + 0.0, True)
    return Parsed(q.probe, seconds.value, True)


_NO_SOUND_TIME = re.compile(
    r"\bno\s+(?:\w+\s+){0,2}?(?:sounds?|audio|noises?)\b|\bnone\b|\bnever\b|\bnothing\b|\bn/?a\b|\bnull\b"
    rf"|\bsilen(?:t|ce)\b|\bmuted?\b|\binaudible\b|{_NEGATOR}\s+(?:\w+\s+){{0,2}}?(?:heard|audible|hear)\b|^no\b"
)


def _parse_time(q: Question, text: str, raw: str) -> Parsed:
    seconds = _find_seconds(text, _TIME_CUE, raw)
    if seconds.reason:
        return _invalid(q.probe, seconds.reason)
    if seconds.value is None:
        says_none = bool(_NO_SOUND_TIME.search(text))
        if says_none and q.probe == "sound_time":
            return Parsed(q.probe, None, True)
        if says_none:
            return _invalid(q.probe, f"the visible event needs a time, but the answer says none: {_quote(raw)}")
        return _invalid(q.probe, f"no time in seconds found in {_quote(raw)}")
    if seconds.value < 0:
        return _invalid(q.probe, f"a time from the start cannot be negative: {_quote(raw)}")
    return Parsed(q.probe, seconds.value, True)


# --- source ---------------------------------------------------------------------------------------------------------

# Words that name each class's sound. A second tier names its visible source ("a dog"): used
# only when no sound word is found, since an answer may describe the picture as well.
_SOUND_WORDS: dict[str, tuple[str, ...]] = {
    "thud": (r"thud\w*", r"thump\w*", r"object\s+hitting\s+the\s+floor"),
    "clap": (r"clap\w*", r"applause"),
    "door": (r"doors?", r"slam\w*"),
    "bell": (r"bells?", r"ring(?:s|ing)?", r"chim(?:e|es|ing)"),
    "glass": (r"glass\w*", r"shatter\w*", r"smash\w*"),
    "bark": (r"bark\w*", r"woof\w*"),
    NO_SOUND: (
        r"no\s+(?:\w+\s+){0,2}?(?:sounds?|audio|noises?)",
        r"none",
        r"nothing",
        r"silen(?:t|ce)",
        r"inaudible",
        r"mute[sd]?",
        r"(?:can\s*not|can't|don't|do\s+not)\s+hear\s+anything",
    ),
}
_SOURCE_HINTS: dict[str, tuple[str, ...]] = {"bark": (r"dogs?",), "clap": (r"hands",)}
_LABEL_NEGATORS = _words("not no never neither nor without instead rather")
_LETTER_PATTERNS = (
    re.compile(r"^[(\[]?(?P<l>[a-z])[)\]]?[.:!]?$"),  # the whole answer: "B", "(b)", "B."
    re.compile(r"(?<!\w)[(\[](?P<l>[a-z])[)\]]"),  # "(B)" anywhere, but not "sound(s)"
    re.compile(r"^(?P<l>[a-z])\s*[).:-]\s"),  # "B) a hand clap", "B. clap", "B - clap"
    re.compile(r"\b(?:option|choice|letter)\s+(?P<l>[a-z])\b"),
)


@lru_cache(maxsize=64)
def _label_patterns(labels: tuple[str, ...], tier: str) -> tuple[tuple[str, re.Pattern[str]], ...]:
    table = _SOUND_WORDS if tier == "sound" else _SOURCE_HINTS
    patterns = []
    for label in labels:
        words = list(table.get(label, ()))
        if tier == "sound" and label not in table:  # an unknown class is recognized by its own name
            words.append(re.escape(label.replace("_", " ").lower()) + r"\w*")
        if words:
            patterns.append((label, re.compile(rf"\b(?:{'|'.join(words)})\b")))
    return tuple(patterns)


def _negated_before(text: str, start: int) -> bool:
    clause = _CLAUSE_BREAK.split(text[max(0, start - 60) : start])[-1]  # the last few words are enough
    return any(w in _LABEL_NEGATORS or w.endswith("n't") for w in _WORD.findall(clause)[-4:])


def _mentioned(text: str, labels: tuple[str, ...], tier: str) -> set[str]:
    return {
        label
        for label, pattern in _label_patterns(labels, tier)
        for m in pattern.finditer(text)
        if not _negated_before(text, m.start())
    }


def _parse_source(q: Question, text: str, raw: str) -> Parsed:
    labels = q.labels
    letters = {m["l"] for pattern in _LETTER_PATTERNS for m in pattern.finditer(text)}
    offered = {letter for letter in letters if ord(letter) - ord("a") < len(labels)}
    chosen = {labels[ord(letter) - ord("a")] for letter in offered}
    named = _mentioned(text, labels, "sound") or _mentioned(text, labels, "hint")
    if len(chosen) > 1:
        return _invalid(q.probe, f"several options ({', '.join(sorted(chosen))}) in {_quote(raw)}")
    if chosen and named and named != chosen:
        return _invalid(
            q.probe, f"option {next(iter(chosen))!r} contradicts {', '.join(sorted(named))} in {_quote(raw)}"
        )
    if chosen:
        return Parsed(q.probe, next(iter(chosen)), True)
    if len(named) > 1:
        return _invalid(q.probe, f"several sounds ({', '.join(sorted(named))}) in {_quote(raw)}")
    if named:
        return Parsed(q.probe, next(iter(named)), True)
    if letters:
        listed = ", ".join(sorted(letter.upper() for letter in letters))
        return _invalid(
            q.probe, f"option {listed} is not offered (A-{_OPTION_LETTERS[len(labels) - 1]}): {_quote(raw)}"
        )
    return _invalid(q.probe, f"no option letter or sound name found in {_quote(raw)}")


# --- dispatch -------------------------------------------------------------------------------------------------------


def _parse_presence(q: Question, text: str, raw: str) -> Parsed:
    return _yes_no(q.probe, text, raw, (_PRESENCE_NOT_SILENT, _PRESENCE_NEGATIVE, _PRESENCE_POSITIVE))


def _parse_match(q: Question, text: str, raw: str) -> Parsed:
    return _yes_no(q.probe, text, raw, (_MATCH_NOT_MISMATCHED, _MATCH_NEGATIVE, _MATCH_POSITIVE))


_PARSERS: dict[ProbeKind, Callable[[Question, str, str], Parsed]] = {
    "presence": _parse_presence,
    "sync": _parse_sync,
    "offset": _parse_offset,
    "sound_time": _parse_time,
    "match": _parse_match,
    "source": _parse_source,
    "visual": _parse_time,
}


def parse(question: Question, text: str) -> Parsed:
    """Read a model's free-text answer to ``question``; unreadable answers are ``valid=False`` with a reason."""
    prepared = _prepare(text) if isinstance(text, str) else ""
    if not prepared.strip(" .,!?;:-"):
        return _invalid(question.probe, f"empty answer {_quote(text if isinstance(text, str) else repr(text))}")
    return _PARSERS[question.probe](question, prepared, text)
