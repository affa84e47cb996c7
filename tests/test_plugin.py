"""The pytest plugin, run as users run it: ``pytest suites/ --model=...`` in a fresh process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thud_mt.corpus.synth import build_synthetic_corpus

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "suites"

pytest_plugins = ["pytester"]

MODELS = '''
import json, os, time
from pathlib import Path
from relations.options import DEFAULT_OPTIONS
from relations.truth import NO_TRUTH, truth
from thud_mt.models.base import Answer, Capabilities
from thud_mt.probes import value_text


class Scripted:
    """Answers from the clip's annotations (a perfect listener) unless told otherwise."""

    capabilities = Capabilities()

    def __init__(self, name, behaviour="oracle"):
        self.name = name
        self.behaviour = behaviour

    @property
    def fingerprint(self):
        return f"{self.name}-1"

    def answer(self, queries):
        counter = os.environ.get("THUD_TEST_COUNTER")
        if counter:
            with open(counter, "a") as f:
                f.write(f"{len(queries)}\\n")
        if self.behaviour == "raise":
            raise RuntimeError("the GPU caught fire")
        if self.behaviour == "hang" and any(q.question.probe == "presence" for q in queries):
            time.sleep(5)
        out = []
        for q in queries:
            probe = q.question.probe
            if self.behaviour == "garbage":
                out.append(Answer(text="purple elephants"))
                continue
            if self.behaviour == "deaf" and probe == "presence":
                out.append(Answer(text="Yes, a loud thud."))
                continue
            value = truth(q.clip, probe, DEFAULT_OPTIONS)
            if value is NO_TRUTH:
                value = "synchronized" if probe == "sync" else 0.0
            out.append(Answer(text=value_text(q.question, value)))
        return out


def oracle(options):
    return Scripted("oracle")

def deaf(options):
    return Scripted("deaf", "deaf")

def raising(options):
    return Scripted("raising", "raise")

def hanging(options):
    return Scripted("hanging", "hang")

def garbage(options):
    return Scripted("garbage", "garbage")

def not_a_model(options):
    return 42
