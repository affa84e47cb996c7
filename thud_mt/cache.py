"""The answer cache: model replies stored by content, so a rerun costs no model calls.

A key is the sha256 of what decides a reply: the model's fingerprint, the probe,
the prompt text, a digest of the media actually sent, the generation settings
and the sample index. The store is one SQLite file in WAL mode, shared by every
process of a session (pytest-xdist workers write to it at once). Failed calls
are never stored, so the next run retries them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Protocol

import numpy as np

from thud_mt.clip import Clip, VideoSource
from thud_mt.errors import MediaNotFoundError, ThudError
from thud_mt.models.base import Answer

# Bumped when what a key or a stored row means changes: old entries then never match.
KEY_FORMAT = "thud-cache-key/1"
MEDIA_FORMAT = "thud-media/1"
# Stored in ``PRAGMA user_version``; a file with another nonzero version is refused, not misread.
DB_VERSION = 1
DEFAULT_BUSY_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class CacheError(ThudError):
    """An answer-cache file that cannot be used; ``path`` names it."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# --- media digests ------------------------------------------------------------------------------------------------

# id(video object) -> {video_source: digest}. Many queries (every probe, paraphrase and
# audio edit of a clip) share one frames object, so its digest is computed once; a
# weakref finalizer drops the entry when the object dies, before its id can be reused.
_frames_memo: dict[int, dict[VideoSource | None, str]] = {}
# (resolved path, size, mtime_ns, inode) -> sha256 of the file: segments of one file share it.
_file_memo: dict[tuple[str, int, int, int], str] = {}
_memo_lock = threading.Lock()


def media_digest(clip: Clip) -> str:
    """sha256 of the media a model is sent: frames, fps, audio and sample rate; not the clip's id or events."""
    header = {
        "format": MEDIA_FORMAT,
        "fps": float(clip.fps),
        "sample_rate": int(clip.sample_rate),
        "n_frames": clip.n_frames,
        "frame_size": list(clip.frame_size),
        "audio_shape": list(clip.audio.shape),
        "frames": _frames_digest(clip),
    }
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    # Fixed little-endian float32 so the same samples hash the same on any machine.
    h.update(np.ascontiguousarray(clip.audio, dtype="<f4").tobytes())
    return h.hexdigest()


def _frames_digest(clip: Clip) -> str:
    video, source = clip.video, clip.video_source
    key = id(video)
    with _memo_lock:
        known = _frames_memo.get(key)
        if known is not None and source in known:
            return known[source]
    digest = _source_digest(source) if source is not None else _array_digest(clip.frames)
    with _memo_lock:
        if key not in _frames_memo:
            _frames_memo[key] = {}
            weakref.finalize(video, _frames_memo.pop, key, None)
        _frames_memo[key][source] = digest
    return digest


def _array_digest(frames: np.ndarray) -> str:
    h = hashlib.sha256(f"array {frames.dtype.str} {frames.shape}\n".encode())
    h.update(np.ascontiguousarray(frames).tobytes())
    return h.hexdigest()


def _source_digest(source: VideoSource) -> str:
    """The frames are the file's unchanged stream: the file and the window name them without decoding."""
    window = f"source {source.stream_index} {source.start!r} {source.end!r} {source.n_frames}\n"
    return hashlib.sha256(window.encode() + _file_digest(Path(source.path)).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MediaNotFoundError(path, "the clip's source video is gone, so its media cannot be hashed") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    with _memo_lock:
        if key in _file_memo:
            return _file_memo[key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    with _memo_lock:
        _file_memo[key] = digest
    return digest


# --- keys ---------------------------------------------------------------------------------------------------------


def cache_key(
    *, fingerprint: str, probe: str, prompt: str, media: str, settings: Mapping[str, object], sample: int
) -> str:
    """sha256 of a canonical JSON of everything that decides an answer.

    ``settings`` must be JSON-able (mappings, sequences, str, numbers, bool, None,
    paths, numpy scalars); anything else raises ``TypeError`` rather than being
    keyed by a ``repr`` that may differ between runs.
    """
    doc = {
        "format": KEY_FORMAT,
        "fingerprint": fingerprint,
        "probe": probe,
        "prompt": prompt,
        "media": media,
        "settings": _canonical(settings, "settings"),
        "sample": int(sample),
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return _canonical(value.item(), where)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v, where) for v in value), key=repr)
    raise TypeError(f"{where}: {type(value).__name__} is not JSON-able, so it cannot be part of a cache key")


