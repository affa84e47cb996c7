"""The pytest plugin: ``pytest suites/ --model=NAME``.

Registered through the ``pytest11`` entry point, so it is loaded in every
pytest run of an environment that has thud-mt installed; it stays inert until a
test asks for the ``thud`` fixture or a ``thud_case`` parameter. State lives in
``config.stash``; bad options are ``pytest.UsageError``s that say what to type.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from thud_mt.errors import ThudError

if TYPE_CHECKING:  # Hypothesis loads where tests run: the pytest-xdist controller never needs it
    from hypothesis import strategies as st

RELATION_MARKERS = {
    "shift": "Shift relation: audio delayed / advanced",
    "mute": "Mute relation: audio silenced",
    "swap": "Swap relation: audio replaced by a donor clip's",
    "identity": "Identity relation: re-encode, every answer unchanged",
}
# Not a relation: the threshold suite searches each clip's desync detection threshold (thud_mt.threshold_run).
THRESHOLD_MARKER = ("threshold", "Desync detection threshold: adaptive search per clip and side of the sync window")
DEFAULT_THRESHOLD_MAX = 0.5


class RelationViolation(AssertionError):
    """A case whose answers broke the relation (as opposed to a crash in the test itself)."""


@dataclass(frozen=True)
class ThudConfig:
    """The parsed ``--model`` / ``--thud-*`` options."""

    model: str | None
    model_path: str | None
    model_url: str | None
    model_name: str | None
    model_extra: dict[str, str]
    scoring: str
    corpus: Path | None
    samples: int
    cache_dir: Path
    use_cache: bool
    results: Path
    gates: dict[str, float]
    timeout_s: float | None
    max_examples: int
    seed: int
    shrink: bool
    explore: bool
    relation_options: object  # relations.RelationOptions
    canary: int
    measure: bool
    threshold_max: float = DEFAULT_THRESHOLD_MAX
    record: Path | None = None  # --thud-record: the cassette this session's answers go to
    harvest: Path | None = None  # --thud-harvest: folder of preference pairs from failed cases
    attach: str = "failures"  # --thud-attach: which cases carry media in the Allure results


@dataclass
class ThudState:
    config: ThudConfig
    runner: object | None = None  # thud_mt.runner.CaseRunner, built on first use
    corpus: object | None = None
    usage_error: pytest.UsageError | None = None  # raised after collection, so pytest exits with a usage error
    broken: list[Exception] = field(default_factory=list)  # --thud-measure: the current test's failed draws
    draws: int = 0
    tally: object | None = None  # thud_mt.report.junit.CaseTally: the current test's verdicts, for --junitxml
    summary_text: list[str] = field(default_factory=list)
    summary_loaded: bool = False  # pytest-xdist controller: the summary's modules are imported


STATE = pytest.StashKey[ThudState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("thud", "thud-mt: metamorphic tests of whether a video model hears")
    group.addoption(
        "--model",
        default=None,
        help="Model to check: a registered name (listener, visual-only, chance, "
        "...), pkg.module:factory, or path/to/file.py:factory.",
    )
    group.addoption("--model-path", default=None, help="Weights folder or cached hub id for models that load weights.")
    group.addoption("--model-url", default=None, help="Base URL of an OpenAI-compatible server (openai-compatible).")
    group.addoption("--model-name", default=None, help="The model id the server or API knows the model by.")
    group.addoption(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="An adapter-specific setting (e.g. batch_size=4, dtype=bfloat16, max_frames=16); repeatable. "
        "API keys are never options: they come from environment variables.",
    )
    group.addoption(
        "--thud-scoring",
        choices=("generate", "logprob"),
        default="generate",
        help="generate: free-text answers, parsed; logprob: score each allowed answer by log-probability "
        "(deterministic, no parsing) where the model supports it [default: generate].",
    )
    group.addoption(
        "--corpus",
        default=None,
        help="Corpus manifest.json [default: the built-in synthetic corpus, generated once into the thud cache].",
    )
    group.addoption(
        "--thud-samples",
        default="1",
        help="Repeat each question N times for models that sample; the "
        "verdict is the majority, with a Wilson 95%% interval [default: 1].",
    )
    group.addoption(
        "--thud-cache",
        default=None,
        help="Cache folder for answers, corpora and Hypothesis examples "
        "[default: $THUD_CACHE or <rootdir>/.thud-cache].",
    )
    group.addoption("--thud-no-cache", action="store_true", help="Ask the model every time (answers are not stored).")
    group.addoption(
        "--thud-results",
        default=None,
        help="JSON Lines file of case results [default: "
        "<cache>/results/last.jsonl]; truncated at the start of each session.",
    )
    group.addoption(
        "--thud-record",
        default=None,
        metavar="PATH",
        help="Record every answer the model gives to PATH (a cassette, truncated at the start of the session) "
        "to replay it later with --model=replay:PATH; answers stored by earlier sessions are not reused, "
        "so the cassette holds the whole session.",
    )
    group.addoption(
        "--thud-gate",
        action="append",
        default=[],
        metavar="RELATION=RATE",
        help="Fail the session "
        "when RELATION's pass rate is below RATE (0-1); with gates, single failing cases do not fail "
        "the session by themselves. Repeatable.",
    )
    group.addoption(
        "--thud-timeout",
        default="300",
        help="Seconds one model call may take before the case is an error [default: 300; 0 = none].",
    )
    group.addoption(
        "--thud-max-examples",
        default="8",
        help="Hypothesis examples (offsets, donors, paraphrases) per test [default: 8].",
    )
    group.addoption("--thud-seed", default="0", help="Seed for sampling models and the built-in corpus [default: 0].")
    group.addoption(
        "--thud-shrink",
        action="store_true",
        help="Let Hypothesis shrink a failing example to the smallest edit (costs extra model calls).",
    )
    group.addoption(
        "--thud-canary",
        default="3",
        help="Clips on which to check, before the run, that muting changes the model's answers "
        "(0 = no check) [default: 3].",
    )
    group.addoption(
        "--thud-relation-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Change a bound or tolerance of the relations (relations/options.py): sync_window=-0.045,0.125 "
        "(ITU-R BT.1359), must_detect=0.3, offset_tolerance=0.25, time_tolerance=0.2, max_shift=3.0, margin=0.25. "
        "Repeatable.",
    )
    group.addoption(
        "--thud-measure",
        action="store_true",
        help="Run every draw of every test, failing a test only afterwards, so the summary's rates cover all "
        "drawn cases (default: a test stops at its first failing draw, as Hypothesis does; on with --thud-gate).",
    )
    group.addoption(
        "--thud-explore",
        action="store_true",
        help="Draw new offsets, donors and paraphrases each run, replaying saved failing examples first "
        "(default: the same draws every run, so a rerun is free from the answer cache).",
    )
    group.addoption(
        "--thud-harvest",
        default=None,
        metavar="DIR",
        help="Turn every failed (and source-failed) case into a DPO preference pair in DIR/pairs.jsonl, "
        "with its media in DIR/media (appends; a resumed run adds no duplicates).",
    )
    group.addoption(
        "--thud-attach",
        choices=("failures", "all", "none"),
        default="failures",
        help="With allure-pytest (--alluredir): which cases get the edited and original clip, the waveform "
        "PNG and the answers attached (every case gets its labels either way) [default: failures].",
    )
    group.addoption(
        "--thud-threshold-max",
        default=str(DEFAULT_THRESHOLD_MAX),
        help="Threshold suite: fail a clip's side when the model notices the desync only beyond this many "
        f"seconds of audio lead or lag, or not at all [default: {DEFAULT_THRESHOLD_MAX}].",
    )


def _number(config: pytest.Config, name: str, kind: type, low: float, example: str) -> float:
    raw = config.getoption(name)
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise pytest.UsageError(f"--{name.replace('_', '-')} {raw!r}: expected a number, e.g. {example}") from None
    if value < low:
        raise pytest.UsageError(f"--{name.replace('_', '-')} {raw!r}: must be >= {low}, e.g. {example}")
    return value


def _gates(raw: list[str]) -> dict[str, float]:
    gates: dict[str, float] = {}
    for item in raw:
        relation, sep, rate = item.partition("=")
        if not sep or relation not in RELATION_MARKERS:
            raise pytest.UsageError(
                f"--thud-gate {item!r}: expected RELATION=RATE with RELATION one of "
                f"{', '.join(RELATION_MARKERS)}, e.g. --thud-gate mute=0.9"
            )
        try:
            value = float(rate)
        except ValueError:
            raise pytest.UsageError(f"--thud-gate {item!r}: RATE must be a number in 0-1, e.g. mute=0.9") from None
        if not 0.0 <= value <= 1.0:
            raise pytest.UsageError(f"--thud-gate {item!r}: RATE must be in 0-1, e.g. mute=0.9")
        gates[relation] = value
    return gates


def _model_extra(raw: list[str]) -> dict[str, str]:
    extra: dict[str, str] = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise pytest.UsageError(f"--model-option {item!r}: expected KEY=VALUE, e.g. --model-option batch_size=4")
        extra[key] = value
    return extra


def _relation_options(raw: list[str]):  # -> RelationOptions
    """``NAME=VALUE`` pairs over the defaults of ``relations.RelationOptions`` (pairs as ``EARLY,LATE``)."""
    import dataclasses

    from relations.options import DEFAULT_OPTIONS

    names = {f.name for f in dataclasses.fields(DEFAULT_OPTIONS)}
    changes: dict[str, object] = {}
    for item in raw:
        name, sep, value = item.partition("=")
        if not sep or name not in names:
            raise pytest.UsageError(
                f"--thud-relation-option {item!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(names))}, "
                "e.g. --thud-relation-option must_detect=0.5 or sync_window=-0.045,0.125"
            )
        try:
            numbers = tuple(float(v) for v in value.split(","))
        except ValueError:
            raise pytest.UsageError(
                f"--thud-relation-option {item!r}: VALUE must be a number (or two, comma-separated)"
            ) from None
        changes[name] = numbers if name == "sync_window" else numbers[0]
    try:
        return dataclasses.replace(DEFAULT_OPTIONS, **changes)
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(f"--thud-relation-option: {exc}") from None


def _read_config(config: pytest.Config) -> ThudConfig:
    cache_raw = config.getoption("thud_cache") or os.environ.get("THUD_CACHE")
    cache_dir = Path(cache_raw) if cache_raw else Path(config.rootpath) / ".thud-cache"
    corpus_raw = config.getoption("corpus")
    corpus = Path(corpus_raw) if corpus_raw else None
    if corpus is not None and not corpus.is_file():
        raise pytest.UsageError(f"--corpus {corpus}: no such manifest file (build one: thud corpus synth --out DIR)")
    results_raw = config.getoption("thud_results")
    timeout = _number(config, "thud_timeout", float, 0, "60")
    return ThudConfig(
        model=config.getoption("model"),
        model_path=config.getoption("model_path"),
        model_url=config.getoption("model_url"),
        model_name=config.getoption("model_name"),
        model_extra=_model_extra(config.getoption("model_option")),
        scoring=config.getoption("thud_scoring"),
        corpus=corpus,
        samples=int(_number(config, "thud_samples", int, 1, "5")),
        cache_dir=cache_dir,
        use_cache=not config.getoption("thud_no_cache"),
        results=Path(results_raw) if results_raw else cache_dir / "results" / "last.jsonl",
        gates=_gates(config.getoption("thud_gate")),
        relation_options=_relation_options(config.getoption("thud_relation_option")),
        canary=int(_number(config, "thud_canary", int, 0, "3")),
        timeout_s=timeout or None,
        max_examples=int(_number(config, "thud_max_examples", int, 1, "8")),
        seed=int(_number(config, "thud_seed", int, 0, "0")),
        shrink=config.getoption("thud_shrink"),
        explore=config.getoption("thud_explore"),
        # Gates judge aggregate rates, which only mean something when every draw is run.
        measure=config.getoption("thud_measure") or bool(config.getoption("thud_gate")),
        threshold_max=_number(config, "thud_threshold_max", float, 0, "0.5"),
        record=Path(config.getoption("thud_record")) if config.getoption("thud_record") else None,
        harvest=Path(config.getoption("thud_harvest")) if config.getoption("thud_harvest") else None,
        attach=config.getoption("thud_attach"),
    )


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in RELATION_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    config.addinivalue_line("markers", f"{THRESHOLD_MARKER[0]}: {THRESHOLD_MARKER[1]}")
    thud = _read_config(config)
    config.stash[STATE] = ThudState(thud)
    if thud.model is None:
        return
    # Hypothesis imports libcst to print falsifying examples; its deprecation noise is not the user's.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:libcst.*")
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"  # keep each clip's cases on one worker (collection_modifyitems)
    if getattr(config.option, "dist", "no") != "no":
        # One process per core already: BLAS / OpenMP thread pools in each worker would only
        # oversubscribe the cores (workers are spawned after this and inherit the environment).
        for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
    if _is_worker(config) and config.workerinput.get("thud_loadgroup"):  # type: ignore[attr-defined]
        config.option.loadgroup = True  # workers parse their own options; xdist reads this at collection
    if not _is_worker(config):
        thud.results.parent.mkdir(parents=True, exist_ok=True)
        thud.results.write_text("")  # this session's results only; workers append
        if thud.record is not None:
            thud.record.parent.mkdir(parents=True, exist_ok=True)
            thud.record.write_text("")  # this session's answers only; the first to answer writes the header
        _canary_path(thud).unlink(missing_ok=True)
    if not _is_controller(config):
        _hypothesis_profile(thud)


def _is_controller(config: pytest.Config) -> bool:
    """The pytest-xdist controller: it starts the workers and runs no test itself (xdist's own test)."""
    distributing = getattr(config.option, "dist", "no") != "no" and bool(getattr(config.option, "tx", None))
    return distributing and not _is_worker(config) and not config.getoption("collectonly")


def _hypothesis_profile(thud: ThudConfig) -> None:
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if thud.shrink else [])
    settings.register_profile(
        "thud",
        deadline=None,
        max_examples=thud.max_examples,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        # Same draws every run unless exploring: with the answer cache a rerun then costs no model calls.
        derandomize=not thud.explore or bool(os.environ.get("CI")),
        database=DirectoryBasedExampleDatabase(thud.cache_dir / "hypothesis") if thud.explore else None,
        phases=phases,
        print_blob=True,
    )
    settings.load_profile("thud")