'''


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_corpus(tmp_path_factory.mktemp("corpus"), 6, 3, progress=False)


@pytest.fixture
def run(pytester: pytest.Pytester, small_corpus: Path):
    models = pytester.makepyfile(models=MODELS)

    def run_suites(model: str, *args: str, suites: str = "", corpus: Path | None = None) -> pytest.RunResult:
        target = str(SUITES / suites) if suites else str(SUITES)
        spec = model.replace("models.py", str(models))
        return pytester.runpytest_subprocess(
            target,
            f"--model={spec}",
            f"--corpus={corpus or small_corpus}",
            f"--thud-cache={pytester.path / 'cache'}",
            f"--thud-results={pytester.path / 'results.jsonl'}",
            "--thud-max-examples=2",
            "-p",
            "no:cacheprovider",
            *args,
        )

    return run_suites


def results(pytester: pytest.Pytester) -> list[dict]:
    return [json.loads(line) for line in (pytester.path / "results.jsonl").read_text().splitlines()]


def test_a_custom_model_from_a_file_passes_every_suite(run, pytester: pytest.Pytester) -> None:
    outcome = run("models.py:oracle")
    assert outcome.ret == 0, outcome.stdout.str()[-2000:]
    assert set(outcome.parseoutcomes()) == {"passed"}
    rows = results(pytester)
    assert {r["relation"] for r in rows} == {"shift", "mute", "swap", "identity"}
    assert all(r["verdict"] == "pass" for r in rows)
    outcome.stdout.fnmatch_lines(["*thud-mt summary: *oracle*", "*false sync alarms*"])


def test_test_ids_read_as_sentences(run) -> None:
    outcome = run("models.py:oracle", "--collect-only", "-q", suites="test_mute.py")
    outcome.stdout.fnmatch_lines(["*test_muted_clip_has_no_sound[[]synth-s3-0000-object_falls presence[]]*"])


def test_a_rerun_makes_no_model_calls(run, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = pytester.path / "calls.txt"
    monkeypatch.setenv("THUD_TEST_COUNTER", str(counter))
    assert run("models.py:oracle", suites="test_mute.py").ret == 0
    first = counter.read_text().count("\n")
    assert first > 0
    assert run("models.py:oracle", suites="test_mute.py").ret == 0
    assert counter.read_text().count("\n") == first


def test_a_model_that_hears_sound_in_silence_fails_with_a_readable_message(run, pytester: pytest.Pytester) -> None:
    outcome = run("models.py:deaf", suites="test_mute.py")
    assert outcome.ret == 1
    outcome.stdout.fnmatch_lines(['*muted clip: model still answered "Yes, a loud thud." to "*sound*'])
    presence = [r for r in results(pytester) if r["probe"] == "presence"]
    assert presence and all(r["verdict"] == "fail" for r in presence)


def test_the_gate_decides_the_exit_code(run) -> None:
    assert run("models.py:deaf", "--thud-gate", "mute=0.9", suites="test_mute.py").ret == 1
    lenient = run("models.py:deaf", "--thud-gate", "mute=0.5", suites="test_mute.py")
    lenient.stdout.fnmatch_lines(["*gates: all met*"])
    assert lenient.ret == 0


def test_a_model_that_raises_gives_error_cases_and_the_session_goes_on(run, pytester: pytest.Pytester) -> None:
    outcome = run("models.py:raising", suites="test_mute.py")
    outcome.stdout.fnmatch_lines(["*model raised RuntimeError: the GPU caught fire*"])
    assert outcome.parseoutcomes()["failed"] == 6 * 4  # every case reported, none skipped
    assert all(r["verdict"] == "error" for r in results(pytester))


def test_a_model_that_hangs_times_out_per_call(run, pytester: pytest.Pytester) -> None:
    outcome = run("models.py:hanging", "--thud-timeout=0.5", suites="test_mute.py")
    outcome.stdout.fnmatch_lines(["*timed out after 0.5 s*"])
    verdicts = {r["probe"]: r["verdict"] for r in results(pytester)}
    assert verdicts["presence"] == "error" and verdicts["visual"] == "pass"


def test_garbage_answers_are_invalid_with_the_reason(run, pytester: pytest.Pytester) -> None:
    outcome = run("models.py:garbage", suites="test_mute.py")
    outcome.stdout.fnmatch_lines(["*could not read the model's answer*"])
    assert {r["verdict"] for r in results(pytester)} == {"invalid"}


def test_an_unreadable_clip_errors_its_own_cases_only(run, pytester: pytest.Pytester, small_corpus: Path) -> None:
    corpus = pytester.path / "broken"
    corpus.mkdir()
    manifest = json.loads(small_corpus.read_text())
    for clip in manifest["clips"]:
        source = small_corpus.parent / clip["path"]
        target = corpus / clip["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        clip.pop("sha256", None)
    broken = corpus / manifest["clips"][0]["path"]
    broken.write_bytes(broken.read_bytes()[:300])
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    outcome = run("models.py:oracle", suites="test_mute.py", corpus=corpus / "manifest.json")
    outcome.stdout.fnmatch_lines([f"ThudCaseError: mute {manifest['clips'][0]['id']} presence: *{broken.name}: *"])
    counts = outcome.parseoutcomes()
    assert counts["failed"] == 4 and counts["passed"] == 5 * 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--thud-gate", "mute"], "*--thud-gate 'mute': expected RELATION=RATE*e.g. --thud-gate mute=0.9*"),
        (["--thud-gate", "mute=2"], "*RATE must be in 0-1*"),
        (["--thud-samples", "many"], "*--thud-samples 'many': expected a number, e.g. 5*"),
        (["--corpus", "nowhere.json"], "*--corpus nowhere.json: no such manifest file*"),
    ],
)
def test_bad_options_are_usage_errors_that_say_what_to_type(pytester: pytest.Pytester, args, message) -> None:
    outcome = pytester.runpytest_subprocess(str(SUITES), "--model=listener", *args)
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    outcome.stderr.fnmatch_lines([message])


def test_an_unknown_model_lists_the_known_ones(run) -> None:
    outcome = run("no-such-model", suites="test_mute.py")
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    outcome.stderr.fnmatch_lines(["*unknown model. Use one of *listener*visual-only*"])


def test_a_factory_that_returns_no_model_is_refused(run) -> None:
    outcome = run("models.py:not_a_model", suites="test_mute.py")
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    outcome.stderr.fnmatch_lines(["*returned int, not a thud_mt Model*"])


def test_suites_without_a_model_say_how_to_choose_one(pytester: pytest.Pytester) -> None:
    outcome = pytester.runpytest_subprocess(str(SUITES / "test_mute.py"))
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    outcome.stderr.fnmatch_lines(["*choose a model, e.g. pytest suites/ --model=listener*"])


def test_the_plugin_is_inert_for_ordinary_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    outcome = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=1)
    assert "thud-mt summary" not in outcome.stdout.str()


def test_the_listener_passes_every_suite(run, pytester: pytest.Pytester) -> None:
    outcome = run("listener")
    assert outcome.ret == 0, outcome.stdout.str()[-3000:]
    rows = results(pytester)
    assert {r["relation"] for r in rows} == {"shift", "mute", "swap", "identity"}
    assert {r["verdict"] for r in rows} == {"pass"}


def test_the_visual_only_model_fails_mute_swap_and_shift_but_not_identity(run, pytester: pytest.Pytester) -> None:
    outcome = run("visual-only")
    assert outcome.ret == 1
    failed = {(r["relation"], r["probe"]) for r in results(pytester) if r["verdict"] == "fail"}
    assert {"mute", "swap", "shift"} <= {relation for relation, _ in failed}
    assert not any(relation == "identity" or probe == "visual" for relation, probe in failed)
    outcome.stdout.fnmatch_lines(['*muted clip: model still answered "Yes.*" to "*'])


def test_the_chance_model_is_right_about_half_the_time_on_yes_no_questions(run, pytester: pytest.Pytester) -> None:
    run("chance", "--thud-max-examples=6", "-m", "mute or swap")
    binary = [r for r in results(pytester) if r["probe"] in ("presence", "match") and r["followup_correct"] is not None]
    assert len(binary) >= 30
    accuracy = sum(r["followup_correct"] for r in binary) / len(binary)
    assert 0.25 <= accuracy <= 0.75


def test_a_sampling_model_gets_a_majority_verdict_with_an_interval(run, pytester: pytest.Pytester) -> None:
    run("chance", "--thud-samples=5", suites="test_mute.py")
    rows = results(pytester)
    assert rows and all(r["samples"] == 5 for r in rows)
    for r in rows:
        low, high = r["interval"]
        assert 0.0 <= low <= r["pass_rate"] <= high <= 1.0


def test_measure_mode_runs_every_draw_before_failing(run, pytester: pytest.Pytester) -> None:
    outcome = run("models.py:deaf", "--thud-measure", "--thud-max-examples=3", suites="test_mute.py")
    assert outcome.ret == 1
    outcome.stdout.fnmatch_lines(["RelationViolation: 3 of 3 draws broke the relation; first: muted clip: *"])
    presence = [r for r in results(pytester) if r["probe"] == "presence"]
    assert len(presence) == 6 * 3 and {r["verdict"] for r in presence} == {"fail"}


def test_relation_bounds_are_options(run, pytester: pytest.Pytester) -> None:
    # With a huge must-detect bound no shift is ever "audio delayed": every sync case expects synchronized.
    run("models.py:oracle", "--thud-relation-option", "must_detect=2.9", "-k", "sync", suites="test_shift.py")
    sync = [r for r in results(pytester) if r["probe"] == "sync"]
    assert sync and all(abs(r["params"]["offset_s"]) <= 0.125 or abs(r["params"]["offset_s"]) >= 2.9 for r in sync)


def test_a_bad_relation_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    outcome = pytester.runpytest_subprocess(str(SUITES), "--model=listener", "--thud-relation-option", "speed=3")
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    outcome.stderr.fnmatch_lines(["*expected NAME=VALUE with NAME one of *must_detect*"])


def test_the_canary_flags_a_model_whose_answers_ignore_the_audio(run) -> None:
    heard = run("models.py:oracle", suites="test_mute.py")
    heard.stdout.fnmatch_lines(["canary: audio reaches oracle (6 of 6 answers changed when muted)", "*summary*"])
    deaf = run("models.py:garbage", suites="test_mute.py")
    deaf.stdout.fnmatch_lines(["AUDIO DOES NOT REACH THE MODEL? garbage gave the same answers*", "*summary*"])
