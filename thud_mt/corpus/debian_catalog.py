"""Which files of which Debian packages make the real-media set, and under what licence.

Each file's ``licence`` is the SPDX id of the ``debian/copyright`` stanza that
covers it (``usr/share/doc/PKG/copyright`` inside the package); ``attribution``
names that stanza's copyright holder and, where the upstream README names
the recordist, them too. Versions are not pinned: the builder takes whatever
apt serves and fails naming the package and file if one has gone.
"""

from __future__ import annotations

from dataclasses import dataclass

from thud_mt.corpus.vocabulary import SOUND_CLASSES

VIDEO = "video"


@dataclass(frozen=True)
class VisualCue:
    """How to time the one visible sound event of a real video.

    The visual time is the first frame of shot ``shot`` (shots are split at
    hard cuts) whose mean luma inside ``roi`` rises ``min_rise`` levels over
    the median of the previous ``baseline_s`` seconds. The audio time is the
    first ``thud_mt.signal.onset_times`` onset (``onset_hop_s``,
    ``onset_threshold_db``) from ``max_audio_lead`` before to ``max_audio_lag``
    after the visual time. Where to look (the ROI) is chosen by a person;
    when, is measured.
    """

    label: str
    sound: str
    description: str
    roi: tuple[float, float, float, float]  # left, top, right, bottom as fractions of the frame
    shot: int = 0
    min_rise: float = 3.0
    baseline_s: float = 0.5
    onset_hop_s: float = 0.01
    onset_threshold_db: float = 6.0
    max_audio_lead: float = 0.1
    max_audio_lag: float = 0.5

    def __post_init__(self) -> None:
        left, top, right, bottom = self.roi
        if not (0.0 <= left < right <= 1.0 and 0.0 <= top < bottom <= 1.0):
            raise ValueError(f"cue {self.label}: roi {self.roi} is not (left, top, right, bottom) within [0, 1]")


@dataclass(frozen=True)
class MediaFile:
    """One file used from a package: a recording of a sound class, or a video with sound."""

    path: str  # inside the package, as dpkg-deb -x lays it out (no leading slash)
    kind: str  # a sound class from SOUND_CLASSES, or VIDEO
    licence: str
    attribution: str
    cue: VisualCue | None = None  # videos only

    def __post_init__(self) -> None:
        if self.path.startswith("/"):
            raise ValueError(f"{self.path}: catalogue paths are relative to the package root")
        if self.kind != VIDEO and self.kind not in SOUND_CLASSES:
            raise ValueError(f"{self.path}: kind {self.kind!r} is neither {VIDEO!r} nor a sound class")
        if (self.kind == VIDEO) != (self.cue is not None):
            raise ValueError(f"{self.path}: a video needs a visual cue and a recording must not have one")

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DebianPackage:
    name: str
    files: tuple[MediaFile, ...]


_LUGARU = "usr/share/games/lugaru/Sounds"
_LUGARU_BY = "Wolfire Games (Lugaru; debian/copyright Files: Data/*)"
_MINETEST = "usr/share/games/minetest/games/minetest_game/mods"
_SCRATCH = "usr/share/scratch/Media/Sounds"
_SCRATCH_BY = "Massachusetts Institute of Technology (Scratch 1.4 media library)"
_SONIC = "usr/share/sonic-pi/samples"


def _minetest_glass(n: int, recordist: str, sound_id: int) -> MediaFile:
    # debian/copyright covers *.ogg with CC-BY-SA-3.0; the mod's README says the
    # freesound originals are CC BY 3.0. The stricter of the two is recorded.
    return MediaFile(
        f"{_MINETEST}/default/sounds/default_break_glass.{n}.ogg",
        "glass",
        "CC-BY-SA-3.0",
        f"{recordist} (freesound.org sound {sound_id}) via Minetest Game, celeron55 and Minetest contributors",
    )


CATALOGUE: tuple[DebianPackage, ...] = (
    DebianPackage(
        "lugaru-data",
        (
            MediaFile(f"{_LUGARU}/Thud.ogg", "thud", "CC-BY-SA-3.0", _LUGARU_BY),
            MediaFile(f"{_LUGARU}/Land2.ogg", "thud", "CC-BY-SA-3.0", _LUGARU_BY),
            MediaFile(f"{_LUGARU}/Bark.ogg", "bark", "CC-BY-SA-3.0", _LUGARU_BY),
        ),
    ),
    DebianPackage(
        "minetest-data",
        (
            MediaFile(
                f"{_MINETEST}/doors/sounds/doors_door_close.ogg",
                "door",
                "CC-BY-3.0",
                "bennstir (Minetest Game doors mod)",
            ),
            _minetest_glass(1, "cmusounddesign", 71947),
            _minetest_glass(2, "Tomlija", 97669),
            _minetest_glass(3, "lsprice", 88808),
        ),
    ),
    DebianPackage(
        "scratch",
        (
            MediaFile(f"{_SCRATCH}/Percussion/HandClap.wav", "clap", "CC-BY-SA-3.0", _SCRATCH_BY),
            MediaFile(f"{_SCRATCH}/Effects/DoorClose.mp3", "door", "CC-BY-SA-3.0", _SCRATCH_BY),
            MediaFile(f"{_SCRATCH}/Effects/BellToll.wav", "bell", "CC-BY-SA-3.0", _SCRATCH_BY),
            MediaFile(f"{_SCRATCH}/Animal/Dog1.wav", "bark", "CC-BY-SA-3.0", _SCRATCH_BY),
            MediaFile(f"{_SCRATCH}/Animal/Dog2.wav", "bark", "CC-BY-SA-3.0", _SCRATCH_BY),
        ),
    ),
    DebianPackage(
        "sonic-pi-samples",
        (
            MediaFile(f"{_SONIC}/perc_bell.flac", "bell", "CC0-1.0", "AlaskaRobotics (freesound.org sound 221515)"),
            # No stanza of its own, so debian/copyright's Files: * (MIT) covers it;
            # the samples README credits the recording to hullum under CC0.
            MediaFile(
                f"{_SONIC}/perc_door.flac",
                "door",
                "MIT",
                "Samuel Aaron (Sonic Pi); recorded by hullum (freesound.org sound 415579)",
            ),
        ),
    ),
    DebianPackage(
        "renpy-demo",
        (
            MediaFile(
                "usr/share/games/renpy/demo/game/oa4_launch.webm",
                VIDEO,
                "MIT",
                "Tom Rothamel and Ren'Py contributors (Ren'Py demo game; debian/copyright Files: *, Expat)",
                VisualCue(
                    label="rocket_ignites",
                    sound="rocket",
                    description="in the wide shot of the pad the engine flame appears under the rocket"
                    " and the roar rises in the soundtrack",
                    roi=(0.45, 0.6, 0.55, 0.8),
                ),
            ),
        ),
    ),
)


def catalogue_packages(catalogue: tuple[DebianPackage, ...] = CATALOGUE) -> tuple[str, ...]:
    return tuple(p.name for p in catalogue)
