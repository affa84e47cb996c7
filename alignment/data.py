"""Preference pairs as training data: checked rows, the stage-2 mix, and media decoded when a batch needs it.

A row is one pair with its media paths resolved to absolute paths, so a
``datasets.Dataset`` of rows can be shuffled, sharded and checkpointed without
knowing where each pairs file lives. Pairs are grouped by their ``kind``
field, whichever file they come from. Media are decoded only in the
collator (``MediaReader``): a dataset of thousands of pairs costs no memory
until a batch asks for its clips.
"""

from __future__ import annotations

import json
import random
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.errors import MixError
from thud_mt.errors import ThudError
from thud_mt.pairs import PairsError, PreferencePair, Split, pairs_file, read_pairs

# The columns of a training row (every value a string: datasets stores them as one Arrow table).
ROW_KEYS = (
    "id",
    "kind",
    "category",
    "question",
    "chosen",
    "rejected",
    "video",
    "audio",
    "source_clip",
    "pairs_file",
    "twins",  # a consistency group's other media, JSON [[video, audio], ...]; "" for a plain pair
)


def pair_row(pair: PreferencePair, file: Path) -> dict[str, str]:
    """One training row: the pair's text and its media as absolute paths."""
    folder = file.resolve().parent
    return {
        "id": pair.id,
        "kind": pair.kind,
        "category": pair.category,
        "question": pair.question,
        "chosen": pair.chosen,
        "rejected": pair.rejected,
        "video": str(folder / pair.video),
        "audio": str(folder / pair.audio),
        "source_clip": pair.source_clip,
        "pairs_file": str(file),
        "twins": "",
    }


def consistency_groups(rows: Sequence[dict[str, str]], category: str) -> list[dict[str, str]]:
    """Rows of ``category`` asking one question about one source clip, folded into one row per group.

    The first row keeps its media; the others' media go into ``twins``. The SFT collator encodes every
    member with the same answer, and the trainer makes their answers agree (``sound_invariance``).
    """
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        if row["category"] == category:
            groups.setdefault((row["source_clip"], row["question"]), []).append(row)
    folded = []
    for members in groups.values():
        first, *rest = members
        folded.append({**first, "twins": json.dumps([[r["video"], r["audio"]] for r in rest])})
    return folded


