"""Peak memory over a stretch of work: the process's resident set and, on a GPU, the CUDA allocator's.

Both peaks are reset when the stretch starts, so a training stage reports its
own peak, not the run's so far. Linux keeps a per-process resident
high-water mark (``VmHWM``) that ``/proc/self/clear_refs`` resets; where that
is unavailable the resident peak is ``None`` rather than a lifetime figure
passed off as the stage's.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
RESET_PEAK_RESIDENT = "5"  # proc(5): "reset the peak resident set size to the current resident set size"


@dataclass(frozen=True)
class Peaks:
    resident_bytes: int | None  # the process's peak resident set; None where it cannot be reset (not Linux)
    gpu_bytes: int | None  # torch.cuda.max_memory_allocated; None without CUDA


class PeakMemory:
    """Measures from construction, or from the last ``restart()``; ``read()`` gives the peaks so far."""

    def __init__(self) -> None:
        self._resident = False
        self.restart()

    def restart(self) -> None:
        self._resident = _reset_resident()
        torch = _cuda()
        if torch is not None:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def read(self) -> Peaks:
        torch = _cuda()
        if torch is not None:
            torch.cuda.synchronize()
        return Peaks(
            resident_bytes=_status_bytes("VmHWM") if self._resident else None,
            gpu_bytes=int(torch.cuda.max_memory_allocated()) if torch is not None else None,
        )


def _reset_resident() -> bool:
    try:
        CLEAR_REFS.write_text(RESET_PEAK_RESIDENT)
    except OSError:  # not Linux, or /proc read-only: no per-stage resident peak
        return False
    return _status_bytes("VmHWM") is not None


def _status_bytes(field: str) -> int | None:
    try:
        lines = STATUS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name == field:
            number, unit = value.split()
            return int(number) * 1024 if unit == "kB" else int(number)
    return None


def _cuda() -> Any:
    # Only a torch the caller already imported: measuring memory must not load torch (seconds, gigabytes).
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch
