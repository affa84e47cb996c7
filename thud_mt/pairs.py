"""Preference pairs: the record that harvesting writes and alignment trains on.

A pairs file is JSON Lines (``thud_mt/schemas/pairs.schema.json``), one pair
per line, next to a ``media/`` folder of content-addressed files: the clip the
question was asked about as ``media/<sha256>.mp4`` (H.264 + AAC, what a person
or a model plays) and its audio as ``media/<sha256>.wav``. Paths in a record are
relative to the pairs file's folder, so a pairs folder can be moved as a whole.

``PairWriter`` appends to such a folder from any number of processes: media
first (each file atomically, named by the content it encodes), then the record
as one locked line (``thud_mt.jsonl``), skipping ids the file already holds.
A writer killed at any point leaves whole records whose media exist; running
it again adds what is missing and nothing twice. Bulk writers (the loop's
anchors, guards, blind guards, stage-0 data) encode media on ``workers``
threads (PyAV releases the GIL while it encodes) and append the records in the
order the drafts came, so the file is the same whatever the number of threads.

``split`` keeps evaluation honest: it is a function of the *source* clip only,
so no source clip has pairs in both train and eval.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from functools import cache, partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

from thud_mt.clip import Clip
from thud_mt.errors import LineError
from thud_mt.jsonl import JsonLinesAppender, LockedFile
from thud_mt.jsonschemas import first_problem, load_schema

FORMAT = "thud-pairs/1"
PAIRS_FILE = "pairs.jsonl"
MEDIA_FOLDER = "media"
PairKind = Literal["intervention", "general"]
Split = Literal["train", "eval"]
SPLITS: tuple[Split, ...] = get_args(Split)
# The share of source clips whose pairs go to eval (by a hash of the clip id, so stable across runs).
DEFAULT_EVAL_FRACTION = 0.2


class PairsError(LineError):
    """A pairs file (or its media) that cannot be used; names the file and the 1-based line."""


@dataclass(frozen=True)
class PreferencePair:
    """One DPO pair: a question about a clip, the answer to prefer and the one to reject.

    ``category`` is the relation (``shift``, ``mute``, ``swap``, ``identity``)
    for intervention pairs and the preference kind (``description``,
    ``localisation``, ``attribution``, ``audio_qa``) for general ones.
    ``video`` / ``audio`` are relative to the pairs file's folder.
    """

    id: str
    kind: PairKind
    category: str
    question: str
    chosen: str
    rejected: str
    video: str
    audio: str
    source_clip: str
    split: Split
    meta: Mapping[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    def to_json(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["meta"] = dict(self.meta)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PreferencePair:
        return cls(**dict(doc))

    def prompt_messages(self, video_path: str | Path) -> list[dict[str, Any]]:
        """The prompt as chat messages (TRL's conversational format): the clip, then the question."""
        return [
            {
                "role": "user",
                "content": [{"type": "video", "video": str(video_path)}, {"type": "text", "text": self.question}],
            }
        ]


def pair_id(kind: str, category: str, question: str, video_digest: str, chosen: str, rejected: str) -> str:
    """Content address of a pair: the same case harvested twice gets the same id (resume adds nothing)."""
    text = json.dumps([kind, category, question, video_digest, chosen, rejected], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def split_of(source_clip: str, eval_fraction: float = DEFAULT_EVAL_FRACTION) -> Split:
    """The split of every pair from ``source_clip``: a stable hash, never which run harvested it."""
    bucket = int(hashlib.sha256(source_clip.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "eval" if bucket < eval_fraction else "train"


@cache
def pairs_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one pairs.jsonl line."""
    return load_schema("pairs.schema.json")


def schema_problem(doc: Any) -> str | None:
    """The first schema error of one record as ``at /pointer: message``, or None."""
    return first_problem("pairs.schema.json", doc)


def read_pairs(path: str | Path, *, split: Split | None = None, check_media: bool = True) -> list[PreferencePair]:
    """Every pair of a pairs.jsonl file (optionally one split), each checked against the schema.

    With ``check_media`` a pair whose video or audio file is missing is an
    error naming the line, so training fails before it starts, not an hour in.
    An unfinished last line (a run killed mid-write) is skipped.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PairsError(path, None, "no such pairs file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PairsError(path, None, f"cannot be read: {e}") from e
    pairs: list[PreferencePair] = []
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as e:
            if number == len(lines):  # no newline after it: a writer killed mid-record
                break
            raise PairsError(path, number, f"not a JSON record ({e})") from e
        problem = schema_problem(doc)
        if problem is not None:
            raise PairsError(path, number, f"not a valid preference pair {problem}")
        pair = PreferencePair.from_json(doc)
        if check_media:
            for name in ("video", "audio"):
                media = path.parent / getattr(pair, name)
                if not media.is_file():
                    raise PairsError(path, number, f"pair {pair.id}: its {name} file {media} is missing")
        if split is None or pair.split == split:
            pairs.append(pair)
    return pairs


def media_path(pairs_file: str | Path, relative: str) -> Path:
    """A record's media path, resolved against its pairs file's folder."""
    return Path(pairs_file).parent / relative


def pairs_file(location: str | Path) -> Path:
    """A pairs folder's ``pairs.jsonl``; a path to a file is taken as it is."""
    location = Path(location)
    return location / PAIRS_FILE if location.is_dir() or not location.suffix else location


@dataclass(frozen=True, eq=False)
class PairDraft:
    """A pair before its media are written: the clip the question is about, and everything else of the record."""

    kind: PairKind
    category: str
    question: str
    chosen: str
    rejected: str
    clip: Clip
    source_clip: str
    meta: Mapping[str, Any] = field(default_factory=dict)


class PairWriter:
    """Appends preference pairs to ``folder/pairs.jsonl`` with their media in ``folder/media/``.

    The mp4 is named by ``media_digest`` (the sha256 of the frames and samples
    it encodes: known before encoding, so a clip already there, or a pair
    already written, costs no encode); the wav by the sha256 of its bytes.
    Both appear atomically before the record that names them. The ids in the
    file are re-read under the lock before each append, so a resumed run, a
    Hypothesis replay or another process writing the same pair adds nothing.

    With ``workers`` > 1 the media are encoded on that many threads and
    ``add`` returns before they are written; records are appended in the order
    of ``add``, each once its media and every earlier record's are on disk, at
    the latest by ``flush`` or ``close``. A failed write raises from the call
    that settles it (a later ``add`` when too many are in flight, ``flush``
    or ``close``), naming the pair, after the other settled records are appended.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        eval_fraction: float = DEFAULT_EVAL_FRACTION,
        fsync: bool = False,
        workers: int = 1,
    ) -> None:
        self.folder = Path(folder)
        self.path = self.folder / PAIRS_FILE
        self.media = self.folder / MEDIA_FOLDER
        self.eval_fraction = eval_fraction
        self._file = JsonLinesAppender(self.path, fsync=fsync)
        self._ids: set[str] = set()
        self._read_to = 0  # bytes of the file whose ids are in _ids
        self._media_done: set[str] = set()  # written, or being written by an earlier queued pair
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="pair-media") if workers > 1 else None
        self._window = 4 * workers  # pairs in flight: bounds the clips held in memory
        self._queue: deque[tuple[Future[None], PreferencePair]] = deque()
        self._queued: set[str] = set()

    def add(self, draft: PairDraft) -> PreferencePair | None:
        """Write the draft's media and record; ``None`` when a pair with its id is already in the file."""
        from thud_mt.cache import media_digest  # imported here: reading pairs needs no media or model code

        digest = media_digest(draft.clip)
        pid = pair_id(draft.kind, draft.category, draft.question, digest, draft.chosen, draft.rejected)
        if pid in self._queued or self.contains(pid):
            return None
        if self._pool is None:
            video, audio = self.write_media(draft.clip, digest)
            pair = self._pair(draft, pid, video, audio)
            return pair if self.append(pair) else None
        video, audio, writes = self._media_plan(draft.clip, digest)
        pair = self._pair(draft, pid, video, audio)
        self._queue.append((self._pool.submit(_run_all, writes), pair))
        self._queued.add(pid)
        if len(self._queue) > self._window:
            self._settle(len(self._queue) - self._window)
        return pair

    def _pair(self, draft: PairDraft, pid: str, video: str, audio: str) -> PreferencePair:
        return PreferencePair(
            id=pid,
            kind=draft.kind,
            category=draft.category,
            question=draft.question,
            chosen=draft.chosen,
            rejected=draft.rejected,
            video=video,
            audio=audio,
            source_clip=draft.source_clip,
            split=split_of(draft.source_clip, self.eval_fraction),
            meta=draft.meta,
        )

    def contains(self, pid: str) -> bool:
        """Whether the file holds a pair with id ``pid`` (by this or any other process)."""
        if pid in self._ids:
            return True
        with self._file.locked() as file:
            self._refresh(file)
        return pid in self._ids

    def write_media(self, clip: Clip, digest: str) -> tuple[str, str]:
        """``clip`` as ``media/<digest>.mp4`` and its audio as ``media/<sha256>.wav``; the relative paths."""
        video, audio, writes = self._media_plan(clip, digest)
        _run_all(writes)
        return video, audio

    def _media_plan(self, clip: Clip, digest: str) -> tuple[str, str, list[Callable[[], object]]]:
        """The relative media paths of ``clip``, and the writes (callables) of those not written yet."""
        from thud_mt.media import encode_wav, write_bytes, write_clip

        wav = encode_wav(clip.audio, clip.sample_rate)
        video = f"{MEDIA_FOLDER}/{digest}.mp4"
        audio = f"{MEDIA_FOLDER}/{hashlib.sha256(wav).hexdigest()}.wav"
        writes: list[Callable[[], object]] = []
        if video not in self._media_done and not (self.folder / video).is_file():
            writes.append(partial(write_clip, clip, self.folder / video))
        if audio not in self._media_done and not (self.folder / audio).is_file():
            writes.append(partial(write_bytes, wav, self.folder / audio))
        self._media_done.update((video, audio))
        return video, audio, writes

    def flush(self) -> None:
        """Append every queued record (``workers`` > 1); raises the first failed write, naming its pair."""
        self._settle(len(self._queue))

    def _settle(self, count: int) -> None:
        failed: list[BaseException] = []
        for _ in range(count):
            future, pair = self._queue.popleft()
            self._queued.discard(pair.id)
            try:
                future.result()
                self.append(pair)
            except Exception as e:  # one bad clip: the rest are still appended, then it is raised
                self._media_done.difference_update((pair.video, pair.audio))
                e.add_note(f"writing pair {pair.id} (source clip {pair.source_clip}) to {self.folder}")
                failed.append(e)
        if failed:
            if len(failed) > 1:
                failed[0].add_note(f"and {len(failed) - 1} more pairs failed")
            raise failed[0]

    def append(self, pair: PreferencePair) -> bool:
        """Append one record unless its id is in the file already; True if it was appended.

        The record is checked against the schema and its media must exist:
        a record never names a file that is not there.
        """
        doc = pair.to_json()
        problem = schema_problem(doc)
        if problem is not None:
            raise ValueError(f"pair {pair.id}: not a valid preference pair {problem}")
        for name in ("video", "audio"):
            if not (self.folder / doc[name]).is_file():
                raise ValueError(f"pair {pair.id}: its {name} file {self.folder / doc[name]} is missing")
        try:
            line = json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"
        except (TypeError, ValueError) as e:
            raise ValueError(f"pair {pair.id}: {e} (the record must be plain JSON)") from e
        with self._file.locked() as file:
            self._refresh(file)
            if pair.id in self._ids:
                return False
            file.append(line.encode("utf-8"))
            self._read_to = file.size
            self._ids.add(pair.id)
        return True

    def _refresh(self, file: LockedFile) -> None:
        """Read the ids of records appended since the last look (by anyone)."""
        size = file.size
        if size < self._read_to:  # the file was replaced or cut by hand: start over
            self._ids.clear()
            self._read_to = 0
        data = file.read(self._read_to, size)
        lines = data.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                pid = json.loads(line).get("id")
            except (ValueError, AttributeError):
                continue  # not a record: read_pairs reports it; here it holds no id
            if isinstance(pid, str):
                self._ids.add(pid)
        self._read_to = size - len(lines[-1])  # a whole record without its newline is read again next time

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
            self._file.close()

    def __enter__(self) -> PairWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run_all(writes: list[Callable[[], object]]) -> None:
    for write in writes:
        write()
