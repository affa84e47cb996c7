"""Audio signal helpers shared by the readers, the edits, the corpus and tests.

One implementation each of: resampling, channel remixing, loudness, onset
detection and lag measurement by cross-correlation.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy import signal as sps

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
    onsets: list[float] = []
    last = -np.inf
    for i in range(len(env_db)):
        floor = env_db[max(0, i - look) : i].min() if i > 0 else -120.0
        if env_db[i] > floor_dbfs and env_db[i] - floor >= threshold_db and (i * hop - last) >= min_gap_s:
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
    corr = sps.correlate(x, y, mode="full", method="fft")
    return float(np.max(np.abs(corr)) / (nx * ny))
