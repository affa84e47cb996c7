"""Audio signal helpers shared by the readers, the edits, the corpus and tests.

One implementation each of: resampling, channel remixing, loudness, onset
detection, high-pass filtering, short-time power spectra, the DCT and lag
measurement by cross-correlation.

What a suite run calls (the reference models' ears, the edits) is numpy only:
``scipy.signal`` costs 0.8 s to import in every pytest-xdist worker, so it is
imported where it is used, by resampling and cross-correlation, which corpus
building and benchmarks need and a test run on a corpus at one rate does not.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np

# dBFS below which audio counts as silent: well under any recorded room tone
# that survives AAC, well above float rounding.
SILENCE_DBFS = -60.0


def as_2d(audio: np.ndarray) -> np.ndarray:
    """``(N,)`` or ``(N, C)`` -> ``(N, C)`` float32."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio[:, None] if audio.ndim == 1 else audio


def resample(audio: np.ndarray, rate_from: int, rate_to: int) -> np.ndarray:
    """Resample ``(N, C)`` audio with a linear-phase polyphase filter.

    Linear phase and a centred filter mean no delay: an onset at ``t`` seconds
    stays at ``t`` seconds, which the interventions rely on.
    """
    audio = as_2d(audio)
    if rate_from == rate_to or audio.shape[0] == 0:
        return audio.copy()
    from scipy import signal as sps

    ratio = Fraction(int(rate_to), int(rate_from))
    out = sps.resample_poly(audio, ratio.numerator, ratio.denominator, axis=0)
    expected = int(round(audio.shape[0] * rate_to / rate_from))
    return fit_length(out.astype(np.float32), expected)


def remix(audio: np.ndarray, channels: int) -> np.ndarray:
    """Down-mix by averaging, up-mix by copying the mono mix to every channel."""
    audio = as_2d(audio)
    if audio.shape[1] == channels:
        return audio.copy()
    mono = audio.mean(axis=1, keepdims=True)
    return np.repeat(mono, channels, axis=1).astype(np.float32)


def fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad at the end to exactly ``n`` samples."""
    audio = as_2d(audio)
    if audio.shape[0] >= n:
        return audio[:n]
    pad = np.zeros((n - audio.shape[0], audio.shape[1]), dtype=np.float32)
    return np.concatenate([audio, pad])


def rms_dbfs(audio: np.ndarray) -> float:
    """Root-mean-square level in dBFS (``-inf`` for digital silence)."""
    audio = as_2d(audio)
    if audio.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def peak_dbfs(audio: np.ndarray) -> float:
    audio = as_2d(audio)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return 20.0 * np.log10(peak) if peak > 0 else float("-inf")


def is_silent(audio: np.ndarray, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    """True when even the loudest sample stays under ``threshold_dbfs``."""
    return peak_dbfs(audio) < threshold_dbfs


def envelope(audio: np.ndarray, sample_rate: int, hop_s: float = 0.005) -> tuple[np.ndarray, float]:
    """Frame energy (mean square of the mono mix) with hop ``hop_s``; returns (env, hop)."""
    mono = as_2d(audio).mean(axis=1)
    hop = max(1, int(round(hop_s * sample_rate)))
    n = len(mono) // hop
    if n == 0:
        return np.zeros(0), hop / sample_rate
    frames = mono[: n * hop].reshape(n, hop).astype(np.float64)
    return np.mean(frames**2, axis=1), hop / sample_rate


def highpass(x: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """A mono signal through a 2nd-order Butterworth high-pass: scipy's ``butter(2, ..., "highpass")`` run by
    ``sosfilt`` (causal, from rest), computed as a product of spectra.

    The filter's impulse response has decayed to 1e-12 of its start within ``tail`` samples, so padding by
    that much makes the FFT's circular convolution the linear one to float precision.
    """
    x = np.asarray(x, dtype=np.float64)
    k = math.tan(math.pi * cutoff_hz / sample_rate)  # bilinear transform with the cutoff pre-warped
    norm = 1.0 / (1.0 + math.sqrt(2.0) * k + k * k)
    b = np.array([1.0, -2.0, 1.0]) * norm
    a = np.array([1.0, 2.0 * (k * k - 1.0) * norm, (1.0 - math.sqrt(2.0) * k + k * k) * norm])
    radius = math.sqrt(a[2])  # both poles are at this radius (complex pair) or under it
    tail = int(math.log(1e-12) / math.log(radius)) + 1 if radius < 1 else x.size
    n = _fast_fft_length(x.size + tail)
    return np.fft.irfft(np.fft.rfft(x, n) * _response(tuple(b), tuple(a), n), n)[: x.size]


@lru_cache(maxsize=16)
def _response(b: tuple[float, ...], a: tuple[float, ...], n: int) -> np.ndarray:
    """A filter's frequency response at the ``n``-point real FFT's bins (the same few per corpus: cached)."""
    z = np.exp(-2j * np.pi * np.fft.rfftfreq(n))
    response = np.polyval(b[::-1], z) / np.polyval(a[::-1], z)
    response.flags.writeable = False
    return response


@lru_cache(maxsize=64)
def _fast_fft_length(n: int) -> int:
    """The smallest ``2^i 3^j 5^k >= n`` with ``j <= 3``, ``k <= 1``: about as fast as a power of two
    (numpy's pocketfft), at most a few percent longer than ``n`` instead of up to twice.
    """
    best = 1 << max(1, math.ceil(math.log2(n)))
    for odd in (1, 3, 5, 9, 15, 27, 45, 135):
        size = odd << max(0, math.ceil(math.log2(n / odd)))
        best = min(best, size)
    return best


def stft_power(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Power spectra of periodic-Hann frames ``hop`` apart, ``(n_fft // 2 + 1, frames)``: scipy's
    ``stft(x, nperseg=n_fft, noverlap=n_fft - hop, boundary=None, padded=True)`` squared, amplitudes scaled
    by the window's sum. ``x`` must hold at least ``n_fft`` samples.
    """
    x = np.asarray(x, dtype=np.float64)
    pad = (-(x.size - n_fft) % hop) % n_fft  # zeros so the last frame ends at the end, as padded=True
    x = np.concatenate([x, np.zeros(pad)])
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    spec = np.fft.rfft(frames * window, axis=1) / window.sum()
    return (np.abs(spec) ** 2).T


def dct_ortho(x: np.ndarray) -> np.ndarray:
    """The orthonormal DCT-II of a vector (scipy's ``dct(x, type=2, norm="ortho")``)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    k = np.arange(n)[:, None]
    basis = np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n))
    scale = np.full(n, math.sqrt(2.0 / n))
    scale[0] = math.sqrt(1.0 / n)
    return scale * (basis @ x)


def onset_times(
    audio: np.ndarray,
    sample_rate: int,
    *,
    threshold_db: float = 20.0,
    floor_dbfs: float = -50.0,
    min_gap_s: float = 0.25,
    hop_s: float = 0.002,
) -> list[float]:
    """Sound onsets: where frame energy jumps ``threshold_db`` over the recent floor.

    Robust enough for isolated impacts, claps, barks and bells; the time is
    refined to the first sample above 10% of the local peak, so it is sample
    accurate for sharp transients.
    """
    mono = as_2d(audio).mean(axis=1)
    env, hop = envelope(mono, sample_rate, hop_s)
    if env.size == 0:
        return []
    env_db = 10.0 * np.log10(env + 1e-12)
    look = max(1, int(round(0.05 / hop)))
    # The floor of frame i is the quietest of the `look` frames before it (-120 dB before the first frame).
    before = np.concatenate([np.full(look, np.inf), env_db[:-1]])
    floor = np.lib.stride_tricks.sliding_window_view(before, look).min(axis=1)
    floor[0] = -120.0
    rising = np.flatnonzero((env_db > floor_dbfs) & (env_db - floor >= threshold_db))
    onsets: list[float] = []
    last = -np.inf
    for i in rising.tolist():  # few: the frames where the level jumps
        if (i * hop - last) >= min_gap_s:
            start = max(0, (i - 1) * int(round(hop * sample_rate)))
            seg = np.abs(mono[start : start + 3 * int(round(hop * sample_rate)) + 1])
            peak = float(seg.max()) if seg.size else 0.0
            first = int(np.argmax(seg >= 0.1 * peak)) if peak > 0 else 0
            t = (start + first) / sample_rate
            onsets.append(t)
            last = i * hop
    return onsets


def first_onset(audio: np.ndarray, sample_rate: int, **kwargs: float) -> float | None:
    found = onset_times(audio, sample_rate, **kwargs)
    return found[0] if found else None


def _xcorr(reference: np.ndarray, moved: np.ndarray, max_lag: int | None) -> tuple[np.ndarray, np.ndarray]:
    a = as_2d(reference).mean(axis=1).astype(np.float64)
    b = as_2d(moved).mean(axis=1).astype(np.float64)
    from scipy import signal as sps

    corr = sps.correlate(b, a, mode="full", method="fft")
    lags = sps.correlation_lags(len(b), len(a), mode="full")
    if max_lag is not None:
        keep = np.abs(lags) <= max_lag
        corr, lags = corr[keep], lags[keep]
    return corr, lags


def lag_samples(reference: np.ndarray, moved: np.ndarray, max_lag: int | None = None) -> int:
    """Samples by which ``moved`` lags ``reference`` (positive = later), by FFT cross-correlation."""
    corr, lags = _xcorr(reference, moved, max_lag)
    return int(lags[int(np.argmax(corr))])


def lag_seconds(reference: np.ndarray, moved: np.ndarray, sample_rate: int, max_lag_s: float | None = None) -> float:
    """``lag_samples`` refined to sub-sample precision by parabolic interpolation, in seconds."""
    max_lag = None if max_lag_s is None else int(round(max_lag_s * sample_rate))
    corr, lags = _xcorr(reference, moved, max_lag)
    i = int(np.argmax(corr))
    frac = 0.0
    if 0 < i < len(corr) - 1:
        y0, y1, y2 = corr[i - 1], corr[i], corr[i + 1]
        denom = y0 - 2 * y1 + y2
        frac = 0.5 * (y0 - y2) / denom if denom != 0 else 0.0
    return (lags[i] + frac) / sample_rate


def normalized_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Peak normalised cross-correlation of two mono mixes, in [-1, 1] (1 = same up to lag and gain)."""
    x = as_2d(a).mean(axis=1).astype(np.float64)
    y = as_2d(b).mean(axis=1).astype(np.float64)
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0 or ny == 0:
        return 0.0
    from scipy import signal as sps

    corr = sps.correlate(x, y, mode="full", method="fft")
    return float(np.max(np.abs(corr)) / (nx * ny))
