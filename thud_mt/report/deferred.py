"""Allure attachment files whose bytes are made by a worker process while the tests go on.

allure-pytest writes an attachment's file at the moment it is attached, and an
attachment belongs to the test (or step) running then. Encoding media takes
milliseconds per attachment; done in the test process it adds a third to a
failing run. So the test attaches a ``Pending`` body instead: allure records
the attachment in its step as usual and writes an empty file; this object, an
allure logger plugin, hears the file name allure chose
(``report_attached_data``, called after allure's own writer), and when the
worker has made the bytes, replaces the empty file with them, atomically.

The worker is a process (``media_worker.py``): a thread would share the GIL
with the tests, and the runner hands every model call to a thread of its own,
so each hand-off would wait for the encoder. Jobs are picklable descriptions
(``preview.PreviewJob``, ``waveform.WaveformJob``), not clips.

``close`` waits for every file; the pytest plugin calls it when the session
ends. A file whose bytes could not be made stays empty, and ``close`` names it
on stderr.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path

from allure_commons import hookimpl, plugin_manager

from thud_mt.report.media_worker import WorkerProcess


class Pending(bytes):
    """An attachment body still being made: written as an empty file, filled by ``DeferredFiles``."""

    future: Future[bytes]
    label: str

    def __new__(cls, future: Future[bytes], label: str) -> Pending:
        body = super().__new__(cls, b"")
        body.future, body.label = future, label
        return body


class DeferredFiles:
    def __init__(self, folder: Path, executor: Executor | None = None) -> None:
        self.folder = Path(folder)
        self.problems: list[str] = []
        self._executor = executor or WorkerProcess()  # started on the first job
        self._lock = threading.Lock()
        self._closed = False
        plugin_manager.register(self)

    def submit(self, make: Callable[..., bytes], *args: object) -> Future[bytes]:
        """``make(*args)`` on the worker; ``make`` and ``args`` must pickle."""
        return self._executor.submit(make, *args)

    @hookimpl(trylast=True)  # after allure's own writer has put the empty file there
    def report_attached_data(self, body: object, file_name: str) -> None:
        if isinstance(body, Pending):
            body.future.add_done_callback(functools.partial(self._fill, file_name, body.label))

    def _fill(self, file_name: str, label: str, future: Future[bytes]) -> None:
        target = self.folder / file_name
        try:
            data = future.result()
            staging = target.with_name(f".{file_name}.thud")
            staging.write_bytes(data)
            os.replace(staging, target)
        except Exception as exc:  # one clip that cannot be encoded must not stop the others
            with self._lock:
                self.problems.append(f"{label}: {type(exc).__name__}: {exc}")

    def close(self) -> list[str]:
        """Wait for every pending file; report (stderr) and return the attachments left empty."""
        if self._closed:
            return self.problems
        self._closed = True
        self._executor.shutdown(wait=True)
        plugin_manager.unregister(self)
        if self.problems:
            shown = "\n  ".join(self.problems[:20])
            more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
            sys.stderr.write(f"thud: {len(self.problems)} Allure attachment(s) left empty:\n  {shown}{more}\n")
        return self.problems
