"""Bad media: each problem raises its own ThudError subclass naming the file."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from helpers import make_clip
from thud_mt import (
    CorruptMediaError,
    EmptyMediaError,
    MediaNotFoundError,
    MediaTooLargeError,
    NoAudioStreamError,
    NoVideoStreamError,
    ThudError,
    UnsupportedCodecError,
)
from thud_mt.media import MediaLimits, read_audio, read_clip, write_clip


def _raises(error: type[ThudError], path: Path, **options) -> ThudError:
    with pytest.raises(error) as info:
        read_clip(path, **options)
    assert str(path) in str(info.value)
    return info.value


def _video_only(path: Path, codec: str = "libx264", pix_fmt: str = "yuv420p") -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 24, pix_fmt
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.zeros((24, 32, 3), np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_missing_file(tmp_path: Path) -> None:
    _raises(MediaNotFoundError, tmp_path / "nowhere.mp4")


def test_zero_length_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.touch()
    assert "empty" in str(_raises(EmptyMediaError, path))


def test_not_a_media_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 100)
    _raises(CorruptMediaError, path)


def test_truncated_file(tmp_path: Path) -> None:
    path = write_clip(make_clip(), tmp_path / "whole.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "truncated" in str(_raises(CorruptMediaError, cut))


def test_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
    _raises(NoVideoStreamError, path)
    audio, rate = read_audio(path)  # the same file is fine as a sound
    assert audio.shape == (800, 1) and rate == 8000


def test_no_audio_stream(tmp_path: Path) -> None:
    path = _video_only(tmp_path / "silent-film.mp4")
    assert "no audio stream" in str(_raises(NoAudioStreamError, path))
    clip = read_clip(path, require_audio=False, sample_rate=8000)
    assert clip.audio.shape == (3200, 1) and not clip.audio.any()


def test_undecodable_codec(tmp_path: Path) -> None:
    path = _video_only(tmp_path / "clip.avi", codec="mjpeg", pix_fmt="yuvj420p")
    odd = tmp_path / "odd.avi"
    odd.write_bytes(path.read_bytes().replace(b"MJPG", b"ZZZZ"))  # a FourCC no decoder knows
    _raises(UnsupportedCodecError, odd, require_audio=False)


def test_absurd_frame_size(tmp_path: Path) -> None:
    path = write_clip(make_clip(), tmp_path / "c.mp4")
    assert "pixel limit" in str(_raises(MediaTooLargeError, path, limits=MediaLimits(max_frame_pixels=100)))


def test_absurd_duration_unless_trimmed(tmp_path: Path) -> None:
    path = write_clip(make_clip(duration=4.0), tmp_path / "c.mp4")
    limits = MediaLimits(max_source_seconds=2.0)
    assert "limit" in str(_raises(MediaTooLargeError, path, limits=limits))
    assert read_clip(path, limits=limits, max_duration=1.0).duration == pytest.approx(1.0)


def test_absurd_decoded_size(tmp_path: Path) -> None:
    path = write_clip(make_clip(), tmp_path / "c.mp4")
    _raises(MediaTooLargeError, path, limits=MediaLimits(max_decoded_bytes=1000))
