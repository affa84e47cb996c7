"""Batches for the thinker: the prompt with the clip's frames and sound, then the answer to learn (or compare).

TRL's stock collators only know images. These build each prompt exactly as the
``qwen-omni`` adapter does at test time (``chat_prompt`` + ``processor_inputs``:
sampled frames, the clip's audio as the video's audio, interleaved), append
the completion's tokens and the end-of-turn token, and carry every media
tensor the thinker's forward reads (video patches and their grid, seconds per
grid, mel features and their mask, ``use_audio_in_video``) for every row.

SFT rows: ``labels`` are -100 on the prompt and the padding, so only the
answer is learned. DPO rows follow ``trl.DPOTrainer``: the first half of the
batch is every prompt + chosen, the second half every prompt + rejected, with a
``completion_mask`` marking the answer tokens; the media are repeated for the
second half in the same order. Padding is on the right, as TRL's collators do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alignment.data import MediaReader
from thud_mt.errors import ThudError
from thud_mt.models.qwen_omni import OmniSettings, chat_prompt, collate_media, processor_inputs
from thud_mt.pairs import PairsError

_FEATURES = ("pixel_values_videos", "input_features")  # cast to the weights' dtype, as the adapter does
END_OF_TURN = "<|im_end|>"  # what closes an assistant turn in the Qwen chat templates (and stops generation)


@dataclass(frozen=True)
class Encoded:
    """One row's processor tensors (batch dimension 1) and its completions' token ids."""

    inputs: Mapping[str, Any]
    completions: tuple[tuple[int, ...], ...]

    @property
    def prompt_ids(self) -> list[int]:
        ids = self.inputs["input_ids"][0]
        return ids[self.inputs["attention_mask"][0].bool()].tolist()


class OmniEncoder:
    """Pair rows -> processor inputs, as the inference adapter makes them, plus completion token ids."""

    def __init__(self, processor: Any, settings: OmniSettings, reader: MediaReader, dtype: Any = None) -> None:
        self.processor = processor
        self.settings = settings
        self.reader = reader
        self.dtype = dtype
        tokenizer = processor.tokenizer
        end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
        self.end_id = int(end if isinstance(end, int) and end != tokenizer.unk_token_id else tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        self._prompts: dict[str, str] = {}  # a plain dict, not a cached lambda: dataloader workers may pickle us

    def prompt(self, question: str) -> str:
        if question not in self._prompts:
            self._prompts[question] = chat_prompt(self.processor, self.settings, question)
        return self._prompts[question]

    def completion_ids(self, text: str) -> tuple[int, ...]:
        """The answer's tokens and the end of the turn: the model learns to stop, too."""
        ids = self.processor.tokenizer(text, add_special_tokens=False).input_ids
        return (*ids, self.end_id)

    def encode(self, row: Mapping[str, str], completions: Sequence[str]) -> Encoded:
        try:
            media = self.reader(row["video"], row["audio"])
            inputs = processor_inputs(self.processor, self.settings, media, self.prompt(row["question"]))
        except ThudError as exc:
            raise PairsError(row["pairs_file"], None, f"pair {row['id']}: {exc}") from exc
        return Encoded(inputs, tuple(self.completion_ids(text) for text in completions))

    def media(self, encoded: Sequence[Encoded]) -> dict[str, Any]:
        batch = collate_media([e.inputs for e in encoded])
        if self.dtype is not None:
            for key in _FEATURES:
                if key in batch:
                    batch[key] = batch[key].to(self.dtype)
        batch["use_audio_in_video"] = self.settings.use_audio_in_video
        return batch


def _pad(rows: Sequence[Sequence[int]], value: int) -> Any:
    import torch

    length = max(len(r) for r in rows)
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for k, row in enumerate(rows):
        out[k, : len(row)] = torch.tensor(list(row), dtype=torch.long)
    return out


def twins(row: Mapping[str, str]) -> list[list[str]] | None:
    """A consistency group's other members' ``[video, audio]`` (``alignment.data.consistency_groups``); None
    for a plain pair."""
    return json.loads(row["twins"]) if row.get("twins") else None


class SFTCollator:
    """Prompt + chosen answer; the loss is on the answer (and its end-of-turn token) only.

    A row with ``twins`` (a consistency group, ``alignment.data.consistency_groups``) becomes one sequence
    per member, the same answer after each, with no labels: ``consistency_groups`` (the group's index,
    -1 for a plain row) and ``consistency_mask`` (the answer's tokens) say what must agree. Batches
    without groups carry neither key, and are exactly what ``trl.SFTTrainer`` trains on.
    """

    def __init__(self, encoder: OmniEncoder) -> None:
        self.encoder = encoder

    def __call__(self, rows: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        encoded: list[Encoded] = []
        group: list[int] = []
        groups = 0
        for row in rows:
            others = twins(row)
            encoded.append(self.encoder.encode(row, [row["chosen"]]))
            group.append(-1 if others is None else groups)
            groups += others is not None
            for video, audio in others or ():
                encoded.append(self.encoder.encode({**row, "video": video, "audio": audio}, [row["chosen"]]))
                group.append(group[-1])
        ids = [e.prompt_ids + list(e.completions[0]) for e in encoded]
        answers, labels = [], []
        for e, g in zip(encoded, group, strict=True):  # a group's answer is compared, a plain row's learned
            answer = list(e.completions[0])
            answers.append([0] * len(e.prompt_ids) + [int(g >= 0)] * len(answer))
            labels.append([-100] * len(e.prompt_ids) + (answer if g < 0 else [-100] * len(answer)))
        batch = {
            "input_ids": _pad(ids, self.encoder.pad_id),
            "attention_mask": _pad([[1] * len(r) for r in ids], 0),
            "labels": _pad(labels, -100),
            **self.encoder.media(encoded),
        }
        if any(g >= 0 for g in group):
            import torch

            batch["consistency_groups"] = torch.tensor(group, dtype=torch.long)
            batch["consistency_mask"] = _pad(answers, 0).bool()
        return batch


class DPOCollator:
    """Every prompt + chosen, then every prompt + rejected (``trl.DPOTrainer``'s layout), each with its media.

    A row with ``twins`` (a kept group, ``alignment.data.with_groups``) is its first member's pair like any
    other; its members also go, one sequence each with the chosen answer, into ``consistency``: a batch of
    their own as ``SFTCollator`` makes it, which ``OmniDPOTrainer`` scores by agreement. Batches without
    such rows have no ``consistency`` key.
    """

    def __init__(self, encoder: OmniEncoder) -> None:
        self.encoder = encoder
        self.groups = SFTCollator(encoder)

    def __call__(self, rows: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        encoded = [self.encoder.encode(row, [row["chosen"], row["rejected"]]) for row in rows]
        ids: list[list[int]] = []
        completion: list[list[int]] = []
        for side in (0, 1):  # chosen half, then rejected half
            for e in encoded:
                prompt, answer = e.prompt_ids, list(e.completions[side])
                ids.append(prompt + answer)
                completion.append([0] * len(prompt) + [1] * len(answer))
        batch = {
            "input_ids": _pad(ids, self.encoder.pad_id),
            "attention_mask": _pad([[1] * len(r) for r in ids], 0),
            "completion_mask": _pad(completion, 0),
            **self.encoder.media([*encoded, *encoded]),
        }
        grouped = [row for row in rows if twins(row)]
        if grouped:
            batch["consistency"] = {k: v for k, v in self.groups(grouped).items() if k != "labels"}
        return batch
