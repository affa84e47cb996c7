"""Rendered scenes: one simple, recognisable animation per event kind, drawn with numpy.

Every scene is built so its visual event is findable from the pixels alone:
the moving part accelerates from rest and the largest change between two
consecutive frames happens at exactly the event frame (the box lands and
stops, the palms meet, the door shuts, the hammer hits, the glass bursts,
the jaw snaps open). Whatever moves afterwards (fragments, a closing jaw,
fading ring marks) changes less per frame.

Shapes are unions of convex polygons, ellipses and capsules, rasterised by
testing pixel centres inside each shape's bounding box, so a 4 s clip renders
in milliseconds. A frame whose pose equals the previous one is copied.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from thud_mt.corpus.vocabulary import EVENT_KINDS, KIND_BY_LABEL

RGB = tuple[int, int, int]
Point = tuple[float, float]
# Where a shape covers an image: the slices of its bounding box and a boolean mask over them.
Coverage = tuple[tuple[slice, slice], np.ndarray]
# A scene's pose at one frame; equal poses render equal frames.
Pose = TypeVar("Pose", bound=Hashable)

BACKGROUND_STYLES = ("gradient", "stripes", "noise", "tiles")
# The event lands in [EARLIEST_EVENT_S, duration - LATEST_EVENT_GAP_S]: time to see
# the motion build up before it, and to see and hear its aftermath.
EARLIEST_EVENT_S = 0.8
LATEST_EVENT_GAP_S = 1.0


@dataclass(frozen=True)
class Background:
    """The static backdrop: a wall texture above a floor line."""

    style: str  # one of BACKGROUND_STYLES
    colours: tuple[RGB, RGB]
    floor_colour: RGB
    angle: float  # direction of gradients and stripes, radians
    period: float  # stripe / tile / noise-blob size, in pixels


@dataclass(frozen=True)
class SceneSpec:
    """Everything a scene's rendering depends on; ``render(spec)`` is a pure function of it.

    ``size`` is ``(width, height)``. ``event_time`` is a frame time
    (``event_frame / fps``). ``position`` is the object's horizontal centre and
    ``floor`` the floor line, as fractions of width and height; ``scale`` sizes
    the objects relative to the frame height. ``motion`` is how long the motion
    leading to the event lasts. ``seed`` fixes the details (texture grain, glass
    fragments).
    """

    kind: str
    event_time: float
    fps: float
    size: tuple[int, int]
    duration: float
    position: float
    floor: float
    scale: float
    motion: float
    mirror: bool
    background: Background
    colours: tuple[RGB, RGB, RGB]  # main, secondary, accent
    seed: int

    def __post_init__(self) -> None:
        if self.kind not in KIND_BY_LABEL:
            raise ValueError(f"unknown scene kind {self.kind!r}; known: {', '.join(KIND_BY_LABEL)}")
        if self.fps <= 0 or self.duration <= 0 or min(self.size) < 8:
            raise ValueError(f"scene needs positive fps and duration and a frame of at least 8x8, got {self}")
        if abs(self.event_time * self.fps - self.event_frame) > 1e-6:
            raise ValueError(f"event_time {self.event_time} is not a frame time at {self.fps} fps")
        if not 0 < self.event_frame < self.n_frames:
            raise ValueError(f"event frame {self.event_frame} is outside the {self.n_frames} frames")
        if self.background.style not in BACKGROUND_STYLES:
            raise ValueError(f"unknown background style {self.background.style!r}")

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    @property
    def n_frames(self) -> int:
        return int(round(self.duration * self.fps))

    @property
    def event_frame(self) -> int:
        return int(round(self.event_time * self.fps))


# ---------------------------------------------------------------- drawing


def _region(
    img: np.ndarray, x0: float, y0: float, x1: float, y1: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """The image slice covering a bounding box, with pixel-centre coordinates; None when off-frame."""
    h, w = img.shape[:2]
    c0, c1 = max(0, math.floor(x0)), min(w, math.ceil(x1) + 1)
    r0, r1 = max(0, math.floor(y0)), min(h, math.ceil(y1) + 1)
    if c0 >= c1 or r0 >= r1:
        return None
    xs = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5
    ys = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
    return (slice(r0, r1), slice(c0, c1)), xs, ys


def _paint(img: np.ndarray, where: tuple[slice, slice], mask: np.ndarray, colour: RGB, alpha: float = 1.0) -> None:
    view = img[where]
    if alpha >= 1.0:
        view[mask] = colour
    elif alpha > 0.0:
        mixed = view[mask].astype(np.float32) * (1.0 - alpha) + np.asarray(colour, np.float32) * alpha
        view[mask] = np.round(mixed).astype(np.uint8)


def polygon_mask(img: np.ndarray, pts: list[Point], inset: float = 0.0) -> Coverage | None:
    """Where a convex polygon (either winding) covers ``img``: ``(slices, mask)`` or None when off-frame."""
    p = np.asarray(pts, dtype=np.float32)
    got = _region(img, *p.min(axis=0), *p.max(axis=0))
    if got is None:
        return None
    where, xs, ys = got
    edges = np.roll(p, -1, axis=0) - p
    winding = 1.0 if np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1]) >= 0 else -1.0
    mask = np.ones((ys.shape[0], xs.shape[1]), dtype=bool)
    for (px, py), (ex, ey) in zip(p, edges, strict=True):
        length = math.hypot(ex, ey)
        if length > 0:
            mask &= winding * (ex * (ys - py) - ey * (xs - px)) / length >= inset
    return where, mask


def polygon(img: np.ndarray, pts: list[Point], colour: RGB, inset: float = 0.0, alpha: float = 1.0) -> None:
    """Fill a convex polygon; ``inset`` shrinks it by that many pixels."""
    got = polygon_mask(img, pts, inset)
    if got is not None:
        _paint(img, got[0], got[1], colour, alpha)


def _ellipse_mask(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> Coverage | None:
    if rx <= 0 or ry <= 0:
        return None
    r = max(rx, ry)
    got = _region(img, cx - r, cy - r, cx + r, cy + r)
    if got is None:
        return None
    where, xs, ys = got
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = xs - cx, ys - cy
    return where, ((dx * c + dy * s) / rx) ** 2 + ((dy * c - dx * s) / ry) ** 2 <= 1.0


def ellipse(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, colour: RGB, angle: float = 0.0) -> None:
    got = _ellipse_mask(img, cx, cy, rx, ry, angle)
    if got is not None:
        _paint(img, got[0], got[1], colour)


def capsule(img: np.ndarray, a: Point, b: Point, radius: float, colour: RGB) -> None:
    """A thick line with round ends: limbs, handles, rods."""
    (ax, ay), (bx, by) = a, b
    got = _region(img, min(ax, bx) - radius, min(ay, by) - radius, max(ax, bx) + radius, max(ay, by) + radius)
    if got is None:
        return
    where, xs, ys = got
    vx, vy = bx - ax, by - ay
    t = np.clip(((xs - ax) * vx + (ys - ay) * vy) / max(vx * vx + vy * vy, 1e-9), 0.0, 1.0)
    mask = (xs - ax - t * vx) ** 2 + (ys - ay - t * vy) ** 2 <= radius * radius
    _paint(img, where, mask, colour)


def arc(
    img: np.ndarray, cx: float, cy: float, r: float, width: float, a0: float, a1: float, colour: RGB, alpha: float
) -> None:
    """A ring segment between angles ``a0`` and ``a1`` (radians), blended with ``alpha``."""
    got = _region(img, cx - r - width, cy - r - width, cx + r + width, cy + r + width)
    if got is None or alpha <= 0:
        return
    where, xs, ys = got
    dist = np.hypot(xs - cx, ys - cy)
    ang = np.arctan2(ys - cy, xs - cx)
    mask = (np.abs(dist - r) <= width / 2) & (ang >= a0) & (ang <= a1)
    _paint(img, where, mask, colour, alpha)


def outlined(img: np.ndarray, pts: list[Point], fill: RGB, edge: RGB) -> None:
    polygon(img, pts, edge)
    polygon(img, pts, fill, inset=1.0)


def rect(x0: float, y0: float, x1: float, y1: float) -> list[Point]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def rotated_rect(cx: float, cy: float, half_long: float, half_short: float, angle: float) -> list[Point]:
    """A rectangle centred on (cx, cy) whose long axis points along ``angle``."""
    c, s = math.cos(angle), math.sin(angle)
    return [
        (cx + sx * half_long * c - sy * half_short * s, cy + sx * half_long * s + sy * half_short * c)
        for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
    ]


def rgb(values: Iterable[float]) -> RGB:
    """Three channel values, rounded and clipped to 0..255."""
    r, g, b = (int(np.clip(round(float(v)), 0, 255)) for v in values)
    return (r, g, b)


def shade(colour: RGB, factor: float) -> RGB:
    """Darker (< 1) or lighter (> 1) version of a colour."""
    if factor <= 1:
        return rgb(c * factor for c in colour)
    return rgb(255 - (255 - c) / factor for c in colour)


def approach(k: int, event_frame: int, fps: float, motion: float, power: float = 2.0) -> float:
    """Progress 0 -> 1 of a motion from rest that ends at the event frame, ``(elapsed / motion) ** power``.

    ``power`` 2 is constant acceleration (a free fall); higher powers speed up
    harder. Either way the speed, and so the change per frame, is largest in
    the very last step into the event frame; exactly 1 from the event frame on.
    """
    before = (event_frame - k) / fps
    if before <= 0:
        return 1.0
    if before >= motion:
        return 0.0
    return (1.0 - before / motion) ** power


# ---------------------------------------------------------------- backdrop


def backdrop(spec: SceneSpec) -> np.ndarray:
    """The static wall texture and floor of a scene, ``(H, W, 3) uint8``."""
    w, h = spec.size
    bg = spec.background
    rng = np.random.default_rng([spec.seed, 1])
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    along = xs * math.cos(bg.angle) + ys * math.sin(bg.angle)
    if bg.style == "gradient":
        mix = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    elif bg.style == "stripes":
        mix = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * along / bg.period))
    elif bg.style == "tiles":
        mix = ((xs // bg.period + ys // bg.period) % 2).astype(np.float32)
        mix = np.where((xs % bg.period < 1) | (ys % bg.period < 1), 0.5, mix)  # grout lines
    else:  # noise: smooth blobs from a coarse random grid, upsampled bilinearly
        gh, gw = max(2, int(h / bg.period) + 2), max(2, int(w / bg.period) + 2)
        grid = rng.random((gh, gw)).astype(np.float32)
        gy, gx = ys / bg.period, xs / bg.period
        y0, x0 = gy.astype(int), gx.astype(int)
        fy, fx = gy - y0, gx - x0
        top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
        bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
        mix = top * (1 - fy) + bottom * fy
    c0, c1 = (np.asarray(c, np.float32) for c in bg.colours)
    img = c0 * (1 - mix[..., None]) + c1 * mix[..., None]
    img += rng.normal(0.0, 3.0, (h, w, 1)).astype(np.float32)  # fine grain, so the wall is not flat
    floor_y = int(round(spec.floor * h))
    depth = np.linspace(0.8, 1.15, max(1, h - floor_y), dtype=np.float32)[:, None, None]
    img[floor_y:] = np.asarray(bg.floor_colour, np.float32) * depth
    img[max(0, floor_y - 1) : floor_y + 1] = np.asarray(shade(bg.floor_colour, 0.45), np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- scenes


class _Scene(Generic[Pose]):
    """Geometry shared by all scenes: frame size, object unit ``u`` (pixels), anchor points."""

    # How far the drawing reaches left and right of its anchor, in units of ``u``.
    extent: tuple[float, float] = (0.3, 0.3)

    def __init__(self, spec: SceneSpec) -> None:
        self.spec = spec
        self.w, self.h = spec.size
        self.u = spec.scale * self.h
        # Move the anchor in from the edges so the whole object stays in the picture.
        left, right = self.extent[0] * self.u, self.extent[1] * self.u
        self.cx = min(max(spec.position * self.w, left), max(left, self.w - right))
        self.fy = spec.floor * self.h
        self.e = spec.event_frame
        self.main, self.second, self.accent = spec.colours
        self.edge = shade(self.main, 0.35)

    def scenery(self, img: np.ndarray) -> None:
        """Static parts, drawn once into the backdrop."""

    def state(self, k: int) -> Pose:
        """The pose at frame ``k``."""
        raise NotImplementedError

    def draw(self, img: np.ndarray, pose: Pose) -> None:
        """Draw the moving parts in ``pose`` onto a copy of the scenery."""
        raise NotImplementedError


class _FallingBox(_Scene[tuple[float, float]]):
    """A taped cardboard box drops from near the top and lands on the floor line at the event."""

    extent = (0.3, 0.3)

    def __init__(self, spec: SceneSpec) -> None:
        super().__init__(spec)
        self.bh = 0.2 * self.u
        self.bw = self.bh * (1.0 + 0.4 * (spec.seed % 5) / 4)
        self.top0 = 0.05 * self.h

    def state(self, k: int) -> tuple[float, float]:
        p = approach(k, self.e, self.spec.fps, self.spec.motion)
        after = (k - self.e) / self.spec.fps
        dust = 0.0 if after < 0 else max(0.0, 1.0 - after / 0.3)
        return (self.top0 + p * (self.fy - self.bh - self.top0), round(dust, 3))

    def draw(self, img: np.ndarray, pose: tuple[float, float]) -> None:
        top, dust = pose
        if dust > 0:  # puffs kicked up at both bottom corners by the impact; they fade in place, so
            # each later frame changes less than the impact frame did
            for side in (-1.0, 1.0):
                x = self.cx + side * (self.bw / 2 + 0.05 * self.u)
                got = _ellipse_mask(img, x, self.fy - 0.04 * self.u, 0.1 * self.u, 0.05 * self.u)
                if got is not None:
                    _paint(img, got[0], got[1], (205, 195, 175), 0.85 * dust)
        x0, x1, y1 = self.cx - self.bw / 2, self.cx + self.bw / 2, top + self.bh
        outlined(img, rect(x0, top, x1, y1), self.main, self.edge)
        polygon(img, rect(self.cx - self.bw * 0.08, top + 1, self.cx + self.bw * 0.08, y1 - 1), self.second)
        polygon(img, rect(x0 + 1, top + self.bh * 0.3, x1 - 1, top + self.bh * 0.3 + 1), shade(self.main, 0.7))
        polygon(img, rect(x0 + self.bw * 0.62, top + self.bh * 0.55, x1 - 3, top + self.bh * 0.8), self.accent)


class _ClappingHands(_Scene[float]):
    """Two hands on forearms swing together; the palms meet at the event and stay together."""

    extent = (0.52, 0.52)

    def __init__(self, spec: SceneSpec) -> None:
        super().__init__(spec)
        self.rx, self.ry = 0.07 * self.u, 0.13 * self.u
        self.cy = self.fy - 0.45 * self.u
        self.gap0 = 0.55 * self.u

    def state(self, k: int) -> float:
        # Arms drive the hands faster and faster into each other (power 3): the last step is the largest.
        return (1.0 - approach(k, self.e, self.spec.fps, self.spec.motion, power=3.0)) * self.gap0

    def draw(self, img: np.ndarray, pose: float) -> None:
        gap = pose
        for side in (-1.0, 1.0):
            px = self.cx + side * (gap / 2 + self.rx)
            wrist = (px + side * 0.3 * self.rx, self.cy + self.ry * 0.9)
            elbow = (self.cx + side * (0.6 * self.w), self.cy + 0.45 * self.u)
            capsule(img, wrist, elbow, 0.075 * self.u, self.second)
            capsule(img, wrist, (wrist[0] + side * 0.02 * self.u, wrist[1] + 0.05 * self.u), 0.08 * self.u, self.accent)
            ellipse(img, px, self.cy, self.rx + 1, self.ry + 1, self.edge)
            ellipse(img, px, self.cy, self.rx, self.ry, self.main)
            thumb = (px + side * self.rx * 0.9, self.cy - self.ry * 0.1)
            ellipse(img, thumb[0], thumb[1], 0.035 * self.u, 0.08 * self.u, self.main, angle=side * 0.5)
            for i in range(3):  # finger creases
                y = self.cy - self.ry * (0.55 - 0.2 * i)
                polygon(img, rect(px - self.rx * 0.5, y, px + self.rx * 0.5, y + 1), shade(self.main, 0.75))


class _ClosingDoor(_Scene[float]):
    """A door swings shut in its frame: the open door looks narrow and tall (near the eye), then flat."""

    extent = (0.2, 0.2)

    def __init__(self, spec: SceneSpec) -> None:
        super().__init__(spec)
        self.dh = min(0.7 * self.u, self.fy - 0.06 * self.h)
        self.dw = 0.42 * self.dh
        self.x0 = self.cx - self.dw / 2

    def scenery(self, img: np.ndarray) -> None:
        trim = max(2.0, 0.04 * self.u)
        polygon(img, rect(self.x0 - trim, self.fy - self.dh - trim, self.x0 + self.dw + trim, self.fy), self.accent)
        polygon(img, rect(self.x0, self.fy - self.dh, self.x0 + self.dw, self.fy), (18, 16, 22))

    def state(self, k: int) -> float:
        # A slammed door speeds up all the way into the frame (power 4). The perspective makes
        # the open door change more pixels per degree than the nearly shut one, so a gentler
        # push would put the largest frame change just before the event on small frames.
        return 1.0 - approach(k, self.e, self.spec.fps, self.spec.motion, power=4.0)

    def _at(self, a: float, along: float, up: float) -> Point:
        """A point on the door: ``along`` 0 hinge -> 1 free edge, ``up`` 0 bottom -> 1 top, ``a`` open fraction."""
        x = self.x0 + along * self.dw * (1.0 - 0.78 * a)
        bottom = self.fy + along * a * 0.06 * self.dh
        top = self.fy - self.dh - along * a * 0.14 * self.dh
        return (x, bottom + (top - bottom) * up)

    def draw(self, img: np.ndarray, pose: float) -> None:
        a = pose
        outlined(
            img, [self._at(a, 0, 1), self._at(a, 1, 1), self._at(a, 1, 0), self._at(a, 0, 0)], self.main, self.edge
        )
        for lo, hi in ((0.55, 0.9), (0.1, 0.45)):  # the two recessed panels
            pts = [self._at(a, 0.2, hi), self._at(a, 0.8, hi), self._at(a, 0.8, lo), self._at(a, 0.2, lo)]
            polygon(img, pts, shade(self.main, 0.75))
        kx, ky = self._at(a, 0.88, 0.48)
        ellipse(img, kx, ky, max(1.0, 0.025 * self.u * (1 - 0.6 * a)), max(1.0, 0.025 * self.u), self.second)


class _StruckBell(_Scene[tuple[float, float]]):
    """A hammer on a post swings down onto a hanging bell; ring marks flash at the hit and fade."""

    extent = (0.26, 0.54)

    def __init__(self, spec: SceneSpec) -> None:
        super().__init__(spec)
        u = self.u
        self.top = 0.2 * self.h
        self.bh = 0.34 * u
        self.lip_y = self.top + self.bh
        self.handle = 0.3 * u
        self.head_half_long, self.head_half_short = 0.07 * u, 0.04 * u
        self.hit_y = self.top + 0.7 * self.bh
        side_x = self.cx + 0.1 * u + 0.07 * u * 0.7  # the bell's flank at the hit height
        self.pivot = (side_x + self.head_half_short + self.handle, self.hit_y)
        self.raise_angle = 0.9 + 0.4 * ((spec.seed // 7) % 5) / 4

    def scenery(self, img: np.ndarray) -> None:
        u = self.u
        polygon(img, rect(self.cx - 0.25 * u, 0.08 * self.h, self.cx + 0.25 * u, 0.08 * self.h + 0.04 * u), self.accent)
        capsule(img, (self.cx, 0.08 * self.h), (self.cx, self.top), max(1.0, 0.012 * u), shade(self.accent, 0.6))
        ellipse(img, self.cx, self.top + 0.02 * u, 0.1 * u, 0.06 * u, self.edge)
        body = [
            (self.cx - 0.09 * u, self.top),
            (self.cx + 0.09 * u, self.top),
            (self.cx + 0.17 * u, self.lip_y),
            (self.cx - 0.17 * u, self.lip_y),
        ]
        outlined(img, body, self.main, self.edge)
        ellipse(img, self.cx, self.top + 0.02 * u, 0.095 * u, 0.055 * u, self.main)
        ellipse(img, self.cx, self.lip_y, 0.21 * u, 0.035 * u, self.edge)
        ellipse(img, self.cx, self.lip_y - 0.5, 0.2 * u, 0.028 * u, shade(self.main, 1.3))
        px, py = self.pivot
        polygon(img, rect(px - 0.02 * u, py, px + 0.02 * u, self.fy), self.second)
        ellipse(img, px, py, 0.035 * u, 0.035 * u, shade(self.second, 0.6))

    def state(self, k: int) -> tuple[float, float]:
        p = approach(k, self.e, self.spec.fps, self.spec.motion)
        after = (k - self.e) / self.spec.fps
        fade = 0.0 if after < 0 else max(0.0, 1.0 - after / 0.4)
        return (math.pi + self.raise_angle * (1.0 - p), round(fade, 3))

    def draw(self, img: np.ndarray, pose: tuple[float, float]) -> None:
        angle, fade = pose
        px, py = self.pivot
        hx, hy = px + self.handle * math.cos(angle), py + self.handle * math.sin(angle)
        capsule(img, (px, py), (hx, hy), max(1.0, 0.018 * self.u), shade(self.second, 0.8))
        head = rotated_rect(hx, hy, self.head_half_long, self.head_half_short, angle + math.pi / 2)
        outlined(img, head, self.accent, shade(self.accent, 0.4))
        for i in range(3):
            arc(
                img,
                self.cx,
                self.hit_y - 0.05 * self.u,
                (0.3 + 0.08 * i) * self.u,
                1.5,
                2.2,
                3.6,
                (250, 250, 235),
                fade,
            )


class _BreakingGlass(_Scene[tuple[str, float]]):
    """A glass drops onto the floor and bursts: a flash and shards flying out from the impact."""

    extent = (0.3, 0.3)

    def __init__(self, spec: SceneSpec) -> None:
        super().__init__(spec)
        u = self.u
        self.gw_top, self.gw_bottom, self.gh = 0.13 * u, 0.09 * u, 0.17 * u
        self.top0 = 0.08 * self.h
        rng = np.random.default_rng([spec.seed, 2])
        n = int(rng.integers(7, 12))
        self.shards = []
        for _ in range(n):
            x0 = self.cx + rng.uniform(-0.5, 0.5) * self.gw_top
            y0 = self.fy - rng.uniform(0.0, 0.6) * self.gh
            vx = rng.uniform(-1.0, 1.0) * 0.7 * u
            vy = -rng.uniform(0.3, 0.9) * u
            size = rng.uniform(0.025, 0.045) * u
            spin = rng.uniform(0, 2 * math.pi)
            self.shards.append((x0, y0, vx, vy, size, spin))
        self.gravity = 4.0 * u
        # The last shard lands by then; after it nothing moves and frames are copied.
        self.settle = max(self._landing(y0, vy) for _, y0, _, vy, _, _ in self.shards) + 0.2

    def _landing(self, y0: float, vy: float) -> float:
        drop = self.fy - y0
        return (-vy + math.sqrt(vy * vy + 2 * self.gravity * drop)) / self.gravity

    def state(self, k: int) -> tuple[str, float]:
        if k < self.e:
            p = approach(k, self.e, self.spec.fps, self.spec.motion)
            return ("falling", self.top0 + p * (self.fy - self.gh - self.top0))
        return ("broken", min((k - self.e) / self.spec.fps, self.settle))

    def _flash(self, img: np.ndarray, strength: float) -> None:
        """A star burst on the floor at the impact: a hexagon with six spikes, blended by ``strength``."""
        r = 0.24 * self.u * (0.6 + 0.4 * strength)
        cy = self.fy - 0.25 * r

        def at(radius: float, i: float) -> Point:
            return (self.cx + radius * math.cos(i * math.pi / 3), cy + 0.55 * radius * math.sin(i * math.pi / 3))

        covered = np.zeros(img.shape[:2], dtype=bool)
        pieces = [[at(0.4 * r, i) for i in range(6)]]
        pieces += [[at(0.4 * r, i), at(r, i + 0.5), at(0.4 * r, i + 1)] for i in range(6)]
        for piece in pieces:
            got = polygon_mask(img, piece)
            if got is not None:
                covered[got[0]] |= got[1]
        _paint(img, (slice(None), slice(None)), covered, self.accent, strength)

    def draw(self, img: np.ndarray, pose: tuple[str, float]) -> None:
        phase, value = pose
        glass = (200, 235, 250)
        if phase == "falling":
            top = float(value)
            pts = [
                (self.cx - self.gw_top / 2, top),
                (self.cx + self.gw_top / 2, top),
                (self.cx + self.gw_bottom / 2, top + self.gh),
                (self.cx - self.gw_bottom / 2, top + self.gh),
            ]
            outlined(img, pts, self.main, shade(glass, 0.5))
            polygon(
                img, rect(self.cx - self.gw_top * 0.3, top + 2, self.cx - self.gw_top * 0.18, top + self.gh - 2), glass
            )
            return
        tau = float(value)
        flash = max(0.0, 1.0 - tau / 0.16)
        if flash > 0:
            self._flash(img, flash)
        for x0, y0, vx, vy, size, spin in self.shards:
            t = min(tau, self._landing(y0, vy))
            x, y = x0 + vx * t, min(self.fy - 1, y0 + vy * t + 0.5 * self.gravity * t * t)
            a = spin + 6.0 * t
            tri = [(x + size * math.cos(a + i * 2.1), y + size * math.sin(a + i * 2.1)) for i in range(3)]
            polygon(img, tri, self.main)


class _BarkingDog(_Scene[float]):
    """A standing dog in profile; at the event its head jerks up and its jaw snaps open, then both relax."""

    extent = (0.36, 0.45)

    def __init__(self, spec: SceneSpec) -> None:
        super().__init__(spec)
        u = self.u
        self.leg = 0.16 * u
        self.body = (self.cx - 0.07 * u, self.fy - self.leg - 0.08 * u, 0.2 * u, 0.09 * u)
        bx, by, brx, _ = self.body
        self.head = (bx + brx + 0.05 * u, by - 0.14 * u, 0.1 * u, 0.085 * u)
        self.snout = 0.16 * u
        self.open_angle = 0.6 + 0.2 * ((spec.seed // 3) % 5) / 4
        self.lift = 0.05 * u  # how far the head jerks up with the bark
        self.bark_s = 0.24

    def scenery(self, img: np.ndarray) -> None:
        u, fur, dark = self.u, self.main, self.edge
        bx, by, brx, bry = self.body
        hx, hy, hrx, hry = self.head
        capsule(img, (bx - brx * 0.9, by - bry * 0.3), (bx - brx * 1.35, by - bry * 2.2), 0.03 * u, fur)  # tail
        for lx in (bx - brx * 0.7, bx - brx * 0.45, bx + brx * 0.45, bx + brx * 0.7):
            capsule(img, (lx, by), (lx, self.fy - 0.02 * u), 0.035 * u, shade(fur, 0.8))
        ellipse(img, bx, by, brx + 1, bry + 1, dark)
        ellipse(img, bx, by, brx, bry, fur)
        capsule(img, (bx + brx * 0.7, by - bry * 0.4), (hx - hrx * 0.3, hy + hry * 0.6), 0.06 * u, fur)  # neck

    def state(self, k: int) -> float:
        """How open the bark is: 1 at the event frame, falling linearly to 0 over ``bark_s``."""
        after = (k - self.e) / self.spec.fps
        if after < 0 or after >= self.bark_s:
            return 0.0
        return 1.0 - after / self.bark_s

    def draw(self, img: np.ndarray, pose: float) -> None:
        bark = pose
        u, fur = self.u, self.main
        hx, hy, hrx, hry = self.head
        hy -= self.lift * bark
        capsule(img, (hx - hrx * 0.5, hy + hry * 0.5), (hx - hrx * 0.9, hy + hry * 2.0), 0.055 * u, fur)  # nape
        ellipse(img, hx, hy, hrx + 1, hry + 1, self.edge)
        ellipse(img, hx, hy, hrx, hry, fur)
        jaw_y = hy + 0.02 * u
        hinge_x = hx + 0.2 * hrx
        length = self.snout - 0.2 * hrx
        angle = self.open_angle * bark
        c, s = math.cos(angle), math.sin(angle)
        tip = (hinge_x + length * c, jaw_y + length * s)
        if bark > 0:
            polygon(img, [(hinge_x, jaw_y), (hinge_x + length, jaw_y), tip], (150, 30, 40))  # the open mouth
        thick = 0.035 * u
        jaw = [
            (hinge_x, jaw_y),
            tip,
            (tip[0] - thick * s, tip[1] + thick * c),
            (hinge_x - thick * s, jaw_y + thick * c),
        ]
        polygon(img, jaw, shade(fur, 0.85))
        polygon(img, rect(hx, jaw_y - 0.055 * u, hx + self.snout, jaw_y), fur)  # muzzle
        ellipse(img, hx + self.snout, jaw_y - 0.045 * u, 0.022 * u, 0.02 * u, (20, 15, 15))  # nose
        ellipse(img, hx + 0.25 * hrx, hy - 0.35 * hry, 0.017 * u, 0.017 * u, (15, 15, 15))  # eye
        ear = [(hx - 0.4 * hrx, hy - 0.8 * hry), (hx - 0.05 * hrx, hy - 0.9 * hry), (hx - 0.6 * hrx, hy + 0.7 * hry)]
        polygon(img, ear, self.second)


_SCENES: dict[str, Callable[[SceneSpec], _Scene[Any]]] = {
    "object_falls": _FallingBox,
    "hands_clap": _ClappingHands,
    "door_closes": _ClosingDoor,
    "bell_struck": _StruckBell,
    "glass_breaks": _BreakingGlass,
    "dog_barks": _BarkingDog,
}
assert set(_SCENES) == {k.label for k in EVENT_KINDS}, "every event kind needs a scene"


def render(spec: SceneSpec) -> np.ndarray:
    """The scene's frames, ``(n_frames, height, width, 3) uint8``."""
    scene = _SCENES[spec.kind](spec)
    base = backdrop(spec)
    scene.scenery(base)
    frames = np.empty((spec.n_frames, spec.height, spec.width, 3), dtype=np.uint8)
    previous: Hashable = None
    for k in range(spec.n_frames):
        pose = scene.state(k)
        if k > 0 and pose == previous:
            frames[k] = frames[k - 1]
            continue
        frames[k] = base
        scene.draw(frames[k], pose)
        previous = pose
    if spec.mirror:
        frames = np.ascontiguousarray(frames[:, :, ::-1])
    return frames


