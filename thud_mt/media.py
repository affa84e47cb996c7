"""Reading and writing clips with PyAV.

Timing rule: every decoded frame's time is ``pts * time_base``. A clip's time
zero is its first video frame; audio is placed on that clock by the first audio
frame's own timestamp (Opus pre-skip and AAC priming give audio that starts
before or after the picture), so no sample index is trusted alone.
"""

from __future__ import annotations

import io
import os
import tempfile
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from thud_mt.clip import Clip, LazyFrames, Provenance, VideoSource, audio_length_for
from thud_mt.errors import (
    CorruptMediaError,
    EmptyMediaError,
    MediaError,
    MediaNotFoundError,
    MediaTooLargeError,
    NoAudioStreamError,
    NoVideoStreamError,
    UnsupportedCodecError,
)
from thud_mt.signal import as_2d, fit_length, remix, resample

# AAC rates the encoder accepts; other rates are resampled up to the next one.
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
# Codecs a browser plays inside mp4, so a source stream may be copied as is.
MP4_COPYABLE_VIDEO = frozenset({"h264"})


@dataclass(frozen=True)
class MediaLimits:
    """Bounds on what a reader will decode; past them it raises ``MediaTooLargeError``.

    They protect a session from a 4-hour file or an 8K frame in a corpus:
    ``max_duration`` in ``read_clip`` trims on purpose, these refuse.
    """

    max_source_seconds: float = 3600.0
    max_frame_pixels: int = 7680 * 4320
    max_decoded_bytes: int = 2 * 1024**3


DEFAULT_LIMITS = MediaLimits()


@dataclass(frozen=True)
class WriteOptions:
    """Encoder settings for ``write_clip``; defaults suit short analysis clips."""

    crf: int = 18
    preset: str = "veryfast"
    audio_bitrate: int = 128_000
    faststart: bool = True


# ---------------------------------------------------------------- opening


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MediaNotFoundError(path, "no such file")
    if path.is_dir():
        raise MediaNotFoundError(path, "is a folder, not a media file")
    if path.stat().st_size == 0:
        raise EmptyMediaError(path, "file is empty (0 bytes)")


@contextmanager
def _open(path: Path) -> Iterator[av.container.InputContainer]:
    _check_file(path)
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise CorruptMediaError(path, f"FFmpeg cannot open it as media (truncated or not a media file): {exc}") from exc
    try:
        yield container
    finally:
        container.close()


def _decodable(path: Path, stream: av.stream.Stream) -> None:
    ctx = stream.codec_context
    name = getattr(ctx, "name", None) if ctx is not None else None
    if ctx is None or not name or name == "none":
        tag = getattr(stream, "codec_tag", "") or "unknown"
        raise UnsupportedCodecError(
            path, f"{stream.type} stream #{stream.index} has a codec FFmpeg cannot decode (tag {tag})"
        )


def _pick_streams(
    path: Path, container: av.container.InputContainer, need_audio: bool
) -> tuple[av.video.stream.VideoStream, av.audio.stream.AudioStream | None]:
    if not container.streams.video:
        raise NoVideoStreamError(path, "has no video stream (an audio-only file cannot be a clip; see read_audio)")
    video = container.streams.video[0]
    _decodable(path, video)
    audio = container.streams.audio[0] if container.streams.audio else None
    if audio is None and need_audio:
        raise NoAudioStreamError(path, "has no audio stream; pass require_audio=False to read it with silence")
    if audio is not None:
        _decodable(path, audio)
    return video, audio


def _source_seconds(container: av.container.InputContainer) -> float | None:
    return container.duration / av.time_base if container.duration else None


# ---------------------------------------------------------------- audio decode


def _frame_samples(frame: av.AudioFrame, converter: av.AudioResampler) -> np.ndarray:
    """One decoded frame as ``(n, C)`` float32, whatever its sample format."""
    out = []
    for converted in converter.resample(frame):
        out.append(converted.to_ndarray().reshape(-1, converted.layout.nb_channels))
    return np.concatenate(out) if out else np.zeros((0, frame.layout.nb_channels), np.float32)


