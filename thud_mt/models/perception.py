"""Signal and vision analysis for the reference models: when something is seen, whether and what is heard.

No learned weights: the eye is frame differencing, the ear is a level gate,
an energy-rise onset detector and a nearest-neighbour classifier on spectral
features against exemplar recordings. Every size is a field of
``PerceptionSettings`` with its documented default.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from thud_mt.signal import as_2d, dct_ortho, highpass, onset_times, resample, stft_power


@dataclass(frozen=True)
class PerceptionSettings:
    """How the reference models look and listen.

    ``presence_dbfs``: a track counts as sounding when its high-passed
    (``highpass_hz``) peak reaches this level and an onset exists: room tone
    (-70..-60 dBFS RMS, peaks near -47) and AAC noise stay far under it,
    recorded sounds (peaks near -6) far over it.
    ``onset_threshold_db`` / ``onset_floor_dbfs``: ``thud_mt.signal.onset_times``
    settings for the sound's start.
    ``analysis_rate``: audio is resampled to it before features are taken.
    ``window_s``: spectral shape is measured over this long after the onset
    (starting ``pre_onset_s`` before it, so a slightly late onset estimate
    still sees the attack); ``ring_s``: how far decay is followed.
    ``n_bands``, ``band_low_hz``, ``band_high_hz``: the mel-spaced bands;
    ``n_cepstra``: how many cepstral coefficients of them describe the shape.
    ``cut_levels`` / ``cut_ratio``: a hard cut (not an event) is a single
    frame change of at least ``cut_levels`` luma levels that is ``cut_ratio``
    times larger than the changes on either side of it.
    ``max_side``: frames are subsampled to about this many pixels on their
    longer side before differencing: the event is a large change, so detail
    does not matter and big videos cost no more than small ones.
    """

    presence_dbfs: float = -40.0
    highpass_hz: float = 30.0
    onset_threshold_db: float = 20.0
    onset_floor_dbfs: float = -50.0
    analysis_rate: int = 16_000
    pre_onset_s: float = 0.01
    window_s: float = 0.3
    ring_s: float = 1.0
    n_bands: int = 24
    n_cepstra: int = 12
    band_low_hz: float = 60.0
    band_high_hz: float = 7600.0
    cut_levels: float = 20.0
    cut_ratio: float = 10.0
    max_side: int = 160


DEFAULT_PERCEPTION = PerceptionSettings()

# Decay is measured as the energy in these spans after the onset, in dB under the first one.
_DECAY_SPANS = ((0.0, 0.03), (0.03, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.6), (0.6, 1.0))
# Band levels this far under the loudest band count as empty: room tone must not make features differ.
_FLOOR_DB = -60.0
# A sound this far under its attack counts as over. Well above the room tone under a loud sound
# (about -50 dB), so how quiet the room is does not change how long a sound seems to ring.
_DECAY_FLOOR_DB = -40.0
_FFT = 512
_HOP = 128


# ---------------------------------------------------------------------------------------------- eye


def luma_changes(frames: np.ndarray, max_side: int = DEFAULT_PERCEPTION.max_side) -> np.ndarray:
    """Mean |luma difference| (levels of 255) between each frame and the next: entry ``k`` is frame k -> k+1."""
    if frames.shape[0] < 2:
        return np.zeros(0, np.float32)
    step = max(1, int(np.ceil(max(frames.shape[1], frames.shape[2]) / max_side)))
    small = frames[:, ::step, ::step].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.abs(np.diff(small, axis=0)).mean(axis=(1, 2))


def hard_cuts(changes: np.ndarray, settings: PerceptionSettings = DEFAULT_PERCEPTION) -> np.ndarray:
    """Boolean mask over ``changes``: isolated huge changes, i.e. a cut to another shot, not motion in one."""
    padded = np.concatenate([[0.0], changes, [0.0]])
    neighbours = np.maximum(padded[:-2], padded[2:])
    return (changes >= settings.cut_levels) & (changes >= settings.cut_ratio * np.maximum(neighbours, 1e-3))


def visual_event_frame(frames: np.ndarray, settings: PerceptionSettings = DEFAULT_PERCEPTION) -> int | None:
    """The frame where the visible event happens: the one that differs most from the frame before it.

    Impacts, claps, a door shutting, a hammer blow, a jaw snapping open: a
    motion that accelerates into the event and stops (or changes character)
    there, so the largest frame-to-frame change lands on the event frame.
    Hard cuts are left out. ``None`` when fewer than two frames or no change.
    """
    changes = luma_changes(frames, settings.max_side)
    if changes.size == 0:
        return None
    changes = np.where(hard_cuts(changes, settings), 0.0, changes)
    if float(changes.max()) <= 0.0:
        return None
    return int(np.argmax(changes)) + 1


# ---------------------------------------------------------------------------------------------- ear


@dataclass(frozen=True)
class Hearing:
    """What the ear reports about a track: its level, whether it sounds, and when the (first) sound starts."""

    peak_dbfs: float
    onset: float | None
    present: bool


def mono(audio: np.ndarray) -> np.ndarray:
    return as_2d(audio).mean(axis=1).astype(np.float64)


def highpassed_peak_dbfs(audio: np.ndarray, sample_rate: int, cutoff_hz: float) -> float:
    """Peak level after a high-pass: DC and rumble are not sound anyone hears."""
    x = mono(audio)
    if x.size == 0:
        return float("-inf")
    if 0 < cutoff_hz < 0.45 * sample_rate:
        x = highpass(x, sample_rate, cutoff_hz)
    peak = float(np.max(np.abs(x)))
    return 20.0 * np.log10(peak) if peak > 0 else float("-inf")


def hear(audio: np.ndarray, sample_rate: int, settings: PerceptionSettings = DEFAULT_PERCEPTION) -> Hearing:
    """Level gate plus onset detection: a sound is present when it is loud enough and starts somewhere."""
    peak = highpassed_peak_dbfs(audio, sample_rate, settings.highpass_hz)
    onset = None
    if peak >= settings.presence_dbfs:
        found = onset_times(
            audio, sample_rate, threshold_db=settings.onset_threshold_db, floor_dbfs=settings.onset_floor_dbfs
        )
        onset = found[0] if found else None
    return Hearing(peak_dbfs=peak, onset=onset, present=onset is not None)


def exemplar_onset(
    audio: np.ndarray, sample_rate: int, annotated: float, settings: PerceptionSettings = DEFAULT_PERCEPTION
) -> float:
    """Where the ear would place an annotated sound's onset: the detected onset nearest it, within 0.1 s.

    Features of exemplars and of heard sounds are then taken at onsets found
    the same way; an annotation the detector cannot confirm is used as it is.
    """
    found = onset_times(
        audio, sample_rate, threshold_db=settings.onset_threshold_db, floor_dbfs=settings.onset_floor_dbfs
    )
    near = [t for t in found if abs(t - annotated) <= 0.1]
    return min(near, key=lambda t: abs(t - annotated)) if near else annotated


def _mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


@lru_cache(maxsize=8)
def _mel_filters(settings: PerceptionSettings) -> np.ndarray:
    """Triangular mel-spaced filters, ``(n_bands, _FFT // 2 + 1)``; every band covers at least one FFT bin."""
    freqs = np.fft.rfftfreq(_FFT, 1.0 / settings.analysis_rate)
    top = min(settings.band_high_hz, 0.48 * settings.analysis_rate)
    edges_mel = np.linspace(_mel(settings.band_low_hz), _mel(top), settings.n_bands + 2)
    edges = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    bin_width = freqs[1]
    filters = np.zeros((settings.n_bands, freqs.size))
    for b in range(settings.n_bands):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        half = max(mid - lo, bin_width), max(hi - mid, bin_width)  # low bands are narrower than a bin
        rise = 1.0 - (mid - freqs) / half[0]
        fall = 1.0 - (freqs - mid) / half[1]
        filters[b] = np.clip(np.minimum(rise, fall), 0.0, None)
    return filters


def _span_energy(x: np.ndarray, rate: int, start: int, span: tuple[float, float]) -> float:
    """Mean energy over ``span`` seconds after sample ``start``; NaN when the span runs past the audio."""
    a, b = start + int(span[0] * rate), start + int(span[1] * rate)
    if b > x.size:
        return float("nan")
    seg = x[max(0, a) : max(0, b)]
    return float(np.mean(seg**2)) if seg.size else 0.0


def _decay_spans(settings: PerceptionSettings) -> tuple[tuple[float, float], ...]:
    return tuple(span for span in _DECAY_SPANS[1:] if span[1] <= settings.ring_s + 1e-9)


def feature_groups(settings: PerceptionSettings = DEFAULT_PERCEPTION) -> np.ndarray:
    """Which group each entry of ``sound_features`` belongs to: 0 spectral shape, 1 brightness and noisiness, 2 decay.

    Each group weighs the same in a distance however many entries it has, so
    two dozen band energies do not drown out how long a sound rings.
    """
    return np.array([0] * settings.n_cepstra + [1, 1] + [2] * len(_decay_spans(settings)))


def sound_features(
    audio: np.ndarray, sample_rate: int, onset: float, settings: PerceptionSettings = DEFAULT_PERCEPTION
) -> np.ndarray:
    """Level-free description of the sound starting at ``onset``: spectral shape, brightness, noisiness, decay.

    ``n_cepstra`` cepstral coefficients of ``n_bands`` log band energies over
    the window after the onset (the spectral envelope; c0, the loudness, is
    left out); log spectral centroid; spectral flatness; and the energy in
    successive spans after the onset relative to the first (how fast it dies
    away: a clap in milliseconds, a bell in seconds).
    A span the audio ends before is NaN, not silence: a bell cut off by the
    end of the clip must not look like a sound that stops.
    """
    rate = settings.analysis_rate
    x = mono(resample(as_2d(audio), sample_rate, rate)) if sample_rate != rate else mono(audio)
    start = int(round((onset - settings.pre_onset_s) * rate))
    stop = start + int(round((settings.window_s + settings.pre_onset_s) * rate))
    seg = x[max(0, start) : max(0, stop)]
    if seg.size < _FFT:
        seg = np.concatenate([seg, np.zeros(_FFT - seg.size)])
    power = np.mean(stft_power(seg, _FFT, _HOP), axis=1)
    total = float(power.sum())
    bands_db = 10.0 * np.log10(_mel_filters(settings) @ power + 1e-12 * max(total, 1e-20))
    bands_db = np.maximum(bands_db, bands_db.max() + _FLOOR_DB)
    # Cepstral coefficients 1..n of the band levels: the spectral envelope without the overall level (c0)
    # and without fine detail (which partial lands in which band), which varies within a class.
    shape = dct_ortho(bands_db)[1 : settings.n_cepstra + 1]
    freqs = np.fft.rfftfreq(_FFT, 1.0 / rate)
    centroid = float(np.sum(freqs * power) / total) if total > 0 else 0.0
    flatness = float(np.exp(np.mean(np.log(power + 1e-20))) / (np.mean(power) + 1e-20)) if total > 0 else 1.0
    onset_sample = int(round(onset * rate))
    first = _span_energy(x, rate, onset_sample, _DECAY_SPANS[0])
    decay = [
        max(_DECAY_FLOOR_DB, 10.0 * np.log10((energy + 1e-20) / (first + 1e-20))) if np.isfinite(energy) else np.nan
        for span in _decay_spans(settings)
        for energy in [_span_energy(x, rate, onset_sample, span)]
    ]
    return np.concatenate(
        [shape / 10.0, [np.log2(max(centroid, 20.0)), 10.0 * np.log10(flatness + 1e-6) / 10.0], np.array(decay) / 10.0]
    )


# ---------------------------------------------------------------------------------------------- exemplars


@dataclass(frozen=True)
class Exemplar:
    """One reference sound: its class, the features of its recording at its onset, and where it came from."""

    sound: str
    features: np.ndarray
    source: str


class ExemplarSet:
    """Nearest-neighbour sound classification against reference exemplars.

    Features are divided by their spread within classes (so no feature's
    units dominate, and steady features count most) and each group of
    features weighs the same (see ``feature_groups``). A feature the heard
    sound lacks (NaN: its decay past the end of the clip) is left out of
    every distance.
    """

    def __init__(self, exemplars: Iterable[Exemplar], groups: np.ndarray | None = None) -> None:
        self.exemplars = tuple(exemplars)
        if not self.exemplars:
            raise ValueError("a sound classifier needs at least one exemplar")
        self._sounds = np.array([e.sound for e in self.exemplars], dtype=object)
        self._matrix = _impute(np.stack([e.features for e in self.exemplars]), self._sounds)
        self._scale = _within_class_spread(self._matrix, self._sounds)
        self._groups = np.zeros(self._matrix.shape[1], int) if groups is None else np.asarray(groups)
        if self._groups.shape != (self._matrix.shape[1],):
            raise ValueError(f"{self._groups.size} feature groups given for {self._matrix.shape[1]} features")

    @property
    def sounds(self) -> tuple[str, ...]:
        return tuple(sorted(set(self._sounds)))

    @property
    def digest(self) -> str:
        """Identifies the exemplars (classes and features), for a model's fingerprint."""
        h = hashlib.sha256()
        for e in self.exemplars:
            h.update(e.sound.encode())
            h.update(np.round(e.features, 4).astype(np.float32).tobytes())
        return h.hexdigest()[:16]

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Root of the summed per-group mean squared standardised differences over the features known."""
        known = np.isfinite(features)
        diff2 = ((self._matrix[:, known] - features[known]) / self._scale[known]) ** 2
        groups = self._groups[known]
        total = np.zeros(self._matrix.shape[0])
        for g in np.unique(groups):
            total += diff2[:, groups == g].mean(axis=1)
        return np.sqrt(total)

    def classify(self, features: np.ndarray, allowed: Sequence[str] | None = None) -> str | None:
        """The class of the nearest exemplar among ``allowed`` classes (all when ``None``); ``None`` if none."""
        dist = self.distances(features)
        if allowed is not None:
            dist = np.where(np.isin(self._sounds, list(allowed)), dist, np.inf)
        if not np.isfinite(dist).any():
            return None
        return str(self._sounds[int(np.argmin(dist))])


def _within_class_spread(matrix: np.ndarray, sounds: np.ndarray) -> np.ndarray:
    """Per feature, the pooled spread of exemplars around their class mean.

    Dividing by it weighs a feature by how steady it is within a class (a
    bell's ring time) rather than by how much it varies overall, so
    features that vary by recording (which partial falls in which band) count
    less. Classes with one exemplar add nothing; with none pooled at all the
    overall spread is used. The floor keeps a feature that happens to be
    constant in every class from weighing without bound.
    """
    overall = matrix.std(axis=0)
    residuals = [matrix[sounds == s] - matrix[sounds == s].mean(axis=0) for s in set(sounds) if (sounds == s).sum() > 1]
    dof = sum(r.shape[0] - 1 for r in residuals)
    pooled = np.sqrt(sum((r**2).sum(axis=0) for r in residuals) / dof) if dof > 0 else overall
    return np.maximum(pooled, 0.1 * overall + 1e-3)


def _impute(matrix: np.ndarray, sounds: np.ndarray) -> np.ndarray:
    """Fill an exemplar's missing features (a sound cut off by its clip's end) from its class, else from all."""
    if np.isfinite(matrix).all():
        return matrix
    out = matrix.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": a column missing everywhere
        overall = np.nan_to_num(np.nanmean(matrix, axis=0))
        for sound in set(sounds):
            rows = sounds == sound
            typical = np.nanmean(matrix[rows], axis=0)
            typical = np.where(np.isfinite(typical), typical, overall)
            out[rows] = np.where(np.isfinite(matrix[rows]), matrix[rows], typical)
    return out


def settings_digest(settings: PerceptionSettings) -> str:
    return hashlib.sha256(repr(sorted(asdict(settings).items())).encode()).hexdigest()[:12]
