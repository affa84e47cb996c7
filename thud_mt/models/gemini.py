"""``--model=gemini``: Google's Gemini API through the official ``google-genai`` client.

Each question is one ``generateContent`` request: the clip as an mp4 (its
picture with the *edited* audio track, which Gemini hears natively) and the
question text. The mp4 goes inline up to ``inline_max_mb``; a larger one is
uploaded once through the File API (and reused for every question about the
same clip; uploads expire after 48 hours on Google's side). Questions with a
fixed set of answers ask for ``response_mime_type="text/x.enum"`` with an enum
``response_schema`` of the choices, so the reply is exactly one of them.

Session options: ``--model-name`` (default ``gemini-2.5-flash``),
``--model-url`` (another API endpoint, e.g. a proxy; default Google's),
``--thud-timeout`` (see ``request_timeout_s``), ``--thud-scoring logprob``
(``response_logprobs`` mapped onto the choices as ``payload.choice_scores``
describes; text when the model returns none), ``--thud-seed`` (sent as
``seed`` when sampling). ``--model-option KEY=VALUE``:

- ``api_key_env``: the environment variable holding the key (default: the
  first of ``GEMINI_API_KEY``, ``GOOGLE_API_KEY`` that is set). Keys are never options.
- ``inline_max_mb`` (default 14): the largest mp4 sent inline; base64 makes it
  4/3 larger, and a request must stay under 20 MB.
- ``enum=true|false`` (default true): the enum response schema for categorical questions.
- ``video_fps``: frames per second Gemini samples from the video (its default is 1,
  too coarse to judge synchrony; at most 24; e.g. ``video_fps=10``).
- ``temperature`` (default 0), ``max_tokens`` (``max_output_tokens``; default the model's).
- ``concurrency`` (default 4): requests in flight at once from this process.
- ``max_retries`` (default 4) and ``retry_base_s`` (default 1.0): a request that
  got 408, 429, a 5xx, a timeout or a dropped connection is retried after
  ``retry_base_s * 2**n`` seconds (at most 30, less up to 25 % jitter), or the
  server's ``Retry-After``.
- ``request_timeout_s`` (default ``--thud-timeout``): seconds one request attempt
  may take. ``--thud-timeout`` also bounds a case's whole call, retries included,
  so set this lower (e.g. ``--thud-timeout 600 --model-option request_timeout_s=120``)
  for a hung request to be retried rather than end the case.
- ``api_version``: the API version path (default the client's).

Failures: a missing or refused key, an unknown model or an unreachable API stop
the session before any case runs (the factory asks for the model once); during
the run every failure is one case error line naming the model. The key never
appears in answers, errors, fingerprints or metadata.
"""

from __future__ import annotations

import io
import json
import os
import random
import threading
import time
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
    check_option_keys,
    choice_scores,
    clip_mp4,
    exception_kind,
    http_problem,
    one_line,
    option_flag,
    option_number,
    server_message,
    sha256,
)
from thud_mt.models.registry import ModelOptions

ADAPTER = "gemini"
VERSION = 1  # bump when a request's content changes, so cached answers are not reused
DEFAULT_MODEL = "gemini-2.5-flash"
KEY_ENVS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
DEFAULT_TIMEOUT_S = 300.0
PROBE_TIMEOUT_S = 15.0
INLINE_MAX_MB = 14.0
MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 60.0  # a longer server-requested wait is not worth holding a case for
UPLOAD_POLL_S = 1.0
MAX_VIDEO_FPS = 24.0  # the API's limit on VideoMetadata.fps
LOGPROB_TOP = 20
LOGPROB_MAX_TOKENS = 8
RETRIED_STATUSES = frozenset({408, 429})  # and every 5xx
OPTION_KEYS = (
    "api_key_env",
    "inline_max_mb",
    "enum",
    "video_fps",
    "temperature",
    "max_tokens",
    "concurrency",
    "max_retries",
    "request_timeout_s",
    "retry_base_s",
    "api_version",
)


