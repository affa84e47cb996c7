"""Case results: one record per metamorphic case, the results.jsonl file, and the study's metrics.

``results.jsonl`` holds one JSON object per line (``schemas/results.schema.json``).
Every pytest-xdist worker appends to the same file through ``thud_mt.jsonl``
(one locked ``write`` per record; a line left unfinished by a killed writer is
cut off by the next one). The reader skips such a tail with a warning, so
every finished record survives.
"""

from __future__ import annotations

import json
import math
import statistics
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

import numpy as np

from thud_mt.errors import LineError
from thud_mt.jsonl import JsonLinesAppender, no_constants
from thud_mt.jsonschemas import first_problem, load_schema
from thud_mt.schema_fast import Check, fast_check
from thud_mt.stats import wilson

Verdict = Literal["pass", "fail", "source-failed", "invalid", "error"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
SYNC_DESYNC = ("audio_delayed", "audio_early")
# Rows are listed in this order (the study's order); other names follow alphabetically.
RELATION_ORDER = ("identity", "shift", "mute", "swap")
PROBE_ORDER = ("presence", "sync", "offset", "sound_time", "match", "source", "visual")


class ResultsError(LineError):
    """A results file that cannot be read; names the file and (1-based) line."""


@dataclass(frozen=True)
class CaseResult:
    """One metamorphic case: the question on the original and the edited clip, and the verdict.

    ``expected`` is the right answer on the edited clip, ``None`` when the
    relation expects nothing particular. ``verdict`` is ``source-failed`` when
    the model was already wrong on the original (the edit then proves nothing).
    """

    case: str
    model: str
    fingerprint: str
    relation: str
    probe: str
    clip: str
    params: Mapping[str, object]
    paraphrase: int
    question: str
    edit: str
    source_answer: str | None
    followup_answer: str | None
    source_value: object
    followup_value: object
    source_truth: object
    expected: object
    source_correct: bool | None
    followup_correct: bool | None
    verdict: Verdict
    reason: str
    samples: int = 1
    pass_rate: float | None = None
    interval: tuple[float, float] | None = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"{self.case}: verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")
        if self.samples < 1:
            raise ValueError(f"{self.case}: samples must be >= 1, got {self.samples}")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        if self.interval is not None:
            lo, hi = self.interval
            object.__setattr__(self, "interval", (float(lo), float(hi)))

    def to_json(self) -> dict[str, Any]:
        """A plain JSON-able dict (numpy scalars and tuples become Python numbers and lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> CaseResult:
        values = dict(doc)
        if values.get("interval") is not None:
            lo, hi = values["interval"]
            values["interval"] = (lo, hi)
        return cls(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@cache
def results_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one results.jsonl line."""
    return load_schema("results.schema.json")


@cache
def _fast_check() -> Check | None:
    return fast_check(results_schema())


def _schema_problem(doc: Any) -> str | None:
    fast = _fast_check()
    if fast is not None and fast(doc) is True:  # plainly valid: spares jsonschema's walk (~0.1 ms a record)
        return None
    return first_problem("results.schema.json", doc)