def _corpus(config: pytest.Config):  # -> Corpus
    state = config.stash[STATE]
    if state.corpus is None:
        from thud_mt.corpus.builtin import builtin_corpus
        from thud_mt.corpus.manifest import load_corpus

        path = state.config.corpus or builtin_corpus(state.config.cache_dir, state.config.seed)
        try:
            state.corpus = load_corpus(path)
        except ThudError as exc:
            raise pytest.UsageError(f"--corpus: {exc}") from exc
    return state.corpus


def _runner(config: pytest.Config):  # -> CaseRunner
    state = config.stash[STATE]
    if state.runner is None:
        thud = state.config
        if thud.model is None:
            raise pytest.UsageError("these are thud-mt suites: choose a model, e.g. pytest suites/ --model=listener")
        from thud_mt.cache import AnswerCache, NullCache
        from thud_mt.derived import DerivedCache
        from thud_mt.models.registry import ModelOptions, create
        from thud_mt.results import ResultsWriter
        from thud_mt.runner import CaseRunner

        corpus = _corpus(config)
        try:
            model = create(
                thud.model,
                ModelOptions(
                    model_path=thud.model_path,
                    corpus=corpus,
                    seed=thud.seed,
                    timeout_s=thud.timeout_s,
                    url=thud.model_url,
                    name=thud.model_name,
                    scoring=thud.scoring,
                    extra=thud.model_extra,
                    cache_dir=thud.cache_dir,
                ),
            )
            if thud.record is not None:
                from thud_mt.models.replay import record

                model = record(model, thud.record)
        except ThudError as exc:
            raise pytest.UsageError(str(exc)) from exc
        cache = AnswerCache(thud.cache_dir / "answers.sqlite") if thud.use_cache else NullCache()
        if thud.record is not None:
            from thud_mt.models.replay import session_only

            cache = session_only(cache)  # an answer stored by an earlier session would never reach the cassette
        state.runner = CaseRunner(
            model=model,
            corpus=corpus,
            cache=cache,
            options=thud.relation_options,
            samples=thud.samples,
            timeout_s=thud.timeout_s,
            writer=ResultsWriter(thud.results),
            observers=_observers(config, thud),
            derived=DerivedCache(thud.cache_dir / "derived"),
        )
        # One process checks: the only one, or the first pytest-xdist worker (the controller runs no tests).
        if thud.canary and model.capabilities.audio and (not _is_worker(config) or _first_worker(config)):
            _write_canary(thud, state.runner.canary(thud.canary))
    return state.runner


