"""Cassettes: a real model's answers recorded once, replayed with ``--model=replay:PATH`` (e.g. in CI).

Recording: ``pytest suites/ --model=gemini --thud-record answers.jsonl`` (or
``record(model, path)`` in code) wraps the session's model so every answer it
gives is appended to the cassette. Replaying: ``--model=replay:answers.jsonl``
answers each question with the recorded answer to the same question about the
same media, without the model.

A cassette is JSON Lines. A header line names the recorded model::

    {"cassette": "thud-cassette/1", "model": "gemini", "fingerprint": "...", "capabilities": {...}}

and every other line is one answer::

    {"probe": "presence", "prompt": "...", "media": "<media_digest>", "sample": 0, "clip": "...",
     "text": "Yes.", "scores": null, "meta": {...}}

An answer is found by (probe, prompt, media digest, sample): the media digest
(``thud_mt.cache.media_digest``) covers the frames and the edited audio, so a
replay matches only the same corpus, the same edit parameters (Hypothesis
draws are the same every run unless ``--thud-explore``) and the same encoder.
A question the cassette lacks is an error case naming it. Failed calls are not
recorded, as the answer cache does not store them. Concatenated cassettes of
one model are one cassette (every header must name the same fingerprint).

The replay's fingerprint is the recorded model's, so answer-cache keys agree
with the recorded run; its name is ``replay:<recorded name>``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from thud_mt.cache import Cache, CacheStats, media_digest
from thud_mt.errors import ThudError
from thud_mt.models.base import Answer, Capabilities, Model, Query
from thud_mt.models.registry import ModelOptions, ModelSpecError

CASSETTE_FORMAT = "thud-cassette/1"

Key = tuple[str, str, str, int]  # probe, prompt, media digest, sample


class CassetteError(ThudError):
    """A cassette that cannot be used; names the file and (1-based) line."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"cassette {where}: {problem}")


def _key(query: Query) -> Key:
    return (query.question.probe, query.question.text, media_digest(query.clip), int(query.sample))


def _jsonable(value: object) -> object:
    """Answer metadata as JSON: what is not JSON is kept as its string, never lost to an exception."""
    return json.loads(json.dumps(value, default=str))


def _header(model: Model) -> dict[str, object]:
    return {
        "cassette": CASSETTE_FORMAT,
        "model": model.name,
        "fingerprint": model.fingerprint,
        "capabilities": dataclasses.asdict(model.capabilities),
    }


# --------------------------------------------------------------------------------------------- recording


class RecordingModel:
    """Any model, its answers appended to a cassette as they are given."""

    def __init__(self, inner: Model, path: str | Path) -> None:
        self.inner = inner
        self.path = Path(path)
        self.name = inner.name
        self.capabilities = inner.capabilities
        self._lock = threading.Lock()
        self._checked = False

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        answers = self.inner.answer(queries)
        if isinstance(answers, list) and len(answers) == len(queries):  # anything else the runner reports
            lines = [self._line(q, a) for q, a in zip(queries, answers, strict=True) if a.error is None]
            if lines:
                self._append(lines)
        return answers

    @staticmethod
    def _line(query: Query, answer: Answer) -> str:
        entry = {
            "probe": query.question.probe,
            "prompt": query.question.text,
            "media": media_digest(query.clip),
            "sample": int(query.sample),
            "clip": query.clip.id,
            "text": answer.text,
            "scores": None if answer.scores is None else {str(k): float(v) for k, v in answer.scores.items()},
            "meta": _jsonable(dict(answer.meta)),
        }
        return json.dumps(entry, ensure_ascii=False, sort_keys=True)

    def _append(self, lines: list[str]) -> None:
        """One ``write`` under an exclusive ``flock``: threads and pytest-xdist workers append whole lines."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                text = "\n".join(lines) + "\n"
                if os.fstat(fd).st_size == 0:
                    text = json.dumps(_header(self.inner), sort_keys=True) + "\n" + text
                elif not self._checked:
                    self.check()
                self._checked = True
                os.write(fd, text.encode())
            finally:
                os.close(fd)

    def check(self) -> None:
        """Refuse to add one model's answers to another model's cassette."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        header = _read_header(self.path)
        if header.get("fingerprint") != self.fingerprint:
            raise CassetteError(
                self.path,
                1,
                f"holds answers of {header.get('model')!r} ({header.get('fingerprint')}), not of "
                f"{self.name!r} ({self.fingerprint}); record to another file",
            )


def record(model: Model, path: str | Path) -> RecordingModel:
    """``model`` with every answer it gives appended to the cassette at ``path`` (created when missing)."""
    recorder = RecordingModel(model, path)
    recorder.check()
    return recorder


