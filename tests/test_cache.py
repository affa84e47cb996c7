"""The answer cache: media digests, keys, and the SQLite store shared by several processes."""

from __future__ import annotations

import gc
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest

import thud_mt.cache as cache_module
from helpers import make_clip, run_together
from thud_mt.cache import AnswerCache, CacheError, CacheStats, NullCache, cache_key, media_digest
from thud_mt.clip import Clip, LazyFrames, VideoSource
from thud_mt.errors import MediaNotFoundError, ThudError
from thud_mt.models.base import Answer

# --- media digests ------------------------------------------------------------------------------------------------


def test_the_same_media_under_another_id_or_events_has_the_same_digest() -> None:
    clip = make_clip()
    assert media_digest(clip) == media_digest(clip.replace(id="renamed", events=()))
    assert media_digest(clip) == media_digest(make_clip(clip_id="rebuilt"))  # equal content, new arrays


def test_one_changed_audio_sample_changes_the_digest() -> None:
    clip = make_clip()
    audio = clip.audio.copy()
    audio[1234, 0] += 1e-6
    assert media_digest(clip.replace(audio=audio)) != media_digest(clip)


def test_one_changed_pixel_changes_the_digest() -> None:
    clip = make_clip()
    frames = clip.frames.copy()
    frames[10, 3, 4, 1] ^= 1
    assert media_digest(clip.replace(video=frames)) != media_digest(clip)


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.replace(fps=c.fps * 2),
        lambda c: c.replace(sample_rate=c.sample_rate + 1),
        lambda c: c.replace(audio=c.audio.reshape(-1, 2)),  # same samples, read as stereo
    ],
)
def test_timing_and_layout_are_part_of_the_digest(change: Callable[[Clip], Clip]) -> None:
    clip = make_clip()
    assert media_digest(change(clip)) != media_digest(clip)


