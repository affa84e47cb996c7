"""``gemini``: the google-genai requests it makes and how it reads replies, against a fake API on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fake_http import RecordingHandler, Reply, Seen
from helpers import asks, make_clip
from thud_mt.clip import Clip
from thud_mt.corpus.synth import build_synthetic_corpus
from thud_mt.interventions import shift
from thud_mt.media import read_clip
from thud_mt.models.base import Query
from thud_mt.models.gemini import Gemini, gemini
from thud_mt.models.payload import RemoteModelError
from thud_mt.models.registry import ModelOptions, create
from thud_mt.probes import question
from thud_mt.signal import lag_seconds, normalized_correlation

pytest.importorskip("google.genai")

PLANTED = "AIza-test-PLANTED-5678"
ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = ["pytester"]


# --------------------------------------------------------------------------------------------- the fake API


def reply_text(text: str, logprobs: dict | None = None) -> dict:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
    if logprobs is not None:
        candidate["logprobsResult"] = logprobs
    return {"candidates": [candidate], "usageMetadata": {"promptTokenCount": 900, "candidatesTokenCount": 1}}


def api_error(code: int, status: str, message: str, reason: str = "") -> dict:
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}] if reason else []
    return {"error": {"code": code, "message": message, "status": status, "details": details}}


class FakeGemini:
    """Enough of the Gemini REST API: model lookup, ``generateContent`` and the resumable File API upload."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: deque[Reply] = deque()
        self.default: Callable[[dict], Reply] = lambda body: Reply(body=reply_text("yes"))
        self.model_reply: Reply | None = None
        self.models = {"fake-gemini"}
        self.uploads: dict[str, bytes] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(RecordingHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._record(None)
                if "/files/" in self.path:
                    name = self.path.rsplit("/", 1)[1]
                    self._send(Reply(body=fake.file(name, "ACTIVE")))
                    return
                model = self.path.rsplit("/", 1)[1]
                if fake.model_reply is not None:
                    self._send(fake.model_reply)
                elif model in fake.models:
                    self._send(Reply(body={"name": f"models/{model}", "displayName": model}))
                else:
                    self._send(Reply(404, api_error(404, "NOT_FOUND", f"models/{model} is not found")))

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path.startswith("/upload-session/"):
                    name = self.path.rsplit("/", 1)[1]
                    self._record(raw)
                    fake.uploads[name] = raw
                    self._send(
                        Reply(body={"file": fake.file(name, "PROCESSING")}, headers={"x-goog-upload-status": "final"})
                    )
                    return
                body = json.loads(raw) if raw else None
                self._record(body)
                if self.path.startswith("/upload/"):
                    name = f"up{len(fake.uploads) + 1}"
                    port = fake.httpd.server_port
                    headers = {"x-goog-upload-url": f"http://127.0.0.1:{port}/upload-session/{name}"}
                    self._send(Reply(body={}, headers={**headers, "x-goog-upload-status": "active"}))
                    return
                with fake.lock:
                    reply = fake.script.popleft() if fake.script else None
                reply = reply or fake.default(body)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                self._send(reply)

            def _record(self, body: Any) -> None:
                self.record_into(fake.seen, fake.lock, body)

            def _send(self, reply: Reply) -> None:
                self.send_reply(reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True

    def file(self, name: str, state: str) -> dict:
        return {
            "name": f"files/{name}",
            "uri": f"https://files.example/{name}",
            "mimeType": "video/mp4",
            "state": state,
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    @property
    def generations(self) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith(":generateContent")]


@pytest.fixture
def api() -> Iterator[FakeGemini]:
    fake = FakeGemini()
    threading.Thread(target=fake.httpd.serve_forever, daemon=True).start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


@pytest.fixture(autouse=True)
def planted_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_GENAI_USE_VERTEXAI", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", PLANTED)
    return PLANTED


def adapter(api: FakeGemini, timeout_s: float = 30.0, scoring: str = "generate", **extra: str) -> Gemini:
    extra.setdefault("retry_base_s", "0.05")
    return gemini(ModelOptions(url=api.url, name="fake-gemini", timeout_s=timeout_s, scoring=scoring, extra=extra))


def ask(model: Gemini, probe: str = "presence", clip: Clip | None = None):
    return model.answer([Query(clip if clip is not None else make_clip(), question(probe))])[0]


def keyed(fields: dict) -> dict:
    """Keys without case or underscores: the client writes ``mime_type`` and ``mimeType`` alike, as the API reads."""
    return {k.replace("_", "").lower(): v for k, v in fields.items()}


def check_is_edited(mp4: bytes, original: Clip, edited: Clip, offset_s: float, tmp_path: Path) -> None:
    path = tmp_path / "sent.mp4"
    path.write_bytes(mp4)
    decoded = read_clip(path)
    rate = edited.sample_rate
    assert decoded.n_frames == edited.n_frames and decoded.sample_rate == rate
    assert normalized_correlation(decoded.audio, edited.audio) > 0.9
    assert abs(lag_seconds(edited.audio, decoded.audio, rate, max_lag_s=1.0)) < 0.005
    assert abs(lag_seconds(original.audio, decoded.audio, rate, max_lag_s=1.0) - offset_s) < 0.005


# --------------------------------------------------------------------------------------------- requests


def test_the_clip_goes_inline_as_an_mp4_whose_audio_is_the_edited_track(api: FakeGemini, tmp_path: Path) -> None:
    original = make_clip(sound_at=1.5)
    edited = shift(original, -0.4)
    answer = ask(adapter(api), clip=edited)
    assert answer.error is None and answer.text == "yes" and answer.meta["video"] == "inline"
    request = api.generations[0]
    assert request.path.endswith("/models/fake-gemini:generateContent")
    video, text = request.body["contents"][0]["parts"]
    assert keyed(video["inlineData"])["mimetype"] == "video/mp4"
    assert text == {"text": question("presence").text}
    check_is_edited(base64.urlsafe_b64decode(video["inlineData"]["data"]), original, edited, -0.4, tmp_path)


def test_categorical_questions_ask_for_one_of_the_choices(api: FakeGemini) -> None:
    model = adapter(api)
    ask(model, "sync")
    ask(model, "visual")
    sync, visual = (s.body["generationConfig"] for s in api.generations)
    assert sync["responseMimeType"] == "text/x.enum"
    assert sync["responseSchema"] == {"type": "STRING", "enum": ["synchronized", "audio delayed", "audio early"]}
    assert sync["temperature"] == 0
    assert "responseSchema" not in visual and "responseMimeType" not in visual


def test_options_shape_the_request(api: FakeGemini) -> None:
    ask(adapter(api, enum="false", video_fps="10", max_tokens="16"), "presence")
    body = api.generations[0].body
    assert "responseSchema" not in body["generationConfig"]
    assert body["generationConfig"]["maxOutputTokens"] == 16
    assert body["contents"][0]["parts"][0]["videoMetadata"] == {"fps": 10.0}


def test_a_large_clip_goes_through_the_file_api_once(api: FakeGemini, tmp_path: Path) -> None:
    original = make_clip(sound_at=1.0)
    edited = shift(original, 0.3)
    model = adapter(api, inline_max_mb="0.001")
    first = model.answer([Query(edited, question("presence"))])[0]
    second = model.answer([Query(edited, question("sync"))])[0]
    assert first.error is None and second.error is None and first.meta["video"] == "file"
    assert len(api.uploads) == 1  # one upload serves every question about the clip
    check_is_edited(api.uploads["up1"], original, edited, 0.3, tmp_path)
    for request in api.generations:
        part = request.body["contents"][0]["parts"][0]
        assert keyed(part["fileData"]) == {"fileuri": "https://files.example/up1", "mimetype": "video/mp4"}
    assert any(s.method == "GET" and s.path.endswith("/files/up1") for s in api.seen)  # waited for ACTIVE


def test_the_key_comes_from_the_environment(api: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> None:
    ask(adapter(api))
    assert api.generations[-1].headers["x-goog-api-key"] == PLANTED
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key-1234")
    ask(adapter(api))
    assert api.generations[-1].headers["x-goog-api-key"] == "google-key-1234"
    monkeypatch.delenv("GOOGLE_API_KEY")
    with pytest.raises(RemoteModelError, match=r"no API key: set \$GEMINI_API_KEY \(or \$GOOGLE_API_KEY\)"):
        adapter(api)


def test_the_fingerprint_names_model_and_settings_but_never_the_key(api: FakeGemini) -> None:
    plain = adapter(api)
    assert "fake-gemini" in plain.fingerprint and PLANTED not in plain.fingerprint
    assert adapter(api, video_fps="5").fingerprint != plain.fingerprint
    assert adapter(api, inline_max_mb="1", concurrency="1").fingerprint == plain.fingerprint  # transport only


def test_logprob_scoring_maps_the_reply_onto_the_choices(api: FakeGemini) -> None:
    logprobs = {
        "topCandidates": [
            {"candidates": [{"token": "no", "logProbability": -0.1}, {"token": "yes", "logProbability": -2.4}]}
        ],
        "chosenCandidates": [{"token": "no", "logProbability": -0.1}],
    }
    api.default = lambda body: Reply(body=reply_text("no", logprobs))
    answer = ask(adapter(api, scoring="logprob"))
    config = api.generations[0].body["generationConfig"]
    assert config["responseLogprobs"] is True and config["logprobs"] == 20
    assert answer.text == "" and answer.scores == {"yes": -2.4, "no": -0.1}


def test_a_reply_without_logprobs_is_read_as_text(api: FakeGemini) -> None:
    answer = ask(adapter(api, scoring="logprob"))
    assert answer.text == "yes" and answer.scores is None and "log-probabilities" in str(answer.meta["scoring"])


# --------------------------------------------------------------------------------------------- failures during a run


def test_rate_limits_are_retried(api: FakeGemini) -> None:
    limited = Reply(429, api_error(429, "RESOURCE_EXHAUSTED", "quota"))
    api.script.extend([limited, limited])
    answer = ask(adapter(api))
    assert answer.error is None and answer.text == "yes"
    assert len(api.generations) == 3


def test_server_errors_back_off_exponentially_then_become_one_case_error(api: FakeGemini) -> None:
    api.default = lambda body: Reply(500, api_error(500, "INTERNAL", "backend fell over"))
    started = time.monotonic()
    answer = ask(adapter(api, max_retries="2", retry_base_s="0.2"))
    assert len(api.generations) == 3
    assert time.monotonic() - started >= (0.2 + 0.4) * 0.75
    assert answer.error == (
        "gemini fake-gemini: HTTP 500 Internal Server Error: server error after 3 attempts: backend fell over"
    )


def test_a_refused_key_during_the_run_is_not_retried(api: FakeGemini) -> None:
    api.script.append(Reply(400, api_error(400, "INVALID_ARGUMENT", "API key not valid.", "API_KEY_INVALID")))
    answer = ask(adapter(api))
    assert answer.error == (
        "gemini fake-gemini: HTTP 400 Bad Request: key refused (check $GEMINI_API_KEY): API key not valid."
    )
    assert len(api.generations) == 1


def test_a_slow_api_times_out_per_attempt(api: FakeGemini) -> None:
    api.default = lambda body: Reply(body=reply_text("late"), delay_s=3)
    started = time.monotonic()
    answer = ask(adapter(api, timeout_s=0.5, max_retries="1"))
    assert time.monotonic() - started < 2.8
    assert len(api.generations) == 2
    assert answer.error == "gemini fake-gemini: no reply within 0.5 s (2 attempts)"


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(200, b"<html>proxy error</html>"), "the reply is not JSON (Expecting value: line 1 column 1 (char 0))"),
        (
            Reply(200, {"promptFeedback": {"blockReason": "SAFETY"}}),
            "the reply has no candidates (prompt blocked: SAFETY)",
        ),
        (
            Reply(200, {"candidates": [{"finishReason": "MAX_TOKENS"}]}),
            "the reply has no text (finish_reason=MAX_TOKENS)",
        ),
    ],
)
def test_unusable_replies_are_one_line_case_errors(api: FakeGemini, reply: Reply, message: str) -> None:
    api.script.append(reply)
    answer = ask(adapter(api, max_retries="0"))
    assert answer.error is not None and answer.error.startswith(f"gemini fake-gemini: {message}")
    assert "\n" not in answer.error


