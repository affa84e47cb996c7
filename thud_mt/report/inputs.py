"""The results a report is built from: files and folders of results.jsonl, grouped by model name.

A folder stands for the ``*.jsonl`` files directly in it (what ``thud check
--results-dir`` writes, one per model). A model's name is the records' own
``model`` field unless ``--name NAME=PATH`` gives the file one. Records of one
name from several files are pooled (a suite run split over jobs), and the
entry lists every file. A file that cannot be read is reported with its
``file:line`` problem and left out; the others still make the report.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from thud_mt.results import CaseResult, ResultsError, read_results


@dataclass(frozen=True)
class ModelResults:
    """One model's records and the files they came from."""

    name: str
    files: tuple[Path, ...]
    results: tuple[CaseResult, ...]


@dataclass(frozen=True)
class Collected:
    """What was read: the models (in order of first appearance) and the problems of what was not."""

    models: tuple[ModelResults, ...]
    problems: tuple[ResultsError, ...]
    warnings: tuple[str, ...]


def expand(paths: Iterable[Path]) -> tuple[list[Path], list[ResultsError]]:
    """Each file as given; each folder as its ``*.jsonl`` files (sorted); a missing path is a problem."""
    files: list[Path] = []
    problems: list[ResultsError] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.glob("*.jsonl") if p.is_file())
            if not found:
                problems.append(ResultsError(path, None, "folder holds no *.jsonl results files"))
            files += found
        elif path.exists():
            files.append(path)
        else:
            problems.append(ResultsError(path, None, "no such results file or folder"))
    unique: list[Path] = []
    for f in files:  # a file named twice (as itself and through its folder) counts once
        if f.resolve() not in {u.resolve() for u in unique}:
            unique.append(f)
    return unique, problems


def collect(paths: Sequence[Path], names: Mapping[Path, str] | None = None) -> Collected:
    """Read every results file; ``names`` maps a file (any spelling of its path) to the model name it gets."""
    given = {p.resolve(): n for p, n in (names or {}).items()}
    files, problems = expand([*paths, *(p for p in (names or {}) if p.resolve() not in {q.resolve() for q in paths})])
    pooled: dict[str, tuple[list[Path], list[CaseResult]]] = {}
    notes: list[str] = []
    for file in files:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                records = read_results(file)
        except ResultsError as exc:
            problems.append(exc)
            continue
        notes += [str(w.message) for w in caught]
        if not records:
            notes.append(f"{file}: no records (an empty run?)")
            continue
        name = given.get(file.resolve())
        if name is not None:
            records = [dataclasses.replace(r, model=name) if r.model != name else r for r in records]
        for model in dict.fromkeys(r.model for r in records):
            files_of, results_of = pooled.setdefault(model, ([], []))
            if files_of:
                notes.append(f"{model}: records from {file} pooled with {', '.join(map(str, files_of))}")
            files_of.append(file)
            results_of += [r for r in records if r.model == model]
    models = tuple(ModelResults(m, tuple(f), tuple(rs)) for m, (f, rs) in pooled.items())
    return Collected(models, tuple(problems), tuple(notes))