class ResultsWriter:
    """Appends CaseResults to a JSON Lines file, one whole flushed line per case.

    Safe for several processes appending to one file (pytest-xdist workers)
    and against a writer killed mid-line: see ``thud_mt.jsonl``. ``fsync=True``
    also survives a machine crash, at a cost per case.
    """

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self._file = JsonLinesAppender(path, fsync=fsync)
        self.path = self._file.path
        self.fsync = fsync

    def write(self, result: CaseResult) -> None:
        doc = result.to_json()
        problem = _schema_problem(doc)
        if problem is not None:  # refuse here what read_results would refuse later
            raise ValueError(f"{result.case}: not a valid result record {problem}")
        try:
            line = json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"
        except ValueError as e:
            raise ValueError(f"{result.case}: {e} (NaN or infinity is not JSON)") from e
        self._file.append(line.encode("utf-8"))

    def write_all(self, results: Iterable[CaseResult]) -> None:
        for r in results:
            self.write(r)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_results(path: str | Path) -> list[CaseResult]:
    """Every record of a results.jsonl file, each checked against the schema; blank lines are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(path, None, "no such results file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(path, None, f"cannot be read: {e}") from e
    out: list[CaseResult] = []
    lines = text.split("\n")  # the last item is what follows the last newline: "" or an unfinished line
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line, parse_constant=no_constants)
        except ValueError as e:
            if number == len(lines):
                warnings.warn(
                    f"{path}:{number}: skipped an unfinished last record (a run killed mid-write)", stacklevel=2
                )
                break
            raise ResultsError(path, number, f"not a JSON record ({e})") from e
        problem = _schema_problem(doc)
        if problem is not None:
            raise ResultsError(path, number, f"not a valid result record {problem}")
        out.append(CaseResult.from_json(doc))
    return out


# --- metrics ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """``successes / n`` with its Wilson 95% interval; ``value`` is ``None`` when ``n == 0``."""

    successes: int
    n: int
    value: float | None
    interval: tuple[float, float]

    @classmethod
    def of(cls, successes: int, n: int) -> Rate:
        return cls(successes, n, successes / n if n else None, wilson(successes, n))

    def to_json(self) -> dict[str, Any]:
        return {"successes": self.successes, "n": self.n, "value": self.value, "interval": list(self.interval)}


@dataclass(frozen=True)
class GroupSummary:
    """Verdict counts and rates of one (relation, probe); ``probe`` None = all probes, ``relation`` None = all."""

    relation: str | None
    probe: str | None
    n: int
    counts: Mapping[str, int]
    pass_rate: Rate  # pass / (pass + fail): did the answer move as the edit implies, when it could be judged
    combined: Rate  # pass / (pass + fail + source-failed + invalid): right on the original *and* the edit
    accuracy: Rate  # right on the edited clip, whatever happened on the original

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts", MappingProxyType({v: int(self.counts.get(v, 0)) for v in VERDICTS}))

    def to_json(self) -> dict[str, Any]:
        return {
            "relation": self.relation,
            "probe": self.probe,
            "n": self.n,
            "counts": dict(self.counts),
            "pass_rate": self.pass_rate.to_json(),
            "combined": self.combined.to_json(),
            "accuracy": self.accuracy.to_json(),
        }


@dataclass(frozen=True)
class OffsetError:
    """|answered offset - true offset| over offset follow-ups with a numeric answer, in seconds."""

    n: int
    mae: float | None
    median: float | None
    bias: float | None  # mean signed error: a model that always answers 0 shows minus the mean offset

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "mae": self.mae, "median": self.median, "bias": self.bias}


@dataclass(frozen=True)
class Summary:
    """The study's numbers for one set of results (normally one model's)."""

    n: int
    models: tuple[str, ...]
    groups: tuple[GroupSummary, ...]  # per (relation, probe)
    relations: tuple[GroupSummary, ...]  # per relation, all probes
    overall: GroupSummary
    false_sync_alarm: Rate
    direction_accuracy: Rate
    sync_accuracy: Rate
    offset_error: OffsetError
    _index: Mapping[tuple[str | None, str | None], GroupSummary] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {(g.relation, g.probe): g for g in (*self.groups, *self.relations, self.overall)}
        object.__setattr__(self, "_index", MappingProxyType(index))

    def group(self, relation: str | None, probe: str | None = None) -> GroupSummary | None:
        """The row of ``relation`` and ``probe`` (``None`` = all), or ``None`` if no case had them."""
        return self._index.get((relation, probe))

    @property
    def accuracy_by_relation(self) -> Mapping[str, Rate]:
        """Accuracy on the edited clip per intervention (``followup_correct``)."""
        return MappingProxyType({g.relation: g.accuracy for g in self.relations if g.relation is not None})

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "models": list(self.models),
            "groups": [g.to_json() for g in self.groups],
            "relations": [g.to_json() for g in self.relations],
            "overall": self.overall.to_json(),
            "accuracy_by_relation": {k: v.to_json() for k, v in self.accuracy_by_relation.items()},
            "false_sync_alarm": self.false_sync_alarm.to_json(),
            "direction_accuracy": self.direction_accuracy.to_json(),
            "sync_accuracy": self.sync_accuracy.to_json(),
            "offset_error": self.offset_error.to_json(),
        }


def _ordered(names: Iterable[str], order: Sequence[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(order)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(order)), n))


def _group(relation: str | None, probe: str | None, results: Sequence[CaseResult]) -> GroupSummary:
    counts = Counter(r.verdict for r in results)
    passed, failed = counts["pass"], counts["fail"]
    judged = [r for r in results if r.followup_correct is not None]
    return GroupSummary(
        relation=relation,
        probe=probe,
        n=len(results),
        counts=counts,
        pass_rate=Rate.of(passed, passed + failed),
        combined=Rate.of(passed, passed + failed + counts["source-failed"] + counts["invalid"]),
        accuracy=Rate.of(sum(r.followup_correct is True for r in judged), len(judged)),
    )


def _right(correct: bool | None, value: object, truth: object) -> bool:
    """The relation's judgement when it gave one, else plain equality with the truth."""
    if correct is not None:
        return correct
    return value is not None and value == truth