def test_an_echoed_key_is_redacted(api: FakeGemini) -> None:
    api.default = lambda body: Reply(403, api_error(403, "PERMISSION_DENIED", f"key {PLANTED} lacks access"))
    answer = ask(adapter(api))
    assert answer.error is not None and PLANTED not in answer.error and "key *** lacks access" in answer.error


# --------------------------------------------------------------------------------------------- failures before a run


def test_a_refused_key_stops_the_session_at_start(api: FakeGemini) -> None:
    message = f"API key not valid: {PLANTED}"
    api.model_reply = Reply(400, api_error(400, "INVALID_ARGUMENT", message, "API_KEY_INVALID"))
    with pytest.raises(RemoteModelError) as caught:
        adapter(api)
    assert "HTTP 400 Bad Request: key refused (check $GEMINI_API_KEY)" in str(caught.value)
    assert PLANTED not in str(caught.value)


def test_an_unknown_model_stops_the_session_at_start(api: FakeGemini) -> None:
    with pytest.raises(RemoteModelError, match="the API has no model 'gemini-typo'; check --model-name"):
        gemini(ModelOptions(url=api.url, name="gemini-typo"))


def test_an_unreachable_api_stops_the_session_at_start(api: FakeGemini) -> None:
    url = api.url
    api.httpd.shutdown()
    api.httpd.server_close()
    with pytest.raises(RemoteModelError, match=f"gemini fake-gemini: cannot reach {url}"):
        gemini(ModelOptions(url=url, name="fake-gemini"))


