"""What goes wrong before training starts: each error names the file, folder or option to fix."""

from __future__ import annotations

from thud_mt.errors import ThudError


class AlignmentError(ThudError):
    """A training run that cannot start (or go on); the message says what to fix."""


class MixError(AlignmentError):
    """The stage-2 mix is empty, or its ratio of general to intervention pairs cannot be met."""


class OutputFolderError(AlignmentError):
    """The output folder holds an earlier run and ``--resume`` was not given (or it cannot be resumed)."""
