"""Synthesized recordings of each sound class: the sound bank used when no real one is given.

Each sound is a small physical model (decaying modes, filtered noise bursts,
a voiced source through formants) with exact digital silence before a sharp
onset ``ONSET_S`` into the recording, so the onset is known to the sample and
onset detectors find it within a couple of milliseconds. The classes differ
where listeners (and models) tell them apart: spectral balance and decay.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from scipy import signal as sps

from thud_mt.corpus.sounds import Recording, SoundBank
from thud_mt.corpus.vocabulary import SOUND_CLASSES

# Where the sound starts in each synthesized recording: a little lead-in of
# silence so the onset is a real transition, not the first sample.
ONSET_S = 0.02
PEAK_DBFS = -6.0
LICENCE = "CC0-1.0"
ATTRIBUTION = "thud-mt synthesizer"
# Fade the tail so truncation never adds a click that an onset detector could find.
_TAIL_FADE_S = 0.01


def _time(duration: float, sample_rate: int) -> np.ndarray:
    return np.arange(int(round(duration * sample_rate))) / sample_rate


def _top(sample_rate: int, hz: float) -> float:
    """``hz`` capped safely under Nyquist, so every class synthesizes at 8 kHz too."""
    return min(hz, 0.45 * sample_rate)


def _band(noise: np.ndarray, sample_rate: int, low: float | None, high: float | None, order: int = 2) -> np.ndarray:
    """Causal Butterworth filtering: nothing can ring before the onset."""
    if low is not None and high is not None:
        sos = sps.butter(order, [low, _top(sample_rate, high)], btype="bandpass", fs=sample_rate, output="sos")
    elif low is not None:
        sos = sps.butter(order, _top(sample_rate, low), btype="highpass", fs=sample_rate, output="sos")
    else:
        assert high is not None
        sos = sps.butter(order, _top(sample_rate, high), btype="lowpass", fs=sample_rate, output="sos")
    return sps.sosfilt(sos, noise)


def _attack(t: np.ndarray, seconds: float) -> np.ndarray:
    return np.clip(t / seconds, 0.0, 1.0)


def _thud(sr: int, rng: np.random.Generator) -> np.ndarray:
    """A heavy object on a floor: a low mode whose pitch drops as the impact relaxes, plus a dull noise burst."""
    t = _time(0.5, sr)
    f0 = rng.uniform(55.0, 85.0)
    tau = rng.uniform(0.07, 0.12)
    freq = f0 * (1.0 + 0.6 * np.exp(-t / 0.03))
    phase = 2 * np.pi * np.cumsum(freq) / sr
    body = np.sin(phase) * np.exp(-t / tau)
    body += 0.3 * np.sin(phase * rng.uniform(2.3, 2.7)) * np.exp(-t / (tau / 2))
    burst = _band(rng.standard_normal(t.size), sr, None, rng.uniform(600.0, 1000.0)) * np.exp(-t / 0.012)
    burst /= np.max(np.abs(burst)) + 1e-12
    return (body + 0.5 * burst) * _attack(t, 0.001)


def _clap(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Palms meeting: a bright, very short noise burst with a hand-cavity resonance and a few micro-impacts."""
    t = _time(0.2, sr)
    tau = rng.uniform(0.006, 0.012)
    env = np.exp(-t / tau)
    for _ in range(int(rng.integers(1, 4))):  # fingers and palm do not land at one instant
        d = rng.uniform(0.002, 0.009)
        env += rng.uniform(0.2, 0.5) * np.exp(-np.clip(t - d, 0, None) / tau) * (t >= d)
    noise = rng.standard_normal(t.size)
    bright = _band(noise, sr, 900.0, 5000.0)
    cavity = _band(noise, sr, (c := rng.uniform(1000.0, 1800.0)) * 0.85, c * 1.15)
    x = (bright / (np.std(bright) + 1e-12) + 0.8 * cavity / (np.std(cavity) + 1e-12)) * env
    return x * _attack(t, 0.0005)


