"""Swap donors: another sound class, audible, not the same recording; chosen deterministically."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from thud_mt.clip import Clip, Event
from thud_mt.corpus.donors import eligible_donors, select_donor
from thud_mt.errors import DonorError
from thud_mt.signal import resample

RATE = 16_000


def burst(seed: int, rate: int = RATE, seconds: float = 1.0, level: float = 0.5) -> np.ndarray:
    """A decaying noise burst at 0.2 s, different for every seed: a stand-in recording."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    audio = np.zeros(n, np.float32)
    start = int(0.2 * rate)
    tail = np.arange(n - start) / rate
    audio[start:] = level * rng.standard_normal(n - start) * np.exp(-tail / 0.15)
    return np.clip(audio, -1, 1).astype(np.float32)[:, None]


def clip(clip_id: str, sound: str | None, audio: np.ndarray | None = None, rate: int = RATE, seed: int = 0) -> Clip:
    return Clip(
        id=clip_id,
        video=np.zeros((4, 8, 8, 3), np.uint8),
        fps=4.0,
        audio=burst(seed, rate) if audio is None else audio,
        sample_rate=rate,
        events=(Event(f"{sound}_event", 0.2, 0.2, sound),),
    )


RECIPIENT = clip("r", "glass", seed=1)


def ids(clips: list[Clip]) -> list[str]:
    return [c.id for c in clips]


def test_only_a_different_sound_label_qualifies() -> None:
    candidates = [clip("g2", "glass", seed=2), clip("b", "bark", seed=3), RECIPIENT]
    assert select_donor(RECIPIENT, candidates, seed=0).id == "b"


def test_any_shared_label_disqualifies_and_unlabelled_clips_are_no_donors() -> None:
    two_sounds = RECIPIENT.replace(events=(*RECIPIENT.events, Event("dog_barks", 0.5, 0.5, "bark")))
    mixed = clip("mix", "bell", seed=4).replace(events=(Event("x", 0.1, 0.1, "bark"), Event("y", 0.3, 0.3, "bell")))
    mute = clip("mute", None, seed=5)
    clean = clip("clean", "clap", seed=6)
    assert ids(eligible_donors(two_sounds, [mixed, mute, clean])) == ["clean"]


def test_recipient_is_never_its_own_donor_even_as_a_copy() -> None:
    relabelled = clip("r", "bark", seed=99)  # same id, other label and audio: still the recipient
    assert eligible_donors(RECIPIENT, [relabelled]) == []


def test_silent_candidate_is_rejected_at_the_threshold_given() -> None:
    loud = burst(7)
    quiet = clip("quiet", "bark", loud * (10 ** (-50 / 20) / np.abs(loud).max()))  # peaks at -50 dBFS
    zeros = clip("zeros", "clap", np.zeros((RATE, 1), np.float32))
    assert eligible_donors(RECIPIENT, [quiet, zeros]) == []
    assert ids(eligible_donors(RECIPIENT, [quiet, zeros], min_level_dbfs=-70.0)) == ["quiet"]


@pytest.mark.parametrize(
    "disguise",
    [
        pytest.param(lambda a: a, id="same-samples"),
        pytest.param(lambda a: 0.2 * a, id="quieter"),
        pytest.param(lambda a: -a, id="inverted"),
        pytest.param(lambda a: np.roll(a, int(0.1 * RATE), axis=0), id="delayed"),
        pytest.param(lambda a: np.repeat(a, 2, axis=1), id="stereo"),
    ],
)
def test_same_audio_under_another_label_is_rejected(disguise: Callable[[np.ndarray], np.ndarray]) -> None:
    copycat = clip("copy", "bark", disguise(RECIPIENT.audio))
    assert eligible_donors(RECIPIENT, [copycat]) == []
    assert ids(eligible_donors(RECIPIENT, [copycat], max_correlation=1.01)) == ["copy"], (
        "only the correlation refused it"
    )


def test_same_audio_at_another_sample_rate_is_rejected() -> None:
    source = clip("r48", "glass", burst(1, rate=48_000), rate=48_000)
    at_44k = clip("copy", "bark", 0.5 * resample(source.audio, 48_000, 44_100), rate=44_100)
    other = clip("other", "bark", burst(2, rate=44_100), rate=44_100)
    assert ids(eligible_donors(source, [at_44k, other])) == ["other"]


def test_eligible_donors_are_sorted_by_id_whatever_the_input_order() -> None:
    pool = [clip(f"d{i}", "bark", seed=10 + i) for i in (3, 1, 2)]
    assert ids(eligible_donors(RECIPIENT, pool)) == ["d1", "d2", "d3"]


POOL = [clip(f"d{i:02d}", ["bark", "bell", "clap", "door"][i % 4], seed=20 + i) for i in range(8)]


def test_same_seed_same_donor_in_any_candidate_order() -> None:
    first = select_donor(RECIPIENT, POOL, seed=5).id
    assert select_donor(RECIPIENT, POOL, seed=5).id == first
    assert select_donor(RECIPIENT, POOL[::-1], seed=5).id == first


def test_seeds_and_recipients_spread_the_choice() -> None:
    by_seed = {select_donor(RECIPIENT, POOL, seed=s).id for s in range(24)}
    assert len(by_seed) >= 5
    other = RECIPIENT.replace(id="r2")
    by_recipient = [select_donor(r, POOL, seed=s).id for s in range(12) for r in (RECIPIENT, other)]
    assert by_recipient[0::2] != by_recipient[1::2], "the recipient id is part of the seed"


def test_choice_does_not_depend_on_python_hash_randomisation() -> None:
    script = (
        "import numpy as np\n"
        "from thud_mt.clip import Clip, Event\n"
        "from thud_mt.corpus.donors import select_donor\n"
        "def c(i, s):\n"
        "    a = np.random.default_rng(i).standard_normal((1600, 1)).astype(np.float32) * 0.3\n"
        "    return Clip(id=i if isinstance(i, str) else f'd{i}', video=np.zeros((1, 2, 2, 3), np.uint8),"
        " fps=1.0, audio=a, sample_rate=1600, events=(Event('e', 0.0, 0.0, s),))\n"
        "pool = [c(i, 'bark') for i in range(10)]\n"
        "print([select_donor(c(99, 'glass').replace(id=f'rec{k}'), pool, seed=k).id for k in range(10)])\n"
    )
    root = Path(__file__).resolve().parents[1]
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)},
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_no_donor_error_names_recipient_and_counts_each_reason() -> None:
    candidates = [
        RECIPIENT,
        clip("g2", "glass", seed=2),
        clip("g3", "glass", seed=3),
        clip("mute", None, seed=4),
        clip("quiet", "bark", np.zeros((RATE, 1), np.float32)),
        clip("copy", "clap", RECIPIENT.audio),
    ]
    with pytest.raises(DonorError) as info:
        select_donor(RECIPIENT, candidates, seed=0)
    message = str(info.value)
    assert message.startswith("no swap donor for clip 'r' among 6 candidates")
    assert "the recipient itself (same id): 1" in message
    assert "same sound label (glass): 2" in message
    assert "no labelled sound (no event names a sound): 1" in message
    assert "silent (peak below -45 dBFS): 1" in message
    assert "same audio (correlation >= 0.9): 1" in message


def test_no_candidates_at_all() -> None:
    with pytest.raises(DonorError, match="no swap donor for clip 'r': no candidates given"):
        select_donor(RECIPIENT, [], seed=0)
