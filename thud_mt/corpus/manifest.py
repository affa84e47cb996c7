"""Corpus manifests: the JSON file that lists clips, their events and licences.

Format ``thud-manifest/1``, described in ``docs/corpus.md`` and encoded in
``thud_mt/schemas/manifest.schema.json``. Every problem is reported as a
``ManifestError`` naming the manifest file and the JSON pointer of the
offending element, so a hand-edited manifest says exactly what to fix.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import os
import secrets
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema

from thud_mt.clip import Clip, Event, Provenance
from thud_mt.errors import ManifestError, ManifestPathError
from thud_mt.jsonschemas import load_schema

FORMAT = "thud-manifest/1"

# How many further problems a schema error message lists after the first one.
_MORE_LISTED = 5


@dataclass(frozen=True)
class ClipEntry:
    """One clip of a manifest; ``path`` is absolute and resolved (symlinks followed)."""

    id: str
    path: Path
    events: tuple[Event, ...] = ()
    licence: str = "unknown"
    attribution: str = ""
    timing: str = ""
    sha256: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def sounds(self) -> frozenset[str]:
        """The sound classes its events make (``None`` sounds left out)."""
        return frozenset(e.sound for e in self.events if e.sound is not None)


@dataclass(frozen=True)
class Corpus:
    """A loaded manifest: its entries in file order."""

    manifest: Path
    name: str
    description: str
    entries: tuple[ClipEntry, ...]
    generator: dict[str, Any] = field(default_factory=dict)
    _by_id: dict[str, ClipEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {e.id: e for e in self.entries})

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ClipEntry]:
        return iter(self.entries)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(e.id for e in self.entries)

    @property
    def sound_labels(self) -> tuple[str, ...]:
        """Every sound class its clips make, sorted: the options the source probe offers on this corpus."""
        return tuple(sorted({sound for entry in self.entries for sound in entry.sounds if sound}))

    def entry(self, clip_id: str) -> ClipEntry:
        try:
            return self._by_id[clip_id]
        except KeyError:
            close = difflib.get_close_matches(clip_id, self._by_id, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise KeyError(f"{self.manifest}: no clip with id {clip_id!r}{hint}") from None

    def load_clip(self, entry: ClipEntry | str, **read_options: Any) -> Clip:
        """Read the entry's media and attach its events and provenance.

        ``read_options`` go to ``thud_mt.media.read_clip`` (``max_duration``,
        ``fps``, ``size``, ``sample_rate``, ``channels``, ``limits``, ``lazy``).
        """
        from thud_mt import media  # imported here: listing a corpus needs no PyAV

        if isinstance(entry, str):
            entry = self.entry(entry)
        clip = media.read_clip(entry.path, clip_id=entry.id, **read_options)
        provenance = Provenance(source=str(entry.path), licence=entry.licence, attribution=entry.attribution)
        return clip.replace(events=entry.events, provenance=provenance)


@cache
def manifest_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``thud-manifest/1``."""
    return load_schema("manifest.schema.json")


def load_corpus(path: str | Path) -> Corpus:
    """Read, validate and resolve a manifest. Raises ``ManifestError`` / ``ManifestPathError``."""
    path = Path(path).absolute()
    doc = _read_json(path)
    _check_document(path, doc, check_duplicate_keys=True)
    # Clip paths are relative to the folder the manifest is seen in (a symlinked
    # manifest is read in place); that folder's real location bounds them.
    folder = path.parent.resolve()
    entries = tuple(_entry(path, folder, i, clip) for i, clip in enumerate(doc["clips"]))
    return Corpus(
        manifest=path,
        name=doc["name"],
        description=doc.get("description", ""),
        entries=entries,
        generator=dict(doc.get("generator", {})),
    )


def write_manifest(
    path: str | Path,
    *,
    name: str,
    description: str,
    clips: Sequence[ClipEntry],
    generator: dict[str, Any] | None = None,
) -> Path:
    """Write a manifest atomically; returns its path.

    Clip paths are written relative to the manifest's folder (a relative
    ``ClipEntry.path`` is taken as already relative to it). The document is
    validated first, so an invalid corpus never replaces a good manifest.
    Media files need not exist yet; ``load_corpus`` checks them.
    """
    path = Path(path)
    folder = path.parent.resolve()
    doc: dict[str, Any] = {"format": FORMAT, "name": name, "description": description}
    if generator is not None:
        doc["generator"] = dict(generator)
    doc["clips"] = [_serialise_entry(path, folder, i, entry) for i, entry in enumerate(clips)]
    _check_document(path, doc, check_duplicate_keys=False)
    try:
        text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:  # only the free-form generator can hold such values
        raise ManifestError(path, "/generator", f"cannot be written as JSON: {exc}") from None
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / path.name, text)
    return path


