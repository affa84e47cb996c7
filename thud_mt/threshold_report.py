"""Reporting ``thud threshold``: each model's window, a leaderboard row per model, JSON, and a PNG of the curves.

A model's window on a side is the median over clips of that side's
threshold, with a distribution-free interval for the median from order
statistics: it describes the typical clip of the corpus, not one clip's
measurement; with fewer than six clips no such interval reaches 95%, and
the table shows the coverage it does have. A clip with no threshold within
its searched range counts as an infinitely large threshold (the median is
then "none" when that is half the clips or more), a clip already detecting
at zero offset counts as zero, and a clip with no room to shift is left out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scipy import stats as _scipy

from relations import DEFAULT_OPTIONS
from thud_mt.threshold_run import SIGN, ModelThresholds, Side, SideResult, clip_ids, format_interval, sides_of

# ITU-R BT.1359: detectable from about 45 ms of audio lead and 125 ms of lag (the relations' sync window).
HUMAN_WINDOW: tuple[float, float] = DEFAULT_OPTIONS.sync_window
HUMAN_LABEL = "human (ITU-R BT.1359)"


@dataclass(frozen=True)
class SideWindow:
    """A model's threshold on one side across clips: the median and its interval (signed seconds)."""

    side: Side
    clips: int  # clips searched on this side (those with room)
    found: int
    none_in_range: int
    at_zero: int
    median: float | None  # None: most clips have no threshold within range
    interval: tuple[float | None, float | None] | None
    coverage: float | None  # the interval's exact coverage for the median

    def to_json(self) -> dict[str, object]:
        return {
            "side": self.side,
            "clips": self.clips,
            "found": self.found,
            "none_in_range": self.none_in_range,
            "at_zero": self.at_zero,
            "threshold_s": self.median,
            "interval_s": list(self.interval) if self.interval is not None else None,
            "coverage": self.coverage,
        }


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float] | None:
    """(median, low, high, coverage): the order-statistic interval for the median of ``values``.

    The narrowest symmetric pair ``(x_(k), x_(n+1-k))`` whose coverage,
    ``1 - 2 * P(Binomial(n, 1/2) < k)``, reaches ``confidence``; with too few
    values for that, the full range and the coverage it does have.
    """
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        return None
    mid = xs[(n - 1) // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    k = 1
    while k + 1 <= (n + 1) // 2 and _coverage(n, k + 1) >= confidence:
        k += 1
    return (mid, xs[k - 1], xs[n - k], _coverage(n, k))


def _coverage(n: int, k: int) -> float:
    return float(1.0 - 2.0 * _scipy.binom.cdf(k - 1, n, 0.5))


def side_window(run: ModelThresholds, side: Side, confidence: float = 0.95) -> SideWindow:
    results = [r for r in run.side(side) if r.status != "no_room"]
    magnitudes = []
    for r in results:
        if r.status == "found":
            assert r.search.threshold is not None
            magnitudes.append(r.search.threshold)
        elif r.status == "none_in_range":
            magnitudes.append(math.inf)
        else:
            magnitudes.append(0.0)
    summary = median_interval(magnitudes, confidence)
    median = interval = coverage = None
    if summary is not None:
        mid, low, high, coverage = summary
        sign = SIGN[side]
        median = None if math.isinf(mid) else sign * mid
        ends = (None if math.isinf(low) else sign * low, None if math.isinf(high) else sign * high)
        interval = ends if side == "lag" else (ends[1], ends[0])
    return SideWindow(
        side=side,
        clips=len(results),
        found=sum(r.status == "found" for r in results),
        none_in_range=sum(r.status == "none_in_range" for r in results),
        at_zero=sum(r.status == "at_zero" for r in results),
        median=median,
        interval=interval,
        coverage=coverage,
    )


# ------------------------------------------------------------------------------------------------- text


def describe_side(result: SideResult) -> str:
    """A table cell: the threshold and its interval, or what there is instead."""
    status = result.status
    if status == "found":
        assert result.threshold is not None
        flags = " (reversals)" if result.search.reversals else ""
        return f"{result.threshold:+.3f} {format_interval(result.interval)}{flags}"
    if status == "none_in_range":
        return f"none within {SIGN[result.side] * result.searched:+.2f} s"
    if status == "at_zero":
        return "at 0 (false alarm)"
    return "no room"


def describe_window(window: SideWindow, confidence: float = 0.95) -> str:
    """The median threshold and its interval, with the interval's coverage when too few clips reach ``confidence``."""
    if window.clips == 0:
        return "-"
    if window.median is None:
        return f"none ({window.none_in_range}/{window.clips} clips)"
    short = "" if window.coverage is None or window.coverage >= confidence else f" {window.coverage:.0%}"
    return f"{window.median:+.3f} {format_interval(window.interval)}{short}"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def format_run(run: ModelThresholds) -> str:
    """Per clip: each side's threshold (s, signed) with its interval and the questions asked."""
    rows = [["clip", "own offset", "lead (audio early)", "lag (audio delayed)", "questions"]]
    for clip in clip_ids(run.sides):
        by_side = sides_of(run.sides, clip)
        cells = [describe_side(by_side[s]) if s in by_side else "-" for s in ("lead", "lag")]
        own = next(iter(by_side.values())).clip_offset
        calls = sum(r.search.calls for r in by_side.values())
        rows.append([clip, f"{own:+.3f}", *cells, str(calls)])
    out = [f"thresholds: {run.model} ({_methods(run)})", *_table(rows)]
    bad = [(r.invalid, r.errors) for r in run.sides]
    invalid, errors = sum(b[0] for b in bad), sum(b[1] for b in bad)
    if invalid or errors:
        out.append(f"{invalid} invalid and {errors} failed answers counted as not detected")
    out += [f"skipped {line}" for line in run.skipped]
    return "\n".join(out)


def _methods(run: ModelThresholds) -> str:
    return ", ".join(sorted({r.search.method for r in run.sides})) or "nothing searched"


LEADERBOARD_HEADER = ["model", "lead [95% CI]", "lag [95% CI]", "width", "x human", "found", "questions", "model calls"]


def leaderboard_row(run: ModelThresholds) -> list[str]:
    """One row: the model's window (median over clips), its width against the human window, and the cost."""
    lead, lag = side_window(run, "lead"), side_window(run, "lag")
    width = "-"
    ratio = "-"
    if lead.median is not None and lag.median is not None:
        w = lag.median - lead.median
        width = f"{w:.3f}"
        ratio = f"{w / (HUMAN_WINDOW[1] - HUMAN_WINDOW[0]):.1f}"
    found = f"{lead.found + lag.found}/{lead.clips + lag.clips}"
    return [
        run.model,
        describe_window(lead),
        describe_window(lag),
        width,
        ratio,
        found,
        str(run.queries),
        str(run.model_calls),
    ]


def human_row() -> list[str]:
    low, high = HUMAN_WINDOW
    return [HUMAN_LABEL, f"{low:+.3f}", f"{high:+.3f}", f"{high - low:.3f}", "1.0", "-", "-", "-"]


def format_leaderboard(runs: Sequence[ModelThresholds]) -> str:
    """The human window first, then one row per model (thresholds in seconds, signed)."""
    return "\n".join(_table([LEADERBOARD_HEADER, human_row(), *(leaderboard_row(r) for r in runs)]))


# ------------------------------------------------------------------------------------------------- JSON


def run_json(run: ModelThresholds) -> dict[str, object]:
    return {
        "model": run.model,
        "fingerprint": run.fingerprint,
        "settings": run.settings.to_json(),
        "window": {side: side_window(run, side).to_json() for side in ("lead", "lag")},
        "leaderboard": dict(zip(LEADERBOARD_HEADER, leaderboard_row(run), strict=True)),
        "questions": run.queries,
        "model_calls": run.model_calls,
        "seconds": round(run.seconds, 3),
        "skipped": list(run.skipped),
        "sides": [r.to_json() for r in run.sides],
    }


def report_json(runs: Sequence[ModelThresholds]) -> dict[str, object]:
    return {
        "human_window_s": {"lead": HUMAN_WINDOW[0], "lag": HUMAN_WINDOW[1], "source": "ITU-R BT.1359"},
        "models": [run_json(r) for r in runs],
    }


def write_json(path: Path, runs: Sequence[ModelThresholds]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report_json(runs), indent=2, allow_nan=False))
    return path


