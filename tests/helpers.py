"""Test helpers shared by the framework's tests (imported as ``helpers``; conftest holds fixtures)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from thud_mt.clip import Clip, Event

STANDARD_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)


def burst(sample_rate: int, length_s: float = 0.03, seed: int = 0) -> np.ndarray:
    """A short decaying noise burst: a sharp transient with a sharp cross-correlation peak."""
    n = max(8, int(length_s * sample_rate))
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n) * np.exp(-np.linspace(0, 6, n))
    return (0.8 * x / np.max(np.abs(x))).astype(np.float32)


def make_clip(
    *,
    clip_id: str = "clip",
    sample_rate: int = 16000,
    channels: int = 1,
    fps: float = 25.0,
    duration: float = 4.0,
    size: tuple[int, int] = (32, 24),
    sound_at: float | None = 1.0,
    sound: str = "thud",
    label: str = "object_falls",
    seed: int = 0,
) -> Clip:
    """A clip with one event, seen and heard at ``sound_at``, and a noise-burst sound there."""
    n_frames = int(round(duration * fps))
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (n_frames, size[1], size[0], 3), dtype=np.uint8)
    audio = np.zeros((int(round(n_frames / fps * sample_rate)), channels), np.float32)
    events: tuple[Event, ...] = ()
    if sound_at is not None:
        b = burst(sample_rate, seed=seed)
        start = int(round(sound_at * sample_rate))
        audio[start : start + len(b)] = b[: len(audio) - start, None]
        events = (Event(label, sound_at, start / sample_rate, sound, f"{label} at {sound_at}"),)
    return Clip(id=clip_id, video=frames, fps=fps, audio=audio, sample_rate=sample_rate, events=events)


def run_together(target: Callable[..., None], *args_per_process: tuple, timeout: float = 120) -> None:
    """Run ``target(*args, start)`` in one spawned process per args tuple, released at once by ``start``."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=target, args=(*args, start)) for args in args_per_process]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout)
        assert p.exitcode == 0


def asks(probe: str, prompt: str) -> bool:
    """Whether ``prompt`` holds one of ``probe``'s questions (any paraphrase): how fake servers route replies."""
    from thud_mt.probes import questions

    return any(q.text.split("\n")[0] in prompt for q in questions(probe))  # type: ignore[arg-type]
