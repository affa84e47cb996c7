"""Corpus manifests: what loads, what is refused (naming file and JSON pointer), and writing."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from thud_mt.clip import Clip, Event
from thud_mt.corpus.manifest import (
    ClipEntry,
    Corpus,
    load_corpus,
    manifest_schema,
    summarize_corpus,
    write_manifest,
)
from thud_mt.errors import ManifestError, ManifestPathError


def valid_doc() -> dict[str, Any]:
    return {
        "format": "thud-manifest/1",
        "name": "tiny",
        "description": "two clips",
        "generator": {"tool": "test", "seed": 0, "nested": {"anything": [1, 2]}},
        "clips": [
            {
                "id": "a-0",
                "path": "clips/a-0.mp4",
                "events": [
                    {
                        "label": "glass_breaks",
                        "visual_time": 1.2,
                        "audio_time": 1.25,
                        "sound": "glass",
                        "description": "a glass falls and shatters on the floor",
                    }
                ],
                "licence": "CC0-1.0",
                "attribution": "the tests",
                "timing": "rendered",
                "sha256": "ab" * 32,
                "tags": ["synthetic"],
            },
            {
                "id": "b_1.x",
                "path": "clips/sub/../b-1.mp4",
                "events": [{"label": "dog_barks", "visual_time": 0, "audio_time": None, "sound": None}],
                "licence": "CC-BY-4.0",
                "attribution": "",
            },
        ],
    }


def save(folder: Path, doc: Any, *, media: bool = True) -> Path:
    """Write ``doc`` as ``folder/manifest.json`` and (by default) its media files that lie inside ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clips" / "sub").mkdir(parents=True, exist_ok=True)  # valid_doc's second path passes through it
    for clip in doc.get("clips", []) if media else []:
        target = (folder / clip["path"]).resolve()
        if target.is_relative_to(folder.resolve()):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"not decoded by load_corpus")
    path = folder / "manifest.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def refusal(path: Path, error: type[ManifestError] = ManifestError) -> ManifestError:
    with pytest.raises(error) as info:
        load_corpus(path)
    assert str(path) in str(info.value), "the message names the manifest file"
    assert info.value.path == str(path)
    return info.value


# --- the schema and a valid manifest ----------------------------------------


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(manifest_schema())
    assert manifest_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_valid_manifest_loads_with_resolved_paths_and_events(tmp_path: Path) -> None:
    corpus = load_corpus(save(tmp_path, valid_doc()))

    assert corpus.name == "tiny" and corpus.description == "two clips"
    assert corpus.generator == {"tool": "test", "seed": 0, "nested": {"anything": [1, 2]}}
    assert corpus.ids == ("a-0", "b_1.x")
    a, b = corpus.entries
    assert a.path == (tmp_path / "clips" / "a-0.mp4").resolve() and a.path.is_absolute()
    assert b.path == (tmp_path / "clips" / "b-1.mp4").resolve(), "'..' that stays inside the folder is fine"
    assert a.events == (Event("glass_breaks", 1.2, 1.25, "glass", "a glass falls and shatters on the floor"),)
    assert b.events == (Event("dog_barks", 0.0, None, None, ""),)
    assert isinstance(b.events[0].visual_time, float)
    assert corpus.sound_labels == ("glass",), "the source probe's options: sounds heard, a silent event offers none"
    assert (a.licence, a.attribution, a.timing, a.sha256, a.tags) == (
        "CC0-1.0",
        "the tests",
        "rendered",
        "ab" * 32,
        ("synthetic",),
    )
    assert (b.timing, b.sha256, b.tags) == ("", None, ()), "optional fields default"
    assert corpus.entry("b_1.x") is b


def test_minimal_manifest_needs_only_format_name_and_clips(tmp_path: Path) -> None:
    corpus = load_corpus(save(tmp_path, {"format": "thud-manifest/1", "name": "empty", "clips": []}))
    assert (len(corpus), corpus.description, corpus.generator) == (0, "", {})