def _observers(config: pytest.Config, thud: ThudConfig) -> list:  # -> list[CaseObserver]
    """What sees each finished case besides the results file: the harvest and the Allure attachments."""
    observers: list = []
    if thud.harvest is not None:
        from thud_mt.harvest import Harvester

        observers.append(Harvester(thud.harvest, options=thud.relation_options))  # type: ignore[arg-type]
    if getattr(config.option, "allure_report_dir", None):  # with --thud-attach none: labels and steps only
        from thud_mt.report.allure import AllureAttacher

        attacher = AllureAttacher(thud.attach, results_dir=Path(config.option.allure_report_dir))
        config.add_cleanup(attacher.close)  # media are encoded on a worker thread: wait for their files
        observers.append(attacher)
    return observers


def _first_worker(config: pytest.Config) -> bool:
    return _is_worker(config) and config.workerinput.get("workerid") == "gw0"  # type: ignore[attr-defined]


def _canary_path(thud: ThudConfig) -> Path:
    return thud.results.with_name(thud.results.name + ".canary.json")


def _write_canary(thud: ThudConfig, report) -> None:  # report: CanaryReport
    import json

    payload = {
        "text": report.describe(),
        "audio_reaches_model": report.audio_reaches_model,
        "compared": report.compared,
        "changed": report.changed,
        "clips": list(report.clips),
    }
    _canary_path(thud).write_text(json.dumps(payload))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "thud_threshold_case" in metafunc.fixturenames:
        _parametrize_thresholds(metafunc)
        return
    if "thud_case" not in metafunc.fixturenames:
        return
    from relations import RELATIONS
    from thud_mt.runner import CaseSpec

    names = [m.name for m in metafunc.definition.iter_markers() if m.name in RELATIONS]
    if len(names) != 1:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: mark the test with exactly one relation marker ({', '.join(RELATIONS)})"
        )
    relation = RELATIONS[names[0]]
    runner = _runner_for_collection(metafunc, "thud_case")
    if runner is None:
        return
    ctx = runner.context()
    specs = []
    for entry in runner.corpus.entries:
        annotated = runner.annotated(entry.id)
        specs += [CaseSpec(relation.name, entry.id, p) for p in relation.probes if relation.applies(annotated, p, ctx)]
    metafunc.parametrize("thud_case", specs, ids=[s.id for s in specs])


