"""The Qwen Omni adapters on tiny random-weight models built offline with the real transformers classes.

The weights are random, so answers are noise; what is checked is the plumbing a
real checkpoint relies on: the clip's frames and (edited) audio reach the
thinker as interleaved video and audio tokens, batching does not change
answers, log-prob scoring scores exactly each allowed answer, and every bad
input is one clear error.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402

from helpers import make_clip  # noqa: E402
from thud_mt.cli import main  # noqa: E402
from thud_mt.clip import Clip, LazyFrames  # noqa: E402
from thud_mt.corpus.synth import build_synthetic_corpus  # noqa: E402
from thud_mt.errors import CorruptMediaError  # noqa: E402
from thud_mt.interventions import mute, shift  # noqa: E402
from thud_mt.models.base import Model, Query  # noqa: E402
from thud_mt.models.qwen_omni import (  # noqa: E402
    QWEN3,
    QWEN25,
    ModelArchitectureError,
    ModelLoadError,
    ModelOptionError,
    ModelPathError,
    QwenOmni,
    clip_media,
    frame_indices,
)
from thud_mt.models.registry import ModelOptions, create  # noqa: E402
from thud_mt.models.tiny import build_tiny  # noqa: E402
from thud_mt.probes import question  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "suites"
pytest_plugins = ["pytester"]

# Small settings keep a CPU test in milliseconds: 4 frames = 2 temporal patches, 2 s each on a 4 s clip.
FAST = {"max_frames": "4", "max_new_tokens": "6"}
# Audio tokens per second of clip: 25 (40 ms each) on Qwen2.5-Omni, 13 (about 77 ms) on Qwen3-Omni.
AUDIO_TOKENS_PER_S = {"qwen-omni": 25, "qwen3-omni": 13}


@pytest.fixture(scope="module")
def tiny25(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny("qwen2.5-omni", tmp_path_factory.mktemp("qwen25"))


@pytest.fixture(scope="module")
def tiny3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built through the command, as a user (or CI) would.
    out = tmp_path_factory.mktemp("qwen3") / "model"
    result = CliRunner().invoke(main, ["models", "build-tiny", "--arch", "qwen3-omni", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "qwen3-omni (tiny," in result.output
    return out


@pytest.fixture(scope="module")
def models(tiny25: Path, tiny3: Path) -> dict[str, QwenOmni]:
    return {
        "qwen-omni": create("qwen-omni", ModelOptions(model_path=str(tiny25), extra=FAST)),  # type: ignore[dict-item]
        "qwen3-omni": create("qwen3-omni", ModelOptions(model_path=str(tiny3), extra=FAST)),  # type: ignore[dict-item]
    }


@pytest.fixture(params=["qwen-omni", "qwen3-omni"])
def model(request: pytest.FixtureRequest, models: dict[str, QwenOmni]) -> QwenOmni:
    return models[request.param]


def clip(seed: int = 0, sound_at: float = 1.0) -> Clip:
    return make_clip(clip_id=f"clip{seed}", size=(160, 120), seed=seed, sound_at=sound_at)


def forward_inputs(model: QwenOmni, queries: list[Query]) -> list[dict[str, Any]]:
    """The batches the thinker is asked to generate from, and a check that both encoders ran on them."""
    seen: list[dict[str, Any]] = []
    encoded: dict[str, list[tuple[int, ...]]] = {"audio": [], "vision": []}
    generate = model.thinker.generate

    def spy(**kwargs: Any) -> Any:
        seen.append({k: v.detach().clone() if torch.is_tensor(v) else v for k, v in kwargs.items()})
        return generate(**kwargs)

    def encoder_hook(kind: str) -> Callable[..., None]:
        def hook(_module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            first = args[0] if args else next(iter(kwargs.values()))
            encoded[kind].append(tuple(first.shape))

        return hook

    handles = []
    for module in model.thinker.modules():
        name = type(module).__name__
        kind = "audio" if name.endswith("AudioEncoder") else "vision" if name.endswith("VisionEncoder") else None
        if kind:
            handles.append(module.register_forward_pre_hook(encoder_hook(kind), with_kwargs=True))
    assert len(handles) == 2
    model.thinker.generate = spy
    try:
        answers = model.answer(queries)
    finally:
        del model.thinker.generate
        for handle in handles:
            handle.remove()
    assert all(a.error is None for a in answers), [a.error for a in answers]
    # The encoders saw exactly the batch's features: every valid mel frame, every video patch.
    frames = sum(int(s["feature_attention_mask"].sum()) for s in seen)
    patches = sum(int(s["video_grid_thw"].prod(-1).sum()) for s in seen)
    assert sum(shape[-1] for shape in encoded["audio"]) == frames
    assert sum(shape[0] for shape in encoded["vision"]) == patches
    return seen


def runs(ids: list[int], names: dict[int, str]) -> list[str]:
    """The sequence of modality runs in a prompt: ``["video", "audio", "video", "audio"]``."""
    out: list[str] = []
    for token in ids:
        name = names.get(token)
        if name and (not out or out[-1] != name):
            out.append(name)
    return out


# ---------------------------------------------------------------------------------------------------- plumbing


def test_both_adapters_are_models_loaded_from_the_folder_like_real_weights(models: dict[str, QwenOmni]) -> None:
    for name, m in models.items():
        assert isinstance(m, Model)
        assert m.name == name
        assert m.capabilities.audio_in_video and m.capabilities.logprobs and not m.capabilities.samples
        assert type(m.thinker).__name__ == (QWEN25 if name == "qwen-omni" else QWEN3).thinker
        assert str(m.dtype) == "torch.float32" and m.device.type == "cpu"  # auto on a CPU machine


def test_frames_are_sampled_evenly_from_the_first_and_in_pairs() -> None:
    assert frame_indices(100, 16).tolist() == [0, 6, 12, 18, 25, 31, 37, 43, 50, 56, 62, 68, 75, 81, 87, 93]
    assert frame_indices(9, 16).tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # an odd count drops to even
    assert frame_indices(1, 16).tolist() == [0, 0]  # a still image is shown for both halves of a patch
    media = clip_media(clip(), 4, 16000)
    assert media.frames.shape == (4, 120, 160, 3)
    assert media.fps == pytest.approx(1.0)  # 4 frames over 4 s: what tells the model where each frame sits
    stereo = make_clip(channels=2, sample_rate=48000)
    mono = clip_media(stereo, 4, 16000).audio
    assert mono.ndim == 1 and len(mono) == 64000  # mixed down and resampled to the feature extractor's rate


def test_video_and_audio_features_reach_the_thinker_interleaved_with_matching_placeholders(model: QwenOmni) -> None:
    (inputs,) = forward_inputs(model, [Query(clip(), question("presence"))])
    config = model.thinker.config
    ids = inputs["input_ids"][0].tolist()
    grid = inputs["video_grid_thw"]
    assert inputs["pixel_values_videos"].shape[0] == int(grid.prod())  # one row per patch
    assert ids.count(config.video_token_id) == int(grid.prod()) // 4  # 2x2 patches merge into one token
    assert grid[0, 0] == 2  # 4 frames, 2 per temporal patch
    assert inputs["video_second_per_grid"].tolist() == [2.0]  # the effective fps (1) was passed explicitly
    assert inputs["use_audio_in_video"] is True
    assert inputs["input_features"].shape[:2] == (1, 128)
    assert int(inputs["feature_attention_mask"].sum()) == 400  # 4 s at 100 mel frames per second
    assert ids.count(config.audio_token_id) == 4 * AUDIO_TOKENS_PER_S[model.name]
    # Audio in video: each 2 s of picture is followed by the sound of the same 2 s.
    names = {config.video_token_id: "video", config.audio_token_id: "audio"}
    assert runs(ids, names) == ["video", "audio", "video", "audio"]


def test_without_audio_in_video_the_track_is_a_separate_item(tiny25: Path) -> None:
    separate = create("qwen-omni", ModelOptions(model_path=str(tiny25), extra={**FAST, "use_audio_in_video": "false"}))
    assert isinstance(separate, QwenOmni) and not separate.capabilities.audio_in_video
    (inputs,) = forward_inputs(separate, [Query(clip(), question("presence"))])
    config = separate.thinker.config
    names = {config.video_token_id: "video", config.audio_token_id: "audio"}
    assert runs(inputs["input_ids"][0].tolist(), names) == ["video", "audio"]  # all frames, then all sound
    assert inputs["use_audio_in_video"] is False
    assert inputs["input_ids"][0].tolist().count(config.audio_token_id) == 100


def test_the_edited_audio_is_what_the_thinker_hears(model: QwenOmni) -> None:
    original = clip(1)
    edits = [original, mute(original), shift(original, 0.5)]
    seen = forward_inputs(model, [Query(c, question("presence")) for c in edits])
    features = torch.cat([s["input_features"] for s in seen]) if len(seen) > 1 else seen[0]["input_features"]
    assert features.shape[0] == 3
    extractor = model.processor.feature_extractor
    for k, edited in enumerate(edits):
        # What the processor makes of the edited track at its standard 300 s padding: the same mel frames.
        expected = extractor(
            [edited.audio[:, 0]],
            sampling_rate=16000,
            padding="max_length",
            return_attention_mask=True,
            return_tensors="pt",
        )
        n = int(expected["attention_mask"].sum())
        assert n == 400 and expected["input_features"].shape[-1] == 30000
        assert torch.allclose(features[k, :, :n], expected["input_features"][0, :, :n], atol=1e-4)
    assert not torch.allclose(features[0, :, :400], features[1, :, :400])
    assert not torch.allclose(features[0, :, :400], features[2, :, :400])
    assert torch.equal(seen[-1]["pixel_values_videos"][:1], seen[0]["pixel_values_videos"][:1])  # same picture


def test_the_audio_changes_the_logits_and_nothing_else_does(model: QwenOmni) -> None:
    q = question("presence")

    def last_logits(c: Clip) -> Any:
        batch = model.collate([model.process(clip_media(c, 4, 16000), q.text)])
        with torch.inference_mode():
            return model.thinker(**batch, use_audio_in_video=True).logits[0, -1]

    original = last_logits(clip(2))
    assert torch.equal(original, last_logits(clip(2)))  # deterministic
    assert (original - last_logits(mute(clip(2)))).abs().max() > 1e-2  # far above float32 noise (~1e-6)
    assert (original - last_logits(shift(clip(2), 1.0))).abs().max() > 1e-3


def test_a_batch_padded_on_the_left_answers_as_one_by_one(model: QwenOmni) -> None:
    queries = [
        Query(clip(3), question("presence")),
        Query(clip(4, sound_at=2.5), question("sound_time", 2)),  # a longer prompt: the others are padded
        Query(mute(clip(3)), question("sync", 1)),
        Query(clip(5), question("offset")),
        Query(clip(6), question("source")),
    ]
    together = model.with_settings(batch_size=4).answer(queries)
    alone = model.with_settings(batch_size=1).answer(queries)
    assert [a.text for a in together] == [a.text for a in alone]
    assert all(a.error is None and a.meta["new_tokens"] >= 1 for a in together)
    assert len({a.text for a in together}) > 1  # the inputs matter: not one answer for everything


def test_logprob_scoring_scores_each_allowed_answer(model: QwenOmni) -> None:
    scorer = model.with_settings(batch_size=4, scoring="logprob")
    assert scorer.fingerprint != model.fingerprint  # cached generated answers are not log-prob answers
    questions = [question("presence"), question("sync"), question("source"), question("offset")]
    answers = scorer.answer([Query(clip(7), q) for q in questions])
    for q, a in zip(questions[:3], answers, strict=False):
        assert a.error is None and a.text == ""
        assert list(a.scores) == list(q.choices)
        assert all(math.isfinite(v) and v < 0 for v in a.scores.values())
        confidence = a.meta["confidence"]
        assert sum(confidence.values()) == pytest.approx(1.0)
        assert max(confidence, key=confidence.get) == max(a.scores, key=a.scores.get)
    assert answers[3].scores is None and answers[3].text  # a number has no choices: it is generated
    # Batching does not change a score, and a score is the log-probability of the choice's tokens.
    single = scorer.with_settings(batch_size=1).answer([Query(clip(7), questions[1])])[0]
    assert single.scores == pytest.approx(answers[1].scores, abs=1e-4)
    item = scorer.process(clip_media(clip(7), 4, 16000), questions[1].text)
    for choice, score in answers[1].scores.items():
        ids = scorer.choice_ids(choice)
        batch = scorer.collate([item], [ids])
        with torch.inference_mode():
            logits = scorer.thinker(**batch, use_audio_in_video=True).logits[0]
        logprobs = torch.log_softmax(logits.float(), -1)
        n = len(ids)
        manual = sum(float(logprobs[-n - 1 + j, t]) for j, t in enumerate(ids))
        assert score == pytest.approx(manual, abs=1e-4)


def test_a_clip_that_cannot_be_decoded_errors_alone(model: QwenOmni) -> None:
    def broken() -> np.ndarray:
        raise CorruptMediaError("clips/broken.mp4", "truncated moov atom")

    good = clip(8)
    bad = good.replace(id="broken", video=LazyFrames(100, (120, 160), broken))
    answers = model.answer([Query(good, question("presence")), Query(bad, question("presence"))])
    assert answers[0].error is None and answers[0].text
    assert answers[1].error is not None and "broken.mp4: truncated moov atom" in answers[1].error


def test_a_failing_batch_errors_its_queries_only(model: QwenOmni, monkeypatch: pytest.MonkeyPatch) -> None:
    real = model.generate
    calls = []

    def flaky(items: Any) -> Any:
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(items)

    one = model.with_settings(batch_size=1)
    monkeypatch.setattr(one, "generate", flaky)
    answers = one.answer([Query(clip(9), question("presence")), Query(clip(10), question("presence"))])
    assert "illegal memory access" in (answers[0].error or "")
    assert answers[1].error is None and answers[1].text


def test_calls_from_two_threads_take_turns_and_answer_as_one_after_the_other(model: QwenOmni) -> None:
    import concurrent.futures

    queries = [[Query(clip(11 + k), question("presence"))] for k in range(4)]
    expected = [model.answer(q)[0].text for q in queries]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # as the runner does after a timed-out call
        texts = [a[0].text for a in pool.map(model.answer, queries)]
    assert texts == expected


def test_the_benchmark_runs_without_pyav_or_a_corpus(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "figures.json"
    args = ["--queries", "4", "--batch-sizes", "1,2", "--frame-size", "160x120", "--max-new-tokens", "4"]
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_qwen_omni.py"), *args, "--json", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    figures = json.loads(out.read_text())
    assert figures["imports_av"] is False  # so it runs where only torch and transformers are installed
    assert [r["batch_size"] for r in figures["results"]] == [1, 2]
    for r in figures["results"]:
        assert r["e2e_qps"] > 0 and r["generate_qps"] > 0 and r["serial_qps"] > 0 and r["peak_mem_mb"] > 0


# ---------------------------------------------------------------------------------------------------- bad input


def test_missing_weights_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(ModelPathError) as missing:
        create("qwen-omni", ModelOptions(model_path=str(tmp_path / "nowhere")))
    message = str(missing.value)
    assert "no weights at" in message and "nowhere" in message
    assert "hf download Qwen/Qwen2.5-Omni-7B" in message
    assert "thud models build-tiny --arch qwen2.5-omni --out DIR" in message
    with pytest.raises(ModelPathError, match="no --model-path given"):
        create("qwen3-omni", ModelOptions())
    with pytest.raises(ModelPathError, match="Qwen/Qwen3-Omni-30B-A3B-Instruct"):
        create("qwen3-omni", ModelOptions(model_path="nobody/not-downloaded-omni"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelPathError, match=r"no config\.json"):
        create("qwen-omni", ModelOptions(model_path=str(tmp_path / "empty")))
    (tmp_path / "config-only").mkdir()
    (tmp_path / "config-only" / "config.json").write_text('{"model_type": "qwen2_5_omni"}')
    with pytest.raises(ModelPathError, match="no weight files"):
        create("qwen-omni", ModelOptions(model_path=str(tmp_path / "config-only")))


def test_a_hub_id_in_the_local_cache_loads(tiny25: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    commit = "0" * 40
    repo = tmp_path / "hub" / "models--thud--tiny-omni"
    shutil.copytree(tiny25, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = create("qwen-omni", ModelOptions(model_path="thud/tiny-omni", extra=FAST))
    assert isinstance(loaded, QwenOmni) and loaded.folder == repo / "snapshots" / commit


def test_another_architecture_in_the_folder_is_named(tiny3: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelArchitectureError, match=r"holds a Qwen3-Omni model .*use --model=qwen3-omni"):
        create("qwen-omni", ModelOptions(model_path=str(tiny3)))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelArchitectureError, match=r"holds a llama model, not Qwen2\.5-Omni"):
        create("qwen-omni", ModelOptions(model_path=str(tmp_path)))


def test_damaged_weights_are_a_load_error_naming_the_folder(tiny25: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny25, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=f"could not load the weights in {damaged}"):
        create("qwen-omni", ModelOptions(model_path=str(damaged)))


@pytest.mark.parametrize(
    ("option", "problem"),
    [
        ({"max_frame": "8"}, "has no option 'max_frame'"),
        ({"batch_size": "0"}, "must be >= 1"),
        ({"max_frames": "many"}, "expected a whole number"),
        ({"dtype": "int8"}, "expected one of auto, float32"),
        ({"use_audio_in_video": "maybe"}, "expected true or false"),
        ({"sample_rate": "22050"}, "feature extractor expects 16000 Hz"),
        ({"device": "cuda:7"}, "device=cuda:7"),
    ],
)
def test_bad_model_options_are_named(tiny25: Path, option: dict[str, str], problem: str) -> None:
    if option.get("device") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelOptionError, match=problem):
        create("qwen-omni", ModelOptions(model_path=str(tiny25), extra=option))


# ---------------------------------------------------------------------------------------------------- suites


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_corpus(tmp_path_factory.mktemp("corpus"), 6, 0, progress=False)


@pytest.fixture
def run_suite(pytester: pytest.Pytester, tiny_corpus: Path) -> Callable[..., pytest.RunResult]:
    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            str(SUITES / "test_mute.py"),
            f"--corpus={tiny_corpus}",
            f"--thud-cache={pytester.path / 'cache'}",
            f"--thud-results={pytester.path / 'results.jsonl'}",
            "--thud-max-examples=1",
            "-p",
            "no:cacheprovider",
            *args,
        )

    return run


@pytest.mark.parametrize(("name", "scoring"), [("qwen-omni", "generate"), ("qwen3-omni", "logprob")])
def test_the_mute_suite_runs_end_to_end_on_the_tiny_model(
    run_suite: Callable[..., pytest.RunResult],
    pytester: pytest.Pytester,
    tiny25: Path,
    tiny3: Path,
    name: str,
    scoring: str,
) -> None:
    path = tiny25 if name == "qwen-omni" else tiny3
    outcome = run_suite(
        f"--model={name}", f"--model-path={path}", f"--thud-scoring={scoring}", "--model-option=max_new_tokens=8"
    )
    assert outcome.ret in (0, 1), outcome.stdout.str()[-3000:]  # cases may fail; the session may not break
    counts = outcome.parseoutcomes()
    assert "error" not in counts and "errors" not in counts
    tests = counts.get("passed", 0) + counts.get("failed", 0)
    rows = [json.loads(line) for line in (pytester.path / "results.jsonl").read_text().splitlines()]
    assert tests >= 6 and {r["case"] for r in rows} == {r["case"] for r in rows if r["model"] == name}
    assert len({r["case"] for r in rows}) == tests  # a recorded result for every case
    assert all(r["verdict"] in ("pass", "fail", "source-failed", "invalid") for r in rows), [
        r["reason"] for r in rows if r["verdict"] == "error"
    ]
    if scoring == "logprob":
        presence = [r for r in rows if r["probe"] == "presence"]
        assert presence and all(r["verdict"] != "invalid" for r in presence)  # scored choices always parse
    outcome.stdout.fnmatch_lines([f"*thud-mt summary: {name}*"])


def test_missing_weights_stop_the_session_before_collection(run_suite: Callable[..., pytest.RunResult]) -> None:
    outcome = run_suite("--model=qwen-omni", "--model-path=/nowhere/qwen")
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    text = outcome.stderr.str() + outcome.stdout.str()
    assert "qwen-omni: no weights at /nowhere/qwen" in text
    assert "thud models build-tiny --arch qwen2.5-omni" in text
    assert "Traceback" not in text
