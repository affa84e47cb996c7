"""Suites on two pytest-xdist workers: the same cases as in one process, and no fixed work repeated needlessly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from thud_mt.corpus.banks import sound_source
from thud_mt.corpus.builtin import BUILTIN_CLIPS, builtin_corpus
from thud_mt.corpus.synth import build_synthetic_corpus

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "suites"

pytest_plugins = ["pytester"]

# Loaded into the run with -p: what had the controller imported when it had started the workers?
CONTROLLER_PROBE = """
import json, os, sys
import pytest

@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):
        heavy = [m for m in ("hypothesis", "scipy", "av", "relations.base", "thud_mt.media") if m in sys.modules]
        with open(os.environ["THUD_PROBE_OUT"], "w") as f:
            json.dump(heavy, f)
"""


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_corpus(tmp_path_factory.mktemp("corpus"), 6, 7, progress=False)


def cases(results: Path) -> list[tuple[str, str, int, str]]:
    records = [json.loads(line) for line in results.read_text().splitlines()]
    return sorted((r["case"], json.dumps(r["params"], sort_keys=True), r["paraphrase"], r["verdict"]) for r in records)


def test_two_workers_check_the_same_cases_reading_what_one_process_derived(
    pytester: pytest.Pytester, small_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(controller_probe=CONTROLLER_PROBE)
    probe = pytester.path / "controller.json"
    monkeypatch.setenv("THUD_PROBE_OUT", str(probe))
    cache = pytester.path / "cache"

    def run(results: str, *args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            str(SUITES / "test_mute.py"),
            str(SUITES / "test_swap.py"),
            "--model=listener",
            f"--corpus={small_corpus}",
            f"--thud-cache={cache}",
            f"--thud-results={pytester.path / results}",
            "--thud-no-cache",
            "--thud-max-examples=2",
            "-p",
            "no:cacheprovider",
            "-p",
            "controller_probe",
            *args,
        )

    one = run("one.jsonl")
    assert one.ret == 0
    derived = sorted(p for p in (cache / "derived").rglob("*") if p.is_file() and not p.name.startswith("."))
    assert {p.parent.name for p in derived} == {"listener-exemplars", "swap-donors"}
    stored = {p: p.stat().st_mtime_ns for p in derived}

    two = run("two.jsonl", "-n", "2")
    assert two.ret == 0 and two.parseoutcomes()["passed"] == one.parseoutcomes()["passed"]
    assert cases(pytester.path / "two.jsonl") == cases(pytester.path / "one.jsonl")
    assert {p: p.stat().st_mtime_ns for p in derived} == stored  # read back, not derived again
    assert json.loads(probe.read_text()) == []  # the controller started the workers without the heavy imports


def test_reading_relation_options_loads_neither_media_nor_hypothesis() -> None:
    code = (
        "import sys\n"
        "from relations import DEFAULT_OPTIONS, truth\n"
        "print(sorted(m for m in ('hypothesis', 'scipy', 'av', 'thud_mt.media') if m in sys.modules))\n"
        "from relations import RELATIONS, Shift\n"
        "print(callable(truth), sorted(RELATIONS), isinstance(RELATIONS['shift'], Shift))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["[]", "True ['identity', 'mute', 'shift', 'swap'] True"]


def test_a_built_corpus_is_found_without_loading_its_sound_bank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "corpus" / f"synth-n{BUILTIN_CLIPS}-s0-{sound_source('auto')}" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")  # found, so neither read nor built here

    def no_bank(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sound bank was loaded although the corpus is built")

    monkeypatch.setattr("thud_mt.corpus.builtin.choose_sound_bank", no_bank)
    assert builtin_corpus(tmp_path, 0) == manifest