def summarize_corpus(corpus: Corpus) -> str:
    """A short table: clips, events per sound class, licences. Decodes no media."""
    events_by_sound: Counter[str] = Counter()
    clips_by_sound: Counter[str] = Counter()
    for entry in corpus.entries:
        names = ["(no sound)" if e.sound is None else e.sound for e in entry.events]
        events_by_sound.update(names)
        clips_by_sound.update(set(names))
    n_events = sum(events_by_sound.values())
    lines = [f"corpus {corpus.name}: {len(corpus)} clips, {n_events} events  ({corpus.manifest})"]
    if events_by_sound:
        width = max(len("sound"), *(len(s) for s in events_by_sound))
        lines.append(f"  {'sound':<{width}}  events  clips")
        for sound in sorted(events_by_sound):
            lines.append(f"  {sound:<{width}}  {events_by_sound[sound]:>6}  {clips_by_sound[sound]:>5}")
    unannotated = sum(1 for e in corpus.entries if not e.events)
    if unannotated:
        lines.append(f"  clips without events: {unannotated}")
    licences = Counter(e.licence for e in corpus.entries)
    if licences:
        lines.append("  licences: " + ", ".join(f"{lic} ({n})" for lic, n in sorted(licences.items())))
    return "\n".join(lines)


# --- reading ---------------------------------------------------------------


class _PairsDict(dict):
    """A JSON object that remembers keys given twice (``json`` silently keeps the last)."""

    duplicates: tuple[str, ...] = ()


