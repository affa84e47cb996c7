"""``thud harvest run | general | summary``: preference pairs from failed cases and from annotated clips.

Click only at import, so ``thud --help`` stays instant; each command imports its work when it runs.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import click

from thud_mt.errors import ThudError
from thud_mt.pairs import SPLITS, PreferencePair


@click.group()  # under `thud`, whose group turns a ThudError into one line and exit code 2
def harvest() -> None:
    """DPO preference pairs: from failed cases (run), from annotated clips (general); check a folder (summary)."""


@harvest.command("run", context_settings={"ignore_unknown_options": True})
@click.option("--model", required=True, help="Model to run the suites against (a registered name, ...).")
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Pairs folder: pairs.jsonl and media/ (appended to)."
)
@click.option(
    "--corpus",
    "corpus_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Corpus manifest.json [default: the built-in synthetic corpus].",
)
@click.option(
    "--suites",
    type=click.Path(path_type=Path),
    default=Path("suites"),
    show_default=True,
    help="Folder with the thud suites.",
)
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def harvest_run(model: str, out: Path, corpus_path: Path | None, suites: Path, pytest_args: tuple[str, ...]) -> None:
    """Run the suites with --thud-harvest OUT: every failed case becomes a pair; then count the pairs.

    The case results go to OUT/results.jsonl. Extra arguments go to pytest,
    e.g. `thud harvest run --model listener --out pairs -- -n 2 --thud-max-examples 4`.
    """
    from thud_mt.pairs import pairs_file
    from thud_mt.suite_process import run_suites

    if corpus_path is not None and not corpus_path.is_file():
        raise click.UsageError(f"--corpus {corpus_path}: no such manifest file")
    before = {p.id for p in _pairs(pairs_file(out))} if pairs_file(out).is_file() else set()
    extra = [f"--thud-harvest={out}", *([f"--corpus={corpus_path}"] if corpus_path else []), *pytest_args]
    out.mkdir(parents=True, exist_ok=True)
    run_suites(suites, model, out / "results.jsonl", extra)
    pairs = _pairs(pairs_file(out))
    click.echo("")
    click.echo(format_counts(pairs, rows=("kind", "category")))
    new = sum(p.id not in before for p in pairs)
    click.echo(f"\n{new} new pairs; {len(pairs)} in {pairs_file(out)}")


@harvest.command("general")
@click.option(
    "--corpus",
    "corpus_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Corpus manifest.json with annotated clips [default: the built-in synthetic corpus].",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Pairs folder: pairs.jsonl and media/ (appended to)."
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the drawn choices (wrong sounds, times, wordings)."
)
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the built-in corpus is built [default: $THUD_CACHE or ./.thud-cache].",
)
def harvest_general_command(corpus_path: Path | None, out: Path, seed: int, cache_dir: Path | None) -> None:
    """Event-level pairs from annotated clips: description, localisation, attribution, audio QA.

    The rejected answer is the visual-prior error (the sound the picture
    suggests, the time the event is seen) where the clip has one, else a
    plausible wrong sound or time.
    """
    from thud_mt.corpus.manifest import load_corpus
    from thud_mt.harvest_general import harvest_general
    from thud_mt.pairs import pairs_file

    if corpus_path is None:
        from thud_mt.corpus.builtin import builtin_corpus

        corpus_path = builtin_corpus(cache_dir or Path(os.environ.get("THUD_CACHE") or ".thud-cache"), seed)
    elif not corpus_path.is_file():
        raise click.UsageError(f"--corpus {corpus_path}: no such manifest file")
    done = harvest_general(load_corpus(corpus_path), out, seed=seed)
    pairs = [p for p in _pairs(pairs_file(out)) if p.kind == "general"]
    click.echo(format_counts(pairs, rows=("category",)))
    click.echo(f"\n{done.written} new pairs, {done.already} already there; {len(pairs)} general pairs in {out}")
    for problem in done.errors:
        click.echo(f"thud: error: {problem}", err=True)
    if done.errors:
        raise ThudError(f"{len(done.errors)} of {done.clips} clips gave no pairs (see above); the others were written")


@harvest.command("summary")
@click.argument("location", type=click.Path(path_type=Path))
def harvest_summary(location: Path) -> None:
    """Check a pairs folder (or pairs.jsonl): every record against the schema, every media file there;
    then count pairs by kind, category and split."""
    from thud_mt.pairs import pairs_file

    path = pairs_file(location)
    pairs = _pairs(path)
    click.echo(format_counts(pairs, rows=("kind", "category")))
    clips = {split: {p.source_clip for p in pairs if p.split == split} for split in SPLITS}
    click.echo(f"\nsource clips: {', '.join(f'{len(clips[s])} {s}' for s in SPLITS)}")
    click.echo(f"{path}: {len(pairs)} pairs, valid")


def _pairs(path: Path) -> list[PreferencePair]:
    from thud_mt.pairs import read_pairs

    return read_pairs(path)


def format_counts(pairs: Sequence[PreferencePair], rows: Sequence[str]) -> str:
    """Pairs per row key (``kind``, ``category``, ...) and split, with totals: an aligned text table."""
    if not pairs:
        return "(no pairs)"
    counts = Counter((tuple(str(getattr(p, r)) for r in rows), p.split) for p in pairs)
    keys = sorted({key for key, _ in counts})
    table = [[*rows, *SPLITS, "total"]]
    for key in keys:
        per = [counts[(key, s)] for s in SPLITS]
        table.append([*key, *map(str, per), str(sum(per))])
    totals = [sum(counts[(k, s)] for k in keys) for s in SPLITS]
    table.append(["(all)", *[""] * (len(rows) - 1), *map(str, totals), str(sum(totals))])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    numeric = len(rows)  # counts are right-aligned, names left

    def line(row: list[str]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(c.rjust(w) if i >= numeric else c.ljust(w) for i, (c, w) in enumerate(cells)).rstrip()

    return "\n".join(line(row) for row in table)
