"""``--model=openai-compatible``: a server speaking the OpenAI Chat Completions API with video and audio.

Made for vLLM / vllm-omni serving Qwen-Omni, and usable with any server that
takes ``video_url`` parts. Each question is one request: a user message with
the clip as a base64 ``video_url`` data URL (an mp4 that carries the *edited*
audio track), the edited audio again as its own part (servers that read the
video's pictures only would otherwise never hear it), and the question text.

Session options: ``--model-url`` (the API base, e.g. ``http://localhost:8000/v1``;
required), ``--model-name`` (the served model id; optional when the server
serves exactly one), ``--thud-timeout`` (see ``request_timeout_s``),
``--thud-scoring logprob`` (see below), ``--thud-seed`` (sent as ``seed``
when sampling). ``--model-option KEY=VALUE``:

- ``audio=audio_url|input_audio|none`` (default ``audio_url``): how the audio
  part is sent: ``{"type": "audio_url", "audio_url": {"url": "data:audio/wav;..."}}``
  (vLLM), ``{"type": "input_audio", "input_audio": {"data": ..., "format": "wav"}}``
  (OpenAI's own shape), or not at all (then only the mp4's own track carries
  sound, so pair it with ``use_audio_in_video=true``).
- ``use_audio_in_video=true|false`` (default false): sends
  ``mm_processor_kwargs={"use_audio_in_video": true}`` so Qwen-Omni reads the
  mp4's audio track interleaved with its frames.
- ``structured=none|choice|guided_choice|json_schema`` (default none): for
  questions with a fixed set of answers, constrain the reply to them: vLLM >= 0.12
  ``structured_outputs={"choice": [...]}``, older vLLM ``guided_choice``, or the
  OpenAI ``response_format`` JSON schema ``{"answer": <enum>}``. ``guided_choice=true``
  is accepted as a synonym for ``structured=guided_choice``.
- ``temperature`` (default 0; above 0 the model samples and ``--thud-samples`` applies),
  ``max_tokens`` (default: the server's; 8 for log-prob scoring).
- ``concurrency`` (default 4): requests in flight at once from this process
  (one per pytest-xdist worker), so a suite can fan out to a deployment
  without flooding it.
- ``max_retries`` (default 4): retries of a request that got 408, 409, 429, a
  5xx, a timeout or a dropped connection, with exponential backoff and jitter
  (0.5 s doubling to 8 s, or the server's ``Retry-After``): the ``openai``
  client's own policy.
- ``request_timeout_s`` (default ``--thud-timeout``): seconds one request attempt
  may take. ``--thud-timeout`` also bounds a case's whole call, retries included,
  so set this lower (e.g. ``--thud-timeout 600 --model-option request_timeout_s=120``)
  for a hung request to be retried rather than end the case.
- ``api_key_env`` (default ``OPENAI_API_KEY``): the environment variable holding
  the key. Keys are never options; without the variable the key is ``EMPTY``,
  what a local vLLM expects.

Log-prob scoring (``--thud-scoring logprob``): questions with choices are asked
with ``logprobs=true, top_logprobs=20`` and the reply's token log-probabilities
are mapped onto the choices (``payload.choice_scores`` documents the
approximation); the answer then has empty text and ``scores``. A server that
returns no log-probabilities gets the text parsed instead, noted in the
answer's ``meta["scoring"]``.

Failures: a server that is down, a refused key or an unknown model stop the
session before any case runs (``RemoteModelError`` from the factory, which
probes ``GET {url}/models`` once). During the run every failure is one case
error line, e.g. ``openai-compatible http://...: HTTP 401 Unauthorized: key
refused (set $OPENAI_API_KEY)``; the key itself never appears in any answer,
error, fingerprint or metadata, even when a server echoes it back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from thud_mt.errors import ThudError
from thud_mt.models.base import Answer, Capabilities, Query
from thud_mt.models.payload import (
    RemoteModelError,
    Secrets,
    TokenStep,
    b64,
    check_option_keys,
    choice_scores,
    clip_mp4,
    clip_wav,
    data_url,
    exception_kind,
    http_problem,
    one_line,
    option_choice,
    option_flag,
    option_number,
    server_message,
)
from thud_mt.models.registry import ModelOptions

ADAPTER = "openai-compatible"
VERSION = 1  # bump when a request's content changes, so cached answers are not reused
DEFAULT_TIMEOUT_S = 300.0
PROBE_TIMEOUT_S = 10.0  # the one GET /models at start-up: a live server answers it at once
LOGPROB_TOP = 20  # the most OpenAI (and vLLM's default --max-logprobs) allows
LOGPROB_MAX_TOKENS = 8  # enough to spell "audio delayed" or "(B)"
RETRIED_STATUSES = frozenset({408, 409, 429})  # and every 5xx: the openai client's retry policy
AUDIO_MODES = ("audio_url", "input_audio", "none")
STRUCTURED_MODES = ("none", "choice", "guided_choice", "json_schema")
OPTION_KEYS = (
    "audio",
    "use_audio_in_video",
    "structured",
    "guided_choice",
    "temperature",
    "max_tokens",
    "concurrency",
    "max_retries",
    "request_timeout_s",
    "api_key_env",
)


@dataclass(frozen=True)
class OpenAISettings:
    """Everything that decides a request, read from the session's ``ModelOptions``."""

    url: str
    model: str | None = None
    audio: str = "audio_url"
    use_audio_in_video: bool = False
    structured: str = "none"
    temperature: float = 0.0
    max_tokens: int | None = None
    concurrency: int = 4
    max_retries: int = 4
    timeout_s: float = DEFAULT_TIMEOUT_S
    scoring: str = "generate"
    seed: int = 0
    api_key_env: str = "OPENAI_API_KEY"

    @classmethod
    def from_options(cls, options: ModelOptions) -> OpenAISettings:
        extra: Mapping[str, str] = options.extra
        check_option_keys(extra, OPTION_KEYS, ADAPTER)
        if not options.url:
            raise RemoteModelError(
                f"{ADAPTER}: --model-url is required: the server's API base, e.g. --model-url http://localhost:8000/v1"
            )
        structured = option_choice(extra, "structured", STRUCTURED_MODES, "none", ADAPTER)
        if option_flag(extra, "guided_choice", False, ADAPTER):
            structured = "guided_choice"
        max_tokens = int(option_number(extra, "max_tokens", 0, ADAPTER, low=1)) or None  # 0: not given
        session_timeout = float(options.timeout_s) if options.timeout_s else DEFAULT_TIMEOUT_S
        env = extra.get("api_key_env", "").strip() or "OPENAI_API_KEY"
        return cls(
            url=options.url.rstrip("/"),
            model=options.name or None,
            audio=option_choice(extra, "audio", AUDIO_MODES, "audio_url", ADAPTER),
            use_audio_in_video=option_flag(extra, "use_audio_in_video", False, ADAPTER),
            structured=structured,
            temperature=option_number(extra, "temperature", 0.0, ADAPTER),
            max_tokens=max_tokens,
            concurrency=int(option_number(extra, "concurrency", 4, ADAPTER, low=1)),
            max_retries=int(option_number(extra, "max_retries", 4, ADAPTER)),
            timeout_s=option_number(extra, "request_timeout_s", session_timeout, ADAPTER, low=0.001),
            scoring=options.scoring,
            seed=int(options.seed),
            api_key_env=env,
        )


