"""Benchmark: pair media encoded on threads against one thread, on the same drafts in the same run.

The drafts are the loop's kept guards' shape: each synthetic clip muted, with its sound moved, and as
recorded, one visual question each (``alignment.anchors.write_blind_guards`` writes 4 per picture). The
figure is the ratio of wall times (threads / one thread; below 1 is faster) and pairs per second each
way; the two pairs files must be byte-identical.

    python bench/bench_pair_writer.py [--clips 24] [--workers N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from thud_mt.corpus.manifest import load_corpus
from thud_mt.corpus.synth import build_synthetic_corpus
from thud_mt.interventions import mute, shift
from thud_mt.media import writer_threads
from thud_mt.pairs import PairDraft, PairWriter


def drafts(corpus_dir: Path, clips: int) -> list[PairDraft]:
    corpus = load_corpus(build_synthetic_corpus(corpus_dir, clips, seed=11, progress=False))
    rng = np.random.default_rng(0)
    out = []
    for entry in corpus.entries:
        clip = corpus.load_clip(entry)
        for n, version in enumerate([clip, mute(clip), shift(clip, float(rng.uniform(-1.0, 1.0)))]):
            out.append(PairDraft("intervention", "kept", f"when? {n}", "1 second", "2 seconds", version, clip.id))
    return out


def write_all(folder: Path, batch: list[PairDraft], workers: int) -> float:
    started = time.perf_counter()
    with PairWriter(folder, workers=workers) as writer:
        for draft in batch:
            writer.add(draft)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--workers", type=int, default=writer_threads())
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        batch = drafts(work / "corpus", args.clips)
        one = write_all(work / "one", batch, 1)
        many = write_all(work / "many", batch, args.workers)
        same = (work / "one" / "pairs.jsonl").read_bytes() == (work / "many" / "pairs.jsonl").read_bytes()
    result = {
        "pairs": len(batch),
        "workers": args.workers,
        "one_thread_s": round(one, 3),
        "threads_s": round(many, 3),
        "ratio": round(many / one, 3),
        "pairs_per_s": {"one": round(len(batch) / one, 1), "threads": round(len(batch) / many, 1)},
        "identical_files": same,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not same:
        raise SystemExit("the pairs files differ between one thread and several")


if __name__ == "__main__":
    main()
