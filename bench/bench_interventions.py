"""Benchmark: a shifted mp4 from a real video, thud-mt versus the ffmpeg command line.

Both produce the same edit in the same run: audio delayed by ``--offset``
seconds, duration kept, video stream copied, audio re-encoded to AAC. The
figure is the ratio of median wall times (thud / ffmpeg; target <= 1.0). Also:
clips per second for decode -> edit -> encode over the synthetic corpus, with
the video stream copied (the default) and with every frame decoded and
re-encoded.

    python bench/bench_interventions.py [--video PATH] [--repeat 7] [--json OUT]

Without ``--video`` it uses the real video of the Debian media set (fetched on
first use), re-encoded once to H.264 so its stream can be copied into mp4.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from thud_mt.interventions import shift
from thud_mt.media import read_clip, write_clip
from thud_mt.signal import lag_seconds


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    run()  # warm-up: imports, codec initialisation, file cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def real_h264_video(work: Path) -> Path:
    """The Debian set's real video as H.264 + AAC mp4 (its own stream is VP8, which mp4 cannot carry)."""
    from thud_mt.corpus.debian import debian_media_root, debian_videos

    root = debian_media_root(fetch=True)
    assert root is not None
    _, _, source = debian_videos(root)[0]
    target = work / "real.mp4"
    write_clip(read_clip(source, lazy=False), target, copy_video=False)
    return target


def thud_shift(source: Path, target: Path, offset: float) -> None:
    write_clip(shift(read_clip(source), offset), target)


def ffmpeg_shift(source: Path, target: Path, offset: float, duration: float, rate: int) -> None:
    command = [
        "ffmpeg",
        "-v",
        "error",
        "-y",
        "-i",
        str(source),
        "-map",
        "0:v:0",
        "-map",
        "0:a:0",
        "-c:v",
        "copy",
        "-af",
        f"adelay={round(offset * 1000)}:all=1",
        "-t",
        f"{duration:.6f}",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-ar",
        str(rate),
        "-movflags",
        "+faststart",
        str(target),
    ]
    subprocess.run(command, check=True)


def corpus_rate(manifest: Path, *, copy_video: bool, work: Path) -> float:
    from thud_mt.corpus.manifest import load_corpus

    corpus = load_corpus(manifest)
    started = time.perf_counter()
    for entry in corpus.entries:
        clip = corpus.load_clip(entry, lazy=copy_video)
        write_clip(shift(clip, 0.5), work / f"{entry.id}.mp4", copy_video=copy_video)
    return len(corpus.entries) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="an H.264 mp4 with sound [default: the Debian set's video]")
    parser.add_argument("--offset", type=float, default=0.5, help="seconds to delay the audio by [0.5]")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per contender [7]")
    parser.add_argument("--corpus-n", type=int, default=24, help="synthetic clips for the clips/s figure [24]")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("bench_interventions: the ffmpeg command is needed (apt-get install ffmpeg)")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = args.video or real_h264_video(work)
        clip = read_clip(source)
        ours, theirs = work / "thud.mp4", work / "ffmpeg.mp4"
        t_thud = median_seconds(lambda: thud_shift(source, ours, args.offset), args.repeat)
        t_ffmpeg = median_seconds(
            lambda: ffmpeg_shift(source, theirs, args.offset, clip.duration, clip.sample_rate), args.repeat
        )
        # Both outputs must carry the same edit, or the timing compares different work.
        lag_thud = lag_seconds(clip.audio, read_clip(ours).audio, clip.sample_rate, max_lag_s=2 * args.offset + 1)
        lag_ffmpeg = lag_seconds(clip.audio, read_clip(theirs).audio, clip.sample_rate, max_lag_s=2 * args.offset + 1)

        from thud_mt.corpus.synth import build_synthetic_corpus

        manifest = build_synthetic_corpus(work / "corpus", args.corpus_n, 0, progress=False)
        (work / "copy").mkdir()
        (work / "full").mkdir()
        rate_copy = corpus_rate(manifest, copy_video=True, work=work / "copy")
        rate_full = corpus_rate(manifest, copy_video=False, work=work / "full")

    figures = {
        "video": str(args.video or "debian renpy-demo oa4_launch.webm, re-encoded to H.264"),
        "video_seconds": round(clip.duration, 3),
        "offset_s": args.offset,
        "thud_median_s": round(t_thud, 4),
        "ffmpeg_median_s": round(t_ffmpeg, 4),
        "ratio_thud_over_ffmpeg": round(t_thud / t_ffmpeg, 3),
        "measured_lag_thud_s": round(lag_thud, 5),
        "measured_lag_ffmpeg_s": round(lag_ffmpeg, 5),
        "corpus_clips": args.corpus_n,
        "corpus_clips_per_s_video_copied": round(rate_copy, 2),
        "corpus_clips_per_s_video_reencoded": round(rate_full, 2),
    }
    for key, value in figures.items():
        print(f"{key:38s} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