def _runner_for_collection(metafunc: pytest.Metafunc, param: str):  # -> CaseRunner | None
    """The session's runner; on a usage problem, no cases and the error kept for pytest_collection_finish."""
    try:
        return _runner(metafunc.config)
    except pytest.UsageError as exc:
        state = metafunc.config.stash[STATE]
        state.usage_error = state.usage_error or exc
        metafunc.parametrize(param, [])
        return None


def _parametrize_thresholds(metafunc: pytest.Metafunc) -> None:
    """One threshold test per clip (with a seen-and-heard event) and side, from the annotations alone."""
    from thud_mt.threshold_run import threshold_cases

    runner = _runner_for_collection(metafunc, "thud_threshold_case")
    if runner is None:
        return
    cases = threshold_cases(runner)
    metafunc.parametrize("thud_threshold_case", cases, ids=[c.id for c in cases])


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # pytest-xdist, controller side
    node.workerinput["thud_loadgroup"] = node.config.getvalue("dist") == "loadgroup"


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # pytest-xdist, controller side
    """A worker is done: import what the end of the session needs while the others finish their tests.

    The controller runs no test, so the summary's modules (and Hypothesis, which its pytest plugin
    imports for the terminal summary) would otherwise load after the last worker, on the run's tail.
    """
    state = node.config.stash.get(STATE, None)
    if state is None or state.config.model is None or state.summary_loaded:
        return
    state.summary_loaded = True
    import importlib

    for module in ("thud_mt.results", "thud_mt.report.junit", "hypothesis"):
        importlib.import_module(module)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Most of a case's cost is per clip (decoding, the model's analysis, the edit), so under
    # pytest-xdist one worker takes all cases of a clip (see pytest_configure: --dist loadgroup).
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        spec = params.get("thud_case") or params.get("thud_threshold_case")
        if spec is not None:
            item.add_marker(pytest.mark.xdist_group(spec.clip))