def _sync_sources(results: Sequence[CaseResult]) -> list[CaseResult]:
    """One case per distinct answered sync source: many edits of a clip share its source question.

    The first case of each (model, clip, paraphrase) stands for it; sources
    with no reply at all (a failed call) are not answers and are left out.
    """
    seen: dict[tuple[str, str, int], CaseResult] = {}
    for r in results:
        if r.probe == "sync" and r.source_truth is not None and r.source_answer is not None:
            seen.setdefault((r.model, r.clip, r.paraphrase), r)
    return list(seen.values())


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def summarize(results: Sequence[CaseResult]) -> Summary:
    """Verdict counts and rates per (relation, probe) and per relation, and the study's metrics.

    - false sync alarms: of the distinct synchronized originals the model
      answered (unparseable answers included), the fraction it called out of sync;
    - direction accuracy: of sync follow-ups on desynced clips answered with a
      direction, the fraction with the right one;
    - sync accuracy: 3-class accuracy over every answered sync question with a
      known truth (distinct originals, and follow-ups with an expectation);
    - offset error: over offset follow-ups with a numeric answer and expectation.
    """
    groups: list[GroupSummary] = []
    relations: list[GroupSummary] = []
    for relation in _ordered((r.relation for r in results), RELATION_ORDER):
        mine = [r for r in results if r.relation == relation]
        for probe in _ordered((r.probe for r in mine), PROBE_ORDER):
            groups.append(_group(relation, probe, [r for r in mine if r.probe == probe]))
        relations.append(_group(relation, None, mine))

    sources = _sync_sources(results)
    synced = [r for r in sources if r.source_truth == "synchronized"]
    alarms = sum(r.source_value in SYNC_DESYNC for r in synced)

    sync_followups = [r for r in results if r.probe == "sync" and r.followup_answer is not None]
    directed = [r for r in sync_followups if r.expected in SYNC_DESYNC and r.followup_value in SYNC_DESYNC]
    right_direction = sum(r.followup_value == r.expected for r in directed)

    judged = [_right(r.source_correct, r.source_value, r.source_truth) for r in sources]
    judged += [
        _right(r.followup_correct, r.followup_value, r.expected) for r in sync_followups if r.expected is not None
    ]

    offsets = [
        float(r.followup_value) - float(r.expected)  # type: ignore[arg-type]
        for r in results
        if r.probe == "offset" and _is_number(r.followup_value) and _is_number(r.expected)
    ]
    errors = [abs(e) for e in offsets]
    return Summary(
        n=len(results),
        models=tuple(_ordered((r.model for r in results), ())),
        groups=tuple(groups),
        relations=tuple(relations),
        overall=_group(None, None, results),
        false_sync_alarm=Rate.of(alarms, len(synced)),
        direction_accuracy=Rate.of(right_direction, len(directed)),
        sync_accuracy=Rate.of(sum(judged), len(judged)),
        offset_error=OffsetError(
            n=len(errors),
            mae=statistics.fmean(errors) if errors else None,
            median=statistics.median(errors) if errors else None,
            bias=statistics.fmean(offsets) if offsets else None,
        ),
    )


def summarize_by_model(results: Sequence[CaseResult]) -> dict[str, Summary]:
    """One Summary per model, in model-name order: the input of ``format_side_by_side``."""
    return {m: summarize([r for r in results if r.model == m]) for m in _ordered((r.model for r in results), ())}


# --- text tables --------------------------------------------------------------------------------------------------


def _fmt_rate(rate: Rate, *, counts: bool = False) -> str:
    if rate.value is None:
        return "-"
    lo, hi = rate.interval
    middle = f" ({rate.successes}/{rate.n})" if counts else ""
    return f"{rate.value:.3f}{middle} [{lo:.3f}, {hi:.3f}]"


def _fmt_value(rate: Rate) -> str:
    return "-" if rate.value is None else f"{rate.value:.3f}"


