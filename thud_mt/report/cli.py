"""``thud report``: leaderboards, failure heatmap, prediction bars and a JSON summary from results files.

Registered on the ``thud`` group in ``thud_mt/cli.py``; the work is imported
inside the command so ``thud --help`` stays instant (matplotlib is slow to load).
"""

from __future__ import annotations

from pathlib import Path

import click

from thud_mt.errors import ThudError


def _names(raw: tuple[str, ...]) -> dict[Path, str]:
    names: dict[Path, str] = {}
    for item in raw:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise click.UsageError(f"--name {item!r}: expected NAME=PATH, e.g. --name base=out/results/listener.jsonl")
        if Path(path).is_dir():
            raise click.UsageError(f"--name {item!r}: PATH must be one results file, not a folder")
        names[Path(path)] = name
    return names


@click.command("report")
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/report"),
    show_default=True,
    help="Folder for leaderboard.md, summary.json, failure_heatmap.png and predictions.png.",
)
@click.option(
    "--name",
    "names",
    multiple=True,
    metavar="NAME=PATH",
    help="Show the results file PATH as model NAME (default: the model named in its records); "
    "PATH is read even when not among RESULTS. Repeatable.",
)
@click.option(
    "--allure",
    "allure_results",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="RESULTS_DIR",
    help="Also turn the Allure results of a suite run (pytest --alluredir RESULTS_DIR) into the HTML report, "
    "with the Allure command line ($THUD_ALLURE, ./node_modules/.bin/allure or allure on PATH; needs Java).",
)
@click.option(
    "--allure-out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of the Allure HTML report, replaced when the new one is complete [default: OUT/allure].",
)
@click.option("--single-file", is_flag=True, help="Allure: one self-contained index.html (media inlined).")
def report(
    results: tuple[Path, ...],
    out: Path,
    names: tuple[str, ...],
    allure_results: Path | None = None,
    allure_out: Path | None = None,
    single_file: bool = False,
) -> None:
    """Compare models from their results files (or folders of them, like `thud check --results-dir`).

    Prints the leaderboard and writes it with the failure categories and answer counts into --out.
    A results file that cannot be read is reported (file:line) and left out; the exit code is then 2.
    """
    from thud_mt.report.build import write_report
    from thud_mt.report.inputs import collect
    from thud_mt.report.leaderboard import format_terminal

    named = _names(names)
    if allure_results is None and (allure_out is not None or single_file):
        raise click.UsageError("--allure-out and --single-file go with --allure RESULTS_DIR")
    if allure_results is not None:
        from thud_mt.report.allure_html import generate

        made = generate(allure_results, allure_out or out / "allure", single_file=single_file)
        click.echo(f"wrote {made.index} (allure generate: {made.seconds:.1f} s; serve the folder to view it)")
        if not results and not named:
            return
    if not results and not named:
        raise click.UsageError("give results files or folders (e.g. thud report out/results) or --allure RESULTS_DIR")
    collected = collect(list(results), named)
    for note in collected.warnings:
        click.echo(f"thud: warning: {note}", err=True)
    for problem in collected.problems:
        click.echo(f"thud: error: {problem}", err=True)
    if not collected.models:
        raise ThudError(
            "no results to report: "
            + ("every input failed (see above)" if collected.problems else "the results files hold no records")
        )
    files = write_report(collected.models, out, [str(p) for p in collected.problems])
    click.echo(format_terminal(files.leaderboard))
    click.echo("")
    for path in (files.markdown, files.summary, files.heatmap, files.predictions):
        click.echo(f"wrote {path}")
    if collected.problems:
        raise ThudError(f"{len(collected.problems)} input(s) could not be read and are not in the report (see above)")
