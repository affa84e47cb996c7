"""The error hierarchy: every failure a user can cause is a ``ThudError``.

Each subclass names one problem; messages always name the file (or case) and
what is wrong with it, so a failing session says what to fix.
"""

from __future__ import annotations

from pathlib import Path


class ThudError(Exception):
    """Base of every error thud-mt raises on bad input."""


class MediaError(ThudError):
    """A media file that cannot be used; ``path`` names it."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MediaNotFoundError(MediaError):
    """The file does not exist."""


class EmptyMediaError(MediaError):
    """The file is zero bytes long, or decodes to no frames / samples."""


class CorruptMediaError(MediaError):
    """The container is truncated or not a media file at all."""


class NoVideoStreamError(MediaError):
    """The file has no video stream (an audio-only file given as a clip)."""


class NoAudioStreamError(MediaError):
    """The file has no audio stream, and the caller asked for one."""


class UnsupportedCodecError(MediaError):
    """FFmpeg (as bundled with PyAV) has no decoder for a stream's codec."""


class MediaTooLargeError(MediaError):
    """Frame size, duration or decoded size past the configured limits."""


class InterventionError(ThudError):
    """An edit that cannot be applied to the clip it was given."""


class LineError(ThudError):
    """A line-based file (results, pairs) that cannot be used; names the file and the 1-based line."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {problem}")


class ManifestError(ThudError):
    """A corpus manifest that is malformed; names the file and JSON pointer."""

    def __init__(self, path: str | Path, pointer: str, problem: str) -> None:
        self.path = str(path)
        self.pointer = pointer or "/"
        self.problem = problem
        super().__init__(f"{self.path} at {self.pointer}: {problem}")


class ManifestPathError(ManifestError):
    """A clip path that is missing or escapes the manifest's folder."""


class DonorError(ThudError):
    """No clip can serve as a swap donor for the recipient named."""


class CorpusBuildError(ThudError):
    """A corpus could not be built (a package that cannot be fetched, ...)."""
