"""Benchmark: framework overhead per case, and the suites' wall time for ``listener`` with and without -n 2.

    python bench/bench_suites.py [--json OUT] [--max-examples 8] [--repeat 3]

Overhead: the mute, shift and swap suites (identity is left out: its edit is
an AAC encode, which is media work) against a model that answers instantly,
with the answer cache off; the figure is the time spent in the test calls
divided by the cases run (target < 20 ms). Wall time: all four suites against
``listener`` on the built-in corpus, answer cache off, one process versus
``-n 2`` (target speed-up >= 1.6x), run alternately ``--repeat`` times; the
medians are reported, with the CPU time (user + system of every process of
the run) beside the wall time, which other load on the machine distorts less.

What is cached, and used alike by both variants: the warm-up runs every suite
once (one example each) into the benchmark's own thud cache, which builds the
built-in corpus and the values derived from it (``thud_mt.derived``: the
listener's exemplar sounds, each clip's swap donors). ``--thud-no-cache``
turns off only the answer cache, so every timed run asks the model every
question; nothing a timed run stores is read by the other variant that the
warm-up had not already stored.

Python's bytecode cache is on, as in a default Python install: each run's
processes read (and the warm-up writes) compiled modules under the benchmark's
own ``PYTHONPYCACHEPREFIX``, pytest's assertion-rewritten plugin modules
included. ``--bytecode-cache=env`` keeps the environment's setting instead:
where ``PYTHONDONTWRITEBYTECODE`` is set (this project's sandbox), pytest
cannot store the rewritten copies of the plugins it loads (Hypothesis, xdist,
anyio, ...), so every process, each xdist worker included, rewrites and
compiles about 160 modules again: a second of CPU per process.

``parallel_efficiency`` calibrates the machine: a pure-Python CPU loop alone
versus two copies at once (1.0 = two cores that do not slow each other). Two
processes cannot beat ``2 x efficiency``, whatever the suites do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A CPU-bound loop that prints its own duration (calibrates how much two processes slow each other).
LOOP = "\n".join(
    [
        "import time",
        "t = time.perf_counter()",
        "x = 0",
        "for i in range(10_000_000):",
        "    x += i",
        "print(time.perf_counter() - t)",
    ]
)


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float  # user + system time of the run's processes (pytest and its xdist workers)
    in_calls_s: float  # time inside test calls, from --durations
    cases: int


def pytest_run(args: list[str], cache: Path, results: Path, env: dict[str, str] | None = None) -> Run:
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
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise SystemExit(f"pytest failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    in_calls = sum(float(m) for m in re.findall(r"^([\d.]+)s call ", done.stdout, flags=re.M))
    cases = sum(1 for _ in results.open()) if results.exists() else 0
    return Run(wall, cpu, in_calls, cases)


def parallel_efficiency(rounds: int = 3) -> float:
    """Best single-process loop time over best time of the slower of two at once (one CPU-bound loop each)."""

    def timed(n: int) -> float:
        procs = [subprocess.Popen([sys.executable, "-c", LOOP], stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return max(float(p.communicate()[0]) for p in procs)

    alone = min(timed(1) for _ in range(rounds))
    pair = min(timed(2) for _ in range(rounds))
    return alone / pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each variant [default: 3]")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--bytecode-cache",
        choices=("on", "env"),
        default="on",
        help="on: compiled modules cached under a private prefix; env: as the environment says [default: on]",
    )
    args = parser.parse_args()
    examples = f"--thud-max-examples={args.max_examples}"
    listener = ["suites/", "--model=listener", "--thud-no-cache", examples]
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        results = Path(tmp) / "results.jsonl"
        env = dict(os.environ)
        if args.bytecode_cache == "on":
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        suites = ["suites/test_mute.py", "suites/test_shift.py", "suites/test_swap.py"]
        # Warm-up: the corpus, every derived value (exemplars, donors) and, with the bytecode cache on, the
        # compiled modules of both variants (the controller and the workers load different ones), so no
        # timed run pays for them.
        warm = ["suites/", "--model=listener", "--thud-no-cache", "--thud-max-examples=1"]
        pytest_run(warm, cache, results, env)
        pytest_run([*warm, "-n", "2"], cache, results, env)
        overhead = pytest_run(
            [*suites, "--model=bench/zero_model.py:factory", "--thud-no-cache", examples], cache, results, env
        )
        one: list[Run] = []
        two: list[Run] = []
        for _ in range(args.repeat):
            one.append(pytest_run(listener, cache, results, env))
            two.append(pytest_run([*listener, "-n", "2"], cache, results, env))
    efficiency = parallel_efficiency()

    def median(runs: list[Run], field: str) -> float:
        return round(statistics.median(getattr(r, field) for r in runs), 2)

    figures = {
        "bytecode_cache": args.bytecode_cache,
        "overhead_cases": overhead.cases,
        "overhead_ms_per_case": round(1000 * overhead.in_calls_s / max(overhead.cases, 1), 2),
        "overhead_wall_s": round(overhead.wall_s, 2),
        "listener_cases": one[-1].cases,
        "listener_wall_s_n1": median(one, "wall_s"),
        "listener_cpu_s_n1": median(one, "cpu_s"),
        "listener_cases_n2": two[-1].cases,
        "listener_wall_s_n2": median(two, "wall_s"),
        "listener_cpu_s_n2": median(two, "cpu_s"),
        "speedup_n2": round(statistics.median(r.wall_s for r in one) / statistics.median(r.wall_s for r in two), 2),
        "speedups_n2_per_round": [round(a.wall_s / b.wall_s, 2) for a, b in zip(one, two, strict=True)],
        "parallel_efficiency": round(efficiency, 2),
        "speedup_ceiling_n2": round(2 * efficiency, 2),
    }
    for key, value in figures.items():
        print(f"{key:28s} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
