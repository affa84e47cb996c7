"""thud-mt: metamorphic tests of whether video models really hear."""

from thud_mt.clip import Clip, Edit, Event, Provenance
from thud_mt.errors import (
    CorpusBuildError,
    CorruptMediaError,
    DonorError,
    EmptyMediaError,
    InterventionError,
    ManifestError,
    ManifestPathError,
    MediaError,
    MediaNotFoundError,
    MediaTooLargeError,
    NoAudioStreamError,
    NoVideoStreamError,
    ThudError,
    UnsupportedCodecError,
)

__version__ = "0.1.0"

__all__ = [
    "Clip",
    "CorpusBuildError",
    "CorruptMediaError",
    "DonorError",
    "Edit",
    "EmptyMediaError",
    "Event",
    "InterventionError",
    "ManifestError",
    "ManifestPathError",
    "MediaError",
    "MediaNotFoundError",
    "MediaTooLargeError",
    "NoAudioStreamError",
    "NoVideoStreamError",
    "Provenance",
    "ThudError",
    "UnsupportedCodecError",
    "__version__",
]
