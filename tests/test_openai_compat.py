"""``openai-compatible``: the requests it sends and how it reads replies, against a fake server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import wave
from collections import deque
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fake_http import RecordingHandler, Reply, Seen
from helpers import asks, make_clip
from thud_mt.corpus.synth import build_synthetic_corpus
from thud_mt.interventions import shift
from thud_mt.media import read_clip
from thud_mt.models.base import Query
from thud_mt.models.openai_compat import OpenAICompatible, openai_compatible
from thud_mt.models.payload import RemoteModelError
from thud_mt.models.registry import ModelOptions, create
from thud_mt.probes import question
from thud_mt.signal import lag_seconds, normalized_correlation

pytest.importorskip("openai")

PLANTED = "sk-test-PLANTED-1234"
ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = ["pytester"]


# --------------------------------------------------------------------------------------------- the fake server


def completion(text: str | None, logprobs: list[dict] | None = None) -> dict:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    usage = {"prompt_tokens": 1200, "completion_tokens": 2, "total_tokens": 1202}
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-omni",
        "choices": [choice],
        "usage": usage,
    }


class FakeServer:
    """Speaks enough of the Chat Completions API: ``GET /v1/models`` and ``POST /v1/chat/completions``.

    Chat replies come from ``script`` (one per request, in order) and then from
    ``default(body)``; every request is kept in ``seen``.
    """

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: deque[Reply] = deque()
        self.default: Callable[[dict], Reply] = lambda body: Reply(body=completion("Yes."))
        self.models_reply: Reply | None = None
        self.models = ["fake-omni"]
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(RecordingHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._record(None)
                if self.path.rstrip("/").endswith("/models"):
                    reply = server.models_reply or Reply(
                        body={"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]}
                    )
                else:
                    reply = Reply(404, {"error": {"message": "no such route"}})
                self._send(reply)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.loads(raw)
                self._record(body)
                with server.lock:
                    reply = server.script.popleft() if server.script else None
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = reply or server.default(body)
                    if reply.delay_s:
                        time.sleep(reply.delay_s)
                    self._send(reply)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _record(self, body: Any) -> None:
                self.record_into(server.seen, server.lock, body)

            def _send(self, reply: Reply) -> None:
                self.send_reply(reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/v1"

    @property
    def chats(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    thread = threading.Thread(target=fake.httpd.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


@pytest.fixture(autouse=True)
def planted_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    return PLANTED


def adapter(server: FakeServer, timeout_s: float = 30.0, scoring: str = "generate", **extra: str) -> OpenAICompatible:
    options = ModelOptions(url=server.url, name="fake-omni", timeout_s=timeout_s, scoring=scoring, extra=extra)
    return openai_compatible(options)


def ask(model: OpenAICompatible, probe: str = "presence", clip=None, sample: int = 0):
    clip = clip if clip is not None else make_clip()
    return model.answer([Query(clip, question(probe), sample)])[0]


def parts(seen: Seen) -> dict[str, dict]:
    return {part["type"]: part for part in seen.body["messages"][0]["content"]}


def data_of(url: str, mime: str) -> bytes:
    prefix = f"data:{mime};base64,"
    assert url.startswith(prefix)
    return base64.b64decode(url[len(prefix) :])


# --------------------------------------------------------------------------------------------- requests


def test_the_clip_goes_as_an_mp4_whose_audio_is_the_edited_track(server: FakeServer, tmp_path: Path) -> None:
    original = make_clip(sound_at=1.0)
    edited = shift(original, 0.5)
    answer = ask(adapter(server), clip=edited)
    assert answer.error is None and answer.text == "Yes."
    sent = parts(server.chats[0])
    mp4 = tmp_path / "sent.mp4"
    mp4.write_bytes(data_of(sent["video_url"]["video_url"]["url"], "video/mp4"))
    decoded = read_clip(mp4)
    assert decoded.n_frames == edited.n_frames
    rate = edited.sample_rate
    assert decoded.sample_rate == rate
    assert normalized_correlation(decoded.audio, edited.audio) > 0.9
    assert abs(lag_seconds(edited.audio, decoded.audio, rate, max_lag_s=1.0)) < 0.005
    assert abs(lag_seconds(original.audio, decoded.audio, rate, max_lag_s=1.0) - 0.5) < 0.005


def test_the_audio_part_is_the_edited_audio_as_16_bit_wav(server: FakeServer) -> None:
    edited = shift(make_clip(sound_at=1.0), -0.25)
    ask(adapter(server), clip=edited)
    wav = data_of(parts(server.chats[0])["audio_url"]["audio_url"]["url"], "audio/wav")
    with wave.open(io.BytesIO(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (edited.sample_rate, 1, 2)
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32767.0
    np.testing.assert_allclose(samples, edited.audio[:, 0], atol=1 / 32767)


def test_stereo_audio_is_sent_as_stereo_pcm(server: FakeServer) -> None:
    clip = make_clip(channels=2, sample_rate=48000)
    ask(adapter(server), clip=clip)
    wav = data_of(parts(server.chats[0])["audio_url"]["audio_url"]["url"], "audio/wav")
    with wave.open(io.BytesIO(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (48000, 2, clip.audio.shape[0])
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2) / 32767.0
    np.testing.assert_allclose(samples, clip.audio, atol=1 / 32767)


def test_a_request_has_the_question_the_model_and_greedy_decoding(server: FakeServer) -> None:
    ask(adapter(server), "sync")
    body = server.chats[0].body
    assert body["model"] == "fake-omni"
    assert body["temperature"] == 0
    assert [p["type"] for p in body["messages"][0]["content"]] == ["video_url", "audio_url", "text"]
    assert parts(server.chats[0])["text"]["text"] == question("sync").text
    assert "mm_processor_kwargs" not in body and "seed" not in body and "logprobs" not in body


def test_input_audio_is_the_openai_shape(server: FakeServer) -> None:
    ask(adapter(server, audio="input_audio"))
    part = parts(server.chats[0])["input_audio"]["input_audio"]
    assert part["format"] == "wav"
    assert base64.b64decode(part["data"])[:4] == b"RIFF"


def test_audio_in_video_sends_no_audio_part_but_the_processor_flag(server: FakeServer) -> None:
    model = adapter(server, audio="none", use_audio_in_video="true")
    ask(model)
    body = server.chats[0].body
    assert set(parts(server.chats[0])) == {"video_url", "text"}
    assert body["mm_processor_kwargs"] == {"use_audio_in_video": True}
    assert model.capabilities.audio and model.capabilities.audio_in_video


@pytest.mark.parametrize(
    ("extra", "field_name", "expected"),
    [
        ({"structured": "choice"}, "structured_outputs", {"choice": ["synchronized", "audio delayed", "audio early"]}),
        ({"guided_choice": "true"}, "guided_choice", ["synchronized", "audio delayed", "audio early"]),
        ({"structured": "guided_choice"}, "guided_choice", ["synchronized", "audio delayed", "audio early"]),
    ],
)
def test_structured_choices_constrain_categorical_questions(server: FakeServer, extra, field_name, expected) -> None:
    model = adapter(server, **extra)
    ask(model, "sync")
    ask(model, "offset")  # a number: nothing to choose from
    assert server.chats[0].body[field_name] == expected
    assert field_name not in server.chats[1].body


def test_a_json_schema_offers_the_choices_as_an_enum(server: FakeServer) -> None:
    server.default = lambda body: Reply(body=completion('{"answer": "no"}'))
    answer = ask(adapter(server, structured="json_schema"), "presence")
    schema = server.chats[0].body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["answer"]["enum"] == ["yes", "no"]
    assert answer.text == '{"answer": "no"}'


def test_sampling_sends_one_seed_per_sample(server: FakeServer) -> None:
    model = openai_compatible(
        ModelOptions(url=server.url, name="fake-omni", seed=7, extra={"temperature": "0.8", "max_tokens": "32"})
    )
    assert model.capabilities.samples
    clip = make_clip()
    model.answer([Query(clip, question("presence"), 0), Query(clip, question("presence"), 1)])
    assert sorted(s.body["seed"] for s in server.chats) == [7, 8]
    assert {s.body["max_tokens"] for s in server.chats} == {32}


def test_the_key_comes_from_the_environment(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    ask(adapter(server))
    assert server.chats[-1].headers["authorization"] == f"Bearer {PLANTED}"
    monkeypatch.setenv("MY_VLLM_KEY", "another-key-5678")
    ask(adapter(server, api_key_env="MY_VLLM_KEY"))
    assert server.chats[-1].headers["authorization"] == "Bearer another-key-5678"
    monkeypatch.delenv("OPENAI_API_KEY")
    ask(adapter(server))
    assert server.chats[-1].headers["authorization"] == "Bearer EMPTY"  # what a local vLLM expects


def test_a_batch_fans_out_up_to_the_concurrency_limit(server: FakeServer) -> None:
    server.default = lambda body: Reply(body=completion("Yes."), delay_s=0.3)
    clip = make_clip()
    queries = [Query(clip, question("presence"), i) for i in range(6)]
    answers = adapter(server, concurrency="2").answer(queries)
    assert [a.text for a in answers] == ["Yes."] * 6
    assert server.max_in_flight == 2
    server.max_in_flight = 0
    adapter(server, concurrency="6").answer([Query(clip, question("presence"), i) for i in range(6, 12)])
    assert server.max_in_flight > 2


def test_the_fingerprint_names_server_model_and_settings_but_never_the_key(server: FakeServer) -> None:
    plain, other = adapter(server), adapter(server, audio="input_audio")
    assert server.url in plain.fingerprint and "fake-omni" in plain.fingerprint
    assert plain.fingerprint != other.fingerprint
    assert adapter(server, concurrency="1", max_retries="0").fingerprint == plain.fingerprint  # transport only
    assert PLANTED not in plain.fingerprint


# --------------------------------------------------------------------------------------------- log-probabilities


def step(token: str, logprob: float, alternatives: dict[str, float]) -> dict:
    top = [{"token": t, "logprob": lp, "bytes": None} for t, lp in alternatives.items()]
    return {"token": token, "logprob": logprob, "bytes": None, "top_logprobs": top}


def test_logprob_scoring_maps_the_first_token_onto_yes_and_no(server: FakeServer) -> None:
    server.default = lambda body: Reply(body=completion("No", [step("No", -0.2, {"No": -0.2, "Yes": -1.8, "no": -4})]))
    model = adapter(server, scoring="logprob")
    answer = ask(model, "presence")
    body = server.chats[0].body
    assert (body["logprobs"], body["top_logprobs"], body["max_tokens"]) == (True, 20, 8)
    assert answer.text == "" and model.capabilities.logprobs
    assert answer.scores == {"yes": -1.8, "no": -0.2}
    assert answer.meta["generated"] == "No"


def test_logprob_scoring_tells_choices_apart_where_they_diverge(server: FakeServer) -> None:
    tokens = [
        step("Audio", -0.1, {"Audio": -0.1, "Sync": -2.5}),
        step(" early", -0.7, {" early": -0.7, " delayed": -0.9}),
    ]
    server.default = lambda body: Reply(body=completion("Audio early", tokens))
    answer = ask(adapter(server, scoring="logprob"), "sync")
    assert answer.scores == pytest.approx({"synchronized": -2.5, "audio delayed": -1.0, "audio early": -0.8})


def test_lettered_options_are_scored_by_their_letter(server: FakeServer) -> None:
    tokens = [step("(", -0.01, {"(": -0.01}), step("B", -0.3, {"B": -0.3, "A": -1.5})]
    server.default = lambda body: Reply(body=completion("(B", tokens))
    q = question("source")
    answer = adapter(server, scoring="logprob").answer([Query(make_clip(), q)])[0]
    assert answer.scores == pytest.approx({q.choices[0]: -1.51, q.choices[1]: -0.31})


def test_a_server_without_logprobs_is_answered_from_the_text(server: FakeServer) -> None:
    answer = ask(adapter(server, scoring="logprob"))
    assert answer.text == "Yes." and answer.scores is None
    assert "no log-probabilities" in str(answer.meta["scoring"])


def test_numeric_questions_are_generated_even_under_logprob_scoring(server: FakeServer) -> None:
    server.default = lambda body: Reply(body=completion("0.5"))
    answer = ask(adapter(server, scoring="logprob"), "offset")
    assert answer.text == "0.5" and "logprobs" not in server.chats[0].body


# --------------------------------------------------------------------------------------------- failures during a run


def test_a_refused_key_is_one_clear_case_error_and_is_not_retried(server: FakeServer) -> None:
    server.script.append(Reply(401, {"error": {"message": "Invalid API key", "type": "auth"}}))
    answer = ask(adapter(server))
    assert answer.error == (
        f"openai-compatible {server.url}: HTTP 401 Unauthorized: key refused (check $OPENAI_API_KEY): Invalid API key"
    )
    assert len(server.chats) == 1


def test_rate_limits_are_retried_honouring_retry_after(server: FakeServer) -> None:
    limited = Reply(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "50"})
    server.script.extend([limited, limited])
    started = time.monotonic()
    answer = ask(adapter(server))
    assert answer.error is None and answer.text == "Yes."
    assert len(server.chats) == 3
    assert 0.1 <= time.monotonic() - started < 5


def test_server_errors_are_retried_with_exponential_backoff_then_reported(server: FakeServer) -> None:
    server.default = lambda body: Reply(500, {"error": {"message": "CUDA out of memory"}})
    started = time.monotonic()
    answer = ask(adapter(server, max_retries="2"))
    elapsed = time.monotonic() - started
    assert len(server.chats) == 3
    assert elapsed >= (0.5 + 1.0) * 0.75  # 0.5 s then 1 s, less at most 25 % jitter
    assert answer.error == (
        f"openai-compatible {server.url}: HTTP 500 Internal Server Error: server error after 3 attempts: "
        "CUDA out of memory"
    )


def test_a_slow_server_times_out_per_attempt(server: FakeServer) -> None:
    server.default = lambda body: Reply(body=completion("late"), delay_s=3)
    started = time.monotonic()
    answer = ask(adapter(server, timeout_s=60, request_timeout_s="0.3", max_retries="1"))
    assert time.monotonic() - started < 2.5
    assert len(server.chats) == 2
    assert answer.error == f"openai-compatible {server.url}: no reply within 0.3 s (2 attempts)"


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(200, b"<html>gateway</html>"), "the reply is not JSON (Expecting value: line 1 column 1 (char 0))"),
        (Reply(200, {"id": "x", "object": "chat.completion", "choices": []}), "the reply has no choices"),
        (Reply(200, completion(None)), "the reply has no text (finish_reason=stop)"),
        (Reply(400, {"error": {"message": "video_url is not supported"}}), "HTTP 400 Bad Request: request refused"),
    ],
)
def test_unusable_replies_are_one_line_case_errors(server: FakeServer, reply: Reply, message: str) -> None:
    server.script.append(reply)
    answer = ask(adapter(server, max_retries="0"))
    assert answer.error is not None and answer.text == ""
    assert answer.error.startswith(f"openai-compatible {server.url}: {message}")
    assert "\n" not in answer.error


def test_a_server_that_echoes_the_key_never_gets_it_into_an_answer(server: FakeServer) -> None:
    def echo(body: dict) -> Reply:
        return Reply(500, {"error": {"message": f"bad header Authorization: Bearer {PLANTED}"}})

    server.default = echo
    answer = ask(adapter(server, max_retries="0"))
    assert answer.error is not None and PLANTED not in answer.error and "Bearer ***" in answer.error


def test_one_failing_query_does_not_spoil_the_batch(server: FakeServer) -> None:
    server.default = lambda body: (
        Reply(400, {"error": {"message": "too long"}})
        if "sound" in body["messages"][0]["content"][-1]["text"]
        else Reply(body=completion("1.0"))
    )
    clip = make_clip()
    answers = adapter(server).answer([Query(clip, question("presence")), Query(clip, question("visual"))])
    assert answers[0].error is not None and "too long" in answers[0].error
    assert answers[1].error is None and answers[1].text == "1.0"


def test_a_clip_that_cannot_be_encoded_is_a_case_error_and_nothing_is_sent(server: FakeServer) -> None:
    answer = ask(adapter(server), clip=make_clip(channels=3))
    assert answer.error is not None
    assert answer.error.startswith(f"openai-compatible {server.url}: cannot send the clip: ")
    assert "3 audio channels" in answer.error and server.chats == []


# --------------------------------------------------------------------------------------------- failures before a run


def test_a_server_that_is_down_stops_the_session_at_start(server: FakeServer) -> None:
    url = server.url
    server.httpd.shutdown()
    server.httpd.server_close()
    with pytest.raises(RemoteModelError, match=r"cannot reach the server .*is it running\?"):
        openai_compatible(ModelOptions(url=url, name="fake-omni"))


def test_a_refused_key_stops_the_session_at_start(server: FakeServer) -> None:
    server.models_reply = Reply(401, {"error": {"message": f"key {PLANTED} is not valid"}})
    with pytest.raises(RemoteModelError) as caught:
        openai_compatible(ModelOptions(url=server.url, name="fake-omni"))
    message = str(caught.value)
    assert "HTTP 401 Unauthorized: key refused (check $OPENAI_API_KEY)" in message
    assert PLANTED not in message


def test_the_served_model_is_found_or_named(server: FakeServer) -> None:
    assert openai_compatible(ModelOptions(url=server.url)).settings.model == "fake-omni"  # the only one served
    with pytest.raises(RemoteModelError, match=r"does not serve 'qwen-typo' \(it serves: fake-omni\)"):
        openai_compatible(ModelOptions(url=server.url, name="qwen-typo"))
    server.models = ["a", "b"]
    with pytest.raises(RemoteModelError, match=r"choose the model with --model-name \(the server serves: a, b\)"):
        openai_compatible(ModelOptions(url=server.url))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ModelOptions(), "--model-url is required"),
        (ModelOptions(url="http://x", extra={"audio": "mp3"}), "audio='mp3': expected one of audio_url, input_audio"),
        (ModelOptions(url="http://x", extra={"concurrency": "0"}), "concurrency='0': must be at least 1"),
        (ModelOptions(url="http://x", extra={"use_audio_in_vide": "true"}), "unknown --model-option use_audio_in_vide"),
    ],
)
def test_bad_settings_are_refused_before_any_request(options: ModelOptions, message: str) -> None:
    with pytest.raises(RemoteModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        openai_compatible(options)


def test_the_registry_knows_the_adapter(server: FakeServer) -> None:
    model = create("openai-compatible", ModelOptions(url=server.url, name="fake-omni"))
    assert model.name == "openai-compatible"


# --------------------------------------------------------------------------------------------- a whole session


@pytest.fixture
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_corpus(tmp_path_factory.mktemp("corpus"), 2, 5, progress=False)


def test_a_planted_key_appears_in_no_file_a_session_writes(
    server: FakeServer, pytester: pytest.Pytester, corpus: Path
) -> None:
    def reply(body: dict) -> Reply:
        text = body["messages"][0]["content"][-1]["text"]
        if asks("presence", text):  # the presence questions: refused, with the header echoed back
            return Reply(401, {"error": {"message": f"rejected Authorization: Bearer {PLANTED}"}})
        if "(A)" in text:  # the source questions: an overloaded server that also echoes the key
            return Reply(503, {"error": {"message": f"overloaded; your key was {PLANTED}"}}, {"retry-after-ms": "1"})
        return Reply(body=completion("Yes."))

    server.default = reply
    outcome = pytester.runpytest_subprocess(
        str(ROOT / "suites" / "test_mute.py"),
        "--model=openai-compatible",
        f"--model-url={server.url}",
        "--model-name=fake-omni",
        f"--corpus={corpus}",
        f"--thud-cache={pytester.path / 'cache'}",
        f"--thud-results={pytester.path / 'results.jsonl'}",
        "--thud-max-examples=2",
        "--model-option=max_retries=1",
        f"--junitxml={pytester.path / 'junit.xml'}",
        f"--log-file={pytester.path / 'session.log'}",
        "--log-file-level=DEBUG",
        "-p",
        "no:cacheprovider",
    )
    output = outcome.stdout.str() + outcome.stderr.str()
    assert "HTTP 401 Unauthorized: key refused (check $OPENAI_API_KEY)" in output
    assert "HTTP 503 Service Unavailable: server error after 2 attempts" in output
    rows = [json.loads(line) for line in (pytester.path / "results.jsonl").read_text().splitlines()]
    assert {r["verdict"] for r in rows if r["probe"] == "presence"} == {"error"}
    assert any(r["verdict"] != "error" for r in rows)  # the session's other cases still ran
    written = [p for p in pytester.path.rglob("*") if p.is_file()]
    assert any(p.name == "answers.sqlite" for p in written) and (pytester.path / "session.log").stat().st_size > 0
    leaks = [str(p) for p in written if PLANTED.encode() in p.read_bytes()]
    assert leaks == [] and PLANTED not in output
    assert any(s.headers.get("authorization") == f"Bearer {PLANTED}" for s in server.chats)  # it was sent, though


def test_a_server_that_is_down_is_one_usage_error(pytester: pytest.Pytester, corpus: Path) -> None:
    outcome = pytester.runpytest_subprocess(
        str(ROOT / "suites" / "test_mute.py"),
        "--model=openai-compatible",
        "--model-url=http://127.0.0.1:9/v1",
        f"--corpus={corpus}",
        f"--thud-cache={pytester.path / 'cache'}",
        "-p",
        "no:cacheprovider",
    )
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    outcome.stderr.fnmatch_lines(["*openai-compatible http://127.0.0.1:9/v1: cannot reach the server*is it running?*"])
    assert "Traceback" not in outcome.stderr.str() + outcome.stdout.str()
