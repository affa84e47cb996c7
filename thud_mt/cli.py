"""The ``thud`` command. Subcommands import their work lazily so ``--help`` is instant."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from thud_mt.errors import ThudError


class ThudGroup(click.Group):
    """Turns ``ThudError`` into one clear line and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ThudError as exc:
            click.echo(f"thud: error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=ThudGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """thud-mt: test whether a video model really hears (Shift / Mute / Swap the audio)."""


@main.group(cls=ThudGroup)
def corpus() -> None:
    """Build and inspect clip corpora (manifests of clips with annotated events)."""


@corpus.command("synth")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write clips/ and manifest.json.")
@click.option("--n", "n", type=click.IntRange(1), default=24, show_default=True, help="Number of clips to render.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Random seed: the same seed renders the same clips."
)
@click.option("--fps", type=click.FloatRange(1, 120), default=25.0, show_default=True, help="Frame rate of the clips.")
@click.option("--width", type=click.IntRange(16, 1920), default=160, show_default=True, help="Frame width in pixels.")
@click.option("--height", type=click.IntRange(16, 1080), default=120, show_default=True, help="Frame height in pixels.")
@click.option(
    "--sample-rate", type=click.IntRange(8000, 96000), default=16000, show_default=True, help="Audio rate (Hz)."
)
@click.option("--duration", type=click.FloatRange(2.0, 60.0), default=4.0, show_default=True, help="Seconds per clip.")
@click.option(
    "--sounds",
    type=click.Choice(["auto", "real", "synth"]),
    default="auto",
    show_default=True,
    help="Where the sounds come from: real Debian recordings (fetched by `thud corpus debian`), synthesized, "
    "or auto (real when the Debian media set is in the cache, else synthesized).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def corpus_synth(
    out: Path,
    n: int,
    seed: int,
    fps: float,
    width: int,
    height: int,
    sample_rate: int,
    duration: float,
    sounds: str,
    quiet: bool,
) -> None:
    """Render scenes where a visible event makes a sound at an annotated time."""
    from thud_mt.corpus.banks import choose_sound_bank
    from thud_mt.corpus.manifest import load_corpus, summarize_corpus
    from thud_mt.corpus.synth import build_synthetic_corpus

    bank, _ = choose_sound_bank(sounds)  # type: ignore[arg-type]
    manifest = build_synthetic_corpus(
        out,
        n,
        seed,
        bank=bank,
        fps=fps,
        size=(width, height),
        sample_rate=sample_rate,
        duration=duration,
        progress=not quiet,
    )
    click.echo(summarize_corpus(load_corpus(manifest)))
    click.echo(f"manifest: {manifest}")


@corpus.command("debian")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write the real-media corpus to.")
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=None,
    help="Where .deb packages are kept and unpacked [default: $THUD_CACHE/debian or ~/.cache/thud-mt/debian].",
)
@click.option(
    "--scenes",
    type=click.IntRange(0),
    default=12,
    show_default=True,
    help="Rendered scenes carrying the real recordings.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the rendered scenes.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def corpus_debian(out: Path, cache: Path | None, scenes: int, seed: int, quiet: bool) -> None:
    """Fetch Debian packages with recorded sounds and videos, and build a manifest from them."""
    from thud_mt.corpus.debian import build_debian_corpus
    from thud_mt.corpus.manifest import load_corpus, summarize_corpus

    manifest = build_debian_corpus(out, cache=cache, n_scenes=scenes, seed=seed, progress=not quiet)
    click.echo(summarize_corpus(load_corpus(manifest)))
    click.echo(f"manifest: {manifest}")


@corpus.command("summary")
@click.argument("manifest", type=click.Path(path_type=Path))
def corpus_summary(manifest: Path) -> None:
    """Check a manifest and print what it holds."""
    from thud_mt.corpus.manifest import load_corpus, summarize_corpus

    click.echo(summarize_corpus(load_corpus(manifest)))


@main.group(cls=ThudGroup)
def models() -> None:
    """Model weights: build tiny random-weight models for CI and benchmarks."""


@models.command("build-tiny")
@click.option(
    "--arch",
    type=click.Choice(["qwen2.5-omni", "qwen3-omni"]),
    required=True,
    help="Architecture: qwen2.5-omni (--model=qwen-omni) or qwen3-omni (--model=qwen3-omni).",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Folder to write the model and processor to."
)
@click.option(
    "--size",
    type=click.Choice(["tiny", "small", "100m"]),
    default="tiny",
    show_default=True,
    help="tiny: a few hundred thousand parameters, for CI; small: about 5 M, trained from scratch by the "
    "alignment loop's GPU profile; 100m: about 100 M, for throughput benchmarks.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
def models_build_tiny(arch: str, out: Path, size: str, seed: int) -> None:
    """Build a random-weight model with the real transformers classes and an offline tokenizer.

    The folder loads like downloaded weights: pytest suites/ --model=qwen-omni --model-path OUT.
    """
    from thud_mt.models.tiny import build_tiny, parameter_count

    folder = build_tiny(arch, out, size=size, seed=seed)
    click.echo(f"{arch} ({size}, {parameter_count(folder):,} parameters): {folder}")


@main.command("check", context_settings={"ignore_unknown_options": True})
@click.option(
    "--model",
    "models",
    multiple=True,
    default=("listener", "visual-only"),
    show_default=True,
    help="Model to run the suites against; repeat to compare models side by side.",
)
@click.option(
    "--suites",
    type=click.Path(path_type=Path),
    default=Path("suites"),
    show_default=True,
    help="Folder with the thud suites (test_shift.py, test_mute.py, ...).",
)
@click.option(
    "--results-dir",
    type=click.Path(path_type=Path),
    default=Path("out/results"),
    show_default=True,
    help="Where each model's results (JSON Lines) and the summary (JSON) are written.",
)
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def check(models: tuple[str, ...], suites: Path, results_dir: Path, pytest_args: tuple[str, ...]) -> None:
    """Run the suites against each model and print their summaries side by side.

    Extra arguments go to pytest, e.g. `thud check --model listener -- -x --thud-max-examples 4`.
    """
    import json

    from thud_mt.results import format_side_by_side, read_results, summarize
    from thud_mt.suite_process import run_suites

    if not suites.is_dir():
        raise click.UsageError(f"--suites {suites}: no such folder (run from a thud-mt checkout or pass --suites)")
    results_dir.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for model in models:
        path = results_dir / f"{model.replace('/', '_').replace(':', '_')}.jsonl"
        run_suites(suites, model, path, pytest_args)
        summaries[model] = summarize(read_results(path))
    click.echo("")
    click.echo(format_side_by_side(summaries))
    summary_path = results_dir / "summary.json"
    summary_path.write_text(json.dumps({m: s.to_json() for m, s in summaries.items()}, indent=2))
    click.echo(f"\nsummaries: {summary_path}")


@main.command("threshold")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    help="Model to measure: a registered name, pkg.module:factory or file.py:factory; repeat for a leaderboard.",
)
@click.option("--model-path", default=None, help="Weights folder or cached hub id for models that load weights.")
@click.option(
    "--corpus",
    "corpus_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Corpus manifest.json [default: the built-in synthetic corpus, built once into the cache].",
)
@click.option(
    "--clips", type=click.IntRange(1), default=None, help="Measure the first N clips with a sync offset [default: all]."
)
@click.option(
    "--range",
    "range_s",
    type=click.FloatRange(0, min_open=True),
    default=3.0,
    show_default=True,
    help="Largest audio lead and lag searched, seconds (less where a clip has no room to shift).",
)
@click.option(
    "--precision",
    type=click.FloatRange(0, min_open=True),
    default=0.025,
    show_default=True,
    help="Seconds: bisection's half-width, and the adaptive method's offset grid.",
)
@click.option(
    "--budget",
    type=click.IntRange(2),
    default=60,
    show_default=True,
    help="Most questions per clip and side (cached answers count too).",
)
@click.option(
    "--samples-per-offset",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="For models that sample: answers drawn at each offset the adaptive method picks.",
)
@click.option(
    "--method",
    type=click.Choice(["auto", "bisection", "psi"]),
    default="auto",
    show_default=True,
    help="auto: bisection for deterministic models, the Psi method for models that sample.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("out/threshold"),
    show_default=True,
    help="Folder for thresholds.json and one PNG of psychometric curves per model.",
)
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Answer cache and built-in corpus folder [default: $THUD_CACHE or ./.thud-cache].",
)
@click.option("--no-cache", is_flag=True, help="Ask the model every time (answers are not stored).")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for sampling models and the built-in corpus."
)
@click.option(
    "--timeout",
    type=click.FloatRange(0),
    default=300.0,
    show_default=True,
    help="Seconds one model call may take before it counts as an error (0 = none).",
)
@click.option("--quiet", is_flag=True, help="No progress lines and no per-clip tables; the leaderboard only.")
def threshold(
    models: tuple[str, ...],
    model_path: str | None,
    corpus_path: Path | None,
    clips: int | None,
    range_s: float,
    precision: float,
    budget: int,
    samples_per_offset: int,
    method: str,
    out: Path,
    cache_dir: Path | None,
    no_cache: bool,
    seed: int,
    timeout: float,
    quiet: bool,
) -> None:
    """Measure each model's desync detection window: how early or late the sound can be before it notices.

    For every clip and side (audio early, audio late) an adaptive search finds the offset where the sync
    answer switches from "synchronized"; the report compares the window with the human one (ITU-R BT.1359).
    """
    import os

    from thud_mt.corpus.manifest import load_corpus
    from thud_mt.threshold_report import format_leaderboard, format_run, plot_name, plot_run, write_json
    from thud_mt.threshold_run import ThresholdSettings, build_runner, measure_model

    if precision >= range_s:
        raise click.UsageError(f"--precision {precision:g} must be smaller than --range {range_s:g}")
    settings = ThresholdSettings(
        range_s=range_s,
        precision_s=precision,
        budget=budget,
        samples_per_offset=samples_per_offset,
        method=method,  # type: ignore[arg-type]
    )
    cache_root = cache_dir or Path(os.environ.get("THUD_CACHE") or ".thud-cache")
    if corpus_path is None:
        from thud_mt.corpus.builtin import builtin_corpus

        corpus_path = builtin_corpus(cache_root, seed)
    elif not corpus_path.is_file():
        raise click.UsageError(
            f"--corpus {corpus_path}: no such manifest file (build one: thud corpus synth --out DIR)"
        )
    corpus = load_corpus(corpus_path)
    runs = []
    for model in models:
        runner = build_runner(
            model,
            corpus,
            cache_dir=None if no_cache else cache_root,
            model_path=model_path,
            seed=seed,
            timeout_s=timeout or None,
        )

        def progress(case, model: str = model) -> None:
            if not quiet:
                click.echo(f"{model}: {case.id}", err=True)

        run = measure_model(runner, settings, clips=clips, progress=progress)
        runs.append(run)
        if not quiet:
            click.echo(format_run(run))
            click.echo("")
        plot_run(run, out / plot_name(model))
    click.echo(format_leaderboard(runs))
    path = write_json(out / "thresholds.json", runs)
    click.echo(f"\nthresholds: {path}\nplots: {', '.join(str(out / plot_name(m)) for m in models)}")


def _register_report() -> None:
    from thud_mt.report.cli import report  # click only at import; the work loads when the command runs

    main.add_command(report)


_register_report()


def _register_harvest() -> None:
    from thud_mt.harvest_cli import harvest  # click only at import; the work loads when the command runs

    main.add_command(harvest)


_register_harvest()


if __name__ == "__main__":
    main()