@dataclass
class _AudioAccumulator:
    """Collects decoded audio with the time of its first sample."""

    path: Path
    start: float | None = None
    rate: int = 0
    chunks: list[np.ndarray] | None = None
    converter: av.AudioResampler | None = None

    def add(self, frame: av.AudioFrame) -> None:
        if self.converter is None:
            # Packed float at the source rate and layout: a format change only, no delay.
            self.converter = av.AudioResampler(format="flt", layout=frame.layout, rate=frame.sample_rate)
            self.rate = frame.sample_rate
            self.chunks = []
        if self.start is None and frame.pts is not None:
            self.start = float(frame.pts * frame.time_base)
        assert self.chunks is not None
        self.chunks.append(_frame_samples(frame, self.converter))

    def samples(self) -> np.ndarray:
        if not self.chunks:
            return np.zeros((0, 1), np.float32)
        return np.concatenate(self.chunks).astype(np.float32, copy=False)


def _place_audio(samples: np.ndarray, rate: int, audio_start: float, clock_start: float, n: int) -> np.ndarray:
    """Put decoded samples on the clip clock: pad if audio starts late, drop if early."""
    offset = int(round((audio_start - clock_start) * rate))
    if offset > 0:
        samples = np.concatenate([np.zeros((offset, samples.shape[1]), np.float32), samples])
    elif offset < 0:
        samples = samples[-offset:]
    return fit_length(samples, n)


def _finish_audio(
    samples: np.ndarray, rate: int, sample_rate: int | None, channels: int | None
) -> tuple[np.ndarray, int]:
    target = sample_rate or rate
    out = resample(samples, rate, target) if target != rate else samples
    if channels is not None:
        out = remix(out, channels)
    return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False), target


