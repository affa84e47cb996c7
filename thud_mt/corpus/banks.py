"""Choosing the sounds of the built-in corpus: real Debian recordings when present, else synthesized."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from thud_mt.corpus.sounds import SoundBank

BankChoice = Literal["auto", "real", "synth"]


def sound_source(choice: BankChoice, cache: Path | None = None) -> str:
    """The tag ``choose_sound_bank`` would give (``"real"`` or ``"synth"``), without loading or fetching anything."""
    if choice != "auto":
        return choice
    from thud_mt.corpus.debian import debian_media_root

    return "synth" if debian_media_root(cache, fetch=False) is None else "real"


def choose_sound_bank(choice: BankChoice, cache: Path | None = None) -> tuple[SoundBank | None, str]:
    """The bank for ``choice`` and its tag (``"real"`` or ``"synth"``); ``None`` means synthesize.

    ``auto`` uses the real recordings only when the Debian media set is already
    in the cache (no download); ``real`` fetches it if needed.
    """
    if choice == "synth":
        return None, "synth"
    from thud_mt.corpus.debian import debian_media_root, debian_sound_bank

    root = debian_media_root(cache, fetch=choice == "real")
    if root is None:
        return None, "synth"
    return debian_sound_bank(root), "real"
