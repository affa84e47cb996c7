"""Benchmark: what Allure reporting adds to the wall time of a failing suite run (target: at most +25%).

    python bench/bench_report.py [--repeat 3] [--max-examples 8] [--json OUT]

Runs ``pytest suites/ --model=visual-only`` (a model that ignores sound, so
its audio cases fail and get attachments) on the built-in corpus, answer cache
off, the same Hypothesis draws every run: without ``--alluredir`` (plain), with
``--alluredir`` (allure: ``--thud-attach failures``, clips, waveform PNG and
answers on each failing case), and with ``--alluredir --thud-attach none``
(labels_only: what allure-pytest and the labels cost by themselves). The
variants take turns, ``--repeat`` times each, in rotating order (the machine
may be shared: drift hits all), and the medians are compared: wall time, and
the CPU time of the pytest process (which other load disturbs less). ``allure generate`` is
timed separately: it runs once after a session, not per case. The corpus is
built before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_OVERHEAD = 0.25


def run_suites(cache: Path, results: Path, extra: list[str], max_examples: int, suites: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one pytest session in a fresh process."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        suites,
        "--model=visual-only",
        "--thud-no-cache",
        f"--thud-max-examples={max_examples}",
        f"--thud-cache={cache}",
        f"--thud-results={results}",
        "-q",
        "-p",
        "no:cacheprovider",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):  # 1: the visual-only model fails cases, as it should
        raise SystemExit(f"pytest failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def attachments(folder: Path) -> tuple[Counter[str], int]:
    kinds: Counter[str] = Counter()
    size = 0
    for path in folder.iterdir():
        if "-attachment" in path.name:
            kinds[path.suffix.lstrip(".")] += 1
        size += path.stat().st_size
    return kinds, size


VARIANTS = {
    "plain": [],  # no --alluredir: the baseline
    "allure": ["--thud-attach=failures"],  # the default with --alluredir: media and answers on failures
    "labels_only": ["--thud-attach=none"],  # allure-pytest and the labels and steps, no attachments
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each variant")
    parser.add_argument("--max-examples", type=int, default=8)
    parser.add_argument("--suites", default="suites/", help="what pytest runs [default: suites/]")
    parser.add_argument("--no-generate", action="store_true", help="skip timing allure generate")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="thud-bench-report-") as tmp:
        cache, results, allure_dir = Path(tmp) / "cache", Path(tmp) / "results.jsonl", Path(tmp) / "allure-results"

        def timed(variant: str) -> tuple[float, float]:
            # A fresh results folder each time, emptied outside the timing: what is measured is writing the
            # report, not deleting the previous one (--clean-alluredir's cost depends on the file system).
            shutil.rmtree(allure_dir, ignore_errors=True)
            extra = [f"--alluredir={allure_dir}", *VARIANTS[variant]] if variant != "plain" else []
            return run_suites(cache, results, extra, args.max_examples, args.suites)

        for name in VARIANTS:  # warm-up (untimed): builds the corpus, fills the OS file cache
            timed(name)
        names = list(VARIANTS)
        for i in range(args.repeat):
            for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate the order: drift hits all
                times[name].append(timed(name))
        timed("allure")  # leave the default report to count and to generate from
        kinds, size = attachments(allure_dir)
        cases = sum(1 for _ in results.open())
        generate_s = None
        if not args.no_generate:
            sys.path.insert(0, str(ROOT))  # a source checkout run as `python bench/...` has only bench/ on the path
            from thud_mt.report.allure_html import generate

            generate_s = generate(allure_dir, Path(tmp) / "html").seconds
    # Wall time, and the CPU time of the pytest process (less disturbed by other load on a shared machine).
    wall = {name: statistics.median(w for w, _ in runs) for name, runs in times.items()}
    cpu = {name: statistics.median(c for _, c in runs) for name, runs in times.items()}
    figures: dict[str, object] = {"cases": cases, "runs_each": args.repeat}
    for name, runs in times.items():
        figures[f"wall_s_{name}"] = [round(w, 2) for w, _ in runs]
        figures[f"cpu_s_{name}"] = [round(c, 2) for _, c in runs]
    for name in ("allure", "labels_only"):
        figures[f"overhead_pct_{name}"] = round(100 * (wall[name] / wall["plain"] - 1), 1)
        # Each round runs the variants back to back: the median of the rounds' ratios resists slow drift.
        rounds = [a[0] / p[0] for a, p in zip(times[name], times["plain"], strict=True)]
        figures[f"overhead_pct_{name}_per_round"] = round(100 * (statistics.median(rounds) - 1), 1)
        figures[f"cpu_overhead_pct_{name}"] = round(100 * (cpu[name] / cpu["plain"] - 1), 1)
    figures["target_overhead_pct"] = 100 * TARGET_OVERHEAD
    figures["attachments"] = dict(sorted(kinds.items()))
    figures["allure_results_mb"] = round(size / 1e6, 1)
    figures["allure_generate_s"] = None if generate_s is None else round(generate_s, 2)
    for key, value in figures.items():
        print(f"{key:30s} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
