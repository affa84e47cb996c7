"""Running the thud suites in a fresh pytest process, as ``thud check`` and ``thud harvest run`` do."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import click


def suite_command(suites: Path, model: str, results: Path, pytest_args: Sequence[str] = ()) -> list[str]:
    """The pytest command line that runs every draw of ``suites`` against ``model`` into ``results``."""
    return [
        sys.executable,
        "-m",
        "pytest",
        str(suites),
        f"--model={model}",
        f"--thud-results={results}",
        "--thud-measure",
        "-q",
        "--no-header",
        "-p",
        "no:cacheprovider",
        *pytest_args,
    ]


def run_suites(suites: Path, model: str, results: Path, pytest_args: Sequence[str] = ()) -> None:
    """Run the suites; failing cases are what a run shows, so only pytest's own errors stop the command."""
    if not suites.is_dir():
        raise click.UsageError(f"--suites {suites}: no such folder (run from a thud-mt checkout or pass --suites)")
    command = suite_command(suites, model, results, pytest_args)
    click.echo(f"$ {' '.join(command[2:])}", err=True)
    code = subprocess.call(command)
    if code not in (0, 1):  # 1 = some cases failed
        raise click.ClickException(f"pytest stopped with exit code {code} for --model {model}")