def test_frames_are_hashed_once_per_frames_object(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = cache_module._array_digest
    monkeypatch.setattr(cache_module, "_array_digest", lambda frames: calls.append(1) or real(frames))
    clip = make_clip(seed=7)
    for k in range(5):  # five audio edits of one clip share its frames
        media_digest(clip.replace(audio=clip.audio * (k / 5)))
    assert len(calls) == 1


def test_a_dead_frames_object_leaves_the_memo() -> None:
    frames = make_clip(seed=8).frames.copy()
    clip = make_clip(seed=8).replace(video=frames)
    key = id(clip.video)
    media_digest(clip)
    assert key in cache_module._frames_memo
    del clip, frames
    gc.collect()
    assert key not in cache_module._frames_memo


def _source_clip(path: Path, *, start: float = 0.0, audio_scale: float = 1.0) -> Clip:
    """A clip whose frames are a file's stream, behind a loader that must never run."""

    def load() -> np.ndarray:
        raise AssertionError("media_digest decoded the frames")

    base = make_clip()
    source = VideoSource(path, stream_index=0, codec="h264", start=start, end=start + 4.0, n_frames=base.n_frames)
    return base.replace(
        video=LazyFrames(base.n_frames, base.frame_size, load), video_source=source, audio=base.audio * audio_scale
    )


def test_file_backed_frames_are_hashed_from_the_file_without_decoding(tmp_path: Path) -> None:
    path = tmp_path / "source.mp4"
    path.write_bytes(b"compressed stream bytes" * 100)
    digest = media_digest(_source_clip(path))
    assert digest == media_digest(_source_clip(path)), "new LazyFrames, same file and window"
    assert digest != media_digest(_source_clip(path, start=1.0)), "another window of the file"
    assert digest != media_digest(_source_clip(path, audio_scale=0.5)), "the audio still counts"
    path.write_bytes(b"other stream bytes" * 100)
    assert digest != media_digest(_source_clip(path)), "the file changed"


def test_a_vanished_source_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(MediaNotFoundError, match=r"gone\.mp4"):
        media_digest(_source_clip(tmp_path / "gone.mp4"))


# --- keys ---------------------------------------------------------------------------------------------------------

KEY: dict[str, Any] = {
    "fingerprint": "qwen-omni-3b@abc123",
    "probe": "sync",
    "prompt": "Is the sound in sync with the picture?",
    "media": "0" * 64,
    "settings": {"temperature": 0.0, "max_new_tokens": 16},
    "sample": 0,
}


@pytest.mark.parametrize(
    ("component", "other"),
    [
        ("fingerprint", "qwen-omni-3b@def456"),
        ("probe", "presence"),
        ("prompt", "Is the sound in sync with the picture? "),
        ("media", "1" * 64),
        ("settings", {"temperature": 0.7, "max_new_tokens": 16}),
        ("settings", {"temperature": 0.0, "max_new_tokens": 16, "top_p": 0.9}),
        ("sample", 1),
    ],
)
def test_every_key_component_changes_the_key(component: str, other: object) -> None:
    assert cache_key(**(KEY | {component: other})) != cache_key(**KEY)


def test_keys_are_stable_hex_and_ignore_settings_order() -> None:
    key = cache_key(**KEY)
    assert len(key) == 64 and int(key, 16) >= 0
    reordered = KEY | {"settings": MappingProxyType({"max_new_tokens": 16, "temperature": np.float64(0.0)})}
    assert cache_key(**reordered) == key


def test_a_setting_that_is_not_json_is_refused_rather_than_keyed_by_repr() -> None:
    with pytest.raises(TypeError, match=r"settings\.stop"):
        cache_key(**(KEY | {"settings": {"stop": object()}}))


# --- the store ----------------------------------------------------------------------------------------------------


def test_a_stored_answer_comes_back_marked_cached(tmp_path: Path) -> None:
    answer = Answer(
        text="audio_delayed",
        scores={"synchronized": -2.5, "audio_delayed": -0.1, "audio_early": -math.inf},
        meta={"tokens": 3, "shape": (2, 3), "dtype": np.float32(1.5)},
    )
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        assert cache.get("k") is None
        assert cache.put("k", answer) is True
        got = cache.get("k")
        assert got is not None and got.cached and not answer.cached
        assert got.text == "audio_delayed" and got.error is None
        assert got.scores == answer.scores
        assert got.meta == {"tokens": 3, "shape": [2, 3], "dtype": 1.5}
        assert cache.get("other") is None
        assert cache.stats() == CacheStats(hits=1, misses=2, writes=1, skipped=0)


def test_answers_persist_across_opens(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "cache.sqlite"
    with AnswerCache(path) as cache:
        cache.put("k", Answer(text="yes"))
    with AnswerCache(path) as cache:
        got = cache.get("k")
        assert got is not None and got.text == "yes" and got.scores is None
        assert len(cache) == 1


def test_errors_are_never_stored_so_they_are_retried(tmp_path: Path) -> None:
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        assert cache.put("k", Answer(text="", error="HTTP 503")) is False
        assert cache.get("k") is None
        assert len(cache) == 0
        assert cache.stats().skipped == 1 and cache.stats().writes == 0


def test_a_newer_answer_replaces_the_old_one(tmp_path: Path) -> None:
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        cache.put("k", Answer(text="no"))
        cache.put("k", Answer(text="yes"))
        got = cache.get("k")
        assert got is not None and got.text == "yes" and len(cache) == 1


def test_clear_empties_the_store(tmp_path: Path) -> None:
    with AnswerCache(tmp_path / "cache.sqlite") as cache:
        for i in range(3):
            cache.put(f"k{i}", Answer(text=str(i)))
        cache.clear()
        assert len(cache) == 0 and cache.get("k0") is None


def test_the_store_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    AnswerCache(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_corrupt_file_is_a_clear_error_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is not an SQLite database, just some bytes " * 100)
    with pytest.raises(CacheError) as info:
        AnswerCache(path)
    assert isinstance(info.value, ThudError)
    assert str(path) in str(info.value) and "delete it" in str(info.value)


def test_a_cache_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(CacheError, match="format 99"):
        AnswerCache(path)


def test_the_null_cache_stores_nothing() -> None:
    cache = NullCache()
    assert cache.put("k", Answer(text="yes")) is False
    assert cache.get("k") is None
    cache.clear()
    assert cache.stats() == CacheStats(misses=1)


def _write_many(path: str, worker: int, n: int, start: Any) -> None:
    cache = AnswerCache(path)
    start.wait()  # both workers write at the same moment
    for i in range(n):
        cache.put(f"w{worker}-{i}", Answer(text=f"answer {worker} {i}", meta={"i": i}))
        if i % 20 == 0:  # and read one another's rows while writing
            cache.get(f"w{1 - worker}-{i}")
    assert cache.stats().writes == n
    cache.close()


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    run_together(_write_many, (str(path), 0, 200), (str(path), 1, 200))
    with AnswerCache(path) as cache:
        assert len(cache) == 400
        for k in range(2):
            for i in range(200):
                got = cache.get(f"w{k}-{i}")
                assert got is not None and got.text == f"answer {k} {i}" and got.meta == {"i": i}
