"""Benchmark: Qwen Omni adapter throughput, end to end versus generation alone, and peak memory.

    python bench/bench_qwen_omni.py [--arch qwen2.5-omni] [--size tiny|100m] [--device auto]
                                    [--queries 64] [--batch-sizes 1,4,16] [--json OUT]

A random-weight model is built offline (``thud_mt.models.tiny``, or pass
``--model-path``) and asked ``--queries`` presence questions about synthetic
clips made from NumPy arrays (4 s, 25 fps, 320x240 frames by default, a noise
burst on the audio), so neither PyAV nor a corpus is needed: the script runs
where only torch and transformers are installed. Per batch size it reports:

- ``e2e_qps``: queries per second through ``model.answer`` (preprocessing in
  worker threads overlapping generation; target >= 80% of ``generate_qps`` at
  batch 16);
- ``generate_qps``: the same batches generated from inputs prepared beforehand;
- ``serial_qps``: ``answer`` with ``workers=0`` (each batch prepared when
  needed: what the overlap saves);
- ``prep_qps_1thread``: preprocessing alone, one thread;
- ``peak_mem_mb``: peak CUDA memory allocated during the end-to-end pass (on a
  CPU: the process's peak resident set during that pass, ``thud_mt.memory``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a bare checkout too (the GPU machine has no install)

from thud_mt.clip import Clip, Event  # noqa: E402
from thud_mt.memory import PeakMemory, Peaks  # noqa: E402
from thud_mt.models.base import Query  # noqa: E402
from thud_mt.models.qwen_omni import ARCHS, QwenOmni, load  # noqa: E402
from thud_mt.models.registry import ModelOptions  # noqa: E402
from thud_mt.models.tiny import build_tiny, parameter_count  # noqa: E402
from thud_mt.probes import question  # noqa: E402

MODEL_BY_ARCH = {"qwen2.5-omni": "qwen-omni", "qwen3-omni": "qwen3-omni"}


def synthetic_clip(index: int, size: tuple[int, int], duration: float, fps: float = 25.0, rate: int = 16000) -> Clip:
    """Random frames and a decaying noise burst at a varying time: every clip's inputs differ."""
    rng = np.random.default_rng(index)
    n_frames = int(round(duration * fps))
    width, height = size
    frames = rng.integers(0, 256, (n_frames, height, width, 3), dtype=np.uint8)
    audio = rng.normal(0, 0.01, (int(round(duration * rate)), 1)).astype(np.float32)
    at = 0.5 + (index % 7) * 0.4
    start = int(at * rate)
    burst = rng.normal(0, 0.5, 800) * np.exp(-np.linspace(0, 6, 800))
    audio[start : start + 800, 0] += burst.astype(np.float32)
    event = Event("object_falls", at, at, "thud")
    return Clip(id=f"bench-{index}", video=frames, fps=fps, audio=audio, sample_rate=rate, events=(event,))


def peak_mb(peaks: Peaks, device: object) -> float:
    size = peaks.gpu_bytes if getattr(device, "type", "cpu") == "cuda" else peaks.resident_bytes
    return float("nan") if size is None else size / 2**20


def sync(device: object) -> None:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        torch.cuda.synchronize()


def measure(model: QwenOmni, queries: list[Query], batch: int) -> dict[str, float]:
    m = model.with_settings(batch_size=batch)
    serial = model.with_settings(batch_size=batch, workers=0)
    device = m.device
    m.answer(queries[:batch])  # warm-up: kernels, allocator, thread pool
    n = len(queries)

    started = time.perf_counter()
    prepared = [m.prepare(q) for q in queries]
    prep = time.perf_counter() - started
    errors = [p.error for p in prepared if p.error]
    if errors:
        raise SystemExit(f"preprocessing failed: {errors[0]}")
    items = [p.inputs for p in prepared]
    sync(device)
    started = time.perf_counter()
    for k in range(0, n, batch):
        m.generate(items[k : k + batch])  # type: ignore[arg-type]
    sync(device)
    generate = time.perf_counter() - started

    meter = PeakMemory()
    started = time.perf_counter()
    answers = m.answer(queries)
    sync(device)
    e2e = time.perf_counter() - started
    peak = peak_mb(meter.read(), device)
    failed = [a.error for a in answers if a.error]
    if failed:
        raise SystemExit(f"answering failed: {failed[0]}")

    started = time.perf_counter()
    serial.answer(queries)
    sync(device)
    serial_s = time.perf_counter() - started
    m.close()
    serial.close()
    return {
        "batch_size": batch,
        "queries": n,
        "e2e_qps": n / e2e,
        "generate_qps": n / generate,
        "e2e_over_generate": generate / e2e,
        "serial_qps": n / serial_s,
        "prep_qps_1thread": n / prep,
        "peak_mem_mb": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(MODEL_BY_ARCH), default="qwen2.5-omni")
    parser.add_argument("--size", choices=("tiny", "100m"), default="tiny")
    parser.add_argument("--model-path", type=Path, default=None, help="Use these weights instead of building some.")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA, float32 on CPU), float32, ...")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--workers", type=int, default=None, help="Preprocessing threads [default: the adapter's].")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--max-frames", type=int, default=16)
    parser.add_argument("--frame-size", default="320x240", help="WIDTHxHEIGHT of the synthetic clips.")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch
    import transformers

    width, height = (int(v) for v in args.frame_size.lower().split("x"))
    batches = [int(b) for b in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model_path or build_tiny(args.arch, Path(tmp) / "model", size=args.size)
        extra = {
            "device": args.device,
            "dtype": args.dtype,
            "max_new_tokens": str(args.max_new_tokens),
            "max_frames": str(args.max_frames),
        }
        if args.workers is not None:
            extra["workers"] = str(args.workers)
        started = time.perf_counter()
        model = load(ARCHS[MODEL_BY_ARCH[args.arch]], ModelOptions(model_path=str(folder), extra=extra))
        load_s = time.perf_counter() - started
        params = parameter_count(Path(folder))
        queries = [
            Query(synthetic_clip(i, (width, height), args.duration), question("presence", i % 3))
            for i in range(args.queries)
        ]
        results = [measure(model, queries, b) for b in batches]
        model.close()

    figures = {
        "arch": args.arch,
        "size": args.size if args.model_path is None else str(args.model_path),
        "parameters": params,
        "device": str(model.device) + (f" ({torch.cuda.get_device_name()})" if model.device.type == "cuda" else ""),
        "dtype": str(model.dtype),
        "workers": model.settings.workers,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "frame_size": [width, height],
        "max_frames": args.max_frames,
        "max_new_tokens": args.max_new_tokens,
        "load_s": load_s,
        "imports_av": "av" in sys.modules,  # the bench must run where PyAV is not installed
        "results": results,
    }
    print(f"{args.arch} {figures['size']} ({params:,} parameters) on {figures['device']}, {figures['dtype']}")
    header = ("batch", "e2e q/s", "gen q/s", "e2e/gen", "serial q/s", "prep q/s", "peak MB")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (5, 9, 9, 8, 10, 9, 9), strict=True)))
    for r in results:
        print(
            f"{r['batch_size']:>5} {r['e2e_qps']:>9.2f} {r['generate_qps']:>9.2f} {r['e2e_over_generate']:>8.0%} "
            f"{r['serial_qps']:>10.2f} {r['prep_qps_1thread']:>9.2f} {r['peak_mem_mb']:>9.0f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
