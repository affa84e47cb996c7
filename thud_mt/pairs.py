"""Preference pairs: the record that harvesting writes and alignment trains on.

A pairs file is JSON Lines (``thud_mt/schemas/pairs.schema.json``), one pair
per line, next to a ``media/`` folder of content-addressed files: the clip the
question was asked about as ``media/<sha256>.mp4`` (H.264 + AAC, what a person
or a model plays) and its audio as ``media/<sha256>.wav``. Paths in a record are
relative to the pairs file's folder, so a pairs folder can be moved as a whole.

``split`` keeps evaluation honest: it is a function of the *source* clip only,
so no source clip has pairs in both train and eval.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

import jsonschema

from thud_mt.errors import ThudError

FORMAT = "thud-pairs/1"
PairKind = Literal["intervention", "general"]
Split = Literal["train", "eval"]
SPLITS: tuple[Split, ...] = get_args(Split)
# The share of source clips whose pairs go to eval (by a hash of the clip id, so stable across runs).
DEFAULT_EVAL_FRACTION = 0.2


class PairsError(ThudError):
    """A pairs file (or its media) that cannot be used; names the file and the 1-based line."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {problem}")


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
    text = resources.files("thud_mt").joinpath("schemas/pairs.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(pairs_schema())


def schema_problem(doc: Any) -> str | None:
    """The first schema error of one record as ``at /pointer: message``, or None."""
    errors = sorted(_validator().iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return None
    first = errors[0]
    pointer = "/" + "/".join(str(p) for p in first.absolute_path)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"at {pointer}: {first.message}{more}"


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