def test_unknown_id_lookup_suggests_close_ids(tmp_path: Path) -> None:
    corpus = load_corpus(save(tmp_path, valid_doc()))
    with pytest.raises(KeyError, match="'a-0'"):
        corpus.entry("a-O")


# --- schema violations: file and pointer named ------------------------------


def mutated(change: Any) -> dict[str, Any]:
    doc = valid_doc()
    change(doc)
    return doc


SCHEMA_CASES = [
    pytest.param(
        lambda d: d["clips"][0].pop("licence"), "/clips/0", "missing required key 'licence'", id="missing-field"
    ),
    pytest.param(lambda d: d.pop("format"), "/", "'format'", id="missing-format"),
    pytest.param(
        lambda d: d["clips"][0]["events"][0].update(visual_time="1.2"),
        "/clips/0/events/0/visual_time",
        "must be number or null, not a string",
        id="time-as-string",
    ),
    pytest.param(
        lambda d: d["clips"][1]["events"][0].update(audio_time=True),
        "/clips/1/events/0/audio_time",
        "not a boolean",
        id="time-as-boolean",
    ),
    pytest.param(
        lambda d: d["clips"][0]["events"][0].update(audio_time=-0.5),
        "/clips/0/events/0/audio_time",
        "must be >= 0",
        id="negative-time",
    ),
    pytest.param(lambda d: d["clips"][0].update(events={}), "/clips/0/events", "must be array", id="events-not-list"),
    pytest.param(
        lambda d: d["clips"][0]["events"][0].pop("sound"),
        "/clips/0/events/0",
        "'sound'",
        id="null-must-be-explicit",
    ),
    pytest.param(
        lambda d: d.update(clip=d.pop("clips")),
        "/clip",
        "did you mean 'clips'",
        id="unknown-top-level-key",
    ),
    pytest.param(
        lambda d: d["clips"][1].update(licnce="MIT"),
        "/clips/1/licnce",
        "did you mean 'licence'",
        id="unknown-clip-key",
    ),
    pytest.param(
        lambda d: d["clips"][0]["events"][0].update(visul_time=1.0),
        "/clips/0/events/0/visul_time",
        "unknown key 'visul_time'",
        id="unknown-event-key",
    ),
    pytest.param(lambda d: d["clips"][0].update(id="a 0"), "/clips/0/id", "bad id 'a 0'", id="id-with-space"),
    pytest.param(lambda d: d["clips"][0].update(id=".."), "/clips/0/id", "bad id '..'", id="id-dot-dot"),
    pytest.param(lambda d: d["clips"][0].update(id=""), "/clips/0/id", "bad id ''", id="empty-id"),
    pytest.param(lambda d: d["clips"][0].update(id="a" * 201), "/clips/0/id", "too long (201", id="long-id"),
    pytest.param(
        lambda d: d["clips"][0].update(path="clips\\a.mp4"), "/clips/0/path", "forward slashes", id="backslash"
    ),
    pytest.param(lambda d: d["clips"][0].update(sha256="xyz"), "/clips/0/sha256", "64 hex digits", id="bad-sha"),
    pytest.param(lambda d: d["clips"][0].update(tags=["a", "a"]), "/clips/0/tags", "non-unique", id="repeated-tag"),
    pytest.param(lambda d: d.update(format="thud-manifest/2"), "/format", "unsupported format", id="future-format"),
    pytest.param(lambda d: d.update(name=""), "/name", "must not be empty", id="empty-name"),
]


@pytest.mark.parametrize(("change", "pointer", "problem"), SCHEMA_CASES)
def test_schema_violation_names_file_pointer_and_problem(
    tmp_path: Path, change: Any, pointer: str, problem: str
) -> None:
    error = refusal(save(tmp_path, mutated(change)))
    assert not isinstance(error, ManifestPathError)
    assert error.pointer == pointer
    assert problem in error.problem
    assert f"at {pointer}:" in str(error)