def _object_pairs(pairs: list[tuple[str, Any]]) -> _PairsDict:
    obj = _PairsDict(pairs)
    counts = Counter(k for k, _ in pairs)
    obj.duplicates = tuple(k for k, n in counts.items() if n > 1)
    return obj


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(path, "", "manifest file not found") from None
    except IsADirectoryError:
        raise ManifestError(path, "", "is a folder, not a manifest file") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(path, "", f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ManifestError(path, "", f"cannot be read: {exc.strerror or exc}") from None
    try:
        return json.loads(text, object_pairs_hook=_object_pairs)
    except json.JSONDecodeError as exc:
        raise ManifestError(path, "", f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None


# --- validation ------------------------------------------------------------


def _pointer(parts: Sequence[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _check_document(path: Path, doc: Any, *, check_duplicate_keys: bool) -> None:
    """Raise on the first problem: JSON oddities, then the schema, then duplicate ids."""
    _check_values(path, doc, [], check_keys=check_duplicate_keys)
    validator = jsonschema.Draft202012Validator(manifest_schema())
    problems = sorted(_schema_problems(validator, doc), key=lambda p: p[0])
    if problems:
        _, pointer, problem = problems[0]
        rest = problems[1:]
        if rest:
            listed = ", ".join(p for _, p, _ in rest[:_MORE_LISTED])
            more = "" if len(rest) <= _MORE_LISTED else ", ..."
            problem += f" ({len(rest)} more problem{'s' if len(rest) > 1 else ''} at {listed}{more})"
        raise ManifestError(path, pointer, problem)
    first_at: dict[str, int] = {}
    for i, clip in enumerate(doc["clips"]):
        if clip["id"] in first_at:
            raise ManifestError(
                path, f"/clips/{i}/id", f"duplicate id {clip['id']!r} (first used at /clips/{first_at[clip['id']]}/id)"
            )
        first_at[clip["id"]] = i


def _check_values(path: Path, value: Any, at: list[str | int], *, check_keys: bool) -> None:
    """Refuse what JSON Schema cannot see: NaN / Infinity and keys given twice."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ManifestError(path, _pointer(at), f"{value} is not a finite number (JSON has no NaN or Infinity)")
    if isinstance(value, dict):
        if check_keys and getattr(value, "duplicates", ()):
            key = value.duplicates[0]
            raise ManifestError(path, _pointer([*at, key]), f"key {key!r} given more than once")
        for key, item in value.items():
            _check_values(path, item, [*at, key], check_keys=check_keys)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_values(path, item, [*at, i], check_keys=check_keys)


_Key = list[tuple[int, int | str]]


def _order(parts: Sequence[str | int]) -> _Key:
    # Document order for list indices (so /clips/10 comes after /clips/9).
    return [(0, p) if isinstance(p, int) else (1, p) for p in parts]


def _object_key(at: Sequence[str | int], rank: int, key: str = "") -> _Key:
    # Problems of an object itself come before its members': unknown keys (rank 0)
    # first, as a misspelt key also makes the intended one missing (rank 1).
    return [*_order(at), (-1, rank), (1, key)]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int in Python, not a number in JSON
        return "a boolean"
    for kind, name in ((int | float, "a number"), (str, "a string"), (list, "an array"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return f"a Python {type(value).__name__}"


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # write_manifest can be handed values JSON cannot hold
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _schema_problems(validator: jsonschema.Draft202012Validator, doc: Any) -> Iterator[tuple[_Key, str, str]]:
    """(sort key, JSON pointer, problem) for every schema violation, in words a manifest author can act on."""
    for error in validator.iter_errors(doc):
        at = list(error.absolute_path)
        kind, value, expected = error.validator, error.instance, error.validator_value
        if kind == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            for key in sorted(set(value) - set(allowed)):
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
                yield _object_key(at, 0, key), _pointer([*at, key]), f"unknown key {key!r} ({hint})"
            continue
        if kind == "required":
            missing = [k for k in expected if k not in value]
            plural = "s" if len(missing) > 1 else ""
            yield _object_key(at, 1), _pointer(at), f"missing required key{plural} {', '.join(map(repr, missing))}"
            continue
        last = at[-1] if at else None
        if kind == "type":
            wanted = " or ".join(expected) if isinstance(expected, list) else expected
            problem = f"must be {wanted}, not {_json_type(value)} ({_show(value)})"
        elif kind == "const" and at == ["format"]:
            problem = f"unsupported format {value!r} (this version reads {FORMAT!r})"
        elif kind == "pattern" and last == "id":
            problem = f"bad id {value!r}: use letters, digits, '.', '_' and '-' only (not '.' or '..')"
        elif kind == "pattern" and last == "path":
            problem = f"path {value!r} must use forward slashes"
        elif kind == "pattern" and last == "sha256":
            problem = f"sha256 {value!r} is not 64 hex digits"
        elif kind == "minimum":
            problem = f"must be >= {expected}, not {value}"
        elif kind == "maxLength":
            problem = f"too long ({len(value)} characters, at most {expected})"
        elif kind == "minLength" and expected == 1:
            problem = "must not be empty"
        else:
            problem = error.message
        yield _order(at), _pointer(at), problem


# --- paths -----------------------------------------------------------------


def _entry(path: Path, folder: Path, i: int, clip: dict[str, Any]) -> ClipEntry:
    return ClipEntry(
        id=clip["id"],
        path=_media_path(path, folder, i, clip["path"]),
        events=tuple(
            Event(
                label=e["label"],
                visual_time=None if e["visual_time"] is None else float(e["visual_time"]),
                audio_time=None if e["audio_time"] is None else float(e["audio_time"]),
                sound=e["sound"],
                description=e.get("description", ""),
            )
            for e in clip["events"]
        ),
        licence=clip["licence"],
        attribution=clip["attribution"],
        timing=clip.get("timing", ""),
        sha256=clip.get("sha256"),
        tags=tuple(clip.get("tags", ())),
    )


def _media_path(path: Path, folder: Path, i: int, relative: str) -> Path:
    """Resolve a clip path; it must stay inside the manifest's folder and name a file."""
    pointer = f"/clips/{i}/path"
    rel = PurePosixPath(relative)
    if rel.is_absolute() or (len(relative) > 1 and relative[0].isalpha() and relative[1] == ":"):  # C:/...
        raise ManifestPathError(path, pointer, f"path {relative!r} is absolute; give it relative to the manifest")
    if os.path.normpath(relative).replace(os.sep, "/").split("/")[0] == "..":
        raise ManifestPathError(path, pointer, f"path {relative!r} leaves the manifest's folder via '..'")
    resolved = (folder / rel).resolve()
    # Resolving follows symlinks, so a link inside the folder to a file outside is caught here.
    if not resolved.is_relative_to(folder):
        raise ManifestPathError(path, pointer, f"path {relative!r} resolves to {resolved}, outside {folder}")
    if not resolved.is_file():
        problem = "is not a file" if resolved.exists() else "does not exist"
        raise ManifestPathError(path, pointer, f"media file {relative!r} {problem} ({resolved})")
    return resolved


# --- writing ---------------------------------------------------------------


def _serialise_entry(path: Path, folder: Path, i: int, entry: ClipEntry) -> dict[str, Any]:
    media = Path(entry.path)  # a builder may hand a str
    media = media if media.is_absolute() else folder / media
    relative = os.path.relpath(media.resolve(), folder)
    if relative.split(os.sep)[0] == "..":
        raise ManifestPathError(path, f"/clips/{i}/path", f"{media} is outside the manifest's folder {folder}")
    out: dict[str, Any] = {
        "id": entry.id,
        "path": PurePosixPath(*Path(relative).parts).as_posix(),
        "events": [_serialise_event(e) for e in entry.events],
        "licence": entry.licence,
        "attribution": entry.attribution,
    }
    if entry.timing:
        out["timing"] = entry.timing
    if entry.sha256 is not None:
        out["sha256"] = entry.sha256
    if entry.tags:
        out["tags"] = list(entry.tags)
    return out


def _serialise_event(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {
        "label": event.label,
        "visual_time": _seconds(event.visual_time),
        "audio_time": _seconds(event.audio_time),
        "sound": event.sound,
    }
    if event.description:
        out["description"] = event.description
    return out


def _seconds(value: Any) -> Any:
    # numpy scalars (np.float32 from a renderer) are not JSON numbers; plain floats are.
    # Anything else is left as it is for the schema to report.
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _atomic_write(target: Path, text: str) -> None:
    """Write to a fresh file beside ``target``, then rename over it: readers see old or new, never half."""
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 lets the umask decide permissions, as for a plain open().
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
