"""What the relations draw: every edit says something, and the corpus's cases do not all draw alike.

The suites run derandomized with a few draws per case, and Hypothesis seeds every
parametrization of a test alike; these specifications hold the draws to that setting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relations import NO_TRUTH, RelationContext
from relations.base import case_salt, paraphrases, rotated
from relations.options import DEFAULT_OPTIONS
from relations.shift import Shift
from relations.swap import Swap
from relations.truth import truth
from thud_mt.clip import Clip, Event
from thud_mt.errors import InterventionError
from thud_mt.interventions import shift
from thud_mt.probes import N_PARAPHRASES

FPS = 25.0


def clip(index: int, *, seconds: float = 4.0, event_at: float | None = None) -> Clip:
    """A 4 s clip whose sound and picture event coincide, early or late in the clip by ``index``."""
    t = 0.8 + 0.15 * (index % 15) if event_at is None else event_at
    return Clip(
        id=f"clip-{index:03d}",
        video=np.zeros((int(seconds * FPS), 2, 2, 3), np.uint8),
        fps=FPS,
        audio=np.zeros((int(seconds * 16000), 1), np.float32),
        sample_rate=16000,
        events=(Event(label="door", visual_time=t, audio_time=t, sound="slam", description="a door slams"),),
    )


def corpus(n: int = 24) -> list[Clip]:
    return [clip(i) for i in range(n)]


def context(donors: Callable[[Clip], list[str]] = lambda _: []) -> RelationContext:
    return RelationContext(DEFAULT_OPTIONS, clip=lambda _: clip(0), donors=donors)


def draws(make: Callable[[], st.SearchStrategy], n: int) -> list[object]:
    """The values of ``n`` derandomized examples, as the suites draw them (one test function for every case)."""
    found: list[object] = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None)
    @given(st.data())
    def test(data: st.DataObject) -> None:
        found.append(data.draw(make()))

    test()
    return found


def test_every_shift_drawn_for_a_time_probe_is_one_that_must_be_noticed() -> None:
    bound = DEFAULT_OPTIONS.must_detect
    for c in corpus(8):
        for probe in ("offset", "sound_time", "presence", "visual"):
            offsets = [
                p["offset_s"] for p in draws(lambda c=c, probe=probe: Shift().parameters(c, probe, context()), 20)
            ]
            assert offsets, (c.id, probe)
            assert all(abs(d) >= bound - 1e-9 for d in offsets), (c.id, probe, offsets)


def test_every_shift_drawn_for_sync_has_a_right_answer() -> None:
    for c in corpus(8):
        for params in draws(lambda c=c: Shift().parameters(c, "sync", context()), 20):
            assert truth(shift(c, params["offset_s"]), "sync", DEFAULT_OPTIONS) is not NO_TRUTH, (c.id, params)


def test_two_draws_per_clip_ask_about_delayed_early_and_synchronized_audio_across_a_corpus() -> None:
    classes = Counter()
    for c in corpus(24):
        for params in draws(lambda c=c: Shift().parameters(c, "sync", context()), 2):
            classes[truth(shift(c, params["offset_s"]), "sync", DEFAULT_OPTIONS)] += 1
    assert set(classes) == {"audio_delayed", "audio_early", "synchronized"}, classes
    assert min(classes.values()) >= 6, classes  # 48 draws: no class is a rarity


def test_two_draws_per_clip_delay_some_clips_and_advance_others() -> None:
    signs = Counter()
    for c in corpus(24):
        for params in draws(lambda c=c: Shift().parameters(c, "sound_time", context()), 2):
            signs[params["offset_s"] > 0] += 1
    assert signs[True] >= 12 and signs[False] >= 12, signs


def test_the_first_paraphrase_asked_differs_from_case_to_case() -> None:
    first = Counter(draws(lambda c=c: paraphrases("presence", case_salt(c.id, "presence")), 1)[0] for c in corpus(24))
    assert len(first) == N_PARAPHRASES["presence"], first


def test_two_draws_of_a_paraphrase_are_two_questions() -> None:
    for c in corpus(6):
        asked = draws(lambda c=c: paraphrases("presence", case_salt(c.id, "presence")), 2)
        assert len(set(asked)) == 2, (c.id, asked)


def test_the_first_swap_donor_differs_from_clip_to_clip() -> None:
    donors = [f"donor-{k}" for k in range(5)]
    ctx = context(donors=lambda _: donors)
    first = Counter(draws(lambda c=c: Swap().parameters(c, "source", ctx), 1)[0]["donor"] for c in corpus(24))
    assert len(first) >= 4, first


def test_case_salt_is_stable_and_tells_probes_apart() -> None:
    assert case_salt("clip-001", "sync") == case_salt("clip-001", "sync")
    assert case_salt("clip-001", "sync") != case_salt("clip-001", "offset")
    assert rotated(["a", "b", "c"], 4) == ["b", "c", "a"]
    assert rotated([], 3) == []


def test_a_clip_too_short_for_a_noticeable_shift_is_an_error_that_names_it() -> None:
    short = clip(7, seconds=0.6, event_at=0.3)
    with pytest.raises(InterventionError, match="clip-007"):
        Shift().parameters(short, "sound_time", context())
