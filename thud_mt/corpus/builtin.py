"""The built-in corpus: the synthetic scenes, built once into a cache and shared by every command."""

from __future__ import annotations

from pathlib import Path

from thud_mt.corpus.banks import choose_sound_bank, sound_source
from thud_mt.locking import file_lock

BUILTIN_CLIPS = 24


def builtin_corpus(cache_dir: Path, seed: int) -> Path:
    """The manifest of the synthetic corpus, built once per (size, seed, sound source) into ``cache_dir``.

    Sounds are the real Debian recordings when that set is already cached, else
    synthesized; the folder name says which, so the two never mix. A file lock
    lets one pytest-xdist worker build while the others wait.
    """
    # The folder is named from the sound source alone: the bank (decoding every Debian recording) and the
    # builder are loaded only to build, not by each session and pytest-xdist worker that finds the corpus built.
    sounds = sound_source("auto")
    out = cache_dir / "corpus" / f"synth-n{BUILTIN_CLIPS}-s{seed}-{sounds}"
    manifest = out / "manifest.json"
    with file_lock(out.parent / f".{out.name}.lock"):
        if not manifest.is_file():
            from thud_mt.corpus.synth import build_synthetic_corpus

            bank, _ = choose_sound_bank(sounds)  # type: ignore[arg-type]
            build_synthetic_corpus(out, BUILTIN_CLIPS, seed, bank=bank, progress=False)
    return manifest
