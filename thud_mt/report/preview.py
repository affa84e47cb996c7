"""Small browser-playable previews of clips, for report attachments.

H.264 (yuv420p, even sizes) + AAC in mp4 with ``+faststart``: what every
browser's ``<video>`` plays, downscaled and capped in length and bytes so a
report with hundreds of failures stays small.

Two halves, so the encoding can run in another process: ``PreviewEncoder.job``
(in the test process) decides the picture and prepares the audio; the picture
is either the clip's source H.264 stream, copied as it is when a browser plays
it at preview size (no decoding, no encoding: the usual case for a corpus
clip), or an encoded picture (an mp4 without audio), made once per clip here.
``make_preview(job)`` (anywhere, e.g. the media worker) muxes the picture with
the audio encoded as AAC. An audio edit leaves the picture alone, so every
edit of a clip reuses its picture.
"""

from __future__ import annotations

import io
import math
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from thud_mt.clip import Clip, LazyFrames
from thud_mt.media import copy_packets
from thud_mt.signal import remix, resample

# Rates the AAC encoder accepts; other rates are resampled up to the next one.
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


@dataclass(frozen=True)
class PreviewOptions:
    """How small a preview is. A picture over its share of ``max_bytes`` is encoded once more, smaller; then the
    preview is left out (with the reason)."""

    max_side: int = 320  # pixels of the longer side
    max_fps: float = 25.0
    max_seconds: float = 30.0  # longer clips are previewed from the start
    crf: int = 30
    preset: str = "ultrafast"  # baseline profile: plays everywhere; encode speed matters more than bytes here
    audio_bitrate: int = 64_000
    max_bytes: int = 2_000_000

    def __post_init__(self) -> None:
        if self.max_side < 16 or self.max_fps <= 0 or self.max_seconds <= 0 or self.max_bytes < 10_000:
            raise ValueError(f"preview options out of range: {self}")

    def picture_budget(self, seconds: float) -> int:
        """Bytes left for the picture once the audio track (its bit rate, plus container overhead) is counted."""
        return self.max_bytes - int(self.audio_bitrate / 8 * seconds * 1.1) - 8_000


@dataclass(frozen=True)
class Picture:
    """A clip's encoded video track: an mp4 without audio."""

    mp4: bytes
    seconds: float
    size: tuple[int, int]  # (width, height)


@dataclass(frozen=True)
class StreamCopy:
    """A source file's H.264 stream that a browser plays as it is: its packets are copied, never decoded."""

    path: str
    stream_index: int
    start: float  # source seconds of the clip's first frame
    seconds: float
    size: tuple[int, int]


@dataclass(frozen=True)
class PreviewJob:
    """Everything ``make_preview`` needs, picklable: the picture and the audio, ready for AAC."""

    picture: Picture | StreamCopy
    audio: np.ndarray  # float32 (samples, 1 or 2 channels) in [-1, 1], at ``rate``, as long as the picture
    rate: int
    audio_bitrate: int

    @property
    def note(self) -> str:
        width, height = self.picture.size
        return f"{width}x{height}, {self.picture.seconds:g} s"


@dataclass(frozen=True)
class Preview:
    """An encoded preview, or ``None`` data and the reason in ``note``."""

    data: bytes | None
    note: str


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:.0f} kB"


def preview_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Fit within ``max_side`` keeping the aspect ratio, never upscaling; both sides even (4:2:0 chroma)."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


