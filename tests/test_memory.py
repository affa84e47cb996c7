"""Peak memory over a stretch of work: each stretch reports its own peak, and an unmeasurable one says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from thud_mt import memory
from thud_mt.memory import PeakMemory

MIB = 2**20


def touch(mib: int) -> np.ndarray:
    return np.ones(mib * MIB // 8)  # written, so resident, not only reserved


def test_a_stretch_reports_what_it_allocated_not_the_process_peak_before_it() -> None:
    meter = PeakMemory()
    big = touch(512)
    del big
    after_big = meter.read().resident_bytes
    meter.restart()
    small = touch(64)
    after_small = meter.read().resident_bytes
    del small
    assert after_big is not None and after_small is not None
    assert after_big - after_small > 400 * MIB  # the 512 MiB stretch is over: the next one does not see it


def test_without_a_resettable_peak_the_resident_figure_is_unknown_not_the_lifetime_peak(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(memory, "CLEAR_REFS", tmp_path / "absent" / "clear_refs")
    assert PeakMemory().read().resident_bytes is None


def test_a_gpu_figure_is_given_exactly_where_torch_has_cuda() -> None:
    torch = pytest.importorskip("torch")
    assert (PeakMemory().read().gpu_bytes is not None) == torch.cuda.is_available()