@dataclass(frozen=True)
class GeminiSettings:
    """Everything that decides a request, read from the session's ``ModelOptions``."""

    model: str = DEFAULT_MODEL
    url: str | None = None
    api_version: str | None = None
    enum: bool = True
    video_fps: float | None = None
    temperature: float = 0.0
    max_tokens: int | None = None
    inline_max_bytes: int = int(INLINE_MAX_MB * 1e6)
    concurrency: int = 4
    max_retries: int = 4
    retry_base_s: float = 1.0
    timeout_s: float = DEFAULT_TIMEOUT_S
    scoring: str = "generate"
    seed: int = 0
    api_key_env: str = KEY_ENVS[0]

    @classmethod
    def from_options(cls, options: ModelOptions) -> GeminiSettings:
        extra: Mapping[str, str] = options.extra
        check_option_keys(extra, OPTION_KEYS, ADAPTER)
        env = extra.get("api_key_env", "").strip() or next((e for e in KEY_ENVS if os.environ.get(e)), KEY_ENVS[0])
        fps = option_number(extra, "video_fps", 0.0, ADAPTER)
        if fps > MAX_VIDEO_FPS:
            raise RemoteModelError(f"{ADAPTER}: --model-option video_fps={fps:g}: Gemini samples at most 24 fps")
        max_tokens = int(option_number(extra, "max_tokens", 0, ADAPTER, low=1)) or None  # 0: not given
        session_timeout = float(options.timeout_s) if options.timeout_s else DEFAULT_TIMEOUT_S
        return cls(
            model=options.name or DEFAULT_MODEL,
            url=options.url.rstrip("/") if options.url else None,
            api_version=extra.get("api_version", "").strip() or None,
            enum=option_flag(extra, "enum", True, ADAPTER),
            video_fps=fps or None,
            temperature=option_number(extra, "temperature", 0.0, ADAPTER),
            max_tokens=max_tokens,
            inline_max_bytes=int(option_number(extra, "inline_max_mb", INLINE_MAX_MB, ADAPTER) * 1e6),
            concurrency=int(option_number(extra, "concurrency", 4, ADAPTER, low=1)),
            max_retries=int(option_number(extra, "max_retries", 4, ADAPTER)),
            retry_base_s=option_number(extra, "retry_base_s", 1.0, ADAPTER),
            timeout_s=option_number(extra, "request_timeout_s", session_timeout, ADAPTER, low=0.001),
            scoring=options.scoring,
            seed=int(options.seed),
            api_key_env=env,
        )


