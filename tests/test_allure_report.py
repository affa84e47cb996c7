"""Allure results with media attached, ``thud report --allure``, and the report opened in headless Chromium."""

from __future__ import annotations

import functools
import http.server
import io
import json
import math
import os
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from helpers import make_clip
from thud_mt.corpus.synth import build_synthetic_corpus
from thud_mt.interventions import mute, shift
from thud_mt.media import read_clip, write_clip
from thud_mt.report import preview as preview_module
from thud_mt.report.allure_html import AllureError, find_allure, find_java, generate
from thud_mt.report.deferred import DeferredFiles, Pending
from thud_mt.report.media_worker import MediaWorkerError, WorkerProcess
from thud_mt.report.preview import PreviewEncoder, PreviewOptions, preview_size
from thud_mt.report.waveform import HEARD, SEEN, WaveformOptions, waveform_png
from thud_mt.signal import first_onset

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",  # play() is also called outside the click that opened the clip
]


def streams(data: bytes) -> dict[str, tuple[str, int, int]]:
    """``{"video": (codec, width, height), "audio": (codec, rate, channels)}`` of an mp4 in memory."""
    with av.open(io.BytesIO(data)) as container:
        found = {}
        for s in container.streams:
            ctx = s.codec_context
            if s.type == "video":
                found["video"] = (ctx.name, ctx.width, ctx.height, ctx.pix_fmt)
            elif s.type == "audio":
                found["audio"] = (ctx.name, ctx.sample_rate, ctx.channels)
        return found


# ---------------------------------------------------------------- previews


def test_a_preview_is_a_small_h264_aac_mp4_a_browser_plays() -> None:
    clip = make_clip(size=(640, 360), duration=2.0, channels=2, sample_rate=44100)
    preview = PreviewEncoder().encode(clip)
    assert preview.data is not None and len(preview.data) <= PreviewOptions().max_bytes
    found = streams(preview.data)
    assert found["video"] == ("h264", 320, 180, "yuv420p")
    assert found["audio"][0] == "aac" and found["audio"][2] == 2
    assert "320x180" in preview.note


def test_preview_sizes_keep_the_aspect_ratio_are_even_and_never_upscale() -> None:
    assert preview_size(1920, 1080, 320) == (320, 180)
    assert preview_size(333, 999, 320) == (106, 320)
    assert preview_size(161, 121, 320) == (160, 120)  # no upscaling; odd sides become even
    assert all(side % 2 == 0 for side in preview_size(1001, 777, 320))


def test_a_preview_shows_an_edit_where_it_happened(tmp_path: Path) -> None:
    """The preview is evidence: a sound delayed by 0.5 s must play 0.5 s late in it, not shifted by AAC priming."""
    clip = make_clip(size=(64, 48), sound_at=1.0)
    delayed = PreviewEncoder().encode(shift(clip, 0.5))
    path = tmp_path / "delayed.mp4"
    path.write_bytes(delayed.data or b"")
    back = read_clip(path)
    assert back.duration == pytest.approx(clip.duration, abs=0.05)
    assert first_onset(back.audio, back.sample_rate) == pytest.approx(1.5, abs=0.01)


def test_a_corpus_clip_is_previewed_from_its_own_h264_stream_without_encoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_clip(make_clip(size=(160, 120)), tmp_path / "clip.mp4")
    clip = read_clip(source)

    def no_encoding(*args: object) -> None:
        raise AssertionError("the picture was re-encoded although the source stream plays as it is")

    monkeypatch.setattr(preview_module, "_encode_picture", no_encoding)
    encoder = PreviewEncoder()
    original, muted = encoder.encode(clip), encoder.encode(mute(clip))
    assert streams(original.data or b"")["video"][:3] == ("h264", 160, 120)
    silent = read_clip(_file(tmp_path / "muted.mp4", muted.data))
    assert np.abs(silent.audio).max() < 1e-3 and silent.n_frames == clip.n_frames


