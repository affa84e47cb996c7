"""Swap donors: which clip's audio may replace a recipient's for the Swap relation.

Swap expects the model to hear a sound that does not fit the picture and to
name the donor's sound. That only tests hearing when the donor's sound is
audibly different: another sound class, not silence, not the same recording.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

from thud_mt.clip import Clip
from thud_mt.errors import DonorError
from thud_mt.signal import normalized_correlation, peak_dbfs, remix, resample

# Rate both audios are brought to before correlating: enough bandwidth to tell
# recordings apart, a third of the work of 48 kHz.
ANALYSIS_RATE = 16_000

# Rejection reasons, in the order they are tested (cheap first).
_SELF = "the recipient itself"
_UNLABELLED = "no labelled sound"
_SHARED = "same sound label"
_SILENT = "silent"
_SAME = "same audio"


def sounds_of(clip: Clip) -> frozenset[str]:
    """The sound classes a clip's events make (``None`` sounds left out)."""
    return frozenset(e.sound for e in clip.events if e.sound is not None)


def eligible_donors(
    recipient: Clip,
    candidates: Sequence[Clip],
    *,
    min_level_dbfs: float = -45.0,
    max_correlation: float = 0.9,
    analysis_rate: int = ANALYSIS_RATE,
) -> list[Clip]:
    """The candidates fit to donate audio to ``recipient``, sorted by id.

    A donor is not the recipient (by id), has at least one labelled sound and
    none in common with the recipient, peaks at ``min_level_dbfs`` or louder,
    and its peak normalised cross-correlation with the recipient's audio
    (mono, at ``analysis_rate``, any lag, any gain or polarity) is below
    ``max_correlation``.
    """
    eligible, _ = _screen(recipient, candidates, min_level_dbfs, max_correlation, analysis_rate)
    return eligible


def select_donor(
    recipient: Clip,
    candidates: Sequence[Clip],
    *,
    seed: int,
    min_level_dbfs: float = -45.0,
    max_correlation: float = 0.9,
    analysis_rate: int = ANALYSIS_RATE,
) -> Clip:
    """One eligible donor, the same for the same seed, recipient id and candidates.

    Raises ``DonorError`` naming the recipient and how many candidates were
    rejected for each reason when none is eligible.
    """
    eligible, rejected = _screen(recipient, candidates, min_level_dbfs, max_correlation, analysis_rate)
    if not eligible:
        raise DonorError(_explain(recipient, len(candidates), rejected, min_level_dbfs, max_correlation))
    # Seeded by the recipient's id too, so recipients of one run do not all get
    # the same draw, yet adding a clip to a corpus does not reshuffle the others'.
    rng = np.random.default_rng([seed % 2**64, _stable_hash(recipient.id)])
    return eligible[int(rng.integers(len(eligible)))]


def _screen(
    recipient: Clip,
    candidates: Sequence[Clip],
    min_level_dbfs: float,
    max_correlation: float,
    analysis_rate: int,
) -> tuple[list[Clip], Counter[str]]:
    """Sort candidates by id and split them into eligible ones and counts of rejections by reason."""
    own_sounds = sounds_of(recipient)
    own_audio: np.ndarray | None = None  # resampled only when a candidate gets that far
    eligible: list[Clip] = []
    rejected: Counter[str] = Counter()
    for clip in sorted(candidates, key=lambda c: c.id):
        sounds = sounds_of(clip)
        if clip.id == recipient.id:
            rejected[_SELF] += 1
        elif not sounds:
            rejected[_UNLABELLED] += 1
        elif sounds & own_sounds:
            rejected[_SHARED] += 1
        elif peak_dbfs(clip.audio) < min_level_dbfs:
            rejected[_SILENT] += 1
        else:
            if own_audio is None:
                own_audio = _analysis_audio(recipient, analysis_rate)
            if abs(normalized_correlation(own_audio, _analysis_audio(clip, analysis_rate))) >= max_correlation:
                rejected[_SAME] += 1
            else:
                eligible.append(clip)
    return eligible, rejected


def _analysis_audio(clip: Clip, rate: int) -> np.ndarray:
    return resample(remix(clip.audio, 1), clip.sample_rate, rate)


def _stable_hash(text: str) -> int:
    # Python's hash() of a str changes per process (PYTHONHASHSEED); sha256 does not.
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _explain(
    recipient: Clip, n_candidates: int, rejected: Counter[str], min_level_dbfs: float, max_correlation: float
) -> str:
    head = f"no swap donor for clip {recipient.id!r}"
    if n_candidates == 0:
        return f"{head}: no candidates given"
    details = {
        _SELF: "same id",
        _UNLABELLED: "no event names a sound",
        _SHARED: ", ".join(sorted(sounds_of(recipient))),
        _SILENT: f"peak below {min_level_dbfs:g} dBFS",
        _SAME: f"correlation >= {max_correlation:g}",
    }
    parts = [f"{reason} ({detail}): {rejected[reason]}" for reason, detail in details.items() if rejected[reason]]
    return f"{head} among {n_candidates} candidates, rejected as {'; '.join(parts)}"