def _door(sr: int, rng: np.random.Generator) -> np.ndarray:
    """A wooden door slamming into its frame: low panel modes, a knock, the latch click and a short creak."""
    t = _time(0.7, sr)
    f0 = rng.uniform(150.0, 210.0)
    tau = rng.uniform(0.08, 0.15)
    body = np.zeros_like(t)
    for i, (ratio, amp) in enumerate(((1.0, 1.0), (1.6, 0.7), (2.3, 0.5), (3.4, 0.3))):
        body += amp * np.sin(2 * np.pi * f0 * ratio * rng.uniform(0.97, 1.03) * t) * np.exp(-t / (tau / (1 + 0.4 * i)))
    knock = _band(rng.standard_normal(t.size), sr, 200.0, 2000.0) * np.exp(-t / 0.006)
    knock /= np.max(np.abs(knock)) + 1e-12
    latch_at = rng.uniform(0.04, 0.08)
    lt = np.clip(t - latch_at, 0, None)
    latch = _band(rng.standard_normal(t.size), sr, 1000.0, 3000.0) * np.exp(-lt / 0.003) * (t >= latch_at)
    latch /= np.max(np.abs(latch)) + 1e-12
    # Creak: stick-slip pulses of the hinge, a jittered pulse train through a mid band.
    rate = rng.uniform(60.0, 120.0)
    pulses = np.zeros_like(t)
    when = 0.02
    while when < 0.35:
        pulses[int(when * sr)] = 1.0
        when += rng.uniform(0.8, 1.2) / rate
    creak = _band(pulses, sr, 400.0, 1200.0) * np.exp(-t / 0.15)
    creak /= np.max(np.abs(creak)) + 1e-12
    return (body + 1.2 * knock + 0.4 * latch + 0.15 * creak) * _attack(t, 0.001)


# Church-bell partials (hum, prime, tierce, quint, nominal, ...), relative to the prime.
_BELL_PARTIALS = ((0.5, 0.5), (1.0, 0.8), (1.183, 0.6), (1.506, 0.35), (2.0, 1.0), (2.514, 0.3), (2.662, 0.25))
_BELL_UPPER = ((3.011, 0.2), (4.166, 0.12))


def _bell(sr: int, rng: np.random.Generator) -> np.ndarray:
    """A struck bell: inharmonic partials, lower ones ringing longest, plus the hammer's click."""
    t = _time(2.0, sr)
    prime = rng.uniform(600.0, 900.0)
    tau0 = rng.uniform(0.8, 1.3)
    x = np.zeros_like(t)
    for ratio, amp in (*_BELL_PARTIALS, *_BELL_UPPER):
        f = prime * ratio * rng.uniform(0.995, 1.005)
        if f >= 0.45 * sr:
            continue
        x += amp * np.sin(2 * np.pi * f * t) * np.exp(-t / (tau0 * ratio**-0.7))
    click = _band(rng.standard_normal(t.size), sr, 2000.0, 6000.0) * np.exp(-t / 0.003)
    x += 0.6 * click / (np.max(np.abs(click)) + 1e-12)
    return x * _attack(t, 0.0005)