class PreviewEncoder:
    """Makes preview jobs; remembers the last ``memo`` clips' pictures (keyed by the clip's frame object)."""

    def __init__(self, options: PreviewOptions | None = None, memo: int = 64) -> None:
        self.options = options or PreviewOptions()
        self.memo = memo
        # id(frames) -> (frames, picture or why none): holding the frames keeps the id from being reused.
        self._pictures: OrderedDict[int, tuple[object, Picture | StreamCopy | str]] = OrderedDict()

    def job(self, clip: Clip) -> PreviewJob | str:
        """The job for ``clip``'s preview, or why there is none (a picture too large even at half size)."""
        picture = self._picture(clip)
        if isinstance(picture, str):
            return picture
        rate = next((r for r in AAC_RATES if r >= clip.sample_rate), AAC_RATES[-1])
        audio = remix(clip.audio, min(2, clip.n_channels))
        audio = resample(audio, clip.sample_rate, rate) if rate != clip.sample_rate else audio
        audio = np.clip(audio[: int(round(picture.seconds * rate))], -1.0, 1.0).astype(np.float32)
        return PreviewJob(picture, np.ascontiguousarray(audio), rate, self.options.audio_bitrate)

    def encode(self, clip: Clip) -> Preview:
        """The preview, made here (the report makes it on the media worker: ``job`` and ``make_preview``)."""
        job = self.job(clip)
        if isinstance(job, str):
            return Preview(None, job)
        data = make_preview(job)
        return Preview(data, f"{job.note}, {_size(len(data))}")

    def _picture(self, clip: Clip) -> Picture | StreamCopy | str:
        key = id(clip.video)
        cached = self._pictures.get(key)
        if cached is not None and cached[0] is clip.video:
            self._pictures.move_to_end(key)
            return cached[1]
        picture = _stream_copy(clip, self.options) or _fitting_picture(clip, self.options)
        self._pictures[key] = (clip.video, picture)
        while len(self._pictures) > self.memo:
            self._pictures.popitem(last=False)
        return picture


def _stream_copy(clip: Clip, options: PreviewOptions) -> StreamCopy | None:
    """The clip's source stream, when the frames are that whole stream, unchanged, and a browser plays it as it is
    at preview size and within the byte budget."""
    source = clip.video_source
    height, width = clip.frame_size
    if source is None or not isinstance(clip.video, LazyFrames) or source.codec != "h264":
        return None
    if (
        clip.duration > options.max_seconds
        or clip.fps > options.max_fps * 1.001
        or max(width, height) > options.max_side
        or os.path.getsize(source.path) > options.picture_budget(clip.duration)
    ):
        return None
    with av.open(str(source.path), mode="r") as container:
        if container.streams[source.stream_index].codec_context.pix_fmt != "yuv420p":
            return None  # 4:4:4 or 10-bit H.264 does not play in browsers
    return StreamCopy(str(source.path), source.stream_index, source.start, clip.duration, (width, height))


def _fitting_picture(clip: Clip, options: PreviewOptions) -> Picture | str:
    first = _encode_picture(clip, options)
    budget = options.picture_budget(first.seconds)
    if len(first.mp4) <= budget:
        return first
    half = PreviewOptions(
        max_side=max(16, options.max_side // 2),
        max_fps=options.max_fps / 2,
        max_seconds=options.max_seconds,
        crf=min(51, options.crf + 8),
        preset=options.preset,
        audio_bitrate=options.audio_bitrate,
        max_bytes=options.max_bytes,
    )
    second = _encode_picture(clip, half)
    if len(second.mp4) <= budget:
        return second
    return (
        f"preview left out: the picture takes {_size(len(second.mp4))} even at half size, "
        f"over the {_size(options.max_bytes)} cap"
    )


def _encode_picture(clip: Clip, options: PreviewOptions) -> Picture:
    step = max(1, math.ceil(clip.fps / options.max_fps - 1e-9))  # keep every step-th frame
    fps = Fraction(clip.fps / step).limit_denominator(1001)
    n_frames = min(clip.n_frames, max(1, int(options.max_seconds * clip.fps)))
    frames = clip.frames[:n_frames:step]
    height, width = clip.frame_size
    size = preview_size(width, height, options.max_side)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": str(options.crf), "preset": options.preset})
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        scaler = VideoReformatter()  # one scaling context for all frames, not one per frame
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame = scaler.reformat(frame, width=size[0], height=size[1], format="yuv420p", interpolation="AREA")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return Picture(buffer.getvalue(), len(frames) * step / clip.fps, size)


# ---------------------------------------------------------------- the media worker's half


@lru_cache(maxsize=64)
def _copied(copy: StreamCopy) -> Picture:
    """The source stream's packets in an mp4 of their own, from time zero (kept: every edit of the clip uses it)."""
    buffer = io.BytesIO()
    with av.open(copy.path, mode="r") as source, av.open(buffer, mode="w", format="mp4") as out:
        stream = source.streams[copy.stream_index]
        copy_packets(source, stream, out, out.add_stream_from_template(stream), copy.start)
    return Picture(buffer.getvalue(), copy.seconds, copy.size)


def make_preview(job: PreviewJob) -> bytes:
    """The preview mp4: the picture's packets with the audio encoded as AAC.

    The movie timescale is the sample rate, so the edit list that hides AAC's
    priming is exact to the sample: a preview must show a desync truly.
    """
    picture = job.picture if isinstance(job.picture, Picture) else _copied(job.picture)
    buffer = io.BytesIO()
    with (
        av.open(io.BytesIO(picture.mp4), mode="r") as source,
        av.open(buffer, "w", "mp4", options={"movie_timescale": str(job.rate)}) as out,
    ):
        astream = out.add_stream("aac", rate=job.rate)
        astream.layout = "mono" if job.audio.shape[1] == 1 else "stereo"
        astream.bit_rate = job.audio_bitrate
        astream.options = {"aac_coder": "fast"}  # the default (twoloop) takes twice as long for no audible gain
        vin = source.streams.video[0]
        vout = out.add_stream_from_template(vin)
        # One frame for the whole track: PyAV cuts it into the encoder's 1024-sample frames itself.
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(job.audio.T), format="fltp", layout=astream.layout)
        frame.sample_rate, frame.pts, frame.time_base = job.rate, 0, Fraction(1, job.rate)
        out.mux(astream.encode(frame))
        out.mux(astream.encode(None))
        for packet in source.demux(vin):
            if packet.dts is None and packet.pts is None:
                continue
            packet.stream = vout
            out.mux(packet)
    return faststart(buffer.getvalue())


