"""Benchmark: model calls the threshold searches need, against a grid sweep, and the noisy interval's width.

    python bench/bench_threshold.py [--json OUT] [--seeds 100] [--listener-clips 6]

Deterministic: planted step models with thresholds spread over (0, 3 s), one
side searched over 3 s (a +-3 s window is two such sides) to +-25 ms; the
figures are the calls per side against the 25 ms grid sweep (121 per side)
and the target 2 * log2(range / precision), and the worst error. The same for
the real ``listener`` on a small synthetic corpus (its error against the
switch its own measurement implies). Noisy: planted logistic models
(threshold 0.2 s, scale 0.04 s, 2% false alarms and misses; and two harder
ones), 60 calls per side with the Psi method: the 95% interval's width
(target <= 100 ms), how often it holds the planted threshold, and the error.
Call counts are exact; nothing here is a timing except the seconds per search.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from thud_mt.threshold import (
    Logistic,
    bisect_threshold,
    grid_sweep_calls,
    logistic_responder,
    psi_threshold,
    step_responder,
)

RANGE, PRECISION, BUDGET = 3.0, 0.025, 60


def deterministic(n: int) -> dict[str, float]:
    thresholds = np.linspace(0.0, RANGE, n + 2)[1:-1]
    calls, errors = [], []
    for t in thresholds:
        search = bisect_threshold(step_responder(float(t)), RANGE, PRECISION)
        calls.append(search.calls)
        errors.append(abs((search.threshold or math.nan) - t))
    return {
        "planted_thresholds": n,
        "calls_per_side_max": int(max(calls)),
        "calls_per_side_mean": round(float(np.mean(calls)), 2),
        "grid_sweep_calls_per_side": grid_sweep_calls(RANGE, PRECISION),
        "grid_sweep_calls_both_sides": 2 * grid_sweep_calls(RANGE, PRECISION) - 1,
        "target_calls_per_side": round(2 * math.log2(RANGE / PRECISION), 2),
        "max_error_s": round(float(np.max(errors)), 4),
    }


def noisy(curve: Logistic, seeds: int) -> dict[str, float]:
    widths, covered, errors, calls, unbounded = [], 0, [], [], 0
    started = time.perf_counter()
    for seed in range(seeds):
        search = psi_threshold(logistic_responder(curve, seed), RANGE, PRECISION, budget=BUDGET)
        calls.append(search.calls)
        if search.threshold is not None:
            errors.append(search.threshold - curve.threshold)
        if search.interval is None or None in search.interval:
            unbounded += 1
            continue
        low, high = search.interval
        widths.append(high - low)  # type: ignore[operator]
        covered += low <= curve.threshold <= high  # type: ignore[operator]
    w = np.asarray(widths)
    return {
        "curve": f"threshold {curve.threshold} s, scale {curve.scale} s, guess {curve.guess}, lapse {curve.lapse}",
        "searches": seeds,
        "calls_per_side": int(max(calls)),
        "width_median_s": round(float(np.median(w)), 4),
        "width_p90_s": round(float(np.percentile(w, 90)), 4),
        "width_max_s": round(float(np.max(w)), 4),
        "share_width_le_100ms": round(float(np.mean(w <= 0.1)), 3),
        "unbounded": unbounded,
        "coverage_95": round(covered / seeds, 3),
        "rms_error_s": round(float(np.sqrt(np.mean(np.square(errors)))), 4),
        "seconds_per_search": round((time.perf_counter() - started) / seeds, 3),
    }


def listener(clips: int) -> dict[str, float]:
    from thud_mt.corpus.manifest import load_corpus
    from thud_mt.corpus.synth import build_synthetic_corpus
    from thud_mt.models.base import Query
    from thud_mt.probes import question
    from thud_mt.threshold_run import ThresholdSettings, build_runner, measure_model

    with tempfile.TemporaryDirectory() as tmp:
        corpus = load_corpus(build_synthetic_corpus(Path(tmp), clips, 0, progress=False))
        runner = build_runner("listener", corpus, cache_dir=None)
        run = measure_model(runner, ThresholdSettings(range_s=RANGE, precision_s=PRECISION))
        q = question("sync", 0)
        model = runner.model
        errors, calls, sweeps, targets = [], [], [], []
        for r in run.sides:
            measured = model.value(Query(runner.clip(r.clip), q))[1]["offset"]  # type: ignore[attr-defined]
            edge = model.sync.late_s if r.side == "lag" else model.sync.early_s  # type: ignore[attr-defined]
            errors.append(abs((r.threshold or math.nan) - (edge - measured)))
            calls.append(r.search.calls)
            sweeps.append(grid_sweep_calls(r.searched, PRECISION))
            targets.append(2 * math.log2(r.searched / PRECISION))
    return {
        "sides": len(run.sides),
        "found": sum(r.status == "found" for r in run.sides),
        "calls_per_side_max": int(max(calls)),
        "calls_total": int(sum(calls)),
        "grid_sweep_calls_total": int(sum(sweeps)),
        "sides_within_target": int(sum(c <= t for c, t in zip(calls, targets, strict=True))),
        "max_error_s": round(float(np.max(errors)), 4),
        "window_s": [
            round(float(np.median([r.threshold for r in run.side("lead")])), 4),  # type: ignore[arg-type]
            round(float(np.median([r.threshold for r in run.side("lag")])), 4),  # type: ignore[arg-type]
        ],
        "seconds": round(run.seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=100, help="Noisy searches per planted curve.")
    parser.add_argument("--planted", type=int, default=200, help="Deterministic planted thresholds.")
    parser.add_argument("--listener-clips", type=int, default=6)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures: dict[str, object] = {"range_s": RANGE, "precision_s": PRECISION, "budget_per_side": BUDGET}
    figures["deterministic"] = deterministic(args.planted)
    figures["listener"] = listener(args.listener_clips)
    figures["noisy"] = noisy(Logistic(0.2, 0.04, 0.02, 0.02), args.seeds)
    figures["noisy_false_alarms"] = noisy(Logistic(0.2, 0.04, 0.1, 0.05), args.seeds)
    figures["noisy_shallow"] = noisy(Logistic(0.2, 0.08, 0.02, 0.02), args.seeds)
    for group, values in figures.items():
        if isinstance(values, dict):
            print(group)
            for key, value in values.items():
                print(f"  {key:28s} {value}")
        else:
            print(f"{group:30s} {values}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
