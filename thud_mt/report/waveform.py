"""One PNG per failing case: the original's and the edited clip's waveforms, one above the other, every event's
visual time (solid) and audio time (dashed) marked and the edit named, so a shift, a mute or a swap shows at a
glance next to the answers.

Drawn with numpy and Pillow (a matplotlib dependency) rather than matplotlib's Agg figures: a figure with its
axes, ticks and texts took 60-100 ms, which over the ~150 failing cases of a ``visual-only`` run alone broke the
reporting budget (at most +25% of the suite's wall time); this takes a few milliseconds.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from thud_mt.clip import Clip, Event

SEEN = (31, 111, 180)
HEARD = (217, 72, 15)
INK = (40, 40, 40)
WAVE = (68, 68, 68)
FRAME = (190, 190, 190)
TICK_STEPS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class WaveformOptions:
    """Pixel sizes of the picture."""

    width: int = 800
    row_height: int = 120  # the waveform area of one clip
    margin: int = 10
    title_height: int = 18
    axis_height: int = 34
    font_size: int = 11


@dataclass(frozen=True)
class Track:
    """One row: a clip's heading, its waveform envelope (``columns`` bins over ``seconds``) and its events."""

    heading: str
    seconds: float
    low: np.ndarray
    high: np.ndarray
    events: tuple[Event, ...]


@dataclass(frozen=True)
class WaveformJob:
    """What ``make_png`` draws, picklable and small (envelopes, not audio): made in the test process, drawn on the
    media worker."""

    original: Track
    edited: Track
    duration: float
    options: WaveformOptions


def waveform_job(source: Clip, followup: Clip, edit: str, options: WaveformOptions | None = None) -> WaveformJob:
    options = options or WaveformOptions()
    duration = max(source.duration, followup.duration, 1e-3)
    plot = options.width - 2 * options.margin

    def track(clip: Clip, heading: str) -> Track:
        seconds = clip.audio.shape[0] / clip.sample_rate
        columns = max(1, min(plot, int(round(seconds / duration * (plot - 1))) + 1))
        low, high = envelope(clip.audio, columns)
        return Track(heading, seconds, low, high, tuple(clip.events))

    return WaveformJob(track(source, f"original: {source.id}"), track(followup, f"edited: {edit}"), duration, options)


def waveform_png(source: Clip, followup: Clip, edit: str, options: WaveformOptions | None = None) -> bytes:
    """The two waveforms as PNG bytes; ``edit`` names the edit (``"audio delayed by 0.500 s"``)."""
    return make_png(waveform_job(source, followup, edit, options))


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans from matplotlib's data (always installed with it); Pillow's own font otherwise."""
    try:
        import matplotlib

        return ImageFont.truetype(f"{matplotlib.get_data_path()}/fonts/ttf/DejaVuSans.ttf", size)
    except (ImportError, OSError):
        return ImageFont.load_default(size)


def envelope(audio: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the lowest and highest sample of the channel mix: the waveform at any length in ``columns``."""
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    if len(mono) == 0:
        return np.zeros(columns, np.float32), np.zeros(columns, np.float32)
    edges = np.linspace(0, len(mono), columns + 1).astype(int)[:-1]
    edges = np.minimum(edges, len(mono) - 1)
    return np.minimum.reduceat(mono, edges), np.maximum.reduceat(mono, edges)


def tick_step(duration: float, max_ticks: int = 10) -> float:
    return next((s for s in TICK_STEPS if duration / s <= max_ticks), TICK_STEPS[-1])