def test_generator_is_a_free_object(tmp_path: Path) -> None:
    doc = valid_doc()
    doc["generator"] = {"Typo-Is-Fine": True, "list": [None, {"x": "y"}]}
    assert load_corpus(save(tmp_path, doc)).generator["Typo-Is-Fine"] is True


def test_first_problem_in_document_order_is_reported_and_the_others_counted(tmp_path: Path) -> None:
    doc = valid_doc()
    base = doc["clips"][1]
    doc["clips"] = [dict(copy.deepcopy(base), id=f"c{i}", path=f"clips/c{i}.mp4") for i in range(12)]
    doc["clips"][10]["licence"] = 3
    doc["clips"][9]["events"][0]["visual_time"] = -1
    doc["clips"][2]["bogus"] = 1
    error = refusal(save(tmp_path, doc))
    assert error.pointer == "/clips/2/bogus"
    assert "2 more problems at /clips/9/events/0/visual_time, /clips/10/licence" in error.problem


def test_duplicate_id_points_at_the_second_use_and_names_the_first(tmp_path: Path) -> None:
    doc = valid_doc()
    doc["clips"].append(dict(copy.deepcopy(doc["clips"][1]), id="a-0"))
    error = refusal(save(tmp_path, doc))
    assert error.pointer == "/clips/2/id"
    assert "duplicate id 'a-0'" in error.problem and "/clips/0/id" in error.problem


def test_key_given_twice_is_refused(tmp_path: Path) -> None:
    path = save(tmp_path, valid_doc())
    text = path.read_text().replace('"licence": "CC0-1.0"', '"licence": "CC0-1.0", "licence": "MIT"', 1)
    path.write_text(text)
    error = refusal(path)
    assert (error.pointer, error.problem) == ("/clips/0/licence", "key 'licence' given more than once")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused(tmp_path: Path, constant: str) -> None:
    path = save(tmp_path, valid_doc())
    path.write_text(path.read_text().replace('"visual_time": 1.2', f'"visual_time": {constant}'))
    error = refusal(path)
    assert error.pointer == "/clips/0/events/0/visual_time"
    assert "not a finite number" in error.problem


def test_invalid_json_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text('{\n  "format": "thud-manifest/1",\n  "name": "x"\n  "clips": []\n}\n')
    error = refusal(path)
    assert error.pointer == "/"
    assert "not valid JSON" in error.problem and "line 4, column 3" in error.problem


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "not valid JSON"), (b"\xff\xfe{}", "not UTF-8"), (b"[]", "must be object")],
)
def test_files_that_are_not_a_manifest_object(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_bytes(content)
    assert problem in refusal(path).problem


def test_missing_manifest_file(tmp_path: Path) -> None:
    error = refusal(tmp_path / "nowhere.json")
    assert not isinstance(error, ManifestPathError)
    assert "not found" in error.problem


# --- clip paths ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("clip_path", "problem"),
    [
        ("../outside.mp4", "leaves the manifest's folder via '..'"),
        ("clips/../../outside.mp4", "leaves the manifest's folder via '..'"),
        ("/etc/passwd", "is absolute"),
        ("C:/media/a.mp4", "is absolute"),
    ],
)
def test_clip_paths_may_not_escape_the_folder(tmp_path: Path, clip_path: str, problem: str) -> None:
    (tmp_path / "outside.mp4").write_bytes(b"exists, so only the escape is wrong")
    doc = valid_doc()
    doc["clips"][1]["path"] = clip_path
    error = refusal(save(tmp_path / "corpus", doc), ManifestPathError)
    assert error.pointer == "/clips/1/path"
    assert problem in error.problem


def test_symlinked_file_leading_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"x")
    folder = tmp_path / "corpus"
    path = save(folder, valid_doc())
    link = folder / "clips" / "a-0.mp4"
    link.unlink()
    link.symlink_to(outside)
    error = refusal(path, ManifestPathError)
    assert error.pointer == "/clips/0/path"
    assert "outside" in error.problem and str(outside) in error.problem