# ---------------------------------------------------------------- faststart, in memory

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"udta"}


def _boxes(data: bytes, start: int, end: int):
    """(type, start, header size, end) of the boxes in ``data[start:end]``."""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, at + 8)[0], 16
        elif size == 0:
            size = end - at
        if size < header or at + size > end:
            raise ValueError(f"malformed mp4 box {kind!r} at {at}")
        yield kind, at, header, at + size
        at += size


def _shift_chunk_offsets(moov: bytearray, start: int, end: int, delta: int) -> None:
    for kind, at, header, box_end in _boxes(moov, start, end):
        if kind in _CONTAINERS:
            _shift_chunk_offsets(moov, at + header, box_end, delta)
        elif kind in (b"stco", b"co64"):
            (count,) = struct.unpack_from(">I", moov, at + header + 4)
            width, code = (4, ">I") if kind == b"stco" else (8, ">Q")
            for i in range(count):
                spot = at + header + 8 + i * width
                (offset,) = struct.unpack_from(code, moov, spot)
                struct.pack_into(code, moov, spot, offset + delta)


def faststart(mp4: bytes) -> bytes:
    """The ``moov`` box moved in front of the media data (what ``movflags=+faststart`` does, which FFmpeg can only
    do on a file it reopens): a browser starts playing without fetching the end of the file first."""
    boxes = list(_boxes(mp4, 0, len(mp4)))
    kinds = [kind for kind, *_ in boxes]
    if b"moov" not in kinds or b"mdat" not in kinds or kinds.index(b"moov") < kinds.index(b"mdat"):
        return mp4
    _, moov_start, _, moov_end = boxes[kinds.index(b"moov")]
    moov = bytearray(mp4[moov_start:moov_end])
    _shift_chunk_offsets(moov, 8, len(moov), len(moov))  # everything after the new moov moves by its size
    first_media = boxes[kinds.index(b"mdat")][1]
    rest = b"".join(mp4[s:e] for kind, s, _, e in boxes if kind != b"moov" and s >= first_media)
    head = b"".join(mp4[s:e] for kind, s, _, e in boxes if kind != b"moov" and s < first_media)
    # The moov goes right before the first media box; the boxes before it (ftyp, free) keep their places.
    out = head + bytes(moov) + rest
    return out