def pytest_collection_finish(session: pytest.Session) -> None:
    state = session.config.stash[STATE]
    if state.usage_error is not None:
        raise state.usage_error
    if state.runner is not None:
        # Imports, collection and the runner leave ~150k objects that live to the end. Frozen, the
        # collector stops re-scanning them in every full collection of the run and in the five pytest
        # makes at exit (about a second per process, each pytest-xdist worker included).
        gc.freeze()


@dataclass
class Thud:
    """The ``thud`` fixture: checks one case of the test's relation."""

    config: pytest.Config

    def check(self, case, data: st.DataObject) -> None:  # case: CaseSpec
        # Hidden from tracebacks: a failing case is reported by its message, and formatting this frame's
        # source for every failing example (pytest and Hypothesis both do) dominated a failing run.
        __tracebackhide__ = True
        from relations import NO_TRUTH, RELATIONS
        from relations.base import case_salt, paraphrases

        runner = _runner(self.config)
        relation = RELATIONS[case.relation]
        ctx = runner.context()
        try:
            clip = runner.clip(case.clip)
            strategy = relation.parameters(clip, case.probe, ctx)
        except ThudError as exc:  # an unreadable clip or no swap donor: this case errors, the others run
            raise ThudCaseError(f"{relation.name} {case.id}: {exc}") from exc
        params = data.draw(strategy, label="edit")
        paraphrase = data.draw(paraphrases(case.probe, case_salt(case.clip, case.probe)), label="paraphrase")
        _, _, expected = runner.expectation(relation, case, params)
        if relation.mode(case.probe) == "truth" and expected is NO_TRUTH:
            from hypothesis import reject

            reject()  # an edit with no right answer (never drawn by the strategies; a guard)
        outcome = runner.run(relation, case, params, paraphrase, f"{relation.name}: {case.id}")
        verdict = outcome.result.verdict
        problem: Exception | None = None
        if verdict in ("fail", "invalid"):
            problem = RelationViolation(outcome.message)
        elif verdict == "error":
            problem = ThudCaseError(outcome.message)
        state = self.config.stash[STATE]
        state.draws += 1
        if state.tally is not None:
            state.tally.add(outcome.result)  # type: ignore[attr-defined]
        if problem is None:
            return
        if state.config.measure:
            state.broken.append(problem)  # reported once all draws have run (pytest_runtest_call)
            return
        raise problem