# ------------------------------------------------------------------------------------------------- PNG


def plot_run(run: ModelThresholds, path: Path) -> Path:
    """The model's psychometric curves per clip and side, its window, and the human window shaded."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and no GUI toolkit needed
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    try:
        low, high = HUMAN_WINDOW
        ax.axvspan(low, high, color="tab:green", alpha=0.15, label=HUMAN_LABEL)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        reach = [abs(r.threshold) for r in run.sides if r.threshold is not None]
        searched = max((r.searched for r in run.sides), default=1.0) or 1.0
        limit = min(searched, max(0.6, 1.5 * max(reach, default=0.0)))
        colours = {"lead": "tab:blue", "lag": "tab:red"}
        for i, r in enumerate(run.sides):
            colour = colours[r.side]
            sign = SIGN[r.side]
            trials = r.signed_trials()
            jitter = (i % 7 - 3) * 0.006  # keeps clips' points apart where they overlap
            ax.scatter(
                [t.offset for t in trials],
                [float(t.detected) + jitter for t in trials],
                s=8,
                color=colour,
                alpha=0.35,
                lw=0,
            )
            magnitudes = np.linspace(0.0, r.searched, 400)
            if r.search.fit is not None:
                ax.plot(sign * magnitudes, r.search.fit.p(magnitudes), color=colour, alpha=0.5, lw=1)
            elif r.search.threshold is not None:
                ax.plot(sign * magnitudes, (magnitudes >= r.search.threshold).astype(float), color=colour, alpha=0.5)
        for side in ("lead", "lag"):
            window = side_window(run, side)  # type: ignore[arg-type]
            if window.median is not None:
                ax.axvline(window.median, color=colours[side], lw=2, label=f"{side} {window.median:+.3f} s")
                if window.interval is not None and None not in window.interval:
                    ax.axvspan(*window.interval, color=colours[side], alpha=0.1)  # type: ignore[arg-type]
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-0.08, 1.08)
        ax.set_xlabel("audio offset (s): negative = audio early, positive = audio late")
        ax.set_ylabel("P(model reports the desync)")
        ax.set_title(f"{run.model}: desync detection (median window over {len(clip_ids(run.sides))} clips)")
        ax.legend(loc="center right", fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def plot_name(model: str) -> str:
    """A file name for a model's plot; model specs can hold '/' and ':'."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    return f"threshold-{safe}.png"
