"""The numpy DSP that the reference models' ears use is scipy's, to float precision, without importing it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import fft as sp_fft
from scipy import signal as sps

from thud_mt.signal import as_2d, dct_ortho, envelope, highpass, onset_times, stft_power

ROOT = Path(__file__).resolve().parents[1]


@settings(max_examples=25, deadline=None)
@given(
    rate=st.sampled_from([8000, 16000, 44100, 48000]),
    cutoff=st.floats(10.0, 2000.0),
    n=st.integers(1, 20_000),
    seed=st.integers(0, 2**16),
)
def test_highpass_is_scipys_butterworth_run_by_sosfilt(rate: int, cutoff: float, n: int, seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal(n)
    expected = sps.sosfilt(sps.butter(2, cutoff, btype="highpass", fs=rate, output="sos"), x)
    np.testing.assert_allclose(highpass(x, rate, cutoff), expected, rtol=0, atol=1e-9)


def test_highpass_removes_dc_and_keeps_a_click() -> None:
    x = np.full(16_000, 0.5)
    x[8000] += 1.0
    y = highpass(x, 16_000, 30.0)
    assert abs(y[-100:]).max() < 1e-3  # the DC is gone once the filter has settled
    assert y[8000] == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("n", [512, 513, 700, 4800, 4961])
def test_stft_power_is_scipys_padded_stft_squared(n: int) -> None:
    x = np.random.default_rng(n).standard_normal(n)
    _, _, spec = sps.stft(x, nperseg=512, noverlap=512 - 128, boundary=None, padded=True)
    power = stft_power(x, 512, 128)
    assert power.shape == spec.shape
    np.testing.assert_allclose(power, np.abs(spec) ** 2, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("n", [1, 2, 24, 25])
def test_dct_ortho_is_scipys_orthonormal_dct_ii(n: int) -> None:
    x = np.random.default_rng(n).standard_normal(n)
    np.testing.assert_allclose(dct_ortho(x), sp_fft.dct(x, type=2, norm="ortho"), atol=1e-12)


def onsets_frame_by_frame(audio: np.ndarray, rate: int) -> list[float]:
    """The onset detector as first written, one frame at a time, with its default settings (20 dB over the
    floor of the last 50 ms, above -50 dBFS, onsets 0.25 s apart): the specification of the vectorised one."""
    mono = as_2d(audio).mean(axis=1)
    env, hop = envelope(mono, rate, 0.002)
    env_db = 10.0 * np.log10(env + 1e-12)
    onsets, last = [], -np.inf
    for i in range(len(env_db)):
        floor = env_db[max(0, i - 25) : i].min() if i > 0 else -120.0
        if env_db[i] > -50.0 and env_db[i] - floor >= 20.0 and (i * hop - last) >= 0.25:
            start = max(0, (i - 1) * int(round(hop * rate)))
            seg = np.abs(mono[start : start + 3 * int(round(hop * rate)) + 1])
            peak = float(seg.max()) if seg.size else 0.0
            onsets.append((start + (int(np.argmax(seg >= 0.1 * peak)) if peak > 0 else 0)) / rate)
            last = i * hop
    return onsets


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from([8000, 16000, 48000]),
    seconds=st.floats(0.0, 2.0),
    clicks=st.lists(st.tuples(st.floats(0.0, 2.0), st.floats(-40.0, 0.0)), max_size=6),
    noise_db=st.floats(-90.0, -30.0),
    seed=st.integers(0, 2**16),
)
def test_onsets_are_found_where_the_frame_by_frame_detector_finds_them(
    rate: int, seconds: float, clicks: list[tuple[float, float]], noise_db: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    audio = rng.standard_normal(n) * 10 ** (noise_db / 20)
    for at, level_db in clicks:  # decaying bursts: what impacts and claps look like
        i = int(at * rate)
        burst = rng.standard_normal(rate // 20) * 10 ** (level_db / 20) * np.exp(-np.arange(rate // 20) / (rate / 200))
        audio[i : i + burst.size] += burst[: max(0, n - i)]
    assert onset_times(audio, rate) == onsets_frame_by_frame(audio, rate)


def test_the_reference_models_ears_load_without_scipy() -> None:
    # scipy.signal costs 0.8 s per pytest-xdist worker; a suite run on a one-rate corpus must not load it.
    code = (
        "import sys\n"
        "import thud_mt.models.reference, thud_mt.interventions, thud_mt.media, thud_mt.runner\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