class ThudCaseError(ThudError):
    """A case that could not be judged: the model raised, timed out, or the clip is unreadable."""


@pytest.fixture(scope="session")
def thud(request: pytest.FixtureRequest) -> Thud:
    _runner(request.config)
    return Thud(request.config)


class ThresholdViolation(RelationViolation):
    """A clip side where the model notices no desync within the searched range, or only beyond the bound."""


@dataclass
class ThudThreshold:
    """The ``thud_threshold`` fixture: searches one clip side's detection threshold and judges it."""

    config: pytest.Config

    def check(self, case) -> None:  # case: thud_mt.threshold_run.ThresholdCase
        __tracebackhide__ = True
        from thud_mt.threshold_run import ThresholdSettings, failure, measure_side

        runner = _runner(self.config)
        thud = self.config.stash[STATE].config
        try:
            result = measure_side(runner, case.clip, case.side, ThresholdSettings(samples_per_offset=thud.samples))
        except ThudError as exc:  # an unreadable clip: this case errors, the others run
            raise ThudCaseError(f"threshold {case.id}: {exc}") from exc
        message = failure(result, thud.threshold_max)
        if message is None:
            return
        if result.status == "none_in_range" and result.searched < thud.threshold_max:
            # The clip ran out before the bound: "not noticed within the room" says nothing about the bound.
            pytest.skip(f"{message}; the clip has only {result.searched:.3f} s of room, under the bound")
        raise ThresholdViolation(message)