class SessionOnlyCache:
    """A cache that only returns answers stored in this process.

    ``--thud-record`` uses it: an answer stored by an earlier session never
    reaches the model wrapper, so the cassette would miss it; answers given in
    this session are still reused (a clip asked by several relations is asked once).
    """

    def __init__(self, inner: Cache) -> None:
        self.inner = inner
        self._mine: set[str] = set()
        self._lock = threading.Lock()
        self._skipped_reads = 0

    def get(self, key: str) -> Answer | None:
        with self._lock:
            mine = key in self._mine
            self._skipped_reads += not mine
        return self.inner.get(key) if mine else None

    def put(self, key: str, answer: Answer) -> bool:
        stored = self.inner.put(key, answer)
        if stored:
            with self._lock:
                self._mine.add(key)
        return stored

    def stats(self) -> CacheStats:
        inner = self.inner.stats()
        with self._lock:
            return dataclasses.replace(inner, misses=inner.misses + self._skipped_reads)

    def clear(self) -> None:
        self.inner.clear()

    def close(self) -> None:
        self.inner.close()


def session_only(cache: Cache) -> SessionOnlyCache:
    return SessionOnlyCache(cache)


# --------------------------------------------------------------------------------------------- replaying


def _lines(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CassetteError(path, None, "no such file (record one with --thud-record PATH)") from None
    except OSError as exc:
        raise CassetteError(path, None, f"cannot read it ({exc.strerror})") from None
    text = raw.decode("utf-8", errors="replace")
    rows = text.split("\n")
    for number, line in enumerate(rows, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(rows):  # no newline after it: a write cut short by a killed run
                warnings.warn(f"cassette {path}:{number}: skipping an unfinished last line", stacklevel=3)
                continue
            raise CassetteError(path, number, f"not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(value, dict):
            raise CassetteError(path, number, f"expected a JSON object, got {type(value).__name__}")
        yield number, value


def _read_header(path: Path) -> dict:
    for number, row in _lines(path):
        if row.get("cassette") is None:
            raise CassetteError(path, number, "the first line is not a cassette header; is this a cassette?")
        return row
    raise CassetteError(path, None, "is empty: the recorded session gave no answers")


_ENTRY_FIELDS: Mapping[str, type] = {
    "probe": str,
    "prompt": str,
    "media": str,
    "sample": int,
    "text": str,
}


def load_cassette(path: str | Path) -> tuple[dict, dict[Key, dict]]:
    """The header and the answers of a cassette, by key; the last answer to a question wins."""
    path = Path(path)
    header: dict | None = None
    entries: dict[Key, dict] = {}
    for number, row in _lines(path):
        if "cassette" in row:
            if row["cassette"] != CASSETTE_FORMAT:
                raise CassetteError(path, number, f"format {row['cassette']!r}; this thud-mt reads {CASSETTE_FORMAT!r}")
            if header is not None and row.get("fingerprint") != header.get("fingerprint"):
                raise CassetteError(path, number, "a second header names another model: one cassette, one model")
            header = header or row
            continue
        if header is None:
            raise CassetteError(path, number, "an answer before the header line; is this a cassette?")
        for name, kind in _ENTRY_FIELDS.items():
            if not isinstance(row.get(name), kind) or isinstance(row.get(name), bool):
                raise CassetteError(path, number, f"{name!r} is missing or not a {kind.__name__}")
        scores = row.get("scores")
        if scores is not None and not (
            isinstance(scores, dict) and all(isinstance(v, (int, float)) for v in scores.values())
        ):
            raise CassetteError(path, number, "'scores' must be null or an object of numbers")
        entries[(row["probe"], row["prompt"], row["media"], row["sample"])] = row
    if header is None:
        raise CassetteError(path, None, "is empty: the recorded session gave no answers")
    if not isinstance(header.get("fingerprint"), str) or not isinstance(header.get("model"), str):
        raise CassetteError(path, 1, "the header lacks the recorded model's name or fingerprint")
    return header, entries


class Replay:
    """Answers from a cassette; a question it lacks is an error case, never a guess."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        header, self._entries = load_cassette(self.path)
        self.recorded = str(header["model"])
        self.name = f"replay:{self.recorded}"
        self._fingerprint = str(header["fingerprint"])
        fields = {f.name for f in dataclasses.fields(Capabilities)}
        stored = header.get("capabilities") or {}
        self.capabilities = Capabilities(**{k: v for k, v in stored.items() if k in fields})

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def __len__(self) -> int:
        return len(self._entries)

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        return [self._answer(q) for q in queries]

    def _answer(self, query: Query) -> Answer:
        entry = self._entries.get(_key(query))
        if entry is None:
            sample = f" (sample {query.sample})" if query.sample else ""
            return Answer(
                text="",
                error=f"not in cassette {self.path}: {query.question.probe} question about clip "
                f"{query.clip.id}{sample}; record it again with --thud-record",
            )
        meta = dict(entry.get("meta") or {})
        meta["replayed"] = str(self.path)
        scores = entry.get("scores")
        return Answer(text=entry["text"], scores=None if scores is None else dict(scores), meta=meta)


def replay_factory(path: str) -> Callable[[ModelOptions], Replay]:
    """The factory ``--model=replay:PATH`` resolves to: the cassette is read when the session creates the model."""
    if not path:
        raise ModelSpecError("--model replay:: name the cassette, e.g. --model=replay:path/to/cassette.jsonl")

    def replay(options: ModelOptions) -> Replay:
        return Replay(path)

    return replay