# ---------------------------------------------------------------- random specs

# Plausible colours per kind, jittered per scene, so a box looks like cardboard
# and a dog like a dog: (main, secondary, accent) choices.
_PALETTES: dict[str, tuple[tuple[RGB, RGB, RGB], ...]] = {
    "object_falls": (((196, 150, 98), (225, 205, 160), (240, 240, 235)), ((170, 120, 70), (90, 60, 35), (230, 60, 50))),
    "hands_clap": (
        ((240, 200, 170), (60, 90, 170), (230, 230, 230)),
        ((160, 110, 80), (180, 50, 50), (240, 240, 240)),
        ((210, 160, 120), (60, 140, 80), (30, 30, 30)),
    ),
    "door_closes": (
        ((150, 95, 55), (230, 200, 80), (235, 230, 220)),
        ((60, 110, 170), (220, 220, 220), (240, 235, 225)),
        ((170, 50, 45), (230, 200, 80), (225, 225, 215)),
    ),
    "bell_struck": (((215, 170, 60), (110, 80, 50), (120, 120, 130)), ((190, 140, 70), (90, 90, 95), (150, 100, 60))),
    "glass_breaks": (
        ((160, 215, 235), (240, 250, 255), (255, 250, 210)),
        ((175, 230, 210), (240, 255, 250), (255, 255, 230)),
    ),
    "dog_barks": (
        ((175, 120, 65), (110, 70, 40), (0, 0, 0)),
        ((60, 55, 50), (30, 28, 26), (0, 0, 0)),
        ((225, 200, 150), (170, 120, 70), (0, 0, 0)),
        ((235, 235, 230), (90, 70, 60), (0, 0, 0)),
    ),
}