def _fmt_offset(err: OffsetError) -> str:
    if not err.n or err.mae is None or err.median is None or err.bias is None:
        return "-"
    return f"MAE {err.mae:.3f} s, median {err.median:.3f} s, bias {err.bias:+.3f} s (n={err.n})"


def _table(rows: Sequence[Sequence[str]], right: Callable[[int], bool]) -> list[str]:
    """Rows padded to aligned columns; ``right(column)`` says which columns are right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(_pad(cell, w, right(i)) for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows
    ]


def _pad(cell: str, width: int, right: bool) -> str:
    return cell.rjust(width) if right else cell.ljust(width)


def _row_keys(summary: Summary) -> list[GroupSummary]:
    """Each relation's probe rows followed by its all-probes row, then the overall row."""
    out: list[GroupSummary] = []
    for rel in summary.relations:
        out += [g for g in summary.groups if g.relation == rel.relation]
        out.append(rel)
    out.append(summary.overall)
    return out


def _labels(g: GroupSummary) -> list[str]:
    return [g.relation if g.relation is not None else "(all)", g.probe if g.probe is not None else "(all)"]


def _metric_lines(summary: Summary) -> list[tuple[str, str]]:
    by_relation = summary.accuracy_by_relation.items()
    lines = [(f"accuracy after {rel}", _fmt_rate(rate, counts=True)) for rel, rate in by_relation]
    lines += [
        ("false sync alarms", _fmt_rate(summary.false_sync_alarm, counts=True)),
        ("sync direction accuracy", _fmt_rate(summary.direction_accuracy, counts=True)),
        ("sync accuracy (3-class)", _fmt_rate(summary.sync_accuracy, counts=True)),
        ("offset error", _fmt_offset(summary.offset_error)),
    ]
    return lines


def format_summary(summary: Summary, title: str = "") -> str:
    """A compact aligned table of verdicts and rates, then the study's metrics."""
    counted = ["n", "pass", "fail", "src-failed", "invalid", "error"]
    rows = [["relation", "probe", *counted, "pass rate [95% CI]", "combined"]]
    for g in _row_keys(summary):
        counts = [str(g.counts[v]) for v in VERDICTS]
        rows.append([*_labels(g), str(g.n), *counts, _fmt_rate(g.pass_rate), _fmt_value(g.combined)])
    out = [title] if title else []
    out += _table(rows, right=lambda i: 2 <= i <= 7)
    out.append("")
    out += _table([[f"{name}:", value] for name, value in _metric_lines(summary)], right=lambda i: False)
    return "\n".join(out)


def format_side_by_side(summaries: Mapping[str, Summary]) -> str:
    """The key rows with one column block (pass rate, combined) per model, then the metrics per model."""
    if not summaries:
        return "(no results)"
    names = list(summaries)
    keys: list[tuple[str | None, str | None]] = []
    for s in summaries.values():
        for g in _row_keys(s):
            if (g.relation, g.probe) not in keys:
                keys.append((g.relation, g.probe))
    # The overall row belongs last, the rest in study order whichever model saw them first.
    rank_rel = {n: i for i, n in enumerate(RELATION_ORDER)}
    rank_probe = {n: i for i, n in enumerate(PROBE_ORDER)}
    keys.sort(
        key=lambda k: (
            k[0] is None,
            rank_rel.get(k[0] or "", len(RELATION_ORDER)),
            k[0] or "",
            k[1] is None,
            rank_probe.get(k[1] or "", len(PROBE_ORDER)),
            k[1] or "",
        )
    )
    blocks = [["pass rate [95% CI]", "combined"] for _ in names]
    rows: list[list[str]] = [["", "", *(x for name in names for x in (name, ""))]]
    rows.append(["relation", "probe", *(x for b in blocks for x in b)])
    for relation, probe in keys:
        row = [relation or "(all)", probe or "(all)"]
        for name in names:
            g = summaries[name].group(relation, probe)
            row += ["", ""] if g is None else [_fmt_rate(g.pass_rate), _fmt_value(g.combined)]
        rows.append(row)
    out = _table(rows, right=lambda i: False)
    metrics: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        for metric, value in _metric_lines(summaries[name]):
            metrics.setdefault(metric, [""] * len(names))[i] = value
    out.append("")
    out += _table([["metric", *names], *([f"{m}:", *vals] for m, vals in metrics.items())], right=lambda i: False)
    return "\n".join(out)
