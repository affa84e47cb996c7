"""Probes: every question states how to answer, and the parsers read what real models write.

Answers a parser cannot read unambiguously must come back invalid with a reason,
never as a guess: a guessed value would turn into a false pass or fail downstream.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thud_mt.corpus.vocabulary import SOUND_CLASSES
from thud_mt.probes import (
    N_PARAPHRASES,
    NO_SOUND,
    PROBE_KINDS,
    SYNC_VALUES,
    TIME_DECIMALS,
    ProbeKind,
    Question,
    parse,
    parse_choice,
    question,
    questions,
    sound_phrase,
    value_text,
)

ALL_QUESTIONS = [q for kind in PROBE_KINDS for q in questions(kind)]

# --- real-looking answers and what they mean --------------------------------------------------------------------------

ANSWERS: dict[ProbeKind, list[tuple[str, object]]] = {
    "presence": [
        ("Yes.", True),
        ("yes, there is a loud thud", True),
        ("**Yes**", True),
        ("I can hear a thud.", True),
        ("A loud thud.", True),
        ("There is a sound of a dog barking.", True),
        ("Based on the video, yes.", True),
        ('{"answer": "yes"}', True),
        ("{'answer': true}", True),
        ("No, there is no audio", False),
        ("There is no sound in this video.", False),
        ("Silence.", False),
        ("The video is silent.", False),
        ("I cannot hear anything.", False),
        ("There isn't any sound.", False),
        ("Nothing can be heard.", False),
        ("No sound.", False),
        ("The answer is no.", False),
        ("<think>There might be a faint hum... yes?</think>No.", False),
    ],
    "sync": [
        ("synchronized", "synchronized"),
        ("Synchronized.", "synchronized"),
        ("The audio and video are in sync", "synchronized"),
        ("Yes, they line up.", "synchronized"),
        ("There is no delay; they are perfectly aligned.", "synchronized"),
        ("The audio is not delayed or early, it is in sync.", "synchronized"),
        ("Audio delayed.", "audio_delayed"),
        ('{"answer": "audio_delayed"}', "audio_delayed"),
        ("The audio lags by about 0.5 seconds", "audio_delayed"),
        ("out of sync, the audio is delayed", "audio_delayed"),
        ("no, it is not synchronized, the audio is late", "audio_delayed"),
        ("The video is ahead of the audio.", "audio_delayed"),
        ("We see the box land before we hear the thud.", "audio_delayed"),
        ("The sound of the impact comes late.", "audio_delayed"),
        ("Audio early.", "audio_early"),
        ("the sound comes before the action", "audio_early"),
        ("audio is ahead", "audio_early"),
        ("The sound is heard slightly before the box hits the floor.", "audio_early"),
        ("Not in sync: the video lags behind the audio.", "audio_early"),
    ],
    "offset": [
        ("0.5", 0.5),
        ("500 ms", 0.5),
        ("+0.3 seconds", 0.3),
        ("the audio lags by about 0.5 seconds", 0.5),
        ("The audio lags by about 0.5 seconds (500 ms).", 0.5),
        ("half a second late", 0.5),
        ("around 0.3-0.5 s delayed", 0.4),
        ("audio is 300 milliseconds early", -0.3),
        ("-0.2 s", -0.2),
        ("1.5 seconds ahead", -1.5),
        ("about a second early", -1.0),
        ("The sound comes 0.4 seconds before the event.", -0.4),
        ("The event happens 0.4 s before the sound.", 0.4),
        ('{"offset": -0.25}', -0.25),
        ("0", 0.0),
        ("in sync", 0.0),
        ("no offset", 0.0),
    ],
    "sound_time": [
        ("at 2.3 seconds", 2.3),
        ("2.3s", 2.3),
        ("00:02.3", 2.3),
        ("The thud is heard at 2.3 s.", 2.3),
        ("around 1 second", 1.0),
        ("At the 2-second mark.", 2.0),
        ("between 1 and 2 seconds", 1.5),
        ("It is heard 1.5 seconds into the video.", 1.5),
        ("one and a half seconds", 1.5),
        ("The sound is heard at 2.3 s, 0.3 seconds after the box starts to fall.", 2.3),
        ("There is no sound", None),
        ("None.", None),
        ('{"time": null}', None),
        ("No sound is heard.", None),
    ],
    "match": [
        ("Yes.", True),
        ("yes, a thud fits a falling box", True),
        ("The sound matches the picture.", True),
        ("It is consistent with the video.", True),
        ("It makes sense.", True),
        ("No.", False),
        ("The sound does not match", False),
        ("No, a bell does not fit a dog.", False),
        ("The audio doesn't fit what is shown.", False),
        ("Mismatch.", False),
        ("The sound is not consistent with the visual.", False),
    ],
    "source": [
        ("(B)", "clap"),
        ("B", "clap"),
        ("b.", "clap"),
        ("B) a hand clap", "clap"),
        ("Answer: E", "glass"),
        ('{"answer": "C"}', "door"),
        ("The answer is (D) a bell ringing.", "bell"),
        ("It sounds like a dog barking", "bark"),
        ("It sounds like a dog.", "bark"),
        ("It's not a bell, it's a dog barking.", "bark"),
        ("It's not silent, I hear a dog barking.", "bark"),
        ("glass", "glass"),
        ("The audio contains glass shattering.", "glass"),
        ("There is no sound", NO_SOUND),
        ("(G) no sound", NO_SOUND),
        ("Silence.", NO_SOUND),
    ],
    "visual": [
        ("at 1.2 seconds", 1.2),
        ("The object lands at 1.2 s", 1.2),
        ("1", 1.0),
        ("00:01.5", 1.5),
        ("0:02", 2.0),
        ("Roughly 2.5 seconds in.", 2.5),
        ("The glass shatters at 2 seconds, but there is no sound.", 2.0),
        ("Around 800 ms.", 0.8),
    ],
}

INVALID: list[tuple[ProbeKind, str, str]] = [
    ("presence", "", "empty answer"),
    ("presence", "   ", "empty answer"),
    ("presence", "Maybe.", 'no yes/no found in "Maybe."'),
    ("presence", "There is no sound, I hear a thud", "both a yes and a no"),
    ("match", "Hmm, hard to say", "no yes/no found"),
    ("sync", "not synchronized", "direction (audio delayed or early) is unknown"),
    ("sync", "No.", "direction (audio delayed or early) is unknown"),
    ("sync", "The audio is early and also delayed", "both audio delayed and audio early"),
    ("sync", "It is in sync, the sound is late", "both synchronized and audio delayed"),
    ("sync", "The audio is neither early nor late.", "no synchronized / audio delayed / audio early"),
    ("offset", "not synchronized", "no number of seconds"),
    ("offset", "somewhere between 1.2 and 1.7, or maybe 3", "several different numbers"),
    ("sound_time", "frame 30", "no number of seconds, only 30"),
    ("sound_time", "-1 s", "cannot be negative"),
    ("sound_time", "1.2 and 1.7", "several different numbers (1.2, 1.7)"),
    ("sound_time", "I am not sure", "no time in seconds"),
    ("source", "(A) or (B)", "several options (clap, thud)"),
    ("source", "a thud and a bell", "several sounds (bell, thud)"),
    ("source", "(B) a dog barking", "option 'clap' contradicts bark"),
    ("source", "Z", "option Z is not offered (A-G)"),
    ("source", "hmm", "no option letter or sound name"),
    ("visual", "none", "the visible event needs a time"),
    ("visual", "I can't tell", "no time in seconds"),
    # A degenerate generation: "2.7" glued to a word is neither 2.7 nor its integer part 2.
    ("visual", "2.7ited. That is when the dog opens its mouth.", "no time in seconds"),
]


@pytest.mark.parametrize(
    ("probe", "text", "expected"),
    [(kind, text, expected) for kind, rows in ANSWERS.items() for text, expected in rows],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_real_answers_parse_to_their_meaning(probe: ProbeKind, text: str, expected: object) -> None:
    for q in questions(probe):  # the parsers do not depend on which paraphrase was asked
        parsed = parse(q, text)
        assert parsed.valid, parsed.reason
        assert parsed.probe == probe
        if isinstance(expected, float):
            assert isinstance(parsed.value, float)
            assert parsed.value == pytest.approx(expected)
        else:
            assert parsed.value == expected
            assert type(parsed.value) is type(expected)


def test_every_kind_has_at_least_eight_table_answers() -> None:
    assert set(ANSWERS) == set(PROBE_KINDS)
    assert all(len(rows) >= 8 for rows in ANSWERS.values())


@pytest.mark.parametrize(("probe", "text", "reason"), INVALID, ids=lambda v: v if isinstance(v, str) else None)
def test_unreadable_or_contradictory_answers_are_invalid(probe: ProbeKind, text: str, reason: str) -> None:
    parsed = parse(question(probe), text)
    assert not parsed.valid
    assert parsed.value is None
    assert reason in parsed.reason


def test_reasons_quote_the_answer_truncated() -> None:
    garbage = "lorem ipsum dolor sit amet " * 20
    parsed = parse(question("presence"), garbage)
    assert not parsed.valid
    assert '"lorem ipsum dolor' in parsed.reason
    assert "…" in parsed.reason
    assert len(parsed.reason) < 120


def test_negation_is_not_its_positive() -> None:
    sync = question("sync")
    assert parse(sync, "in sync").value == "synchronized"
    assert not parse(sync, "not in sync").valid
    assert not parse(sync, "They aren't synchronized.").valid
    assert not parse(sync, "The streams are out of sync.").valid
    assert parse(question("match"), "It does not match.").value is False
    assert parse(question("presence"), "It is not silent.").value is True
    assert parse(question("match"), "There is no mismatch.").value is True


# --- the questions themselves ----------------------------------------------------------------------------------------


def test_every_probe_has_three_or_more_distinct_paraphrases() -> None:
    for kind in PROBE_KINDS:
        qs = questions(kind)
        assert len(qs) == N_PARAPHRASES[kind] >= 3
        assert [q.paraphrase for q in qs] == list(range(len(qs)))
        assert len({q.text for q in qs}) == len(qs)
        assert all(q.probe == kind for q in qs)


@pytest.mark.parametrize("q", ALL_QUESTIONS, ids=lambda q: f"{q.probe}-{q.paraphrase}")
def test_every_paraphrase_states_how_to_answer(q: Question) -> None:
    text = q.text.lower()
    assert "answer" in text or "reply" in text or "give" in text
    if q.probe in ("presence", "match"):
        assert q.choices == ("yes", "no")
        assert "yes" in text and "no" in text
    elif q.probe == "sync":
        assert q.choices == ("synchronized", "audio delayed", "audio early")
        assert all(choice in text for choice in q.choices)
    elif q.probe == "source":
        lines = q.text.splitlines()
        assert list(q.choices) == [line for line in lines if line.startswith("(")]
        assert q.choices[0].startswith("(A) ") and q.choices[-1] == f"({chr(ord('A') + len(q.labels) - 1)}) no sound"
        assert q.labels == (*SOUND_CLASSES, NO_SOUND)
        assert "letter" in text
    else:
        assert q.choices == ()
        assert "seconds" in text
    if q.probe == "offset":
        assert "positive" in text or "0.5" in text
        assert "negative" in text or "-0.5" in text
    if q.probe == "sound_time":
        assert "none" in text
    if q.probe == "visual":
        assert "the object lands" in text and "the dog opens its mouth" in text


def test_source_options_follow_the_labels_given() -> None:
    q = question("source", 1, sound_labels=("bell", "engine", NO_SOUND))
    assert q.labels == ("bell", "engine", NO_SOUND)
    assert q.choices == ("(A) a bell ringing", "(B) engine", "(C) no sound")
    assert parse(q, "B").value == "engine"
    assert parse(q, "It is an engine.").value == "engine"
    assert parse(q, "(C)").value == NO_SOUND
    assert not parse(q, "(D)").valid
    assert sound_phrase("glass") == "glass breaking"


def test_visual_question_names_only_the_moments_of_the_labels_given() -> None:
    q = question("visual", sound_labels=("door",))
    assert "(the door shuts)" in q.text
    assert "dog" not in q.text


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: question("loudness"), "unknown probe kind"),  # type: ignore[arg-type]
        (lambda: question("sync", 3), "paraphrases 0..2"),
        (lambda: question("sync", -1), "paraphrases 0..2"),
        (lambda: question("source", sound_labels=("bell", "bell")), "distinct"),
    ],
)
def test_bad_question_requests_raise(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_questions_are_hashable_values() -> None:
    assert question("source", 2) == question("source", 2)
    assert len({*ALL_QUESTIONS, *ALL_QUESTIONS}) == len(ALL_QUESTIONS)


# --- choices and canonical texts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [q for q in ALL_QUESTIONS if q.choices], ids=lambda q: f"{q.probe}-{q.paraphrase}")
def test_every_choice_has_a_value_and_reads_the_same_as_free_text(q: Question) -> None:
    values = [parse_choice(q, choice) for choice in q.choices]
    assert all(v.valid and v.probe == q.probe for v in values)
    assert len({v.value for v in values}) == len(q.choices)  # no two choices mean the same
    for choice, chosen in zip(q.choices, values, strict=True):
        assert parse_choice(q, f"  {choice.upper()} ").value == chosen.value
        assert parse(q, choice).value == chosen.value
        assert parse(q, value_text(q, chosen.value)).value == chosen.value
    expected = {"presence": [True, False], "match": [True, False], "sync": list(SYNC_VALUES), "source": list(q.labels)}
    assert [v.value for v in values] == expected[q.probe]


def test_parse_choice_rejects_what_was_not_offered() -> None:
    assert not parse_choice(question("presence"), "maybe").valid
    assert "not one of the choices" in parse_choice(question("sync"), "delayed").reason
    assert "no choices" in parse_choice(question("offset"), "0.5").reason


def test_value_texts_are_short_canonical_answers() -> None:
    assert value_text(question("presence"), True) == "Yes."
    assert value_text(question("match"), False) == "No."
    assert value_text(question("sync"), "audio_delayed") == "Audio delayed."
    assert value_text(question("offset"), 0.5) == "0.5 seconds"
    assert value_text(question("offset"), -1.0) == "-1 second"
    assert value_text(question("offset"), -0.0001) == "0 seconds"
    assert value_text(question("sound_time"), None) == "None."
    assert value_text(question("sound_time"), 1.7000000000000002) == "1.7 seconds"
    assert value_text(question("source"), "glass") == "(E) glass breaking"


@pytest.mark.parametrize(
    ("probe", "value"),
    [
        ("presence", "yes"),
        ("sync", "late"),
        ("offset", None),
        ("offset", math.nan),
        ("offset", True),
        ("sound_time", -0.5),
        ("visual", None),
        ("source", "engine"),
    ],
)
def test_value_text_refuses_values_the_probe_cannot_have(probe: ProbeKind, value: object) -> None:
    with pytest.raises(ValueError):
        value_text(question(probe), value)  # type: ignore[arg-type]


SECONDS = st.floats(min_value=0, max_value=3600, allow_nan=False, allow_infinity=False)
LABEL_SETS = st.lists(st.sampled_from((*SOUND_CLASSES, "engine", "siren", "rain")), min_size=1, max_size=8, unique=True)


@st.composite
def question_and_value(draw: st.DrawFn) -> tuple[Question, object]:
    kind = draw(st.sampled_from(PROBE_KINDS))
    q = question(kind, draw(st.integers(0, N_PARAPHRASES[kind] - 1)), sound_labels=draw(LABEL_SETS))
    strategies: dict[ProbeKind, st.SearchStrategy[object]] = {
        "presence": st.booleans(),
        "match": st.booleans(),
        "sync": st.sampled_from(SYNC_VALUES),
        "offset": st.floats(min_value=-3600, max_value=3600, allow_nan=False),
        "sound_time": st.none() | SECONDS,
        "visual": SECONDS,
        "source": st.sampled_from(q.labels),
    }
    return q, draw(strategies[kind])


@given(question_and_value())
def test_value_text_parses_back_to_the_same_value(case: tuple[Question, object]) -> None:
    q, value = case
    parsed = parse(q, value_text(q, value))  # type: ignore[arg-type]
    assert parsed.valid, parsed.reason
    if isinstance(value, float):
        assert parsed.value == round(value, TIME_DECIMALS)
    else:
        assert parsed.value == value


@given(st.sampled_from(ALL_QUESTIONS), st.text(max_size=200))
def test_parsers_never_raise_and_return_typed_values(q: Question, text: str) -> None:
    parsed = parse(q, text)
    assert parsed.probe == q.probe
    if not parsed.valid:
        assert parsed.reason and parsed.value is None
        return
    if q.probe in ("presence", "match"):
        assert isinstance(parsed.value, bool)
    elif q.probe == "sync":
        assert parsed.value in SYNC_VALUES
    elif q.probe == "source":
        assert parsed.value in q.labels
    elif q.probe == "offset":
        assert isinstance(parsed.value, float) and math.isfinite(parsed.value)
    elif q.probe == "sound_time" and parsed.value is None:
        pass
    else:
        assert isinstance(parsed.value, float) and parsed.value >= 0