def _glass(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Glass shattering: several sharp high shards, the first (the impact) loudest, then smaller ones."""
    t = _time(0.6, sr)
    n = int(rng.integers(5, 9))
    starts = np.concatenate([[0.0], np.sort(rng.uniform(0.01, 0.35, n - 1))])
    gains = np.concatenate([[1.0], rng.uniform(0.2, 0.7, n - 1)])
    x = np.zeros_like(t)
    hi = _top(sr, 8000.0)
    for start, gain in zip(starts, gains, strict=True):
        lt = np.clip(t - start, 0, None)
        on = t >= start
        shard = np.zeros_like(t)
        for _ in range(int(rng.integers(3, 6))):
            f = rng.uniform(min(2500.0, 0.5 * hi), hi)
            shard += rng.uniform(0.4, 1.0) * np.sin(2 * np.pi * f * lt) * np.exp(-lt / rng.uniform(0.004, 0.03))
        click = _band(rng.standard_normal(t.size), sr, min(2000.0, 0.4 * hi), None) * np.exp(-lt / 0.002)
        shard += 0.8 * click / (np.max(np.abs(click)) + 1e-12)
        x += gain * shard * on / (np.max(np.abs(shard * on)) + 1e-12)
    return x * _attack(t, 0.0005)


def _bark(sr: int, rng: np.random.Generator) -> np.ndarray:
    """One bark: an abrupt voiced burst, pitch rising then falling, through formants around 500-1500 Hz."""
    length = rng.uniform(0.15, 0.3)
    t = _time(length + 0.05, sr)
    f_start = rng.uniform(350.0, 550.0)
    u = np.clip(t / length, 0, 1)
    freq = f_start * (1.0 + 0.15 * np.sin(np.pi * u)) * (1.0 - 0.3 * u)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    source = np.zeros_like(t)
    for h in range(1, 40):
        if f_start * 1.15 * h >= 0.45 * sr:
            break
        source += np.sin(h * phase) / h
    source += 0.15 * rng.standard_normal(t.size)  # a dog's bark is rough, not a clean tone
    x = np.zeros_like(t)
    formants = ((rng.uniform(500.0, 800.0), 1.0), (rng.uniform(1100.0, 1500.0), 0.7), (2500.0, 0.25))
    for centre, gain in formants:
        if centre < 0.45 * sr:
            b, a = sps.iirpeak(centre, centre / 120.0, fs=sr)
            x += gain * sps.lfilter(b, a, source)
    env = _attack(t, 0.003) * np.exp(-t / (length * 0.8)) * np.clip((length + 0.03 - t) / 0.03, 0, 1)
    return x * env


_SYNTHESIZERS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "thud": _thud,
    "clap": _clap,
    "door": _door,
    "bell": _bell,
    "glass": _glass,
    "bark": _bark,
}
assert set(_SYNTHESIZERS) == set(SOUND_CLASSES), "every sound class needs a synthesizer"


def synthesize(sound: str, sample_rate: int, rng: np.random.Generator) -> Recording:
    """One recording of ``sound``: mono float32, silent until ``ONSET_S``, peaking at ``PEAK_DBFS``."""
    try:
        make = _SYNTHESIZERS[sound]
    except KeyError:
        raise ValueError(f"cannot synthesize {sound!r}: known sounds are {', '.join(SOUND_CLASSES)}") from None
    if sample_rate < 8000:
        raise ValueError(f"sample rate {sample_rate} Hz is too low to synthesize {sound!r} (need >= 8000)")
    body = np.asarray(make(sample_rate, rng), dtype=np.float64)
    fade = min(body.size, int(round(_TAIL_FADE_S * sample_rate)))
    body[body.size - fade :] *= np.linspace(1.0, 0.0, fade)
    body *= 10 ** (PEAK_DBFS / 20) / np.max(np.abs(body))
    lead = int(round(ONSET_S * sample_rate))
    audio = np.concatenate([np.zeros(lead), body]).astype(np.float32)[:, None]
    return Recording(
        sound=sound,
        audio=audio,
        sample_rate=sample_rate,
        onset=lead / sample_rate,
        licence=LICENCE,
        attribution=ATTRIBUTION,
        source=f"synthesized:{sound}",
    )


def synthesized_bank(sample_rate: int, seed: int, variants: int = 3) -> SoundBank:
    """``variants`` recordings of every sound class, each from its own stream of ``seed``.

    Recording ``v`` of a class does not depend on how many variants are made.
    """
    if variants < 1:
        raise ValueError(f"a sound bank needs at least one variant per class, got {variants}")
    recordings: dict[str, tuple[Recording, ...]] = {}
    for index, sound in enumerate(SOUND_CLASSES):
        made = []
        for v in range(variants):
            rec = synthesize(sound, sample_rate, np.random.default_rng([seed, index, v]))
            made.append(dataclasses.replace(rec, source=f"synthesized:{sound}:{seed}:{v}"))
        recordings[sound] = tuple(made)
    return SoundBank(recordings)