def test_symlinked_folder_leading_outside_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b-1.mp4").write_bytes(b"x")
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    doc = valid_doc()
    doc["clips"] = [dict(doc["clips"][1], path="linked/b-1.mp4")]
    error = refusal(save(folder, doc, media=False), ManifestPathError)
    assert error.pointer == "/clips/0/path"


def test_symlink_that_stays_inside_is_followed(tmp_path: Path) -> None:
    path = save(tmp_path, valid_doc())
    (tmp_path / "alias.mp4").symlink_to(tmp_path / "clips" / "a-0.mp4")
    doc = valid_doc()
    doc["clips"][0]["path"] = "alias.mp4"
    path.write_text(json.dumps(doc))
    assert load_corpus(path).entries[0].path == (tmp_path / "clips" / "a-0.mp4").resolve()


def test_missing_media_file_is_a_path_error(tmp_path: Path) -> None:
    path = save(tmp_path, valid_doc())
    (tmp_path / "clips" / "b-1.mp4").unlink()
    error = refusal(path, ManifestPathError)
    assert error.pointer == "/clips/1/path"
    assert "does not exist" in error.problem


def test_folder_as_media_file_is_a_path_error(tmp_path: Path) -> None:
    doc = valid_doc()
    path = save(tmp_path, doc)
    doc["clips"][0]["path"] = "clips/sub"
    path.write_text(json.dumps(doc))
    assert "is not a file" in refusal(path, ManifestPathError).problem


# --- writing ------------------------------------------------------------------


def entries(folder: Path) -> list[ClipEntry]:
    return [
        ClipEntry(
            id="s-0",
            path=folder / "clips" / "s-0.mp4",
            events=(Event("hands_clap", 0.5, 0.5, "clap", "two hands clap together"),),
            licence="CC0-1.0",
            attribution="thud-mt",
            timing="rendered",
            sha256="0" * 64,
            tags=("synthetic", "clap"),
        ),
        ClipEntry(
            id="s-1",
            path=Path("clips/nested/s-1.mp4"),  # relative: taken relative to the manifest's folder
            events=(Event("door_closes", 1.0, None, None), Event("swapped", None, 1.0, "bark")),
            licence="CC-BY-4.0",
            attribution="someone",
        ),
    ]


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    for rel in ("clips/s-0.mp4", "clips/nested/s-1.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    written = write_manifest(
        tmp_path / "manifest.json", name="rt", description="round trip", clips=entries(tmp_path), generator={"seed": 7}
    )

    raw = json.loads(written.read_text())
    assert [c["path"] for c in raw["clips"]] == ["clips/s-0.mp4", "clips/nested/s-1.mp4"]
    assert "timing" not in raw["clips"][1] and "tags" not in raw["clips"][1], "empty optionals are left out"
    corpus = load_corpus(written)
    expected = entries(tmp_path)
    expected[1] = ClipEntry(**{**expected[1].__dict__, "path": (tmp_path / "clips/nested/s-1.mp4").resolve()})
    assert list(corpus.entries) == expected
    assert (corpus.name, corpus.description, corpus.generator) == ("rt", "round trip", {"seed": 7})


def test_write_accepts_numpy_times(tmp_path: Path) -> None:
    entry = ClipEntry("n", tmp_path / "n.mp4", (Event("x", np.float32(0.25), np.float64(0.5), "thud"),), "CC0-1.0")
    raw = json.loads(write_manifest(tmp_path / "m.json", name="n", description="", clips=[entry]).read_text())
    assert raw["clips"][0]["events"][0]["visual_time"] == 0.25


def test_write_refuses_paths_outside_the_folder(tmp_path: Path) -> None:
    entry = ClipEntry("x", tmp_path / "elsewhere.mp4", (), "CC0-1.0")
    with pytest.raises(ManifestPathError) as info:
        write_manifest(tmp_path / "corpus" / "m.json", name="n", description="", clips=[entry])
    assert info.value.pointer == "/clips/0/path"
    assert not (tmp_path / "corpus" / "m.json").exists()