class OpenAICompatible:
    """The adapter; build it with ``openai_compatible(options)``, which checks the server first."""

    name = ADAPTER

    def __init__(self, settings: OpenAISettings, client: Any, *, key: str | None) -> None:
        if settings.model is None:
            raise ValueError("settings.model must be resolved before the adapter is built")
        self.settings = settings
        self._client = client
        self._secrets = Secrets.of(key)
        self._key_hint = _key_hint(settings, key)
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="thud-openai")
        hears = settings.audio != "none" or settings.use_audio_in_video
        self.capabilities = Capabilities(
            audio=hears,
            video=True,
            audio_in_video=settings.use_audio_in_video,
            samples=settings.temperature > 0,
            logprobs=settings.scoring == "logprob",
        )

    @property
    def fingerprint(self) -> str:
        s = self.settings
        parts = [
            f"{ADAPTER}/v{VERSION}",
            f"url={s.url}",
            f"model={s.model}",
            f"audio={s.audio}",
            f"use_audio_in_video={s.use_audio_in_video}",
            f"structured={s.structured}",
            f"temperature={s.temperature:g}",
            f"max_tokens={s.max_tokens}",
            f"scoring={s.scoring}",
        ]
        if s.temperature > 0:
            parts.append(f"seed={s.seed}")
        return " ".join(parts)

    # ------------------------------------------------------------ requests

    def request(self, query: Query) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for one query."""
        s, q = self.settings, query.question
        content: list[dict[str, Any]] = [
            {"type": "video_url", "video_url": {"url": data_url(clip_mp4(query.clip), "video/mp4")}}
        ]
        if s.audio == "audio_url":
            content.append({"type": "audio_url", "audio_url": {"url": data_url(clip_wav(query.clip), "audio/wav")}})
        elif s.audio == "input_audio":
            content.append({"type": "input_audio", "input_audio": {"data": b64(clip_wav(query.clip)), "format": "wav"}})
        content.append({"type": "text", "text": q.text})
        kwargs: dict[str, Any] = {
            "model": s.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": s.temperature,
        }
        if s.temperature > 0:
            kwargs["seed"] = s.seed + query.sample  # each sample its own draw, every run the same draws
        if s.max_tokens is not None:
            kwargs["max_tokens"] = s.max_tokens
        extra_body: dict[str, Any] = {}
        if s.use_audio_in_video:
            extra_body["mm_processor_kwargs"] = {"use_audio_in_video": True}
        if q.choices:
            choices = list(q.choices)
            if s.structured == "choice":
                extra_body["structured_outputs"] = {"choice": choices}
            elif s.structured == "guided_choice":
                extra_body["guided_choice"] = choices
            elif s.structured == "json_schema":
                kwargs["response_format"] = _json_schema(choices)
            if s.scoring == "logprob":
                kwargs["logprobs"] = True
                kwargs["top_logprobs"] = LOGPROB_TOP
                kwargs["max_tokens"] = s.max_tokens or LOGPROB_MAX_TOKENS
        if extra_body:
            kwargs["extra_body"] = extra_body
        return kwargs

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        futures = [self._pool.submit(self._answer_one, q) for q in queries]
        return [f.result() for f in futures]

    def _answer_one(self, query: Query) -> Answer:
        try:
            answer = self._ask(query)
        except Exception as exc:  # one failed request is one error case, never a dead session
            return Answer(text="", error=self._secrets.redact(f"{ADAPTER} {self.settings.url}: {self._problem(exc)}"))
        meta = self._secrets.redact_all(dict(answer.meta))
        assert isinstance(meta, dict)
        return Answer(text=self._secrets.redact(answer.text), scores=answer.scores, meta=meta)

    def _ask(self, query: Query) -> Answer:
        kwargs = self.request(query)
        reply = self._client.chat.completions.create(**kwargs)
        if not getattr(reply, "choices", None):
            raise _ReplyError("the reply has no choices")
        choice = reply.choices[0]
        text = getattr(choice.message, "content", None)
        if text is None:
            raise _ReplyError(f"the reply has no text (finish_reason={choice.finish_reason})")
        meta: dict[str, object] = {"finish_reason": choice.finish_reason}
        usage = getattr(reply, "usage", None)
        if usage is not None:
            meta["prompt_tokens"] = getattr(usage, "prompt_tokens", None)
            meta["completion_tokens"] = getattr(usage, "completion_tokens", None)
        if "logprobs" not in kwargs:
            return Answer(text=str(text), meta=meta)
        steps = _steps(getattr(choice, "logprobs", None))
        if not steps:
            meta["scoring"] = "generate: the server returned no log-probabilities"
            return Answer(text=str(text), meta=meta)
        scores = choice_scores(query.question, steps)
        if not scores:
            meta["scoring"] = "generate: no choice among the top log-probabilities"
            return Answer(text=str(text), meta=meta)
        meta.update(scoring="logprob", generated=str(text))
        return Answer(text="", scores=scores, meta=meta)

    # ------------------------------------------------------------ errors

    def _problem(self, exc: Exception) -> str:
        import openai

        s = self.settings
        if isinstance(exc, openai.APIStatusError):
            code = exc.status_code
            retried = code in RETRIED_STATUSES or code >= 500
            message = server_message(exc.body) or one_line(_response_text(exc))
            return http_problem(code, message, attempts=s.max_retries + 1 if retried else 1, key_hint=self._key_hint)
        kind = exception_kind(exc)
        tries = f" ({s.max_retries + 1} attempts)" if s.max_retries else ""
        if kind == "timeout":
            return f"no reply within {s.timeout_s:g} s{tries}"
        if kind == "connection":
            cause = exc.__cause__ or exc
            return f"cannot connect{tries}: {one_line(cause)}; is the server still running?"
        if isinstance(exc, _ReplyError):
            return str(exc)
        if isinstance(exc, ThudError):  # raised before anything was sent
            return f"cannot send the clip: {exc}"
        if isinstance(exc, json.JSONDecodeError):
            return f"the reply is not JSON ({one_line(exc)})"
        return f"unreadable reply ({type(exc).__name__}: {one_line(exc)})"


class _ReplyError(Exception):
    """A reply that arrived but holds no answer."""


def _json_schema(choices: list[str]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": choices}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": schema}}


def _steps(logprobs: Any) -> list[TokenStep]:
    content = getattr(logprobs, "content", None) or []
    steps = []
    for item in content:
        alternatives = tuple((str(t.token), float(t.logprob)) for t in (getattr(item, "top_logprobs", None) or []))
        steps.append(TokenStep(str(item.token), float(item.logprob), alternatives))
    return steps


def _response_text(exc: Any) -> str:
    try:
        return str(exc.response.text)
    except Exception:  # a streamed or closed body: the status alone says enough
        return ""


# --------------------------------------------------------------------------------------------- factory


def _key_hint(settings: OpenAISettings, key: str | None) -> str:
    # The variable's name, never its value: "set" when nothing was sent, "check" when a key was refused.
    return f"{'check' if key else 'set'} ${settings.api_key_env}"


def _import_openai() -> Any:
    try:
        import openai
    except ImportError:
        raise RemoteModelError(
            f"{ADAPTER} needs the openai package: pip install 'thud-mt[api]' (or pip install openai)"
        ) from None
    return openai


def _served_model(client: Any, settings: OpenAISettings, secrets: Secrets, key_hint: str) -> str:
    """Check the server once (``GET /models``) and settle the model id: fail before the run, not in every case."""
    openai = _import_openai()
    where = f"{ADAPTER} {settings.url}"
    try:
        listed = client.with_options(max_retries=0, timeout=min(PROBE_TIMEOUT_S, settings.timeout_s)).models.list()
        ids = [str(m.id) for m in getattr(listed, "data", None) or []]
    except openai.NotFoundError:
        ids = []  # a server without GET /models: the first request will tell
        if settings.model is None:
            hint = "" if settings.url.endswith("/v1") else " (vLLM serves its API under /v1)"
            raise RemoteModelError(
                f"{where}: GET /models is not found{hint}; name the model with --model-name"
            ) from None
    except openai.APIStatusError as exc:
        message = secrets.redact(server_message(exc.body))
        raise RemoteModelError(
            f"{where}: {http_problem(exc.status_code, message, attempts=1, key_hint=key_hint)}"
        ) from None
    except Exception as exc:
        kind = exception_kind(exc)
        if kind in ("timeout", "connection"):
            cause = secrets.redact(one_line(exc.__cause__ or exc))
            raise RemoteModelError(
                f"{where}: cannot reach the server ({cause}); is it running? "
                "(e.g. vllm serve Qwen/Qwen2.5-Omni-7B --port 8000, then --model-url http://localhost:8000/v1)"
            ) from None
        detail = secrets.redact(one_line(exc))
        raise RemoteModelError(
            f"{where}: GET /models gave an unreadable reply ({type(exc).__name__}: {detail}); "
            "is this an OpenAI-compatible API base?"
        ) from None
    if settings.model is None:
        if len(ids) == 1:
            return ids[0]
        offered = ", ".join(ids[:20]) if ids else "none listed"
        raise RemoteModelError(f"{where}: choose the model with --model-name (the server serves: {offered})")
    if ids and settings.model not in ids:
        raise RemoteModelError(
            f"{where}: the server does not serve {settings.model!r} (it serves: {', '.join(ids[:20])}); "
            "check --model-name"
        )
    return settings.model


def openai_compatible(options: ModelOptions) -> OpenAICompatible:
    """``--model=openai-compatible``: settings from ``options``, the server checked once, then the adapter."""
    settings = OpenAISettings.from_options(options)
    openai = _import_openai()
    key = os.environ.get(settings.api_key_env) or None
    client = openai.OpenAI(
        api_key=key or "EMPTY",
        base_url=settings.url,
        timeout=settings.timeout_s,
        max_retries=settings.max_retries,
    )
    model = _served_model(client, settings, Secrets.of(key), _key_hint(settings, key))
    return OpenAICompatible(dataclasses.replace(settings, model=model), client, key=key)