def test_bad_options_are_refused(api: FakeGemini) -> None:
    with pytest.raises(RemoteModelError, match="unknown --model-option audio"):
        adapter(api, audio="input_audio")
    with pytest.raises(RemoteModelError, match="enum='maybe': expected true or false"):
        adapter(api, enum="maybe")
    with pytest.raises(RemoteModelError, match="video_fps=30: Gemini samples at most 24 fps"):
        adapter(api, video_fps="30")


def test_the_registry_knows_the_adapter(api: FakeGemini) -> None:
    assert create("gemini", ModelOptions(url=api.url, name="fake-gemini")).name == "gemini"


def test_a_session_writes_the_key_nowhere(api: FakeGemini, pytester: pytest.Pytester, tmp_path: Path) -> None:
    corpus = build_synthetic_corpus(tmp_path / "corpus", 2, 5, progress=False)

    def reply(body: dict) -> Reply:
        if asks("presence", body["contents"][0]["parts"][-1]["text"]):
            return Reply(403, api_error(403, "PERMISSION_DENIED", f"denied for key {PLANTED}"))
        return Reply(body=reply_text("1.0"))

    api.default = reply
    outcome = pytester.runpytest_subprocess(
        str(ROOT / "suites" / "test_mute.py"),
        "--model=gemini",
        f"--model-url={api.url}",
        "--model-name=fake-gemini",
        f"--corpus={corpus}",
        f"--thud-cache={pytester.path / 'cache'}",
        f"--thud-results={pytester.path / 'results.jsonl'}",
        "--thud-max-examples=2",
        f"--junitxml={pytester.path / 'junit.xml'}",
        f"--log-file={pytester.path / 'session.log'}",
        "--log-file-level=DEBUG",
        "-p",
        "no:cacheprovider",
    )
    output = outcome.stdout.str() + outcome.stderr.str()
    assert "HTTP 403 Forbidden: key refused (check $GEMINI_API_KEY)" in output
    rows = [json.loads(line) for line in (pytester.path / "results.jsonl").read_text().splitlines()]
    assert {r["verdict"] for r in rows if r["probe"] == "presence"} == {"error"}
    assert any(r["verdict"] != "error" for r in rows)
    written = [p for p in pytester.path.rglob("*") if p.is_file()]
    assert [str(p) for p in written if PLANTED.encode() in p.read_bytes()] == [] and PLANTED not in output