def test_an_oversized_preview_is_made_smaller_and_then_left_out_with_the_reason() -> None:
    noisy = make_clip(size=(320, 240), duration=2.0, seed=1)  # random pixels: the worst case for H.264
    full = PreviewEncoder(PreviewOptions(crf=18, max_bytes=50_000_000)).encode(noisy)
    assert full.data is not None and streams(full.data)["video"][1:3] == (320, 240)
    halved = PreviewEncoder(PreviewOptions(crf=18, max_bytes=len(full.data) - 1)).encode(noisy)
    assert halved.data is not None and streams(halved.data)["video"][1:3] == (160, 120)
    dropped = PreviewEncoder(PreviewOptions(crf=18, max_bytes=10_000)).encode(noisy)
    assert dropped.data is None and "over the 10 kB cap" in dropped.note


def _file(path: Path, data: bytes | None) -> Path:
    path.write_bytes(data or b"")
    return path


# ---------------------------------------------------------------- waveform PNG


def test_the_waveform_png_marks_seen_and_heard_times_of_both_clips() -> None:
    clip = make_clip(sound_at=1.0)
    options = WaveformOptions()
    png = waveform_png(clip, shift(clip, 1.5), "audio delayed by 1.500 s", options)
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert image.shape[1] == options.width and 300 <= image.shape[0] <= 400
    plot_width = options.width - 2 * options.margin

    def columns_of(colour: tuple[int, int, int], rows: slice) -> set[int]:
        hits = np.all(image[rows] == colour, axis=2).sum(axis=0)
        return {int(x) for x in np.flatnonzero(hits > options.row_height // 3)}

    def x(t: float) -> int:
        return options.margin + round(t / clip.duration * (plot_width - 1))

    top = slice(0, image.shape[0] // 2)
    bottom = slice(image.shape[0] // 2, image.shape[0])
    assert x(1.0) in columns_of(SEEN, top) and x(1.0) in columns_of(SEEN, bottom)
    assert columns_of(HEARD, top) & {x(1.0), x(1.0) + 2, x(1.0) + 3}  # heard with the picture, beside its line
    assert x(2.5) in columns_of(HEARD, bottom)  # the delayed sound, 1.5 s after the seen event


# ---------------------------------------------------------------- files filled in by the media worker


def test_deferred_files_fill_allure_placeholders_and_name_those_left_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from allure_commons import plugin_manager

    files = DeferredFiles(tmp_path, ThreadPoolExecutor(max_workers=1))  # the suites use a process; same contract
    release = threading.Event()

    def slow() -> bytes:
        release.wait(10)
        return b"the bytes"

    def broken() -> bytes:
        raise ValueError("no video stream")

    for name, future in {"late.mp4": files.submit(slow), "bad.mp4": files.submit(broken)}.items():
        (tmp_path / name).write_bytes(b"")  # what allure's own writer puts there first
        plugin_manager.hook.report_attached_data(body=Pending(future, f"case {name}"), file_name=name)
    assert (tmp_path / "late.mp4").read_bytes() == b""  # still being made while the tests go on
    release.set()
    assert files.close() == ["case bad.mp4: ValueError: no video stream"]
    assert (tmp_path / "late.mp4").read_bytes() == b"the bytes" and (tmp_path / "bad.mp4").read_bytes() == b""
    assert "1 Allure attachment(s) left empty:\n  case bad.mp4: ValueError" in capsys.readouterr().err
    assert files.close() == files.problems  # idempotent; the plugin is unregistered


def test_the_media_worker_runs_jobs_in_its_own_process_and_reports_failures_and_its_death() -> None:
    worker = WorkerProcess()
    try:
        made = worker.submit(os.getpid)
        failed = worker.submit(math.sqrt, -1.0)
        assert made.result(timeout=60) != os.getpid()  # another process did the work
        with pytest.raises(MediaWorkerError, match="ValueError: math domain error"):
            failed.result(timeout=60)
        death = worker.submit(os._exit, 3)
        with pytest.raises(MediaWorkerError, match=r"exited \(code 3\)"):
            death.result(timeout=60)
        with pytest.raises(MediaWorkerError, match=r"exited \(code 3\)"):
            worker.submit(os.getpid).result(timeout=60)  # later jobs fail at once, with the reason
    finally:
        worker.shutdown()


# ---------------------------------------------------------------- the Allure command line


def test_the_allure_cli_is_found_in_order_and_its_absence_says_how_to_install(tmp_path: Path) -> None:
    launcher = tmp_path / "project" / "node_modules" / ".bin" / "allure"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    assert find_allure({"PATH": ""}, roots=(tmp_path / "elsewhere", tmp_path / "project")) == launcher
    assert find_allure({"THUD_ALLURE": str(launcher), "PATH": ""}, roots=()) == launcher
    with pytest.raises(AllureError, match="THUD_ALLURE=/nowhere/allure: not an executable"):
        find_allure({"THUD_ALLURE": "/nowhere/allure"})
    with pytest.raises(AllureError, match="npm install --no-save allure-commandline"):
        find_allure({"PATH": str(tmp_path)}, roots=(tmp_path,))
    with pytest.raises(AllureError, match="openjdk-17-jre-headless"):
        find_java({"PATH": str(tmp_path)})


def test_generating_from_a_folder_without_results_names_it(tmp_path: Path) -> None:
    with pytest.raises(AllureError, match=f"--allure {tmp_path}: no Allure results in it"):
        generate(tmp_path, tmp_path / "html")
    with pytest.raises(AllureError, match="no such folder"):
        generate(tmp_path / "missing", tmp_path / "html")


# ---------------------------------------------------------------- a failing suite run with --alluredir


def _env() -> dict[str, str]:
    # A source checkout: the subprocess imports thud_mt from here (an installed one finds it anyway).
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _suites(tmp: Path, corpus: Path, alluredir: Path, suites: list[str], *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "pytest",
        *[str(ROOT / "suites" / s) for s in suites],
        "--model=visual-only",
        f"--corpus={corpus}",
        f"--thud-cache={tmp / 'cache'}",
        f"--thud-results={tmp / 'results.jsonl'}",
        "--thud-max-examples=2",
        f"--alluredir={alluredir}",
        "-q",
        "-p",
        "no:cacheprovider",
        *args,
    ]
    done = subprocess.run(command, cwd=tmp, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # visual-only fails audio cases
    return done


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_corpus(tmp_path_factory.mktemp("corpus"), 6, 3, progress=False)


@pytest.fixture(scope="module")
def allure_run(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """Allure results of the mute, shift and swap suites against ``visual-only`` (attachments on failures)."""
    tmp = tmp_path_factory.mktemp("run")
    _suites(tmp, corpus, tmp / "allure-results", ["test_mute.py", "test_shift.py", "test_swap.py"])
    return tmp / "allure-results"


def results_of(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in folder.glob("*-result.json")]


def labels(result: dict) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for label in result["labels"]:
        found.setdefault(label["name"], []).append(label["value"])
    return found


def attachments(result: dict) -> list[dict]:
    return [a for step in result.get("steps", []) for a in step.get("attachments", [])]


def test_every_case_carries_labels_parameters_a_title_and_a_link_to_its_clip(allure_run: Path) -> None:
    results = results_of(allure_run)
    assert {r["status"] for r in results} == {"passed", "failed"}
    for result in results:
        found = labels(result)
        relation = found["feature"][0]
        assert found["epic"] == ["Thud"] and relation in ("mute", "shift", "swap")
        assert found["story"][0] in ("presence", "sync", "offset", "sound_time", "match", "source", "visual")
        assert found["model"] == ["visual-only"] and "visual-only" in found["tag"]
        params = {p["name"]: p["value"] for p in result["parameters"]}
        clip = re.search(r"clip='([^']+)'", params["thud_case"]).group(1)  # type: ignore[union-attr]
        assert re.fullmatch(rf"[A-Z][a-z ]+: {found['story'][0]} of {clip} \(visual-only\)", result["name"])
        assert "paraphrase" in params
        assert {"shift": "offset_s", "swap": "donor"}.get(relation, "paraphrase") in params
        (link,) = result["links"]
        assert link["url"].startswith("file://") and Path(link["url"].removeprefix("file://")).is_file()
    muted = [r for r in results if r["name"].startswith("Muted clip has no sound: presence of ")]
    assert muted and all(r["status"] == "failed" for r in muted)  # it cannot hear that the sound is gone


def test_a_failing_case_has_its_clips_waveforms_prompt_answers_and_values_attached(allure_run: Path) -> None:
    failed = [r for r in results_of(allure_run) if r["status"] == "failed"]
    for result in failed:
        by_name = {a["name"]: a for a in attachments(result)}
        assert {n: a["type"] for n, a in by_name.items()} == {
            "edited clip.mp4": "video/mp4",
            "original clip.mp4": "video/mp4",
            "waveforms.png": "image/png",
            "prompt and raw answers": "text/plain",
            "parsed and expected": "application/json",
        }, result["name"]
        for attachment in by_name.values():
            assert (allure_run / attachment["source"]).stat().st_size > 0
        values = json.loads((allure_run / by_name["parsed and expected"]["source"]).read_text())
        assert values["verdict"] in ("fail", "invalid") and "expected on the edited" in values
        text = (allure_run / by_name["prompt and raw answers"]["source"]).read_text()
        assert text.startswith("prompt:\n") and f"answer on the edited clip ({values['edit']}):\n" in text
        # Only failing draws make steps here, each named by its draw number, edit and verdict.
        assert result["steps"] and all(step["status"] == "failed" for step in result["steps"])
        numbers = [int(re.match(r"draw (\d+): .+: (fail|invalid)$", step["name"]).group(1)) for step in result["steps"]]
        assert numbers == sorted(set(numbers))
    sample = failed[0]
    by_name = {a["name"]: a for a in attachments(sample)}
    for name in ("edited clip.mp4", "original clip.mp4"):
        found = streams((allure_run / by_name[name]["source"]).read_bytes())
        assert found["video"][0] == "h264" and found["video"][3] == "yuv420p" and found["audio"][0] == "aac"
    with Image.open(allure_run / by_name["waveforms.png"]["source"]) as png:
        assert png.format == "PNG" and png.width >= 640 and png.height >= 200


def test_passing_cases_get_no_attachments_and_no_steps(allure_run: Path) -> None:
    passed = [r for r in results_of(allure_run) if r["status"] == "passed"]
    assert passed and all(not r.get("steps") for r in passed)


def test_attach_all_caps_media_per_test_and_none_keeps_the_labels(tmp_path: Path, corpus: Path) -> None:
    # Under pytest-xdist: each worker has a media worker of its own and waits for its files before it exits.
    every = ["--thud-attach=all", "--thud-measure", "--thud-max-examples=4", "-n", "2"]
    _suites(tmp_path, corpus, tmp_path / "all", ["test_mute.py", "test_shift.py"], *every)
    assert all(p.stat().st_size > 0 for p in (tmp_path / "all").glob("*-attachment.*"))  # all filled before exit
    seen = set()
    for result in results_of(tmp_path / "all"):
        verdicts = [step["name"].rsplit(": ", 1)[1] for step in result["steps"]]
        videos = [sum(a["type"] == "video/mp4" for a in step.get("attachments", [])) for step in result["steps"]]
        # Media on the first draw, and on the first failing one when the first passed; text on every draw.
        first_failure = next((i for i, v in enumerate(verdicts) if v == "fail"), None)
        expected = [2 if i == 0 or (i == first_failure and verdicts[0] == "pass") else 0 for i in range(len(videos))]
        assert videos == expected, (result["name"], verdicts)
        assert all(sum(a["type"] == "text/plain" for a in step["attachments"]) == 1 for step in result["steps"])
        seen.add((verdicts[0], first_failure is not None))
    assert ("pass", True) in seen and ("fail", True) in seen  # both rules were exercised
    _suites(tmp_path, corpus, tmp_path / "none", ["test_mute.py"], "--thud-attach=none")
    quiet = results_of(tmp_path / "none")
    assert quiet and all(not attachments(r) and labels(r)["epic"] == ["Thud"] for r in quiet)


# ---------------------------------------------------------------- thud report --allure, in a browser


@pytest.fixture(scope="module")
def report(allure_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    command = [sys.executable, "-m", "thud_mt.cli", "report", "--allure", str(allure_run), "--out", str(out)]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out / 'allure' / 'index.html'}" in done.stdout
    return out / "allure"


@pytest.fixture(scope="module")
def served(report: Path) -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(report)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _audio_peak(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        return max(float(np.abs(f.to_ndarray()).max()) for f in container.decode(audio=0))


def test_the_report_lists_the_failed_case_with_a_playable_edited_clip_and_the_png(
    allure_run: Path, served: str, browser
) -> None:
    failed = next(
        r["name"]
        for r in sorted(results_of(allure_run), key=lambda r: r["name"])
        if r["status"] == "failed" and r["name"].startswith("Muted clip has no sound: presence of ")
    )
    page = browser.new_page()
    try:
        page.goto(served + "index.html#suites")
        page.locator(".node__title", has_text="model: visual-only").click()  # the model's folder, then the suite
        page.locator(".node__title", has_text="test_mute").click()
        leaf = page.locator("a.node__leaf", has_text=failed)
        leaf.wait_for()
        assert leaf.locator(".status-icon_status_failed").count() == 1  # listed, as failed
        leaf.click()
        page.locator(".step__title", has_text=": fail").first.click()  # the failing draw holds the evidence
        row = page.locator(".attachment-row", has_text="edited clip.mp4")
        row.click()
        video = page.locator(".attachment-row__preview video").first
        video.wait_for()
        page.wait_for_function("v => v.readyState >= 1 && v.duration > 0", arg=video.element_handle())
        src = video.evaluate("v => v.currentSrc")
        assert f"data/attachments/{row.get_attribute('data-uid')}.mp4" in src
        assert video.evaluate("v => v.duration") == pytest.approx(4.0, abs=0.1)
        assert video.evaluate("v => v.play().then(() => 'playing', e => String(e))") == "playing"
        page.wait_for_function("v => v.currentTime > 0", arg=video.element_handle())
        assert video.evaluate("v => v.videoWidth") == 160
        # The served file is the edited clip: muted, while the original beside it has its sound.
        original = page.locator(".attachment-row", has_text="original clip.mp4").get_attribute("data-uid")
        with urllib.request.urlopen(src.split("?")[0]) as edited_file:
            assert _audio_peak(edited_file.read()) < 1e-3
        with urllib.request.urlopen(f"{served}data/attachments/{original}.mp4") as original_file:
            assert _audio_peak(original_file.read()) > 0.05
        page.locator(".attachment-row", has_text="waveforms.png").click()
        image = page.locator(".attachment-row__preview img").first
        image.wait_for()
        page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=image.element_handle())
        assert image.evaluate("i => i.naturalWidth") == WaveformOptions().width
    finally:
        page.close()


def test_the_single_file_report_opens_without_a_server(allure_run: Path, tmp_path: Path, browser) -> None:
    out = tmp_path / "single"
    command = [sys.executable, "-m", "thud_mt.cli", "report", "--allure", str(allure_run)]
    done = subprocess.run(
        [*command, "--allure-out", str(out), "--single-file"], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert [p.name for p in out.iterdir()] == ["index.html"]
    page = browser.new_page()
    try:
        page.goto(out.joinpath("index.html").as_uri() + "#suites")
        page.locator(".node__title", has_text="model: visual-only").click()
        page.locator(".node__title", has_text="test_mute").click()
        assert page.locator("a.node__leaf .status-icon_status_failed").count() >= 1
    finally:
        page.close()
