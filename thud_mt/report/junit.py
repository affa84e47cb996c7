"""Pass rates and Wilson intervals as JUnit XML properties (``pytest --junitxml``), for CI dashboards.

Session properties (on ``<testsuite>``) come from ``results.summarize`` of the
session's results file, computed where the XML is written: the pytest-xdist
controller (the plugin's ``pytest_sessionfinish``). Names:
``thud.<key>.pass_rate`` with ``.low``, ``.high``, ``.n`` (judged cases) and
``.cases``, where ``<key>`` is ``all``, a relation (``thud.mute.pass_rate``)
or a relation and probe (``thud.mute.presence.pass_rate``); the study's
metrics as ``thud.metric.<name>`` (same suffixes); ``thud.model``. A rate with
nothing to measure has only ``.n = 0``. Each case's test carries its own
counts (``thud.draws``, ``thud.verdict.<verdict>``, ``thud.pass_rate``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import pytest

from thud_mt.results import VERDICTS, CaseResult, GroupSummary, Rate, Summary

PREFIX = "thud"


def _rate(name: str, rate: Rate) -> list[tuple[str, object]]:
    if rate.value is None:
        return [(f"{name}.n", 0)]
    lo, hi = rate.interval
    return [(name, rate.value), (f"{name}.low", lo), (f"{name}.high", hi), (f"{name}.n", rate.n)]


def _group_key(g: GroupSummary) -> str:
    return ".".join(part for part in (g.relation, g.probe) if part is not None) or "all"


def session_properties(summary: Summary, model: str | None = None) -> list[tuple[str, object]]:
    """The testsuite properties of a session's summary, overall first, then per relation and per probe."""
    props: list[tuple[str, object]] = [(f"{PREFIX}.model", model)] if model else []
    for g in (summary.overall, *summary.relations, *summary.groups):
        key = f"{PREFIX}.{_group_key(g)}"
        props += [*_rate(f"{key}.pass_rate", g.pass_rate), (f"{key}.cases", g.n)]
        props += _rate(f"{key}.combined", g.combined)
    metrics = {
        "false_sync_alarm": summary.false_sync_alarm,
        "direction_accuracy": summary.direction_accuracy,
        "sync_accuracy": summary.sync_accuracy,
    }
    for name, rate in metrics.items():
        props += _rate(f"{PREFIX}.metric.{name}", rate)
    if summary.offset_error.mae is not None:
        props += [(f"{PREFIX}.metric.offset_mae", summary.offset_error.mae)]
    props += [(f"{PREFIX}.metric.offset_mae.n", summary.offset_error.n)]
    return props


def _log_xml(config: pytest.Config):  # -> _pytest.junitxml.LogXML | None
    """The ``--junitxml`` writer, as the ``record_testsuite_property`` fixture finds it; None without one."""
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # a pytest that moved it: no properties rather than a broken session
        return None
    return config.stash.get(xml_key, None)


def add_session_properties(config: pytest.Config, summary: Summary, model: str | None = None) -> int:
    """Put the summary's properties on the ``<testsuite>`` if ``--junitxml`` is on; how many were added.

    Must run before the writer's own ``pytest_sessionfinish`` (the plugin's hook is ``tryfirst``).
    """
    xml = _log_xml(config)
    if xml is None or not hasattr(xml, "add_global_property"):
        return 0
    props = session_properties(summary, model)
    for name, value in props:
        xml.add_global_property(name, _text(value))
    return len(props)


def _text(value: object) -> str:
    # repr of a float round-trips exactly, so a dashboard reads the same number summarize() computed.
    return repr(value) if isinstance(value, float) else str(value)


@dataclass
class CaseTally:
    """The verdicts of one test's draws, each distinct case once (Hypothesis replays a failing one)."""

    verdicts: dict[str, str] = field(default_factory=dict)

    def add(self, result: CaseResult) -> None:
        key = json.dumps([result.case, dict(result.params), result.paraphrase], sort_keys=True, default=str)
        self.verdicts[key] = result.verdict

    def properties(self) -> list[tuple[str, object]]:
        """``thud.draws``, ``thud.verdict.<v>`` for every verdict, ``thud.pass_rate`` when any was judged."""
        counts = Counter(self.verdicts.values())
        props: list[tuple[str, object]] = [(f"{PREFIX}.draws", len(self.verdicts))]
        props += [(f"{PREFIX}.verdict.{v}", counts[v]) for v in VERDICTS]
        judged = counts["pass"] + counts["fail"]
        if judged:
            props.append((f"{PREFIX}.pass_rate", _text(counts["pass"] / judged)))
        return props
