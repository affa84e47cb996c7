"""Reading and writing clips: the clock, the formats, the stream copy, the limits."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from helpers import make_clip
from thud_mt.media import read_audio, read_clip, write_clip
from thud_mt.signal import lag_seconds, resample


def test_mp4_round_trip_keeps_audio_on_the_video_clock(tmp_path: Path) -> None:
    clip = make_clip(sample_rate=44100, channels=2, sound_at=1.3)
    back = read_clip(write_clip(clip, tmp_path / "c.mp4"))
    assert back.n_frames == clip.n_frames
    assert back.sample_rate == 44100 and back.n_channels == 2
    assert back.audio.shape == clip.audio.shape
    assert abs(lag_seconds(clip.audio, back.audio, 44100, max_lag_s=0.2)) < 0.001


def test_mp4_is_h264_and_aac_with_movie_timescale_at_the_sample_rate(tmp_path: Path) -> None:
    path = write_clip(make_clip(sample_rate=22050), tmp_path / "c.mp4")
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
        assert container.streams.audio[0].codec_context.name == "aac"
    data = path.read_bytes()
    mvhd = data.index(b"mvhd")
    # mvhd version 0: 4 bytes version/flags, 4 creation, 4 modification, then the timescale.
    assert int.from_bytes(data[mvhd + 16 : mvhd + 20], "big") == 22050


def test_lossless_variant_round_trips_exactly(tmp_path: Path) -> None:
    clip = make_clip(channels=2)
    back = read_clip(write_clip(clip, tmp_path / "c.mkv", lossless=True), lazy=False)
    assert np.array_equal(back.frames, clip.frames)
    assert np.array_equal(back.audio, clip.audio)


def test_frames_are_decoded_lazily_and_once(tmp_path: Path) -> None:
    clip = read_clip(write_clip(make_clip(), tmp_path / "c.mp4"))
    assert clip.n_frames == 100 and clip.frame_size == (24, 32)
    first = clip.frames
    assert first.shape == (100, 24, 32, 3) and first.dtype == np.uint8
    assert clip.frames is first
    assert not first.flags.writeable


def test_unchanged_h264_video_is_copied_not_reencoded(tmp_path: Path) -> None:
    source = write_clip(make_clip(), tmp_path / "src.mp4")
    clip = read_clip(source)
    assert clip.video_source is not None and clip.video_source.codec == "h264"
    copied = write_clip(clip, tmp_path / "copy.mp4")

    def video_packets(path: Path) -> list[bytes]:
        with av.open(str(path)) as container:
            return [bytes(p) for p in container.demux(video=0) if p.size]

    assert video_packets(copied) == video_packets(source)
    assert abs(lag_seconds(clip.audio, read_clip(copied).audio, clip.sample_rate, max_lag_s=0.2)) < 0.001


def test_read_options_resample_fps_size_rate_channels_and_trim(tmp_path: Path) -> None:
    path = write_clip(make_clip(sample_rate=44100, channels=2), tmp_path / "c.mp4")
    clip = read_clip(path, fps=10, size=(16, 12), sample_rate=16000, channels=1, max_duration=1.5)
    assert clip.n_frames == 15 and clip.fps == 10
    assert clip.frames.shape == (15, 12, 16, 3)
    assert clip.audio.shape == (24000, 1) and clip.sample_rate == 16000
    assert clip.video_source is None  # resampled frames cannot be stream-copied


def test_max_side_keeps_aspect_and_even_sizes(tmp_path: Path) -> None:
    path = write_clip(make_clip(size=(64, 48)), tmp_path / "c.mp4")
    assert read_clip(path, max_side=20).frame_size == (16, 20)


def test_sound_onset_survives_resampling_on_read(tmp_path: Path) -> None:
    clip = make_clip(sample_rate=48000, sound_at=2.0)
    back = read_clip(write_clip(clip, tmp_path / "c.mp4"), sample_rate=16000)
    reference = resample(clip.audio, 48000, 16000)
    assert abs(lag_seconds(reference, back.audio, 16000, max_lag_s=0.2)) < 0.001


def test_audio_that_starts_late_is_placed_by_its_timestamp(tmp_path: Path) -> None:
    """A file whose audio pts starts 0.25 s after the first frame: the reader pads, not shifts."""
    path = tmp_path / "late.mkv"
    sr = 16000
    with av.open(str(path), "w", format="matroska") as out:
        v = out.add_stream("ffv1", rate=25)
        v.width, v.height, v.pix_fmt = 32, 24, "bgr0"
        a = out.add_stream("pcm_f32le", rate=sr)
        a.layout = "mono"
        signal = np.zeros(sr, np.float32)
        signal[:400] = 0.5  # a sound at the very start of the audio stream
        frame = av.AudioFrame.from_ndarray(signal.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate, frame.pts = sr, int(0.25 * sr)
        for p in a.encode(frame):
            out.mux(p)
        for p in a.encode(None):
            out.mux(p)
        for i in range(50):
            vf = av.VideoFrame.from_ndarray(np.zeros((24, 32, 3), np.uint8), format="rgb24")
            vf.pts = i
            for p in v.encode(vf):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
    clip = read_clip(path)
    onset = int(np.argmax(np.abs(clip.audio[:, 0]) > 0.1))
    assert abs(onset / sr - 0.25) < 0.001


def test_read_audio_reads_sound_files(tmp_path: Path) -> None:
    clip = make_clip(sample_rate=22050, sound_at=0.5)
    audio, rate = read_audio(write_clip(clip, tmp_path / "c.mkv", lossless=True), sample_rate=8000)
    assert rate == 8000 and audio.shape[1] == 1
    assert abs(int(np.argmax(np.abs(audio[:, 0]))) / 8000 - 0.5) < 0.01


def test_written_file_appears_atomically(tmp_path: Path) -> None:
    target = tmp_path / "c.mp4"
    write_clip(make_clip(), target)
    assert [p.name for p in tmp_path.iterdir()] == ["c.mp4"]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_muted_clip_still_has_an_audio_track(tmp_path: Path, suffix: str) -> None:
    from thud_mt.interventions import mute

    path = write_clip(mute(make_clip()), tmp_path / f"m{suffix}", lossless=suffix == ".mkv")
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 1
    assert np.all(read_clip(path).audio == 0)


def _write_with(path: Path, fmt: str, vcodec: str, pix_fmt: str, acodec: str, afmt: str, clip) -> Path:
    """Encode ``clip`` with the given codecs at 48 kHz, audio timestamps from 0, as another tool would."""
    with av.open(str(path), "w", format=fmt) as out:
        v = out.add_stream(vcodec, rate=25)
        v.width, v.height, v.pix_fmt = 32, 24, pix_fmt
        a = out.add_stream(acodec, rate=48000)
        a.layout = "mono"
        audio = clip.audio[:, 0]
        if afmt == "s16":
            audio = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        size = a.codec_context.frame_size or 4096
        for start in range(0, len(audio), size):
            block = np.zeros(size, audio.dtype)
            chunk = audio[start : start + size]
            block[: len(chunk)] = chunk
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format=afmt, layout="mono")
            frame.sample_rate, frame.pts = 48000, start
            for p in a.encode(frame):
                out.mux(p)
        for p in a.encode(None):
            out.mux(p)
        for i, rgb in enumerate(clip.frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for p in v.encode(frame):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
    return path


@pytest.mark.parametrize(
    ("name", "fmt", "vcodec", "pix_fmt", "acodec", "afmt"),
    [
        ("webm (VP9 + Opus, which starts at a negative pts)", "webm", "libvpx-vp9", "yuv420p", "libopus", "flt"),
        ("mov (H.264 + AAC with priming)", "mov", "libx264", "yuv420p", "aac", "fltp"),
        ("mkv (FFV1 + FLAC)", "matroska", "ffv1", "bgr0", "flac", "s16"),
        ("avi (MPEG-4 + PCM)", "avi", "mpeg4", "yuv420p", "pcm_s16le", "s16"),
    ],
)
def test_containers_keep_the_sound_on_the_picture_clock(tmp_path: Path, name, fmt, vcodec, pix_fmt, acodec, afmt):
    clip = make_clip(sample_rate=48000, sound_at=1.5)
    back = read_clip(_write_with(tmp_path / f"c.{fmt}", fmt, vcodec, pix_fmt, acodec, afmt, clip))
    assert back.n_frames == clip.n_frames and back.sample_rate == 48000
    assert abs(lag_seconds(clip.audio, back.audio, 48000, max_lag_s=0.2)) < 0.001, name