# Seconds of motion before the event, per kind where it differs: a door is pushed shut quickly.
_MOTION_S: dict[str, tuple[float, float]] = {"door_closes": (0.3, 0.45)}


def _jitter(colour: RGB, rng: np.random.Generator, amount: float = 18.0) -> RGB:
    return rgb(c + rng.uniform(-amount, amount) for c in colour)


def random_spec(
    kind: str,
    rng: np.random.Generator,
    *,
    fps: float = 25.0,
    size: tuple[int, int] = (160, 120),
    duration: float = 4.0,
) -> SceneSpec:
    """A scene of ``kind`` with its timing, placement, size, colours and backdrop drawn from ``rng``.

    The event frame is uniform over the frames in
    [``EARLIEST_EVENT_S``, ``duration - LATEST_EVENT_GAP_S``].
    """
    if kind not in _PALETTES:
        raise ValueError(f"unknown scene kind {kind!r}; known: {', '.join(_PALETTES)}")
    first = math.ceil(EARLIEST_EVENT_S * fps)
    last = math.floor((duration - LATEST_EVENT_GAP_S) * fps)
    if last < first:
        raise ValueError(
            f"a {duration} s scene is too short: the event must fall between {EARLIEST_EVENT_S} s and"
            f" {LATEST_EVENT_GAP_S} s before the end"
        )
    event_frame = int(rng.integers(first, last + 1))
    style = BACKGROUND_STYLES[int(rng.integers(len(BACKGROUND_STYLES)))]
    light = bool(rng.random() < 0.5)
    base = rng.uniform(150, 210, 3) if light else rng.uniform(45, 110, 3)
    other = np.clip(base + rng.uniform(-35, 35, 3), 0, 255)
    background = Background(
        style=style,
        colours=(rgb(base), rgb(other)),
        floor_colour=rgb(rng.uniform(60, 150, 3)),
        angle=float(rng.uniform(0, math.pi)),
        period=float(rng.uniform(0.06, 0.18) * size[1]),
    )
    palette = _PALETTES[kind][int(rng.integers(len(_PALETTES[kind])))]
    return SceneSpec(
        kind=kind,
        event_time=event_frame / fps,
        fps=fps,
        size=size,
        duration=duration,
        position=float(rng.uniform(0.35, 0.65)),
        floor=float(rng.uniform(0.8, 0.9)),
        scale=float(rng.uniform(0.85, 1.15)),
        motion=float(rng.uniform(*_MOTION_S.get(kind, (0.45, 0.7)))),
        mirror=bool(rng.random() < 0.5),
        background=background,
        colours=(_jitter(palette[0], rng), _jitter(palette[1], rng), _jitter(palette[2], rng)),
        seed=int(rng.integers(2**31)),
    )