def with_groups(rows: Sequence[dict[str, str]], groups: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """``rows`` with each group's first member (the row whose id the folded group kept) replaced by the group:
    stage 2 learns that member's pair as before, and makes the other members answer alike."""
    folded = {g["id"]: g for g in groups}
    return [folded.get(row["id"], row) for row in rows]


def load_rows(files: Iterable[str | Path], *, split: Split | None = "train") -> list[dict[str, str]]:
    """The rows of every pairs file (a ``pairs.jsonl`` or its folder), schema and media presence checked.

    ``split=None`` keeps both splits (the closed loop holds out whole clips
    instead). A pair id that appears in two files is kept once.
    """
    rows: dict[str, dict[str, str]] = {}
    for given in files:
        file = pairs_file(given)
        for pair in read_pairs(file, split=split):
            rows.setdefault(pair.id, pair_row(pair, file))
    return list(rows.values())


def check_media_readable(rows: Sequence[dict[str, str]]) -> None:
    """Open every distinct media file once, so a corrupt one stops the run before training, not an hour in."""
    from thud_mt.media import read_audio, read_clip

    seen: set[str] = set()
    for row in rows:
        for name in ("video", "audio"):
            path = row[name]
            if path in seen:
                continue
            seen.add(path)
            try:
                if name == "video":
                    read_clip(path, lazy=True)
                else:
                    read_audio(path)
            except ThudError as exc:
                problem = f"pair {row['id']}: its {name} cannot be read: {exc}"
                raise PairsError(row["pairs_file"], None, problem) from exc


def by_kind(rows: Sequence[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(intervention rows, general rows)."""
    return [r for r in rows if r["kind"] == "intervention"], [r for r in rows if r["kind"] == "general"]


@dataclass(frozen=True)
class Mix:
    """The stage-2 training set and what went into it."""

    rows: tuple[dict[str, str], ...]
    intervention: int
    general: int
    ratio: float | None  # the general share asked for; None: every pair of both kinds

    @property
    def general_share(self) -> float:
        return self.general / max(1, len(self.rows))


def mix_pairs(
    intervention: Sequence[dict[str, str]],
    general: Sequence[dict[str, str]],
    ratio: float | None,
    *,
    seed: int = 0,
) -> Mix:
    """Intervention and general pairs with ``ratio`` of the mix general (pairs are dropped, never repeated).

    ``ratio=None`` keeps every pair. A mix with no pairs, a ratio outside
    [0, 1], or one that needs a kind that is missing (or would round one kind
    to nothing) is a ``MixError``.
    """
    n_i, n_g = len(intervention), len(general)
    if not n_i and not n_g:
        raise MixError("the stage-2 mix is empty: the pairs files hold no training pairs")
    if ratio is None:
        return Mix((*intervention, *general), n_i, n_g, None)
    if not 0.0 <= ratio <= 1.0:
        raise MixError(f"--mix-ratio {ratio}: must be between 0 (intervention pairs only) and 1 (general pairs only)")
    where = f"--mix-ratio {ratio:g} (the share of general pairs)"
    if ratio > 0 and not n_g:
        raise MixError(f"{where} needs general pairs, but there are none (pass --general, or --mix-ratio 0)")
    if ratio < 1 and not n_i:
        raise MixError(f"{where} needs intervention pairs, but there are none in --pairs")
    if ratio == 0:
        a, b = n_i, 0
    elif ratio == 1:
        a, b = 0, n_g
    else:
        a, b = n_i, round(n_i * ratio / (1 - ratio))
        if b > n_g:  # too few general pairs: use them all and fewer intervention pairs
            a, b = round(n_g * (1 - ratio) / ratio), n_g
        if a < 1 or b < 1:
            raise MixError(
                f"{where} cannot be met with {n_i} intervention and {n_g} general pairs: "
                f"it would leave {a} intervention and {b} general"
            )
    rng = random.Random(seed)
    chosen_i = rng.sample(list(intervention), a)
    chosen_g = rng.sample(list(general), b)
    return Mix((*chosen_i, *chosen_g), a, b, ratio)


def to_dataset(rows: Sequence[dict[str, str]]) -> Any:
    """A ``datasets.Dataset`` of rows (text and paths only: media are decoded by the collator)."""
    from datasets import Dataset

    if not rows:
        raise MixError("no training pairs to build a dataset from")
    return Dataset.from_list([{k: row[k] for k in ROW_KEYS} for row in rows])


class MediaReader:
    """A pair's media as the model's inputs are made from them: frames from the mp4, sound from the wav.

    The wav is the exact (edited) audio the question was asked about; the
    mp4's AAC track is a lossy copy of it, so it only supplies the picture.
    The last ``cache`` clips stay decoded: epochs and DPO's two completions
    ask for the same clips again.
    """

    def __init__(self, max_frames: int, sample_rate: int, cache: int = 64) -> None:
        self.max_frames = max_frames
        self.sample_rate = sample_rate
        self.cache = cache
        self._media: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()  # dataloader workers are processes, but a trainer may share one reader

    def __call__(self, video: str, audio: str) -> Any:  # -> thud_mt.models.qwen_omni.Media
        key = (video, audio)
        with self._lock:
            if key in self._media:
                self._media.move_to_end(key)
                return self._media[key]
        media = self._read(video, audio)
        with self._lock:
            self._media[key] = media
            while len(self._media) > self.cache:
                self._media.popitem(last=False)
        return media

    def _read(self, video: str, audio: str) -> Any:
        from thud_mt.clip import audio_length_for
        from thud_mt.media import read_audio, read_clip
        from thud_mt.models.qwen_omni import clip_media

        clip = read_clip(video, lazy=True)
        samples, rate = read_audio(audio, sample_rate=self.sample_rate, channels=1)
        # The wav spans the clip; a sample more or less (rounding in a resampler) is evened out here.
        n = audio_length_for(clip.n_frames, clip.fps, rate)
        if len(samples) != n:
            import numpy as np

            samples = np.pad(samples[:n], ((0, max(0, n - len(samples))), (0, 0)))
        return clip_media(clip.replace(audio=samples, sample_rate=rate), self.max_frames, self.sample_rate)
