"""Appending JSON Lines that several processes share and that survive SIGKILL.

pytest-xdist workers append to one results file and one pairs file. Each
record is one ``write`` under an exclusive ``flock``, so records never
interleave. One ``write`` is not atomic against SIGKILL, though: Linux stops
copying a large buffer when a fatal signal arrives, so a killed writer can
leave its last line unfinished. Readers skip such a tail and the next writer,
holding the lock, cuts it off before it appends, so every finished record
survives and no record is glued to a fragment.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def no_constants(name: str) -> Any:
    """``json.loads(parse_constant=...)``: NaN and Infinity are not JSON, so a record with them is refused."""
    raise ValueError(f"{name} is not JSON")


class LockedFile:
    """The file while its lock is held: read what other processes appended, append whole lines."""

    def __init__(self, fd: int, newline_first: bool, fsync: bool) -> None:
        self.fd = fd
        self._newline_first = newline_first
        self._fsync = fsync

    @property
    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the file."""
        chunks: list[bytes] = []
        while start < end:
            chunk = os.pread(self.fd, min(end - start, 1 << 20), start)
            if not chunk:
                break
            chunks.append(chunk)
            start += len(chunk)
        return b"".join(chunks)

    def append(self, data: bytes) -> None:
        """Append ``data`` (whole lines, each ending in a newline) with as few ``write`` calls as it takes."""
        if self._newline_first:  # a whole record that lacked its newline (a hand-edited file) stays whole
            data = b"\n" + data
            self._newline_first = False
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        if self._fsync:
            os.fsync(self.fd)


class JsonLinesAppender:
    """An append-only JSON Lines file shared by threads and processes.

    ``locked()`` holds a thread lock and an exclusive ``flock`` and repairs an
    unfinished tail first, so inside it the file ends with whole lines only.
    ``fsync=True`` also survives a machine crash, at a cost per record.
    """

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd = -1
        self._pid = -1
        self._open()

    def _open(self) -> int:
        # After a fork the child shares the parent's open file and so its flock: it opens its own.
        if self._fd >= 0 and self._pid == os.getpid():
            return self._fd
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._pid = os.getpid()
        return self._fd

    @contextmanager
    def locked(self) -> Iterator[LockedFile]:
        with self._lock:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield LockedFile(fd, repair_tail(fd), self.fsync)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def append(self, data: bytes) -> None:
        with self.locked() as file:
            file.append(data)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0 and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = -1


def repair_tail(fd: int) -> bool:
    """Deal with a last line that has no newline; True if the next record must start a new line.

    Called under the lock, so no live writer is mid-record: an unfinished
    line was left by a killed one and is cut off. A whole JSON object
    without its newline (an edited file) is kept.
    """
    size = os.fstat(fd).st_size
    if not size or os.pread(fd, 1, size - 1) == b"\n":
        return False
    start = size
    while start > 0:
        chunk = os.pread(fd, min(start, 1 << 16), max(0, start - (1 << 16)))
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            start = start - len(chunk) + cut + 1
            break
        start -= len(chunk)
    tail = os.pread(fd, size - start, start)
    try:
        json.loads(tail, parse_constant=no_constants)
    except ValueError:
        os.ftruncate(fd, start)
        return False
    return True