def read_audio(
    path: str | Path,
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    max_duration: float | None = None,
    limits: MediaLimits = DEFAULT_LIMITS,
) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any file to ``(N, C)`` float32 and its rate.

    Time zero is the stream's zero: samples with negative timestamps (encoder
    pre-skip) are dropped, a late start is padded with silence.
    """
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise NoAudioStreamError(path, "has no audio stream")
        stream = container.streams.audio[0]
        _decodable(path, stream)
        seconds = _source_seconds(container)
        if seconds and seconds > limits.max_source_seconds and max_duration is None:
            raise MediaTooLargeError(path, f"lasts {seconds:.0f} s, over the {limits.max_source_seconds:.0f} s limit")
        acc = _AudioAccumulator(path)
        try:
            for frame in container.decode(stream):
                acc.add(frame)
                if max_duration is not None and frame.time is not None and frame.time > max_duration:
                    break
        except av.FFmpegError as exc:
            raise CorruptMediaError(path, f"audio stopped decoding (truncated or corrupt): {exc}") from exc
    samples = acc.samples()
    if samples.shape[0] == 0:
        raise EmptyMediaError(path, "audio stream decodes to no samples")
    start = acc.start or 0.0
    total = int(round((start + samples.shape[0] / acc.rate) * acc.rate))
    if max_duration is not None:
        total = min(total, int(round(max_duration * acc.rate)))
    placed = _place_audio(samples, acc.rate, start, 0.0, total)
    return _finish_audio(placed, acc.rate, sample_rate, channels)


# ---------------------------------------------------------------- video


def _target_size(width: int, height: int, size: tuple[int, int] | None, max_side: int | None) -> tuple[int, int]:
    if size is not None:
        return size
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        # Even sizes: H.264 with 4:2:0 chroma needs them.
        return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)
    return width, height


def _frame_grid(times: list[float], t0: float, end: float, fps: float | None) -> list[int]:
    """Indices into ``times`` (sorted) of the frames a clip keeps.

    Without a target fps every frame before ``end`` is kept; with one, each grid
    time ``t0 + k / fps`` takes the latest frame shown at that moment.
    """
    if fps is None:
        return [i for i, t in enumerate(times) if t < end - 1e-9]
    keep = []
    j = 0
    k = 0
    while True:
        grid = t0 + k / fps
        if grid >= end - 1e-9:
            break
        while j + 1 < len(times) and times[j + 1] <= grid + 1e-6:
            j += 1
        keep.append(j)
        k += 1
    return keep


def _decode_frames(
    path: Path, stream_index: int, keep: list[int], times: list[float], out_size: tuple[int, int]
) -> np.ndarray:
    """Decode the video again and keep the frames at ``keep`` (indices into sorted pts)."""
    width, height = out_size
    frames = np.empty((len(keep), height, width, 3), np.uint8)
    wanted: dict[int, list[int]] = {}
    for out_i, src_i in enumerate(keep):
        wanted.setdefault(src_i, []).append(out_i)
    order = {t: i for i, t in enumerate(times)}
    last = max(keep) if keep else -1
    filled = 0
    with _open(path) as container:
        stream = container.streams[stream_index]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                idx = order.get(float(frame.pts * frame.time_base)) if frame.pts is not None else None
                if idx is None or idx not in wanted:
                    continue
                rgb = frame.to_ndarray(format="rgb24", width=width, height=height)
                for out_i in wanted[idx]:
                    frames[out_i] = rgb
                    filled += 1
                if idx >= last and filled >= len(keep):
                    break
        except av.FFmpegError as exc:
            raise CorruptMediaError(path, f"video stopped decoding (truncated or corrupt): {exc}") from exc
    if filled < len(keep):
        raise CorruptMediaError(path, f"only {filled} of {len(keep)} video frames decoded (truncated or corrupt)")
    return frames


def read_clip(
    path: str | Path,
    *,
    clip_id: str | None = None,
    max_duration: float | None = None,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    max_side: int | None = None,
    sample_rate: int | None = None,
    channels: int | None = None,
    limits: MediaLimits = DEFAULT_LIMITS,
    require_audio: bool = True,
    lazy: bool = True,
) -> Clip:
    """Read a video file with sound into a ``Clip``.

    ``max_duration`` keeps the first seconds; ``fps`` resamples the frame rate
    (sample-and-hold); ``size=(w, h)`` or ``max_side`` rescale; ``sample_rate``
    and ``channels`` convert the audio. With ``lazy`` the frames are decoded on
    first use, so audio-only edits never pay for video decoding.
    """
    path = Path(path)
    with _open(path) as container:
        vstream, astream = _pick_streams(path, container, require_audio)
        width, height = vstream.codec_context.width, vstream.codec_context.height
        if width * height > limits.max_frame_pixels:
            raise MediaTooLargeError(
                path, f"frames are {width}x{height}, over the {limits.max_frame_pixels} pixel limit"
            )
        seconds = _source_seconds(container)
        if seconds and seconds > limits.max_source_seconds and max_duration is None:
            raise MediaTooLargeError(
                path, f"lasts {seconds:.0f} s, over the {limits.max_source_seconds:.0f} s limit (pass max_duration)"
            )
        acc = _AudioAccumulator(path)
        times: list[float] = []
        streams = [vstream] + ([astream] if astream is not None else [])
        try:
            for packet in container.demux(streams):
                if packet.pts is None:
                    continue  # the demuxer's flush packet
                now = float(packet.pts * packet.time_base)
                if packet.stream.type == "video":
                    if packet.size > 0:
                        times.append(now)
                else:
                    for frame in packet.decode():
                        acc.add(frame)
                if max_duration is not None and times and now > times[0] + max_duration + 1.0:
                    break  # a second past the end in both streams: enough read
        except av.FFmpegError as exc:
            raise CorruptMediaError(path, f"stopped demuxing (truncated or corrupt): {exc}") from exc
        declared = vstream.frames
        rate_guess = vstream.average_rate or vstream.guessed_rate or vstream.base_rate
        vcodec = vstream.codec_context.name
        vindex = vstream.index
    if not times:
        raise EmptyMediaError(path, "video stream has no frames")
    if max_duration is None and declared and len(times) < declared:
        raise CorruptMediaError(
            path, f"truncated: the container lists {declared} video frames, {len(times)} are present"
        )
    times.sort()
    t0 = times[0]
    src_fps = float(rate_guess) if rate_guess else (len(times) - 1) / max(times[-1] - t0, 1e-6)
    src_end = times[-1] + 1.0 / src_fps
    end = min(src_end, t0 + max_duration) if max_duration is not None else src_end
    keep = _frame_grid(times, t0, end, fps)
    clip_fps = fps or src_fps
    n_frames = len(keep)
    if n_frames == 0:
        raise EmptyMediaError(path, "no video frames inside the requested duration")
    out_w, out_h = _target_size(width, height, size, max_side)
    if n_frames * out_w * out_h * 3 > limits.max_decoded_bytes:
        raise MediaTooLargeError(
            path,
            f"{n_frames} frames of {out_w}x{out_h} exceed {limits.max_decoded_bytes} bytes decoded;"
            " pass max_duration, fps or max_side",
        )
    n_samples_clock = audio_length_for(n_frames, clip_fps, acc.rate or (sample_rate or 16000))
    if astream is None or acc.rate == 0:
        rate = sample_rate or 16000
        audio = np.zeros((audio_length_for(n_frames, clip_fps, rate), channels or 1), np.float32)
    else:
        samples = acc.samples()
        if samples.shape[0] == 0 and require_audio:
            raise EmptyMediaError(path, "audio stream decodes to no samples")
        placed = _place_audio(samples, acc.rate, acc.start or t0, t0, n_samples_clock)
        audio, rate = _finish_audio(placed, acc.rate, sample_rate, channels)
        audio = fit_length(audio, audio_length_for(n_frames, clip_fps, rate))
    unchanged = fps is None and (out_w, out_h) == (width, height)
    video_source = None
    if unchanged:
        video_source = VideoSource(path.resolve(), vindex, vcodec, t0, times[keep[-1]] + 1.0 / src_fps, n_frames)

    def load() -> np.ndarray:
        return _decode_frames(path, vindex, keep, times, (out_w, out_h))

    video: np.ndarray | LazyFrames = LazyFrames(n_frames, (out_h, out_w), load)
    if not lazy:
        video = video.materialize()
    return Clip(
        id=clip_id or path.stem,
        video=video,
        fps=clip_fps,
        audio=audio,
        sample_rate=rate,
        provenance=Provenance(source=str(path)),
        video_source=video_source if unchanged and len(keep) == len(times) else None,
    )


# ---------------------------------------------------------------- writing


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def _aac_rate(rate: int) -> int:
    return next((r for r in AAC_RATES if r >= rate), AAC_RATES[-1])


def _layout(channels: int) -> str:
    if channels not in (1, 2):
        raise MediaError("<clip>", f"writing {channels} audio channels is not supported (1 or 2)")
    return "mono" if channels == 1 else "stereo"


def _encode_audio(
    container: av.container.OutputContainer,
    stream: av.audio.stream.AudioStream,
    audio: np.ndarray,
    fmt: str,
    chunk: int,
) -> None:
    layout = _layout(audio.shape[1])
    planar = fmt.endswith("p")
    for start in range(0, audio.shape[0], chunk):
        block = np.ascontiguousarray(audio[start : start + chunk])
        data = block.T.copy() if planar else block.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
        frame.sample_rate = stream.rate
        frame.pts = start
        frame.time_base = Fraction(1, stream.rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad to even height and width by repeating the edge: 4:2:0 chroma needs even sizes."""
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def writer_threads() -> int:
    """Threads for writing many clips at once (PyAV releases the GIL while it encodes): the cores, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def _atomic_target(path: Path) -> Path:
    """A fresh temporary file beside ``path``, so the final ``os.replace`` is atomic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_bytes(data: bytes, path: str | Path) -> Path:
    """Write ``data`` to ``path`` atomically: a reader sees no file or the whole file, never a part."""
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    """``(N, C)`` float audio as a 16-bit PCM wav file's bytes (deterministic: the same samples, the same bytes)."""
    samples = as_2d(audio).astype(np.float64)  # float32 samples are exact in float64: the same bytes as ever
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(int(samples.shape[1]))
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def write_clip(
    clip: Clip,
    path: str | Path,
    *,
    lossless: bool = False,
    copy_video: bool = True,
    options: WriteOptions = WriteOptions(),
) -> Path:
    """Write ``clip`` as H.264 + AAC mp4 (browsers play it), or losslessly.

    The mp4 movie timescale is set to the sample rate, so the edit list that
    hides AAC's encoder priming is exact to the sample rather than to the
    default 1 ms. When the frames are a source file's unchanged stream (and it
    is H.264), the compressed video is copied and only the audio is encoded.
    ``lossless`` writes Matroska with FFV1 (RGB) and 32-bit float PCM, for
    analysis. The file appears atomically: a crash leaves no half file.
    """
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        if lossless:
            _write_lossless(clip, tmp)
        else:
            _write_mp4(clip, tmp, copy_video=copy_video, options=options)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_mp4(clip: Clip, path: Path, *, copy_video: bool, options: WriteOptions) -> None:
    rate = _aac_rate(clip.sample_rate)
    audio = resample(clip.audio, clip.sample_rate, rate) if rate != clip.sample_rate else clip.audio
    mux_opts = {"movie_timescale": str(rate)}
    if options.faststart:
        mux_opts["movflags"] = "+faststart"
    source = clip.video_source
    copy = (
        copy_video and source is not None and source.codec in MP4_COPYABLE_VIDEO and isinstance(clip.video, LazyFrames)
    )
    with av.open(str(path), mode="w", format="mp4", options=mux_opts) as container:
        astream = container.add_stream("aac", rate=rate)
        astream.layout = _layout(audio.shape[1])
        astream.bit_rate = options.audio_bitrate
        if copy:
            assert source is not None
            _copy_video_with_audio(container, astream, audio, source)
        else:
            _encode_audio_then_video(container, astream, audio, clip, options)