@pytest.mark.parametrize(
    ("bad", "pointer"),
    [
        (ClipEntry("bad id", Path("a.mp4"), (), "CC0-1.0"), "/clips/1/id"),
        (ClipEntry("s-0", Path("a.mp4"), (), "CC0-1.0"), "/clips/1/id"),
        (ClipEntry("t", Path("a.mp4"), (Event("x", -1.0, None, None),), "CC0-1.0"), "/clips/1/events/0/visual_time"),
        (
            ClipEntry("t", Path("a.mp4"), (Event("x", float("nan"), None, None),), "CC0-1.0"),
            "/clips/1/events/0/visual_time",
        ),
    ],
    ids=["bad-id", "duplicate-id", "negative-time", "nan-time"],
)
def test_failed_write_leaves_the_previous_manifest_intact(tmp_path: Path, bad: ClipEntry, pointer: str) -> None:
    target = tmp_path / "manifest.json"
    good = entries(tmp_path)[:1]
    write_manifest(target, name="v1", description="", clips=good)
    before = target.read_bytes()

    with pytest.raises(ManifestError) as info:
        write_manifest(target, name="v2", description="", clips=[*good, bad])

    assert info.value.pointer == pointer and info.value.path == str(target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"], "no temp file left behind"


def test_unserialisable_generator_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        write_manifest(tmp_path / "m.json", name="n", description="", clips=[], generator={"when": object()})
    assert info.value.pointer == "/generator"
    assert list(tmp_path.iterdir()) == []


def test_written_file_gets_ordinary_permissions(tmp_path: Path) -> None:
    target = write_manifest(tmp_path / "m.json", name="n", description="", clips=[])
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


# --- summary and clip loading ---------------------------------------------------


def test_summary_counts_sounds_clips_and_licences(tmp_path: Path) -> None:
    text = summarize_corpus(load_corpus(save(tmp_path, valid_doc())))
    lines = text.splitlines()
    assert lines[0].startswith("corpus tiny: 2 clips, 2 events")
    assert any(line.split() == ["glass", "1", "1"] for line in lines)
    assert any(line.split() == ["(no", "sound)", "1", "1"] for line in lines)
    assert "licences: CC-BY-4.0 (1), CC0-1.0 (1)" in text


def test_load_clip_attaches_events_and_provenance(tmp_path: Path) -> None:
    media = pytest.importorskip("thud_mt.media")
    rate = 16000
    t = np.arange(rate, dtype=np.float32) / rate
    source = Clip(
        id="raw",
        video=np.full((10, 32, 32, 3), 90, np.uint8),
        fps=10.0,
        audio=(0.3 * np.sin(2 * np.pi * 440 * t))[:, None],
        sample_rate=rate,
    )
    media.write_clip(source, tmp_path / "clips" / "c.mkv", lossless=True)
    events = (Event("bell_struck", 0.5, 0.5, "bell"),)
    write_manifest(
        tmp_path / "manifest.json",
        name="one",
        description="",
        clips=[ClipEntry("bell-0", tmp_path / "clips" / "c.mkv", events, "CC0-1.0", "the tests")],
    )
    corpus: Corpus = load_corpus(tmp_path / "manifest.json")

    clip = corpus.load_clip("bell-0", sample_rate=8000)

    assert clip.id == "bell-0"
    assert clip.events == events
    assert clip.sample_rate == 8000, "read options reach read_clip"
    assert clip.n_frames == 10
    assert clip.provenance.source == str((tmp_path / "clips" / "c.mkv").resolve())
    assert (clip.provenance.licence, clip.provenance.attribution, clip.provenance.edits) == ("CC0-1.0", "the tests", ())
    assert corpus.load_clip(corpus.entries[0]).sample_rate == rate
