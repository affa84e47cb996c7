"""Artefacts derived from a corpus (the listener's exemplar sounds, swap donor lists), cached on disk.

Every process of a session needs them, and each costs decoding and analysing
clips: with pytest-xdist every worker would redo the work, and so would every
run. They are stored under ``<thud cache>/derived/<kind>/<key>`` where the key
is a sha256 of everything that decides the value:

- the corpus content (``corpus_digest``): each clip's id, annotated events and
  the bytes of its media file, so an edited or replaced clip is a new key;
- the code (``code_digest``): the source of every ``thud_mt`` module and the
  versions of the numeric and media libraries that compute the value;
- the caller's own parameters (settings, the recipient clip).

The first process to need a value computes it under a file lock while the
others wait, then every process and every later run reads it. A file that
cannot be read back (truncated, from another format) is computed again and
replaced; a cache that cannot be written costs only the reuse, never the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import weakref
from collections.abc import Callable
from contextlib import ExitStack, suppress
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from thud_mt.locking import file_lock

# Bumped when how keys are made changes: old files then never match.
KEY_FORMAT = "thud-derived/1"
# Libraries whose version can change a derived value (decoding, resampling, spectra).
LIBRARIES = ("numpy", "scipy", "av")

T = TypeVar("T")


@cache
def code_digest() -> str:
    """sha256 of the ``thud_mt`` sources and the library versions: any code change is a new key."""
    package = Path(__file__).resolve().parent
    h = hashlib.sha256(KEY_FORMAT.encode())
    for path in sorted(package.rglob("*.py")):
        h.update(f"\0{path.relative_to(package).as_posix()}\0".encode())
        h.update(path.read_bytes())
    for name in LIBRARIES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "absent"
        h.update(f"\0{name}={version}".encode())
    return h.hexdigest()


# id(corpus) -> (weak reference, digest): the model and the runner of a session share one hashing.
_corpus_memo: dict[int, tuple[Callable[[], Any], str]] = {}


def corpus_digest(corpus: Any) -> str:
    """sha256 of what a corpus holds: each clip's id, events and media bytes, in manifest order.

    A media file that cannot be read is hashed as its error, so a value
    derived while it was missing is not reused once it is back. Computed once
    per corpus object: a session's corpus is a snapshot.
    """
    hit = _corpus_memo.get(id(corpus))
    if hit is not None and hit[0]() is corpus:
        return hit[1]
    digest = _corpus_digest(corpus)
    with suppress(TypeError):  # a corpus that is not weakly referenceable is not memoised
        _corpus_memo[id(corpus)] = (weakref.ref(corpus), digest)
    return digest


def _corpus_digest(corpus: Any) -> str:
    h = hashlib.sha256(KEY_FORMAT.encode())
    for entry in corpus.entries:
        events = [(e.label, e.visual_time, e.audio_time, e.sound) for e in entry.events]
        h.update(f"\0clip {entry.id!r} {events!r}\0".encode())
        h.update(_file_digest(Path(entry.path)).encode())
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        return f"unreadable: {type(exc).__name__} {exc.strerror}"


def derived_key(*parts: str) -> str:
    """The key of a value: the code digest and the caller's parts (a corpus digest, settings, ids)."""
    h = hashlib.sha256(code_digest().encode())
    for part in parts:
        h.update(b"\0" + part.encode())
    return h.hexdigest()


class DerivedCache:
    """Values computed once per key by whichever process gets there first, then read by all."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def fetch(
        self,
        kind: str,
        key: str,
        compute: Callable[[], T],
        dump: Callable[[T], bytes],
        load: Callable[[bytes], T],
    ) -> T:
        """The stored value for ``key``, else ``compute()``, stored with ``dump`` and read with ``load``."""
        path = self.path(kind, key)
        found = self._read(path, load)
        if found is not None:
            return found[0]
        with ExitStack() as stack:
            try:
                stack.enter_context(file_lock(path.parent / f".{key}.lock"))
            except OSError as exc:  # an unwritable cache folder: compute here, reuse nothing
                warnings.warn(f"{path}: derived-value cache unusable ({exc}); computing without it", stacklevel=2)
                return compute()
            found = self._read(path, load, warn=False)  # another process may have stored it meanwhile
            if found is not None:
                return found[0]
            value = compute()
            self._store(path, dump(value))
            return value

    def fetch_json(self, kind: str, key: str, compute: Callable[[], Any]) -> Any:
        """``fetch`` for a JSON value (lists, dicts, strings, numbers)."""

        def dump(value: Any) -> bytes:
            return json.dumps(value, allow_nan=False).encode()

        return self.fetch(kind, key, compute, dump, json.loads)

    @staticmethod
    def _read(path: Path, load: Callable[[bytes], T], *, warn: bool = True) -> tuple[T] | None:
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if warn:
                warnings.warn(f"{path}: cannot read a cached derived value ({exc}); computing it again", stacklevel=3)
            return None
        try:
            return (load(data),)
        except Exception as exc:  # a damaged or foreign file: recompute and replace it
            if warn:
                warnings.warn(f"{path}: unreadable cached derived value ({exc}); computing it again", stacklevel=3)
            return None

    @staticmethod
    def _store(path: Path, data: bytes) -> None:
        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)  # atomic: a reader sees no file or the whole new one, never a part
        except OSError as exc:  # a full disk costs the reuse, not the value
            warnings.warn(f"{path}: cannot store a derived value ({exc}); it will be computed again", stacklevel=3)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
