"""Session fixtures for the real Debian media set (``thud_mt.corpus.debian``).

They fetch into the default cache (``$THUD_CACHE/debian`` or
``~/.cache/thud-mt/debian``) once per session, and never skip: CI runs on a
fresh machine, so a fetch that fails must show up as an error, not as
quietly missing tests. Under pytest-xdist each worker calls the fetch; a
file lock in the cache makes all but the first find the work done.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from thud_mt.corpus.debian import debian_videos, default_cache_dir, fetch_debian_packages

# The shortest real video the tests may be given: long enough to shift its
# audio by a second either way and still have most of it left.
MIN_VIDEO_S = 5.0


@pytest.fixture(scope="session")
def debian_root() -> Path:
    """The unpacked root of the catalogue's packages (``root/<package>/usr/...``)."""
    return fetch_debian_packages(default_cache_dir(), progress=False)


@pytest.fixture(scope="session")
def debian_video(debian_root: Path) -> Path:
    """A real video with an audio stream, at least ``MIN_VIDEO_S`` long."""
    from thud_mt.media import read_clip

    videos = debian_videos(debian_root)
    for _, _, path in videos:
        if read_clip(path).duration >= MIN_VIDEO_S:
            return path
    raise LookupError(f"no catalogue video lasts {MIN_VIDEO_S} s or more (have {[str(p) for *_, p in videos]})")