def _copy_video_with_audio(
    container: av.container.OutputContainer,
    astream: av.audio.stream.AudioStream,
    audio: np.ndarray,
    source: VideoSource,
) -> None:
    with _open(source.path) as src:
        in_stream = src.streams[source.stream_index]
        out_stream = container.add_stream_from_template(in_stream)
        _encode_audio(container, astream, audio, "fltp", 1024)
        copy_packets(src, in_stream, container, out_stream, source.start)


def copy_packets(
    source: av.container.InputContainer,
    in_stream: av.stream.Stream,
    out: av.container.OutputContainer,
    out_stream: av.stream.Stream,
    start_s: float,
) -> None:
    """Mux ``in_stream``'s packets into ``out_stream`` unchanged (no decoding), moved so ``start_s`` is zero."""
    start = int(round(start_s / in_stream.time_base))
    for packet in source.demux(in_stream):
        if packet.dts is None and packet.pts is None:
            continue  # the demuxer's flush packet
        packet.pts = None if packet.pts is None else packet.pts - start
        packet.dts = None if packet.dts is None else packet.dts - start
        packet.stream = out_stream
        out.mux(packet)


def _encode_audio_then_video(
    container: av.container.OutputContainer,
    astream: av.audio.stream.AudioStream,
    audio: np.ndarray,
    clip: Clip,
    options: WriteOptions,
) -> None:
    frames = _even(clip.frames)
    rate = _fps_fraction(clip.fps)
    vstream = container.add_stream("libx264", rate=rate, options={"crf": str(options.crf), "preset": options.preset})
    vstream.width, vstream.height = frames.shape[2], frames.shape[1]
    vstream.pix_fmt = "yuv420p"
    _encode_audio(container, astream, audio, "fltp", 1024)
    _encode_frames(container, vstream, frames)


