"""``thud report``'s work: from each model's results to leaderboard.md, summary.json and the two PNGs.

Numbers come from ``results.summarize`` (once per model), categories from
``categories.categorize``, answer counts from ``predictions.tally_predictions``;
this module only puts them together and writes the files, each atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from thud_mt.jsonschemas import load_schema
from thud_mt.report.categories import CATEGORIES, count_categories
from thud_mt.report.inputs import ModelResults
from thud_mt.report.leaderboard import Leaderboard, build_leaderboard, format_markdown, visual_invariance
from thud_mt.report.plots import plot_failure_heatmap, plot_predictions
from thud_mt.report.predictions import tally_predictions
from thud_mt.results import summarize

SUMMARY_VERSION = 1


@dataclass(frozen=True)
class ReportFiles:
    """What a report run wrote, and the leaderboard it printed."""

    leaderboard: Leaderboard
    markdown: Path
    summary: Path
    heatmap: Path
    predictions: Path


@cache
def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of summary.json."""
    return load_schema("report.schema.json")


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def summary_document(models: Sequence[ModelResults], board: Leaderboard, problems: Sequence[str]) -> dict[str, Any]:
    """summary.json: per model the whole ``summarize`` JSON, category counts and answer tallies; the ranking."""
    per_model: dict[str, Any] = {}
    for m in models:
        per_model[m.name] = {
            "files": [str(f) for f in m.files],
            "cases": len(m.results),
            "summary": summarize(m.results).to_json(),
            "visual_invariance": visual_invariance(m.results).to_json(),
            "categories": dict(count_categories(m.results)),
            "predictions": [t.to_json() for t in tally_predictions(m.results)],
        }
    return {
        "version": SUMMARY_VERSION,
        "models": per_model,
        "leaderboard": [e.to_json() for e in board.entries],
        "columns": [{"key": c.key, "title": c.title, "better": c.better, "meaning": c.meaning} for c in board.columns],
        "categories": [{"name": c.name, "description": c.description} for c in CATEGORIES],
        "problems": list(problems),
    }


def write_report(models: Sequence[ModelResults], out: Path, problems: Sequence[str] = ()) -> ReportFiles:
    """Write the four outputs into ``out``; ``problems`` (unreadable inputs) are listed in summary.json."""
    if not models:
        raise ValueError("write_report needs at least one model's results")
    summaries = {m.name: summarize(m.results) for m in models}
    board = build_leaderboard(summaries, {m.name: visual_invariance(m.results) for m in models})
    markdown = _write_text(out / "leaderboard.md", format_markdown(board))
    doc = summary_document(models, board, problems)
    jsonschema.validate(doc, report_schema())  # a bug here must not publish a summary its readers reject
    summary = _write_text(out / "summary.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")
    ranked = [e.model for e in board.entries]
    by_name = {m.name: m for m in models}
    heatmap = plot_failure_heatmap(
        {name: count_categories(by_name[name].results) for name in ranked},
        {name: len(by_name[name].results) for name in ranked},
        out / "failure_heatmap.png",
    )
    every = [r for name in ranked for r in by_name[name].results]
    predictions = plot_predictions(tally_predictions(every, ranked), out / "predictions.png")
    return ReportFiles(board, markdown, summary, heatmap, predictions)
