"""The leaderboard: the study's metrics per model, ranked, as a markdown table and an aligned terminal table.

Every number comes from ``results.summarize``: the relations' pass rates, the
combined accuracy and the sync and offset metrics from each model's summary;
visual invariance from ``summarize`` of the model's visual-probe cases under
the audio edits (the same pass rate, over that subset). Models are ranked by
combined accuracy (right on the original *and* the edit), the study's headline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from thud_mt.results import RELATION_ORDER, CaseResult, Rate, Summary, summarize

AUDIO_EDITS = ("shift", "mute", "swap")


@dataclass(frozen=True)
class Column:
    """One metric. ``kind`` rate: a ``Rate``; seconds: a float. ``better`` says which way is good."""

    key: str
    title: str
    kind: Literal["rate", "seconds"]
    better: Literal["higher", "lower"]
    meaning: str


@dataclass(frozen=True)
class Entry:
    """One model's row; ``values`` maps a column key to a Rate, seconds, or None (nothing to measure)."""

    rank: int
    model: str
    cases: int
    values: Mapping[str, Rate | float | None]

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "model": self.model,
            "cases": self.cases,
            "values": {k: v.to_json() if isinstance(v, Rate) else v for k, v in self.values.items()},
        }


@dataclass(frozen=True)
class Leaderboard:
    columns: tuple[Column, ...]
    entries: tuple[Entry, ...]

    def entry(self, model: str) -> Entry:
        return next(e for e in self.entries if e.model == model)


def visual_invariance(results: Sequence[CaseResult]) -> Rate:
    """Pass rate of the visual question under the audio edits: the picture answer must not move."""
    subset = [r for r in results if r.probe == "visual" and r.relation != "identity"]
    return summarize(subset).overall.pass_rate


def _relation_columns(summaries: Mapping[str, Summary]) -> list[Column]:
    names = {g.relation for s in summaries.values() for g in s.relations if g.relation is not None}
    edits = [n for n in RELATION_ORDER if n in names and n != "identity"]
    edits += sorted(names - set(RELATION_ORDER))  # relations added later still get a column
    return [
        Column(f"{n}.pass_rate", f"{n} pass rate", "rate", "higher", f"{n}: pass / (pass + fail), all probes")
        for n in edits
    ]


FIXED_COLUMNS: tuple[Column, ...] = (
    Column("combined", "combined accuracy", "rate", "higher", "pass / (pass + fail + source-failed + invalid)"),
    Column("false_sync_alarm", "false sync alarms", "rate", "lower", "synchronized originals called out of sync"),
    Column("direction_accuracy", "direction accuracy", "rate", "higher", "desynced follow-ups: right direction"),
    Column("sync_accuracy", "sync accuracy (3-class)", "rate", "higher", "every answered sync question with a truth"),
    Column("offset_mae", "offset MAE (s)", "seconds", "lower", "mean |stated - true offset| after a shift"),
    Column("visual_invariance", "visual invariance", "rate", "higher", "visual answer unchanged by audio edits"),
    Column("identity.pass_rate", "identity", "rate", "higher", "answers unchanged by a re-encode (noise floor)"),
)


def _values(summary: Summary, visual: Rate, columns: Sequence[Column]) -> dict[str, Rate | float | None]:
    values: dict[str, Rate | float | None] = {}
    for col in columns:
        if col.key.endswith(".pass_rate"):
            group = summary.group(col.key.removesuffix(".pass_rate"), None)
            values[col.key] = group.pass_rate if group is not None else None
    values["combined"] = summary.overall.combined
    values["false_sync_alarm"] = summary.false_sync_alarm
    values["direction_accuracy"] = summary.direction_accuracy
    values["sync_accuracy"] = summary.sync_accuracy
    values["offset_mae"] = summary.offset_error.mae
    values["visual_invariance"] = visual
    return values


def build_leaderboard(summaries: Mapping[str, Summary], visual: Mapping[str, Rate]) -> Leaderboard:
    """Rows ranked by combined accuracy (models with none last), ties by name; one column per metric."""
    columns = (*_relation_columns(summaries), *FIXED_COLUMNS)

    def rank_key(model: str) -> tuple[bool, float, str]:
        value = summaries[model].overall.combined.value
        return (value is None, -(value or 0.0), model)

    order = sorted(summaries, key=rank_key)
    entries = tuple(
        Entry(rank, m, summaries[m].n, MappingProxyType(_values(summaries[m], visual[m], columns)))
        for rank, m in enumerate(order, start=1)
    )
    return Leaderboard(columns, entries)


# --- formatting ---------------------------------------------------------------------------------------------------


def format_cell(value: Rate | float | None, kind: str, *, counts: bool = True) -> str:
    """``0.500 (6/12) [0.237, 0.763]`` for a rate, ``0.125`` for seconds, ``-`` when there is nothing."""
    if isinstance(value, Rate):
        if value.value is None:
            return "-"
        lo, hi = value.interval
        middle = f" ({value.successes}/{value.n})" if counts else ""
        return f"{value.value:.3f}{middle} [{lo:.3f}, {hi:.3f}]"
    if value is None:
        return "-"
    return f"{value:.3f}"


def format_markdown(board: Leaderboard, title: str = "thud-mt leaderboard") -> str:
    """A GitHub markdown table (one row per model), then what each column means."""
    head = ["rank", "model", "cases", *(c.title for c in board.columns)]
    lines = [f"# {title}", "", _md_row(head), _md_row(["---:", "---", "---:", *("---" for _ in board.columns)])]
    for e in board.entries:
        cells = [str(e.rank), e.model, str(e.cases), *(format_cell(e.values[c.key], c.kind) for c in board.columns)]
        lines.append(_md_row(cells))
    lines += ["", "Rates: value (successes/n) [Wilson 95% interval]; `-`: nothing to measure.", ""]
    lines += [f"- **{c.title}** ({c.better} is better): {c.meaning}" for c in board.columns]
    return "\n".join(lines) + "\n"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def format_terminal(board: Leaderboard) -> str:
    """Metrics as rows and models as columns (ranked left to right): fits a terminal for a few models."""
    rows = [["metric", *(f"#{e.rank} {e.model}" for e in board.entries)]]
    rows.append(["cases", *(str(e.cases) for e in board.entries)])
    rows += [[c.title, *(format_cell(e.values[c.key], c.kind) for e in board.entries)] for c in board.columns]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)