@pytest.fixture(scope="session")
def thud_threshold(request: pytest.FixtureRequest) -> ThudThreshold:
    _runner(request.config)
    return ThudThreshold(request.config)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """With --thud-measure, a test runs every draw and then fails with the first broken one and a count.

    Every case test also gets its draws' verdict counts as JUnit properties (``thud_mt.report.junit``).
    """
    state = item.config.stash.get(STATE, None)
    if state is None or "thud_case" not in getattr(item, "fixturenames", ()):
        return (yield)
    from thud_mt.report.junit import CaseTally

    tally = CaseTally()
    state.broken, state.draws, state.tally = [], 0, tally
    try:
        result = yield
    finally:
        item.user_properties.extend(tally.properties())
        state.tally = None
    if state.broken:  # only --thud-measure collects broken draws; without it the first one was raised
        first = state.broken[0]
        kind = RelationViolation if any(isinstance(b, RelationViolation) for b in state.broken) else ThudCaseError
        raise kind(f"{len(state.broken)} of {state.draws} draws broke the relation; first: {first}")
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if call.when == "call" and report.failed and call.excinfo is not None:
        exc = call.excinfo.value
        if isinstance(exc, RelationViolation | ThudCaseError):
            report.user_properties.append(("thud_violation", isinstance(exc, RelationViolation)))
            # The case's own words and Hypothesis's draws, not a traceback through the framework.
            notes = [n for n in getattr(exc, "__notes__", []) if n.strip()]
            report.longrepr = "\n".join([f"{type(exc).__name__}: {exc}", *notes])
    return report


def _count_failures(session: pytest.Session) -> tuple[int, int]:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    violations = others = 0
    if reporter is None:
        return 0, 0
    for key in ("failed", "error"):
        for report in reporter.stats.get(key, []):
            props = dict(getattr(report, "user_properties", []) or [])
            if props.get("thud_violation"):
                violations += 1
            else:
                others += 1
    return violations, others


@pytest.hookimpl(tryfirst=True)  # before the --junitxml writer's own sessionfinish writes the file
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(STATE, None)
    if state is None or state.config.model is None or _is_worker(session.config):
        return
    from thud_mt.results import format_summary, read_results, summarize

    path = state.config.results
    results = read_results(path) if path.is_file() and path.stat().st_size else []
    if not results:
        return
    summary = summarize(results)
    from thud_mt.report.junit import add_session_properties

    add_session_properties(session.config, summary, state.config.model)
    lines = []
    canary = _canary_path(state.config)
    if canary.is_file():
        import json

        lines.append(json.loads(canary.read_text())["text"])
    lines += [format_summary(summary, f"thud-mt summary: {state.config.model}"), f"results: {path}"]
    if state.config.gates:
        violations, others = _count_failures(session)
        unmet = []
        for relation, floor in state.config.gates.items():
            group = summary.group(relation, None)
            rate = group.pass_rate.value if group is not None else None
            if rate is None or rate < floor:
                shown = "no cases" if rate is None else f"{rate:.3f}"
                unmet.append(f"{relation} pass rate {shown} < {floor:.3f}")
        lines.append("gates: " + ("; ".join(unmet) if unmet else "all met"))
        if unmet or others:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        elif exitstatus == pytest.ExitCode.TESTS_FAILED and violations:
            session.exitstatus = pytest.ExitCode.OK
    state.summary_text = lines


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or not state.summary_text:
        return
    terminalreporter.section("thud-mt")
    for line in state.summary_text:
        terminalreporter.write_line(line)