class _Failed(Exception):
    """A request that failed for good, with the number of attempts made."""

    def __init__(self, cause: Exception, attempts: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.attempts = attempts


class _ReplyError(Exception):
    """A reply that arrived but holds no answer (blocked, empty, an upload the API could not process)."""


class Gemini:
    """The adapter; build it with ``gemini(options)``, which checks the key and the model first."""

    name = ADAPTER

    def __init__(self, settings: GeminiSettings, client: Any, *, key: str) -> None:
        self.settings = settings
        self._client = client
        self._secrets = Secrets.of(key)
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="thud-gemini")
        self._uploads: dict[str, Any] = {}  # sha256 of the mp4 -> the active File
        self._upload_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.capabilities = Capabilities(
            audio=True,
            video=True,
            audio_in_video=True,
            samples=settings.temperature > 0,
            logprobs=settings.scoring == "logprob",
        )

    @property
    def fingerprint(self) -> str:
        s = self.settings
        parts = [
            f"{ADAPTER}/v{VERSION}",
            f"url={s.url or 'default'}",
            f"api_version={s.api_version or 'default'}",
            f"model={s.model}",
            f"enum={s.enum}",
            f"video_fps={s.video_fps}",
            f"temperature={s.temperature:g}",
            f"max_tokens={s.max_tokens}",
            f"scoring={s.scoring}",
        ]
        if s.temperature > 0:
            parts.append(f"seed={s.seed}")
        return " ".join(parts)

    # ------------------------------------------------------------ requests

    def config(self, query: Query) -> Any:
        """The ``GenerateContentConfig`` of one query."""
        from google.genai import types

        s, q = self.settings, query.question
        fields: dict[str, Any] = {"temperature": s.temperature}
        if s.max_tokens is not None:
            fields["max_output_tokens"] = s.max_tokens
        if s.temperature > 0:
            fields["seed"] = s.seed + query.sample  # each sample its own draw, every run the same draws
        if q.choices and s.enum:
            fields["response_mime_type"] = "text/x.enum"
            fields["response_schema"] = {"type": "STRING", "enum": list(q.choices)}
        if q.choices and s.scoring == "logprob":
            fields["response_logprobs"] = True
            fields["logprobs"] = LOGPROB_TOP
            fields["max_output_tokens"] = s.max_tokens or LOGPROB_MAX_TOKENS
        return types.GenerateContentConfig(**fields)

    def _video_part(self, query: Query) -> tuple[Any, str]:
        from google.genai import types

        mp4 = clip_mp4(query.clip)
        metadata = types.VideoMetadata(fps=self.settings.video_fps) if self.settings.video_fps else None
        if len(mp4) <= self.settings.inline_max_bytes:
            blob = types.Blob(data=mp4, mime_type="video/mp4")
            return types.Part(inline_data=blob, video_metadata=metadata), "inline"
        uploaded = self._upload(mp4)
        data = types.FileData(file_uri=uploaded.uri, mime_type="video/mp4")
        return types.Part(file_data=data, video_metadata=metadata), "file"

    def _upload(self, mp4: bytes) -> Any:
        """The mp4 through the File API, once per distinct file; returns it once it is ACTIVE."""
        from google.genai import types

        digest = sha256(mp4)
        with self._lock:
            lock = self._upload_locks.setdefault(digest, threading.Lock())
        with lock:  # two questions about one clip wait for one upload
            if digest in self._uploads:
                return self._uploads[digest]
            config = types.UploadFileConfig(mime_type="video/mp4", display_name=f"thud-{digest[:16]}")
            file = self._client.files.upload(file=io.BytesIO(mp4), config=config)
            deadline = time.monotonic() + self.settings.timeout_s
            while _state(file) == "PROCESSING":
                if time.monotonic() > deadline:
                    raise _ReplyError(f"the File API still processes the upload after {self.settings.timeout_s:g} s")
                time.sleep(UPLOAD_POLL_S)
                file = self._client.files.get(name=file.name)
            if _state(file) not in ("ACTIVE", "STATE_UNSPECIFIED"):
                raise _ReplyError(f"the File API could not process the upload ({_state(file)}: {file.error})")
            self._uploads[digest] = file
            return file

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        futures = [self._pool.submit(self._answer_one, q) for q in queries]
        return [f.result() for f in futures]

    def _answer_one(self, query: Query) -> Answer:
        try:
            answer = self._retrying(lambda: self._ask(query))
        except _Failed as failed:
            line = f"{ADAPTER} {self.settings.model}: {self._problem(failed.cause, failed.attempts)}"
            return Answer(text="", error=self._secrets.redact(line))
        meta = self._secrets.redact_all(dict(answer.meta))
        assert isinstance(meta, dict)
        return Answer(text=self._secrets.redact(answer.text), scores=answer.scores, meta=meta)

    def _retrying(self, call: Any) -> Answer:
        s = self.settings
        for attempt in range(s.max_retries + 1):
            try:
                return call()
            except Exception as exc:  # every failure is classified below; none escapes as a traceback
                if attempt == s.max_retries or not _retryable(exc):
                    raise _Failed(exc, attempt + 1) from exc
                time.sleep(self._backoff(attempt, exc))
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, exc: Exception) -> float:
        after = _retry_after(exc)
        if after is not None and 0 < after <= MAX_RETRY_AFTER_S:
            return after
        return min(self.settings.retry_base_s * 2.0**attempt, MAX_BACKOFF_S) * (1 - 0.25 * random.random())

    def _ask(self, query: Query) -> Answer:
        from google.genai import types

        video, how = self._video_part(query)
        contents = [types.Content(role="user", parts=[video, types.Part.from_text(text=query.question.text)])]
        config = self.config(query)
        reply = self._client.models.generate_content(model=self.settings.model, contents=contents, config=config)
        candidates = getattr(reply, "candidates", None) or []
        if not candidates:
            feedback = getattr(reply, "prompt_feedback", None)
            reason = getattr(feedback, "block_reason", None)
            raise _ReplyError(f"the reply has no candidates (prompt blocked: {_name(reason)})")
        candidate = candidates[0]
        text = _text(candidate)
        finish = _name(getattr(candidate, "finish_reason", None))
        if text is None:
            raise _ReplyError(f"the reply has no text (finish_reason={finish})")
        meta: dict[str, object] = {"finish_reason": finish, "video": how}
        usage = getattr(reply, "usage_metadata", None)
        if usage is not None:
            meta["prompt_tokens"] = getattr(usage, "prompt_token_count", None)
        if not config.response_logprobs:
            return Answer(text=text, meta=meta)
        steps = _steps(getattr(candidate, "logprobs_result", None))
        scores = choice_scores(query.question, steps) if steps else {}
        if not scores:
            meta["scoring"] = "generate: the reply has no usable log-probabilities"
            return Answer(text=text, meta=meta)
        meta.update(scoring="logprob", generated=text)
        return Answer(text="", scores=scores, meta=meta)

    # ------------------------------------------------------------ errors

    def _problem(self, exc: Exception, attempts: int) -> str:
        s = self.settings
        code = _status(exc)
        if code is not None:
            message = _api_message(exc)
            return http_problem(
                code, message, attempts=attempts, key_hint=_key_hint(s, True), key_refused=_key_refused(exc)
            )
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        kind = exception_kind(exc)
        if kind == "timeout":
            return f"no reply within {s.timeout_s:g} s{tries}"
        if kind == "connection":
            return f"cannot connect{tries}: {one_line(exc)}"
        if isinstance(exc, _ReplyError):
            return str(exc)
        if isinstance(exc, ThudError):  # raised before anything was sent
            return f"cannot send the clip: {exc}"
        if isinstance(exc, json.JSONDecodeError):
            return f"the reply is not JSON ({one_line(exc)})"
        return f"unreadable reply ({type(exc).__name__}: {one_line(exc)})"


