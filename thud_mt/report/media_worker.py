"""The media worker: a Python process of its own that runs encoding jobs for the Allure attachments.

The parent sends ``(job id, function, arguments)`` pickled on the worker's
stdin and reads ``(job id, ok, result or error text)`` back from its stdout,
each message prefixed by its length. A plain ``python -m`` subprocess rather
than ``multiprocessing``: spawning there re-imports the parent's ``__main__``
in the child, so a script that calls ``pytest.main()`` would run its session
twice. Functions travel by name (pickle), so they must be importable: the
worker gets the parent's ``sys.path``.

``WorkerProcess`` is a ``concurrent.futures.Executor``: ``submit`` queues the
job for a writer thread (a job bigger than the pipe's buffer would otherwise
block the test until the worker read it) and returns a future that a reader
thread resolves. When the worker dies, every pending future fails with the
reason, and so does every later ``submit``.
"""

from __future__ import annotations

import itertools
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import BinaryIO

_HEADER = struct.Struct(">Q")


class MediaWorkerError(RuntimeError):
    """A job failed in the worker, or the worker is gone."""


def _send(stream: BinaryIO, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: BinaryIO) -> object | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None  # the other side closed the pipe
    (size,) = _HEADER.unpack(header)
    return pickle.loads(stream.read(size))


def serve(inbox: BinaryIO, outbox: BinaryIO) -> None:
    """The worker's loop: run jobs in order until stdin closes."""
    while (message := _receive(inbox)) is not None:
        job, function, args = message  # type: ignore[misc]
        try:
            _send(outbox, (job, True, function(*args)))
        except Exception as exc:  # reported to the parent, which names the attachment; the next job runs
            _send(outbox, (job, False, f"{type(exc).__name__}: {exc}"))


class WorkerProcess(Executor):
    """One worker process, started on the first ``submit``."""

    def __init__(self, max_queued: int = 512) -> None:
        self._jobs: queue.Queue[tuple[int, Callable[..., object], tuple] | None] = queue.Queue(max_queued)
        self._futures: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._process: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._broken: str | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        # stderr: nowhere (pytest would file it under whichever test happens to run); job errors come back as
        # messages, and a dead worker's exit code is reported.
        command = [sys.executable, "-m", "thud_mt.report.media_worker"]
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
        self._threads = [
            threading.Thread(target=self._write, args=(process,), name="thud-media-writer", daemon=True),
            threading.Thread(target=self._read, args=(process,), name="thud-media-reader", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return process

    def submit(self, fn: Callable[..., object], /, *args: object, **kwargs: object) -> Future:
        if kwargs:
            raise TypeError("the media worker takes positional arguments only")
        future: Future = Future()
        with self._lock:
            if self._broken is not None:
                future.set_exception(MediaWorkerError(self._broken))
                return future
            if self._process is None:
                self._process = self._start()
            job = next(self._ids)
            self._futures[job] = future
        self._jobs.put((job, fn, args))  # waits when max_queued jobs are ahead: memory stays bounded
        return future

    def _write(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None
        try:
            while (item := self._jobs.get()) is not None:
                _send(process.stdin, item)
            process.stdin.close()  # no more jobs: the worker finishes the queue and exits
        except (OSError, pickle.PicklingError) as exc:
            self._fail_all(f"could not send a job to the media worker: {exc}")

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        while (message := _receive(process.stdout)) is not None:
            job, ok, value = message  # type: ignore[misc]
            with self._lock:
                future = self._futures.pop(job)
            if ok:
                future.set_result(value)
            else:
                future.set_exception(MediaWorkerError(value))
        code = process.wait()
        self._fail_all(f"the media worker exited (code {code}) before finishing")

    def _fail_all(self, reason: str) -> None:
        with self._lock:
            self._broken = self._broken or reason
            pending, self._futures = self._futures, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(MediaWorkerError(reason))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            process, self._broken = self._process, self._broken or "the media worker was shut down"
        if process is None:
            return
        self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


def main() -> None:
    # The replies get a private copy of stdout; whatever a library prints goes to stderr instead of into them.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