class _Canvas:
    """Pixel geometry: the plot spans x in [left, right) for t in [0, duration]."""

    def __init__(self, options: WaveformOptions, duration: float) -> None:
        self.o = options
        self.left, self.right = options.margin, options.width - options.margin
        self.duration = duration
        self.height = 2 * (options.title_height + options.row_height + options.margin) + options.axis_height
        self.pixels = np.full((self.height, options.width, 3), 255, np.uint8)

    def x(self, t: float) -> int:
        return self.left + int(round(t / self.duration * (self.right - self.left - 1)))

    def row_top(self, row: int) -> int:
        o = self.o
        return row * (o.title_height + o.row_height + o.margin) + o.title_height

    def waveform(self, row: int, track: Track) -> None:
        o, top = self.o, self.row_top(row)
        columns = min(len(track.low), self.right - self.left)
        low, high = track.low[:columns], track.high[:columns]
        half = (o.row_height - 1) / 2
        y_high = np.clip(np.round(top + half - high * half), top, top + o.row_height - 1).astype(int)
        y_low = np.clip(np.round(top + half - low * half), top, top + o.row_height - 1).astype(int)
        ys = np.arange(top, top + o.row_height)[:, None]
        mask = (ys >= y_high[None, :]) & (ys <= y_low[None, :])
        area = self.pixels[top : top + o.row_height, self.left : self.left + columns]
        area[mask] = WAVE

    def mark(self, row: int, t: float, colour: tuple[int, int, int], dashed: bool, beside: int | None = None) -> int:
        """A 2-pixel line at ``t``; moved just right of ``beside`` when it would hide that line."""
        o, top = self.o, self.row_top(row)
        x = min(max(self.x(t), self.left), self.right - 2)
        if beside is not None and abs(x - beside) < 2:
            x = min(beside + 2, self.right - 2)
        ys = np.arange(top, top + o.row_height)
        if dashed:
            ys = ys[(ys - top) % 8 < 5]
        self.pixels[ys, x : x + 2] = colour
        return x


def make_png(job: WaveformJob) -> bytes:
    """Draw the job (on the media worker, or anywhere)."""
    o = job.options
    canvas = _Canvas(o, job.duration)
    labels: list[tuple[int, int, str, tuple[int, int, int]]] = []
    for row, track in enumerate((job.original, job.edited)):
        top = canvas.row_top(row)
        canvas.waveform(row, track)
        for event in track.events:
            seen = None
            if event.visual_time is not None:
                seen = canvas.mark(row, event.visual_time, SEEN, dashed=False)
                labels.append((seen + 4, top + 2, f"seen: {event.label}", SEEN))
            if event.audio_time is not None:
                x = canvas.mark(row, event.audio_time, HEARD, dashed=True, beside=seen)
                labels.append((x + 4, top + o.row_height - o.font_size - 4, f"heard: {event.sound}", HEARD))
    image = Image.fromarray(canvas.pixels)
    draw = ImageDraw.Draw(image)
    font = _font(o.font_size)
    for row, track in enumerate((job.original, job.edited)):
        top = canvas.row_top(row)
        draw.text((canvas.left, top - o.title_height + 2), track.heading, fill=INK, font=font)
        draw.rectangle((canvas.left - 1, top - 1, canvas.right, top + o.row_height), outline=FRAME)
        if not any(e.audio_time is not None for e in track.events):
            draw.text(
                (canvas.right - 4, top + o.row_height // 2 - 4), "no sound heard", fill=INK, font=font, anchor="rb"
            )
    for x, y, text, colour in labels:
        draw.text((x, y), text, fill=colour, font=font)
    _axis(draw, canvas, font)
    buffer = io.BytesIO()
    # A few flat colours and anti-aliased text: 32 palette entries look the same, encode in half the time and
    # take half the bytes of RGB.
    image.quantize(32, method=Image.Quantize.FASTOCTREE).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _axis(draw: ImageDraw.ImageDraw, canvas: _Canvas, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> None:
    o = canvas.o
    y = canvas.row_top(1) + o.row_height + 1
    step = tick_step(canvas.duration)
    for i in range(int(math.floor(canvas.duration / step + 1e-9)) + 1):
        t = i * step
        x = canvas.x(t)
        draw.line((x, y, x, y + 4), fill=INK)
        draw.text((x, y + 5), f"{t:g}", fill=INK, font=font, anchor="ma")
    caption = "seconds    solid: seen (visual event)    dashed: heard (audio event)"
    draw.text(((canvas.left + canvas.right) // 2, y + 19), caption, fill=INK, font=font, anchor="ma")
