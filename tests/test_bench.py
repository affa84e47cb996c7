"""The benchmarks run and compare like with like (their timings are reported, never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.debian
def test_bench_interventions_produces_the_same_edit_as_ffmpeg(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_interventions.py"),
            "--repeat",
            "1",
            "--corpus-n",
            "6",
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    figures = json.loads(out.read_text())
    assert figures["measured_lag_thud_s"] == pytest.approx(0.5, abs=0.001)
    assert figures["measured_lag_ffmpeg_s"] == pytest.approx(0.5, abs=0.001)
    assert figures["ratio_thud_over_ffmpeg"] > 0
    assert figures["corpus_clips_per_s_video_copied"] > 0


def test_bench_pair_writer_compares_identical_files_on_threads_and_one_thread(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    script = str(ROOT / "bench" / "bench_pair_writer.py")
    args = [sys.executable, script, "--clips", "3", "--workers", "3", "--json", str(out)]
    subprocess.run(args, check=True, capture_output=True, timeout=600)
    figures = json.loads(out.read_text())
    assert figures["identical_files"] is True and figures["pairs"] == 9 and figures["workers"] == 3
    assert figures["one_thread_s"] > 0 and figures["threads_s"] > 0
