"""What a remote model is sent, and how its reply is read back: shared by the API adapters.

Media: ``clip_mp4`` is the clip as the corpus would store it (H.264 + AAC, its
*edited* audio muxed in), ``clip_wav`` its audio alone as 16-bit PCM, both
memoised by media digest because every probe and paraphrase of a case sends
the same clip. ``data_url`` wraps bytes for JSON APIs.

Replies: ``choice_scores`` turns token log-probabilities into a score per
allowed answer (see there for the approximation); ``Secrets.redact`` keeps API
keys out of every string an adapter hands back, because servers do echo
request headers in error bodies; ``http_problem`` words an HTTP failure in one
line.
"""

from __future__ import annotations

import base64
import hashlib
import http
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from thud_mt.cache import media_digest
from thud_mt.clip import Clip
from thud_mt.errors import ThudError
from thud_mt.media import encode_wav, write_clip
from thud_mt.probes import Question

# Encoded clips kept per process: a case asks several probes about one original and one edited clip.
MEDIA_MEMO = 32
# How much of a server's own error message a case error quotes.
SERVER_MESSAGE_CHARS = 200


class RemoteModelError(ThudError):
    """A remote model that cannot be used at all: no server, key refused, unknown model, client not installed."""


# --- media --------------------------------------------------------------------------------------------------------


class _Memo:
    """A small thread-safe LRU of encoded media, keyed by (kind, media digest)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str], make: Callable[[], bytes]) -> bytes:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = make()  # outside the lock: encodes of different clips run in parallel
        with self._lock:
            self._items[key] = data
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return data


_memo = _Memo(MEDIA_MEMO)


def clip_mp4(clip: Clip) -> bytes:
    """The clip as an H.264 + AAC mp4 (``media.write_clip``): its picture with its current, edited audio."""

    def encode() -> bytes:
        with tempfile.TemporaryDirectory(prefix="thud-payload-") as tmp:
            path = write_clip(clip, Path(tmp) / "clip.mp4")
            return path.read_bytes()

    return _memo.get(("mp4", media_digest(clip)), encode)


def clip_wav(clip: Clip) -> bytes:
    """The clip's audio as a 16-bit PCM wav at the clip's own rate and channel count."""

    return _memo.get(("wav", media_digest(clip)), lambda: encode_wav(clip.audio, clip.sample_rate))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_url(data: bytes, mime: str) -> str:
    """``data:MIME;base64,...``: how Chat Completions servers take inline media."""
    return f"data:{mime};base64,{b64(data)}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- secrets ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    """Values that must never leave the adapter: every returned string goes through ``redact``."""

    values: tuple[str, ...] = ()

    @staticmethod
    def of(*values: str | None) -> Secrets:
        # Very short values ("EMPTY", "-") are placeholders, and redacting them would mangle answers.
        return Secrets(tuple(v for v in values if v and len(v) >= 8))

    def redact(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, "***")
        return text

    def redact_all(self, value: object) -> object:
        """``redact`` through mappings and sequences (answer metadata)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self.redact(str(k)): self.redact_all(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_all(v) for v in value]
        return value


# --- errors -------------------------------------------------------------------------------------------------------


def one_line(text: object, limit: int = SERVER_MESSAGE_CHARS) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def status_phrase(code: int) -> str:
    """``"HTTP 429 Too Many Requests"``; an unassigned code is shown bare."""
    try:
        return f"HTTP {code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return f"HTTP {code}"


def server_message(body: object) -> str:
    """The human part of an error body: ``{"error": {"message": ...}}``, ``{"message": ...}`` or the text."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return one_line(inner["message"])
        if isinstance(inner, str):
            return one_line(inner)
        if body.get("message"):
            return one_line(body["message"])
    if isinstance(body, list) and len(body) == 1:
        return server_message(body[0])
    return one_line(body) if body not in (None, "", b"") else ""


def http_problem(code: int, message: str, *, attempts: int, key_hint: str, key_refused: bool = False) -> str:
    """One line for a failed request: what the status means here, the server's words, the attempts made.

    ``key_refused`` marks a refusal an API words with another status (Gemini answers a bad key with 400).
    """
    head = status_phrase(code)
    if key_refused or code in (401, 403):
        what = f"key refused ({key_hint})"
    elif code == 404:
        what = "not found (check --model-url and --model-name)"
    elif code == 429:
        what = "rate limited"
    elif code >= 500:
        what = "server error"
    else:
        what = "request refused"
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    said = f": {message}" if message else ""
    return f"{head}: {what}{tries}{said}"


def exception_kind(exc: BaseException) -> str:
    """``timeout``, ``connection`` or ``other``, by class name, so any HTTP library's errors are recognised."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"TimeoutError", "TimeoutException", "APITimeoutError", "ReadTimeout", "ConnectTimeout"}:
        return "timeout"
    if names & {"ConnectionError", "ConnectError", "APIConnectionError", "NetworkError", "RemoteProtocolError"}:
        return "connection"
    return "other"