def _stored(value: Any) -> Any:
    """Like ``_canonical`` but lossy rather than failing: model metadata must never stop an answer being cached."""
    try:
        return _canonical(value, "meta")
    except TypeError:
        if isinstance(value, Mapping):
            return {str(k): _stored(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_stored(v) for v in value]
        return str(value)


# --- stores -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheStats:
    """What this process did with the cache: lookups that hit or missed, answers written, errors not stored."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    skipped: int = 0


class Cache(Protocol):
    """What the plugin needs of a cache: ``AnswerCache`` and ``NullCache`` both provide it."""

    def get(self, key: str) -> Answer | None: ...

    def put(self, key: str, answer: Answer) -> bool: ...

    def stats(self) -> CacheStats: ...

    def clear(self) -> None: ...

    def close(self) -> None: ...


class AnswerCache:
    """Answers in one SQLite file, safe for several processes and threads at once."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._counts = {"hits": 0, "misses": 0, "writes": 0, "skipped": 0}
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._connection()  # open now, so a bad file fails at startup and not mid-session

    # SQLite connections must not cross a fork: a forked child opens its own.
    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(self.path, f"cannot create the cache folder: {e}") from e
        try:
            conn = sqlite3.connect(
                str(self.path), timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise self._error(e) from e
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            self._setup(conn)
        except sqlite3.Error as e:
            conn.close()
            raise self._error(e) from e
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        # Switching to WAL needs a moment of exclusive access; two workers starting together
        # may both ask, and the loser can get SQLITE_BUSY without the busy handler being
        # consulted, so retry for as long as the busy timeout allows.
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as e:
                if not _is_busy(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        if str(mode).lower() != "wal":
            raise CacheError(self.path, f"SQLite refused WAL mode (got {mode!r}); put the cache on a local disk")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across a killed process
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, DB_VERSION):
                raise CacheError(
                    self.path,
                    f"answer cache format {version}, this thud-mt reads {DB_VERSION}; delete the file to rebuild it",
                )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS answers ("
                " key TEXT PRIMARY KEY, text TEXT NOT NULL, scores TEXT, meta TEXT NOT NULL, created REAL NOT NULL)"
            )
            conn.execute(f"PRAGMA user_version = {DB_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _error(self, e: sqlite3.Error) -> CacheError:
        if _is_busy(e):
            return CacheError(
                self.path, f"locked by another process for more than {self.busy_timeout_s:g} s ({e}); is a run stuck?"
            )
        if _code(e) == "SQLITE_CANTOPEN":
            return CacheError(self.path, f"cannot open or create the answer cache ({e}); is the folder writable?")
        return CacheError(
            self.path,
            f"not a readable answer cache ({e}); delete it (with its -wal and -shm files) and rerun to rebuild it",
        )

    def get(self, key: str) -> Answer | None:
        with self._lock:
            try:
                query = "SELECT text, scores, meta FROM answers WHERE key = ?"
                row = self._connection().execute(query, (key,)).fetchone()
            except sqlite3.Error as e:
                raise self._error(e) from e
            self._counts["hits" if row is not None else "misses"] += 1
        if row is None:
            return None
        text, scores, meta = row
        try:
            return Answer(
                text=text,
                scores=None if scores is None else dict(json.loads(scores)),
                meta=dict(json.loads(meta)),
                cached=True,
            )
        except (ValueError, TypeError) as e:
            raise CacheError(self.path, f"entry {key[:12]}... is damaged ({e}); delete the file to rebuild it") from e

    def put(self, key: str, answer: Answer) -> bool:
        """Store ``answer``; returns False (storing nothing) for an error, so a failed call is retried next run."""
        if answer.error is not None:
            with self._lock:
                self._counts["skipped"] += 1
            return False
        scores = None if answer.scores is None else json.dumps({str(k): float(v) for k, v in answer.scores.items()})
        meta = json.dumps(_stored(dict(answer.meta)), sort_keys=True)
        with self._lock:
            try:
                self._connection().execute(
                    "INSERT OR REPLACE INTO answers (key, text, scores, meta, created) VALUES (?, ?, ?, ?, ?)",
                    (key, answer.text, scores, meta, time.time()),
                )
            except sqlite3.Error as e:
                raise self._error(e) from e
            self._counts["writes"] += 1
        return True

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(**self._counts)

    def __len__(self) -> int:
        with self._lock:
            try:
                return int(self._connection().execute("SELECT COUNT(*) FROM answers").fetchone()[0])
            except sqlite3.Error as e:
                raise self._error(e) from e

    def clear(self) -> None:
        """Delete every stored answer (for all processes); this process's counts are kept."""
        with self._lock:
            try:
                self._connection().execute("DELETE FROM answers")
            except sqlite3.Error as e:
                raise self._error(e) from e

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> AnswerCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullCache:
    """The cache for ``--thud-no-cache``: stores nothing, every lookup misses."""

    path: Path | None = None

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._misses = 0
        self._skipped = 0

    def get(self, key: str) -> Answer | None:
        with self._lock:
            self._misses += 1
        return None

    def put(self, key: str, answer: Answer) -> bool:
        if answer.error is not None:
            with self._lock:
                self._skipped += 1
        return False

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(misses=self._misses, skipped=self._skipped)

    def __len__(self) -> int:
        return 0

    def clear(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullCache:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _code(e: sqlite3.Error) -> str:
    return str(getattr(e, "sqlite_errorname", ""))


def _is_busy(e: sqlite3.Error) -> bool:
    name = _code(e)
    if name:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    return "locked" in str(e) or "busy" in str(e)  # Python 3.10 has no error names
