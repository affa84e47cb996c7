"""Benchmark: framework overhead per case, and the suites' wall time for ``listener`` with and without -n 2.

    python bench/bench_suites.py [--json OUT] [--max-examples 8]

Overhead: the mute, shift and swap suites (identity is left out: its edit is
an AAC encode, which is media work) against a model that answers instantly,
with the answer cache off; the figure is the time spent in the test calls
divided by the cases run (target < 20 ms). Wall time: all four suites against
``listener`` on the built-in corpus, cache off, one process versus
``-n 2`` (target speed-up >= 1.6x). The corpus is built before timing.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pytest_run(args: list[str], cache: Path, results: Path) -> tuple[float, float, int]:
    """(wall seconds, seconds inside test calls, cases recorded)."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--durations=0",
        "--durations-min=0",
        f"--thud-cache={cache}",
        f"--thud-results={results}",
        *args,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"pytest failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    in_calls = sum(float(m) for m in re.findall(r"^([\d.]+)s call ", done.stdout, flags=re.M))
    cases = sum(1 for _ in results.open()) if results.exists() else 0
    return wall, in_calls, cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    examples = f"--thud-max-examples={args.max_examples}"
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        results = Path(tmp) / "results.jsonl"
        suites = ["suites/test_mute.py", "suites/test_shift.py", "suites/test_swap.py"]
        # Warm-up builds the corpus (and the listener's references) so no timed run pays for it.
        pytest_run(["suites/test_mute.py", "--model=listener", "--thud-max-examples=1"], cache, results)
        wall0, calls0, cases0 = pytest_run(
            [*suites, "--model=bench/zero_model.py:factory", "--thud-no-cache", examples], cache, results
        )
        wall1, _, cases1 = pytest_run(["suites/", "--model=listener", "--thud-no-cache", examples], cache, results)
        wall2, _, cases2 = pytest_run(
            ["suites/", "--model=listener", "--thud-no-cache", examples, "-n", "2"], cache, results
        )
    figures = {
        "overhead_cases": cases0,
        "overhead_ms_per_case": round(1000 * calls0 / max(cases0, 1), 2),
        "overhead_wall_s": round(wall0, 2),
        "listener_cases": cases1,
        "listener_wall_s_n1": round(wall1, 2),
        "listener_cases_n2": cases2,
        "listener_wall_s_n2": round(wall2, 2),
        "speedup_n2": round(wall1 / wall2, 2),
    }
    for key, value in figures.items():
        print(f"{key:28s} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