# --------------------------------------------------------------------------------------------- reply reading


def _name(value: Any) -> str:
    return str(getattr(value, "name", value))


def _state(file: Any) -> str:
    return _name(getattr(file, "state", None) or "STATE_UNSPECIFIED")


def _text(candidate: Any) -> str | None:
    content = getattr(candidate, "content", None)
    parts = getattr(content, "parts", None) or []
    texts = [p.text for p in parts if getattr(p, "text", None) is not None and not getattr(p, "thought", False)]
    return "".join(texts) if texts else None


def _steps(result: Any) -> list[TokenStep]:
    chosen = getattr(result, "chosen_candidates", None) or []
    top = getattr(result, "top_candidates", None) or []
    steps = []
    for i, token in enumerate(chosen):
        alternatives: tuple[tuple[str, float], ...] = ()
        if i < len(top):
            alternatives = tuple(
                (str(c.token), float(c.log_probability)) for c in (getattr(top[i], "candidates", None) or [])
            )
        steps.append(TokenStep(str(token.token), float(token.log_probability), alternatives))
    return steps


def _status(exc: Exception) -> int | None:
    from google.genai import errors

    return int(exc.code) if isinstance(exc, errors.APIError) and exc.code else None


def _api_message(exc: Any) -> str:
    return one_line(getattr(exc, "message", None) or server_message(getattr(exc, "details", None)))


def _key_refused(exc: Exception) -> bool:
    # Gemini answers a bad key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID.
    text = f"{getattr(exc, 'message', '')} {getattr(exc, 'details', '')}"
    return _status(exc) in (401, 403) or "API_KEY_INVALID" in text or "API key not valid" in text


def _retryable(exc: Exception) -> bool:
    code = _status(exc)
    if code is not None:
        return code in RETRIED_STATUSES or code >= 500
    return exception_kind(exc) in ("timeout", "connection")


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    raw = headers.get("retry-after") if headers is not None else None
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None  # an HTTP date: use the backoff


# --------------------------------------------------------------------------------------------- factory


def _key_hint(settings: GeminiSettings, sent: bool) -> str:
    return f"{'check' if sent else 'set'} ${settings.api_key_env}"


def _import_genai() -> Any:
    try:
        from google import genai
    except ImportError:
        raise RemoteModelError(
            f"{ADAPTER} needs the google-genai package: pip install 'thud-mt[api]' (or pip install google-genai)"
        ) from None
    return genai


def _check_model(client: Any, settings: GeminiSettings, secrets: Secrets) -> None:
    """Ask for the model once: a refused key or a misspelt model stops the session here, not in every case."""
    where = f"{ADAPTER} {settings.model}"
    try:
        client.models.get(model=settings.model, config={"http_options": {"timeout": int(PROBE_TIMEOUT_S * 1000)}})
    except Exception as exc:
        code = _status(exc)
        if code == 404:
            raise RemoteModelError(
                f"{where}: the API has no model {settings.model!r}; check --model-name (e.g. {DEFAULT_MODEL})"
            ) from None
        if code is not None:
            message = secrets.redact(_api_message(exc))
            problem = http_problem(
                code, message, attempts=1, key_hint=_key_hint(settings, True), key_refused=_key_refused(exc)
            )
            raise RemoteModelError(f"{where}: {problem}") from None
        detail = secrets.redact(one_line(exc))
        if exception_kind(exc) in ("timeout", "connection"):
            raise RemoteModelError(
                f"{where}: cannot reach {settings.url or 'the Gemini API'} ({detail}); check the network or --model-url"
            ) from None
        raise RemoteModelError(
            f"{where}: the model lookup gave an unreadable reply ({type(exc).__name__}: {detail})"
        ) from None


def gemini(options: ModelOptions) -> Gemini:
    """``--model=gemini``: settings from ``options``, the key from the environment, the model checked once."""
    settings = GeminiSettings.from_options(options)
    key = os.environ.get(settings.api_key_env)
    if not key:
        others = "" if settings.api_key_env != KEY_ENVS[0] else f" (or ${KEY_ENVS[1]})"
        raise RemoteModelError(f"{ADAPTER}: no API key: set ${settings.api_key_env}{others}")
    genai = _import_genai()
    from google.genai import types

    http_options = types.HttpOptions(
        base_url=settings.url, api_version=settings.api_version, timeout=int(settings.timeout_s * 1000)
    )
    client = genai.Client(api_key=key, vertexai=False, http_options=http_options)
    _check_model(client, settings, Secrets.of(key))
    return Gemini(settings, client, key=key)