def _encode_frames(
    container: av.container.OutputContainer, stream: av.video.stream.VideoStream, frames: np.ndarray
) -> None:
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = i
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def _write_lossless(clip: Clip, path: Path) -> None:
    with av.open(str(path), mode="w", format="matroska") as container:
        rate = _fps_fraction(clip.fps)
        vstream = container.add_stream("ffv1", rate=rate)
        vstream.width, vstream.height = clip.frame_size[1], clip.frame_size[0]
        vstream.pix_fmt = "bgr0"
        astream = container.add_stream("pcm_f32le", rate=clip.sample_rate)
        astream.layout = _layout(clip.n_channels)
        _encode_audio(container, astream, clip.audio, "flt", 4096)
        _encode_frames(container, vstream, clip.frames)


def audio_roundtrip(clip: Clip) -> np.ndarray:
    """The clip's audio after an AAC encode and decode, on the same clock and rate."""
    rate = _aac_rate(clip.sample_rate)
    audio = resample(clip.audio, clip.sample_rate, rate) if rate != clip.sample_rate else clip.audio
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4", options={"movie_timescale": str(rate)}) as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = _layout(audio.shape[1])
        _encode_audio(container, stream, audio, "fltp", 1024)
    buffer.seek(0)
    acc = _AudioAccumulator(Path(f"<{clip.id} in memory>"))
    with av.open(buffer, mode="r") as container:
        for frame in container.decode(audio=0):
            acc.add(frame)
    placed = _place_audio(acc.samples(), acc.rate, acc.start or 0.0, 0.0, audio.shape[0])
    back = resample(placed, rate, clip.sample_rate) if rate != clip.sample_rate else placed
    return fit_length(as_2d(back), clip.audio.shape[0])