# --- log-probabilities ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenStep:
    """One generated token, its log-probability, and the top alternatives the server reported there."""

    token: str
    logprob: float
    alternatives: tuple[tuple[str, float], ...] = ()


_OPTION = re.compile(r"^\(([A-Za-z])\)\s")


def choice_forms(choice: str) -> tuple[str, ...]:
    """How a model may write a choice: itself, and for a lettered option ``(B) ...`` also ``(B)`` and ``B``."""
    forms = [choice.casefold()]
    letter = _OPTION.match(choice)
    if letter:
        forms += [f"({letter.group(1)})".casefold(), letter.group(1).casefold()]
    return tuple(forms)


def _consume(token: str, remaining: str) -> str | None:
    """What is left of ``remaining`` after ``token``, or None when the token does not continue it."""
    t = token.casefold().lstrip()
    r = remaining.lstrip()
    if not t:
        return remaining  # a whitespace token continues anything
    if r.startswith(t):
        return r[len(t) :]
    # A token that finishes the form and runs on into punctuation ("Yes." for "yes") completes it.
    if r and t.startswith(r) and not t[len(r)].isalnum():
        return ""
    return None


def _form_score(form: str, steps: Sequence[TokenStep]) -> float | None:
    remaining, score = form, 0.0
    for step in steps:
        if not remaining.strip():
            return score
        after = _consume(step.token, remaining)
        if after is not None:
            score += step.logprob
            remaining = after
            continue
        branches = [lp for tok, lp in step.alternatives if tok.strip() and _consume(tok, remaining) is not None]
        return score + max(branches) if branches else None
    return score if remaining != form else None


def choice_scores(question: Question, steps: Sequence[TokenStep]) -> dict[str, float]:
    """Log-probability of each of ``question.choices`` read off one generated answer.

    The approximation: a choice's score is the summed log-probability of the
    generated tokens while they spell the choice, plus, where the choice
    departs from what was generated, the best top-k alternative token that
    continues it; whatever follows that branch point is taken as certain
    (no server reports probabilities past a token it did not generate). For
    "yes"/"no" this is exactly the first token's log-probability; for
    "audio delayed"/"audio early" it is decided at the second token. A choice
    that never appears among the alternatives gets no score, and no scores at
    all (a preamble such as "The answer is ...") means the caller falls back
    to the text.
    """
    scores: dict[str, float] = {}
    for choice in question.choices:
        found = [s for s in (_form_score(form, steps) for form in choice_forms(choice)) if s is not None]
        if found:
            scores[choice] = max(found)
    return scores


# --- options ------------------------------------------------------------------------------------------------------


def check_option_keys(extra: Mapping[str, str], known: Iterable[str], adapter: str) -> None:
    """Refuse a ``--model-option`` the adapter does not know: a typo must not silently change nothing."""
    known = sorted(known)
    unknown = sorted(set(extra) - set(known))
    if unknown:
        raise RemoteModelError(
            f"{adapter}: unknown --model-option {', '.join(unknown)}; this adapter takes {', '.join(known)}"
        )


def option_flag(extra: Mapping[str, str], key: str, default: bool, adapter: str) -> bool:
    """A ``true|false`` ``--model-option``; anything else is a ``RemoteModelError`` naming the option."""
    raw = extra.get(key, "").strip().casefold()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise RemoteModelError(f"{adapter}: --model-option {key}={extra[key]!r}: expected true or false")


def option_number(extra: Mapping[str, str], key: str, default: float, adapter: str, *, low: float = 0.0) -> float:
    """A numeric ``--model-option`` (at least ``low``); a bad value is a ``RemoteModelError`` naming it."""
    raw = extra.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RemoteModelError(f"{adapter}: --model-option {key}={raw!r}: expected a number") from None
    if not value >= low:  # also refuses nan
        raise RemoteModelError(f"{adapter}: --model-option {key}={raw!r}: must be at least {low:g}")
    return value


def option_choice(extra: Mapping[str, str], key: str, allowed: Sequence[str], default: str, adapter: str) -> str:
    raw = extra.get(key, "").strip() or default
    if raw not in allowed:
        raise RemoteModelError(f"{adapter}: --model-option {key}={raw!r}: expected one of {', '.join(allowed)}")
    return raw
