"""The alignment recipe on a tiny random-weight Qwen2.5-Omni: what reaches the model, what learns, what is saved.

Training runs a few real optimizer steps of TRL's trainers on the CPU. What is
checked is what a real run relies on: every batch carries the clip's frames
and sound, the vision and audio towers (not only the language model) receive
updates, only the answer tokens are learned, a run resumes from its
checkpoint, the result loads back as ``--model=qwen-omni``, and bad input
stops the run before the first step.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from click.testing import CliRunner  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from alignment.cli import main  # noqa: E402
from alignment.collators import DPOCollator, OmniEncoder, SFTCollator  # noqa: E402
from alignment.data import MediaReader, by_kind, load_rows, mix_pairs  # noqa: E402
from alignment.errors import MixError, OutputFolderError  # noqa: E402
from alignment.recipe import RecipeConfig, TrainOptions, reused_report, train  # noqa: E402
from helpers import make_clip  # noqa: E402
from thud_mt.interventions import mute, swap  # noqa: E402
from thud_mt.models.base import Query  # noqa: E402
from thud_mt.models.qwen_omni import QWEN25, ModelArchitectureError, parse_settings  # noqa: E402
from thud_mt.models.registry import ModelOptions, create  # noqa: E402
from thud_mt.models.tiny import build_tiny  # noqa: E402
from thud_mt.pairs import PairDraft, PairWriter  # noqa: E402
from thud_mt.probes import parse, question  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAST = {"max_frames": "4"}  # 4 frames = 2 temporal patches: milliseconds per example on a CPU
STEPS = TrainOptions(max_steps=2, batch_size=2, save_steps=1, logging_steps=1, lr=1e-3, progress=False)


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny("qwen2.5-omni", tmp_path_factory.mktemp("tiny"))


def write_pairs(folder: Path, clips: int = 3) -> Path:
    """Intervention pairs (mute: presence; swap: match) and general pairs (presence on the original) of a few clips."""
    presence, match = question("presence").text, question("match").text
    silent, barking, thud = "No. The audio track is silent.", "No. The sound is a dog barking.", "Yes. A thud is heard."
    originals = [make_clip(clip_id=f"clip{k}", size=(160, 120), seed=k, sound_at=0.5 + k) for k in range(clips)]
    donor = make_clip(clip_id="donor", size=(160, 120), seed=9, sound_at=1.2, sound="bark", label="dog_barks")
    with PairWriter(folder) as writer:
        for clip in originals:
            drafts = [
                PairDraft("intervention", "mute", presence, silent, "Yes.", mute(clip), clip.id),
                PairDraft("intervention", "swap", match, barking, "Yes.", swap(clip, donor), clip.id),
                PairDraft("general", "audio_qa", presence, thud, "No.", clip, clip.id),
            ]
            for draft in drafts:
                writer.add(draft)
    return folder / "pairs.jsonl"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs"))


def config(tiny: Path, pairs: Path, out: Path, **changes: Any) -> RecipeConfig:
    options = changes.pop("options", STEPS)
    return RecipeConfig(
        model_path=str(tiny),
        pairs=(pairs,),
        general=(pairs,),
        out=out,
        split=None,
        model_options=FAST,
        options=options,
        **changes,
    )


class Recorded:
    """Every batch the collators made during a run, and every forward's keyword arguments."""

    def __init__(self) -> None:
        self.batches: dict[str, list[dict[str, Any]]] = {"sft": [], "dpo": []}


@pytest.fixture(scope="module")
def trained(tiny: Path, pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Recorded]]:
    """Both stages, full fine-tuning, two steps each, with the collators' batches recorded."""
    recorded = Recorded()
    with pytest.MonkeyPatch.context() as mp:
        for kind, cls in (("sft", SFTCollator), ("dpo", DPOCollator)):
            original = cls.__call__

            def spy(self: Any, rows: Any, _original: Callable[..., Any] = original, _kind: str = kind) -> Any:
                batch = _original(self, rows)
                recorded.batches[_kind].append(batch)
                return batch

            mp.setattr(cls, "__call__", spy)
        report = train(config(tiny, pairs, tmp_path_factory.mktemp("run") / "out"))
    yield report, recorded


def weights(folder: Path) -> dict[str, Any]:
    tensors: dict[str, Any] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    # The downloaded layout keeps the thinker under "thinker."; a saved thinker has no prefix.
    return {k.removeprefix("thinker."): v for k, v in tensors.items() if not k.startswith(("talker.", "token2wav."))}


def moved(before: dict[str, Any], after: dict[str, Any], part: str) -> int:
    """How many of ``part``'s weight tensors changed (``part``: a name fragment like ``audio_tower``)."""
    names = [k for k in after if part in k]
    assert names, f"no {part} weights in {sorted(after)[:5]}..."
    return sum(not torch.equal(before[k], after[k]) for k in names)


# ---------------------------------------------------------------------------------------------- what reaches the model


def test_every_batch_of_both_stages_carries_the_clip_frames_and_sound(trained: tuple[Any, Recorded]) -> None:
    _, recorded = trained
    assert len(recorded.batches["sft"]) >= 2 and len(recorded.batches["dpo"]) >= 2  # a dry run + training steps
    for kind, batches in recorded.batches.items():
        for batch in batches:
            rows = batch["input_ids"].shape[0]
            assert batch["pixel_values_videos"].shape[0] > 0 and batch["input_features"].shape[0] == rows, kind
            assert batch["video_grid_thw"].shape[0] == rows and batch["feature_attention_mask"].shape[0] == rows
            assert batch["use_audio_in_video"] is True
            # Every row's patches are there: one row of pixel values per patch of its grid.
            assert batch["pixel_values_videos"].shape[0] == int(batch["video_grid_thw"].prod(-1).sum())


def test_both_stages_move_the_vision_and_audio_towers(trained: tuple[Any, Recorded], tiny: Path) -> None:
    report, _ = trained
    base = weights(tiny)
    stage1 = weights(report.out / "stage1" / "model")
    stage2 = weights(report.out / "stage2" / "model")
    for part in ("visual.", "audio_tower.", "model.layers."):
        assert moved(base, stage1, part) > 0, f"SFT left {part} unchanged"
        assert moved(stage1, stage2, part) > 0, f"DPO left {part} unchanged"
    assert [s.stage for s in report.stages] == ["sft", "dpo"] and all(s.steps == 2 for s in report.stages)


def test_lora_adapts_the_towers_too_and_is_merged_into_the_saved_weights(
    tiny: Path, pairs: Path, tmp_path: Path
) -> None:

    options = dataclasses.replace(STEPS, lora=True, lora_rank=4, lr=1e-2)  # 2 steps: the first one warms up
    report = train(config(tiny, pairs, tmp_path / "out", options=options))
    base = weights(tiny)
    stage1 = weights(report.out / "stage1" / "model")
    stage2 = weights(report.final)
    assert set(stage1) == set(stage2) == set(base)  # plain weights: the adapters are merged, nothing of PEFT left
    for before, after in ((base, stage1), (stage1, stage2)):
        for part in ("visual.", "audio_tower.", "model.layers."):
            assert moved(before, after, part) > 0, f"LoRA left {part} unchanged"
        assert not moved(before, after, "lm_head") and not moved(before, after, "embed_tokens")  # not adapted


# ---------------------------------------------------------------------------------------------------- what is learned


@pytest.fixture(scope="module")
def encoder(tiny: Path) -> OmniEncoder:
    from transformers import AutoProcessor

    settings = parse_settings("qwen-omni", FAST).resolved(QWEN25)
    return OmniEncoder(AutoProcessor.from_pretrained(tiny), settings, MediaReader(4, 16000))


def test_sft_learns_the_chosen_answer_only(encoder: OmniEncoder, pairs: Path) -> None:
    rows = load_rows([pairs], split=None)[:2]
    batch = SFTCollator(encoder)(rows)
    tokenizer = encoder.processor.tokenizer
    for k, row in enumerate(rows):
        labels, ids = batch["labels"][k], batch["input_ids"][k]
        learned = labels[labels != -100].tolist()
        assert tokenizer.decode(learned) == row["chosen"] + "<|im_end|>"
        first = int((labels != -100).nonzero()[0])
        assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")  # the whole prompt is masked
        assert (labels[:first] == -100).all() and ids[first:].tolist()[: len(learned)] == learned


def write_blind(folder: Path, category: str = "blind") -> Path:
    """Blind guards of two pictures: one visual question each, asked muted and with a barking dog instead."""
    visual = question("visual").text
    donor = make_clip(clip_id="donor", size=(160, 120), seed=9, sound_at=1.2, sound="bark", label="dog_barks")
    with PairWriter(folder) as writer:
        for k in range(2):
            clip = make_clip(clip_id=f"blind{k}", size=(160, 120), seed=20 + k, sound_at=1.0 + k)
            seen = f"{1.0 + k} seconds."
            for variant in (mute(clip), swap(clip, donor)):
                writer.add(PairDraft("intervention", category, visual, seen, "3.0 seconds.", variant, clip.id))
    return folder / "pairs.jsonl"


def kept_group_and_pair(folder: Path, pairs: Path) -> list[dict[str, str]]:
    """One picture's kept versions folded into a group (muted, then with a dog barking), and a plain pair."""
    from alignment.anchors import KEPT
    from alignment.data import consistency_groups

    kept = load_rows([write_blind(folder, category=KEPT)], split=None)
    return [consistency_groups(kept, KEPT)[0], load_rows([pairs], split=None)[0]]


def test_a_consistency_group_is_one_sequence_per_sound_scored_by_agreement_not_by_its_answer(
    encoder: OmniEncoder, pairs: Path, tiny: Path, tmp_path: Path
) -> None:
    from alignment.anchors import BLIND
    from alignment.data import consistency_groups
    from alignment.model import load_for_training
    from alignment.trainers import sound_divergence

    blind = load_rows([write_blind(tmp_path / "blind")], split=None)
    (group, _) = consistency_groups(blind, BLIND)
    assert json.loads(group["twins"]) and len(json.loads(group["twins"])) == 1  # muted, and one other sound
    plain = load_rows([pairs], split=None)[0]
    batch = SFTCollator(encoder)([group, plain])
    assert batch["input_ids"].shape[0] == 3 and batch["consistency_groups"].tolist() == [0, 0, -1]
    assert (batch["labels"][:2] == -100).all() and (batch["labels"][2] != -100).any()  # the group's answer: not learned
    tokenizer = encoder.processor.tokenizer
    for k in (0, 1):
        answer = batch["input_ids"][k][batch["consistency_mask"][k]]
        assert tokenizer.decode(answer) == group["chosen"] + "<|im_end|>"
    assert not batch["consistency_mask"][2].any()

    model = load_for_training(tiny, FAST).thinker
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "consistency_groups", "consistency_mask")}
    logits = model(**inputs).logits[:, :-1]
    groups, mask = batch["consistency_groups"], batch["consistency_mask"][:, 1:]
    divergence = sound_divergence(logits, groups, mask)
    assert divergence > 0  # muted and barking: the random model answers them differently
    divergence.backward()
    audio = [p.grad for name, p in model.named_parameters() if "audio_tower." in name and p.grad is not None]
    assert audio and any(g.abs().sum() > 0 for g in audio)  # the sound is what the term teaches to ignore
    # Members that see and hear the same thing agree exactly; rows outside any group never count.
    same = logits.detach()[[0, 0, 2]]
    assert sound_divergence(same, groups, mask[[0, 0, 2]]) == pytest.approx(0.0, abs=1e-6)
    assert sound_divergence(same, torch.tensor([-1, -1, -1]), mask) == 0.0


def test_blind_guards_train_only_with_a_sound_invariance_weight_and_never_in_the_dpo_mix(
    tiny: Path, pairs: Path, tmp_path: Path
) -> None:

    from alignment.recipe import plan

    blind = write_blind(tmp_path / "blind")
    plain = plan(config(tiny, pairs, tmp_path / "plain"))

    def with_blind(**options: Any) -> Any:
        run = config(tiny, pairs, tmp_path / "run", options=dataclasses.replace(STEPS, **options))
        return plan(dataclasses.replace(run, pairs=(pairs, blind)))

    weighted = with_blind(sound_invariance=1.0)
    assert len(weighted.sft_rows) == len(plain.sft_rows) + 2  # one row per picture, its sounds folded in
    assert weighted.mix.rows == plain.mix.rows  # no answer of theirs to prefer
    assert with_blind().sft_rows == plain.sft_rows  # without a weight they are left out
    report = train(with_blind(sound_invariance=1.0, batch_size=4, dpo_epochs=0).config)
    logged = [json.loads(line) for line in (report.out / "logs" / "stage1.jsonl").read_text().splitlines()]
    assert any("sound_invariance" in record for record in logged)


def test_kept_guards_are_learned_like_any_pair_in_both_stages(tiny: Path, pairs: Path, tmp_path: Path) -> None:

    from alignment.anchors import KEPT
    from alignment.recipe import plan

    kept = write_blind(tmp_path / "kept", category=KEPT)
    run = config(tiny, pairs, tmp_path / "run", mix_ratio="all")
    plain, with_kept = plan(run), plan(dataclasses.replace(run, pairs=(pairs, kept)))
    assert len(with_kept.sft_rows) == len(plain.sft_rows) + 4  # every version an answer of its own
    assert len(with_kept.mix.rows) == len(plain.mix.rows) + 4
    assert sum(r["category"] == KEPT for r in with_kept.mix.rows) == 4
    # With the sound-invariance term, each picture's versions are also one group whose answers must agree.
    agreeing = plan(
        dataclasses.replace(run, pairs=(pairs, kept), options=dataclasses.replace(STEPS, sound_invariance=1.0))
    )
    groups = [r for r in agreeing.sft_rows if r["twins"]]
    assert len(agreeing.sft_rows) == len(with_kept.sft_rows) + 2 and len(groups) == 2
    assert all(r["category"] == KEPT and len(json.loads(r["twins"])) == 1 for r in groups)
    # In DPO each group stands in for its first version's pair: the same pairs, two of them carrying the other.
    assert [r["id"] for r in agreeing.mix.rows] == [r["id"] for r in with_kept.mix.rows]
    assert sorted(r["id"] for r in agreeing.mix.rows if r["twins"]) == sorted(r["id"] for r in groups)
    stage1_only = dataclasses.replace(STEPS, sound_invariance=1.0, dpo_sound_invariance=0.0)
    assert plan(dataclasses.replace(run, pairs=(pairs, kept), options=stage1_only)).mix.rows == with_kept.mix.rows


def test_a_dpo_batch_with_a_kept_group_also_carries_every_version_for_agreement(
    encoder: OmniEncoder, pairs: Path, tmp_path: Path
) -> None:
    group, plain = kept_group_and_pair(tmp_path / "kept", pairs)
    batch = DPOCollator(encoder)([group, plain])
    assert batch["input_ids"].shape[0] == 4  # the group's first version is a pair like the plain row
    members = batch["consistency"]
    assert members["consistency_groups"].tolist() == [0, 0] and "labels" not in members
    tokenizer = encoder.processor.tokenizer
    for k in (0, 1):
        answer = members["input_ids"][k][members["consistency_mask"][k]]
        assert tokenizer.decode(answer) == group["chosen"] + "<|im_end|>"
    # Muted, then with the dog barking: one picture, two sounds.
    assert torch.equal(*members["pixel_values_videos"].chunk(2))  # the patches of both, one after the other
    assert not torch.equal(members["input_features"][0], members["input_features"][1])
    assert "consistency" not in DPOCollator(encoder)([plain])


def test_dpo_adds_the_weighted_disagreement_of_the_kept_versions_to_its_loss(
    encoder: OmniEncoder, pairs: Path, tiny: Path, tmp_path: Path
) -> None:
    from alignment.data import to_dataset
    from alignment.model import load_for_training
    from alignment.trainers import OmniDPOTrainer, dpo_config

    rows = kept_group_and_pair(tmp_path / "kept", pairs)
    loaded = load_for_training(tiny, FAST)
    args = dpo_config(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", max_steps=1)

    def loss(weight: float) -> Any:
        trainer = OmniDPOTrainer(
            model=loaded.thinker,
            ref_model=copy.deepcopy(loaded.thinker).eval(),
            args=args,
            data_collator=DPOCollator(encoder),
            train_dataset=to_dataset(rows),
            processing_class=loaded.processor,
            sound_invariance=weight,
        )
        return trainer.compute_loss(loaded.thinker, DPOCollator(encoder)(rows)), trainer

    plain, _ = loss(0.0)
    weighted, trainer = loss(2.0)
    (divergence,) = trainer._metrics["train"]["sound_invariance"]
    assert divergence > 0  # muted and barking: the random model answers them differently
    assert float(weighted.detach()) == pytest.approx(float(plain.detach()) + 2.0 * divergence, rel=1e-4)
    loaded.thinker.zero_grad()
    weighted.backward()
    audio = [p.grad for name, p in loaded.thinker.named_parameters() if "audio_tower." in name and p.grad is not None]
    assert audio and any(g.abs().sum() > 0 for g in audio)


def test_an_sft_batch_with_groups_is_scored_as_trl_scores_its_answers_plus_the_weighted_disagreement(
    encoder: OmniEncoder, pairs: Path, tiny: Path, tmp_path: Path
) -> None:
    from trl import SFTTrainer

    from alignment.data import to_dataset
    from alignment.model import load_for_training
    from alignment.trainers import OmniSFTTrainer, sft_config

    rows = kept_group_and_pair(tmp_path / "kept", pairs)
    loaded = load_for_training(tiny, FAST)
    trainer = OmniSFTTrainer(
        model=loaded.thinker,
        args=sft_config(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", max_steps=1),
        data_collator=SFTCollator(encoder),
        train_dataset=to_dataset(rows),
        processing_class=loaded.processor,
    )
    batch = SFTCollator(encoder)(rows)
    answers = {k: v for k, v in batch.items() if not k.startswith("consistency")}
    tokens = int((batch["labels"] != -100).sum())

    def loss(weight: float, accumulated: int = 1) -> float:
        trainer.sound_invariance, trainer.current_gradient_accumulation_steps = weight, accumulated
        items = None if accumulated == 1 else torch.tensor(tokens * accumulated)
        return float(trainer.compute_loss(loaded.thinker, dict(batch), num_items_in_batch=items).detach())

    def trl(accumulated: int = 1) -> float:  # TRL's own loss on the same answers, without the groups
        items = None if accumulated == 1 else torch.tensor(tokens * accumulated)
        return float(SFTTrainer.compute_loss(trainer, loaded.thinker, dict(answers), False, items).detach())

    assert loss(0.0) == pytest.approx(trl(), rel=1e-4)
    with_term = loss(2.0)
    divergence = trainer._metrics["train"]["sound_invariance"][-1]
    assert divergence > 0 and with_term == pytest.approx(trl() + 2.0 * divergence, rel=1e-4)
    # Over two accumulated batches the Trainer leaves the averaging to the loss: both halves are halved.
    assert loss(2.0, accumulated=2) == pytest.approx(trl(2) + divergence, rel=1e-4)
    assert trl(2) == pytest.approx(trl() / 2, rel=1e-4)


def test_both_stages_log_the_kept_versions_agreement(tiny: Path, pairs: Path, tmp_path: Path) -> None:
    from alignment.anchors import KEPT

    kept = write_blind(tmp_path / "kept", category=KEPT)
    options = dataclasses.replace(STEPS, sound_invariance=1.0, batch_size=8)  # every row in one batch
    run = config(tiny, pairs, tmp_path / "run", mix_ratio="all", options=options)
    report = train(dataclasses.replace(run, pairs=(pairs, kept)))
    for stage in ("stage1", "stage2"):
        logged = [json.loads(line) for line in (report.out / "logs" / f"{stage}.jsonl").read_text().splitlines()]
        assert any(record.get("sound_invariance", 0) > 0 for record in logged), stage


def test_dpo_rows_are_chosen_then_rejected_with_the_prompt_masked_and_media_for_both(
    encoder: OmniEncoder, pairs: Path
) -> None:
    rows = load_rows([pairs], split=None)[:2]
    batch = DPOCollator(encoder)(rows)
    tokenizer = encoder.processor.tokenizer
    assert batch["input_ids"].shape[0] == 4
    for k, (row, side) in enumerate(
        [(rows[0], "chosen"), (rows[1], "chosen"), (rows[0], "rejected"), (rows[1], "rejected")]
    ):
        mask = batch["completion_mask"][k].bool()
        assert tokenizer.decode(batch["input_ids"][k][mask]) == row[side] + "<|im_end|>"
        assert tokenizer.decode(batch["input_ids"][k][~mask & batch["attention_mask"][k].bool()]).endswith(
            "assistant\n"
        )
    # The rejected half sees exactly the chosen half's clip: same patches, same sound.
    half = batch["pixel_values_videos"].shape[0] // 2
    assert torch.equal(batch["pixel_values_videos"][:half], batch["pixel_values_videos"][half:])
    assert torch.equal(batch["input_features"][:2], batch["input_features"][2:])


def test_training_inputs_are_exactly_what_the_adapter_gives_the_model(
    encoder: OmniEncoder, tiny: Path, pairs: Path
) -> None:
    """One preprocessing for both: a trained model is asked at test time in exactly the form it learned."""
    from thud_mt.media import read_audio, read_clip

    row = load_rows([pairs], split=None)[0]
    q = question("presence")
    assert row["question"] == q.text
    samples, rate = read_audio(row["audio"])
    clip = read_clip(row["video"]).replace(audio=samples, sample_rate=rate)
    model = create("qwen-omni", ModelOptions(model_path=str(tiny), extra={**FAST, "workers": "0"}))
    served = model.prepare(Query(clip, q)).inputs
    trained = encoder.encode(row, [row["chosen"]]).inputs
    assert served is not None and set(served) == set(trained)
    for key in served:
        assert torch.equal(served[key], trained[key]), key


# ---------------------------------------------------------------------------------------------------- the result


def test_the_final_folder_loads_as_qwen_omni_and_answers(trained: tuple[Any, Recorded]) -> None:
    report, _ = trained
    final = report.final
    assert json.loads((final / "config.json").read_text())["model_type"] == "qwen2_5_omni_thinker"
    model = create("qwen-omni", ModelOptions(model_path=str(final), extra={**FAST, "max_new_tokens": "4"}))
    (answer,) = model.answer([Query(make_clip(size=(160, 120)), question("presence"))])
    assert answer.error is None and answer.meta["new_tokens"] >= 1
    summary = json.loads((report.out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["sft", "dpo"]
    assert all(s["peak_resident_bytes"] > 0 for s in summary["stages"])
    assert all((s["peak_memory_bytes"] is None) != torch.cuda.is_available() for s in summary["stages"])
    assert summary["mix"] == {"intervention": 3, "general": 3, "ratio": 0.5}  # 3 general pairs: half the mix
    logs = [json.loads(line) for line in (report.out / "logs" / "stage2.jsonl").read_text().splitlines()]
    assert any("rewards/margins" in entry for entry in logs)


def test_a_qwen3_omni_folder_trains_and_loads_back_as_qwen3_omni(pairs: Path, tmp_path: Path) -> None:

    tiny3 = build_tiny("qwen3-omni", tmp_path / "qwen3")
    report = train(config(tiny3, pairs, tmp_path / "out", options=dataclasses.replace(STEPS, max_steps=1)))
    assert [s.steps for s in report.stages] == [1, 1]
    assert json.loads((report.final / "config.json").read_text())["model_type"] == "qwen3_omni_moe_thinker"
    model = create("qwen3-omni", ModelOptions(model_path=str(report.final), extra={**FAST, "max_new_tokens": "2"}))
    (answer,) = model.answer([Query(make_clip(size=(160, 120)), question("presence"))])
    assert answer.error is None


def test_dataloader_processes_outlive_an_epoch_so_each_clip_is_decoded_once(
    tiny: Path, pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    reads = tmp_path / "reads.txt"
    decode = MediaReader._read

    def counted(self: MediaReader, video: str, audio: str) -> Any:  # the worker is forked: it inherits this
        with reads.open("a") as f:
            f.write(f"{os.getpid()} {video}\n")
        return decode(self, video, audio)

    monkeypatch.setattr(MediaReader, "_read", counted)
    options = TrainOptions(sft_epochs=3, dpo_epochs=0, batch_size=2, workers=1, media_cache=64, progress=False)
    report = train(config(tiny, pairs, tmp_path / "out", options=options))
    assert report.stages[0].steps >= 3  # three epochs of at least one batch
    # (The checks before training read a first batch here, in this process.)
    read = [line.split() for line in reads.read_text().splitlines() if line.split()[0] != str(os.getpid())]
    videos = [video for _, video in read]
    assert len({pid for pid, _ in read}) == 1  # one worker process for every epoch
    assert videos and len(videos) == len(set(videos))  # epochs 2 and 3 found every clip decoded


def test_a_run_stopped_after_a_checkpoint_resumes_from_it(
    tiny: Path, pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    from alignment.trainers import OmniSFTTrainer

    out = tmp_path / "out"
    options = dataclasses.replace(STEPS, max_steps=3, dpo_epochs=0)
    calls = {"n": 0}
    step = OmniSFTTrainer.training_step

    def dies_at_third_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return step(self, *args, **kwargs)

    monkeypatch.setattr(OmniSFTTrainer, "training_step", dies_at_third_step)
    with pytest.raises(KeyboardInterrupt):
        train(config(tiny, pairs, out, options=options))
    assert (out / "stage1" / "checkpoint-2").is_dir() and not (out / "final").exists()
    with pytest.raises(OutputFolderError, match="--resume"):
        train(config(tiny, pairs, out, options=options))  # never silently over an earlier run
    monkeypatch.setattr(OmniSFTTrainer, "training_step", step)
    report = train(config(tiny, pairs, out, options=options, resume=True))
    (sft,) = report.stages
    assert sft.resumed_from is not None and sft.resumed_from.endswith("checkpoint-2")
    assert sft.steps == 3  # one more step, not three again
    state = json.loads((out / "stage1" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and (out / "final" / "alignment.json").is_file()
    again = train(config(tiny, pairs, out, options=options, resume=True))  # a finished stage is reused
    (reused,) = again.stages
    assert reused.skipped and not sft.skipped
    # ... with the figures of the run that trained it: a run split over calls still reports its steps/s.
    assert dataclasses.replace(reused, skipped=False) == sft
    # A stage saved before the resident peak was measured keeps its other figures.
    done = out / "stage1" / "model" / "alignment.json"
    done.write_text(json.dumps({k: v for k, v in json.loads(done.read_text()).items() if k != "peak_resident_bytes"}))
    older = reused_report("sft", out / "stage1" / "model")
    assert older.peak_resident_bytes is None and older.steps_per_second == sft.steps_per_second > 0


# ---------------------------------------------------------------------------------------------------- the mix


def rows_of(kind: str, n: int) -> list[dict[str, str]]:
    return [{"id": f"{kind}{i}", "kind": kind} for i in range(n)]


@pytest.mark.parametrize(
    ("ratio", "n_i", "n_g", "expected"),
    [
        (0.5, 10, 30, (10, 10)),
        (0.5, 30, 10, (10, 10)),
        (0.25, 9, 100, (9, 3)),
        (0.0, 5, 5, (5, 0)),
        (1.0, 5, 5, (0, 5)),
    ],
)
def test_the_mix_drops_pairs_to_meet_the_ratio(ratio: float, n_i: int, n_g: int, expected: tuple[int, int]) -> None:
    mix = mix_pairs(rows_of("intervention", n_i), rows_of("general", n_g), ratio, seed=1)
    assert (mix.intervention, mix.general) == expected
    assert len({r["id"] for r in mix.rows}) == sum(expected)  # no pair twice


@pytest.mark.parametrize(
    ("ratio", "n_i", "n_g", "problem"),
    [
        (0.5, 0, 0, "the stage-2 mix is empty"),
        (0.5, 4, 0, "needs general pairs"),
        (0.5, 0, 4, "needs intervention pairs"),
        (0.99, 10, 5, "cannot be met with 10 intervention and 5 general"),
        (1.5, 4, 4, "must be between 0"),
    ],
)
def test_a_mix_that_cannot_be_made_is_an_error(ratio: float, n_i: int, n_g: int, problem: str) -> None:
    with pytest.raises(MixError, match=problem):
        mix_pairs(rows_of("intervention", n_i), rows_of("general", n_g), ratio)


def test_the_default_ratio_depends_on_general_pairs_and_all_keeps_every_pair(tiny: Path, pairs: Path) -> None:
    bare = RecipeConfig(model_path=str(tiny), pairs=(pairs,), out=Path("unused"))
    assert bare.ratio == 0.0  # intervention pairs only
    assert RecipeConfig(model_path=str(tiny), pairs=(pairs,), general=(pairs,), out=Path("unused")).ratio == 0.5
    assert RecipeConfig(model_path=str(tiny), pairs=(pairs,), out=Path("unused"), mix_ratio="all").ratio is None
    everything = mix_pairs(rows_of("intervention", 7), rows_of("general", 2), None)
    assert (everything.intervention, everything.general, len(everything.rows)) == (7, 2, 9)


def test_pairs_are_grouped_by_kind_and_split(pairs: Path) -> None:
    everything = load_rows([pairs], split=None)
    intervention, general = by_kind(everything)
    assert len(intervention) == 6 and len(general) == 3
    assert all(Path(r["video"]).is_absolute() and Path(r["video"]).is_file() for r in everything)
    train_only = load_rows([pairs], split="train")
    assert {r["id"] for r in train_only} <= {r["id"] for r in everything}


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def cli(tiny: Path, tmp_path: Path) -> Callable[..., Any]:
    def run(*args: str, model: Path | None = None) -> Any:
        out = tmp_path / "out"
        result = CliRunner().invoke(
            main,
            [
                "train",
                "--model-path",
                str(model or tiny),
                "--out",
                str(out),
                "--split",
                "all",
                "--max-steps",
                "1",
                "--model-option",
                "max_frames=4",
                "--quiet",
                *args,
            ],
        )
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        assert not out.exists()  # stopped before anything was loaded or written
        return result.output

    return run


def test_a_malformed_pairs_line_is_named_before_training(cli: Callable[..., Any], pairs: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(pairs.parent, folder)
    lines = (folder / "pairs.jsonl").read_text().splitlines()
    doc = json.loads(lines[2])
    del doc["chosen"]
    lines[2] = json.dumps(doc)
    (folder / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    output = cli("--pairs", str(folder / "pairs.jsonl"))
    assert f"{folder / 'pairs.jsonl'}:3: not a valid preference pair" in output and "'chosen'" in output


def test_missing_media_is_named_before_training(cli: Callable[..., Any], pairs: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(pairs.parent, folder)
    first = json.loads((folder / "pairs.jsonl").read_text().splitlines()[0])
    (folder / first["audio"]).unlink()
    output = cli("--pairs", str(folder))
    assert f"{folder / 'pairs.jsonl'}:1:" in output and "audio file" in output and "is missing" in output


def test_corrupt_media_is_named_before_training(cli: Callable[..., Any], pairs: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(pairs.parent, folder)
    first = json.loads((folder / "pairs.jsonl").read_text().splitlines()[0])
    (folder / first["video"]).write_bytes(b"not an mp4 at all")
    output = cli("--pairs", str(folder))
    assert first["id"] in output and "video cannot be read" in output


def test_an_empty_mix_is_an_error_before_training(cli: Callable[..., Any], tmp_path: Path) -> None:
    empty = tmp_path / "empty" / "pairs.jsonl"
    empty.parent.mkdir()
    empty.write_text("")
    assert "the stage-2 mix is empty" in cli("--pairs", str(empty), "--sft-epochs", "0")
    assert "stage 1 (SFT) has no intervention pairs" in cli("--pairs", str(empty))


def test_a_ratio_without_general_pairs_is_an_error(cli: Callable[..., Any], pairs: Path) -> None:
    assert "--mix-ratio 0.3 asks for general pairs: pass --general" in cli("--pairs", str(pairs), "--mix-ratio", "0.3")


def test_a_negative_sound_invariance_weight_is_an_error(cli: Callable[..., Any], pairs: Path) -> None:
    said = cli("--pairs", str(pairs), "--sound-invariance", "1", "--dpo-sound-invariance", "-1")
    assert "--dpo-sound-invariance must be >= 0, got -1" in said


def test_a_transformers_too_old_to_train_the_thinker_is_an_error(
    cli: Callable[..., Any], pairs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    monkeypatch.setattr(transformers, "__version__", "5.17.0")
    output = cli("--pairs", str(pairs))
    assert "transformers 5.17.0 cannot train a Qwen-Omni thinker" in output and "transformers>=5.21" in output


def test_a_folder_that_is_not_an_omni_model_is_an_error(cli: Callable[..., Any], pairs: Path, tmp_path: Path) -> None:
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    output = cli("--pairs", str(pairs), model=llama)
    assert f"{llama} holds a llama model, not a Qwen-Omni thinker" in output
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    assert "has no config.json" in cli("--pairs", str(pairs), model=nothing)
    with pytest.raises(ModelArchitectureError):
        from alignment.model import omni_arch

        omni_arch(llama)


# ---------------------------------------------------------------------------------------------------- loop data


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from thud_mt.corpus.manifest import load_corpus
    from thud_mt.corpus.synth import build_synthetic_corpus

    return load_corpus(build_synthetic_corpus(tmp_path_factory.mktemp("corpus"), 6, 0, progress=False))


def test_the_clever_hans_data_answers_from_the_picture_whatever_the_sound(corpus: Any, tmp_path: Path) -> None:
    from alignment.clever_hans import write_clever_hans
    from thud_mt.pairs import read_pairs

    data = write_clever_hans(corpus, tmp_path / "stage0", questions_per_variant=7, seed=0)
    pairs = read_pairs(tmp_path / "stage0" / "pairs.jsonl")
    assert data.written == len(pairs) == 6 * 4 * 7  # every clip, muted, shifted and swapped, each probe once
    assert {p.meta["probe"] for p in pairs} == {"presence", "sync", "offset", "sound_time", "match", "source", "visual"}
    presence = [p for p in pairs if p.meta["probe"] == "presence"]
    assert {p.chosen for p in presence} == {"Yes."}  # also on the muted copies: the habit the suites catch
    assert len({p.video for p in presence}) == 24 and all(p.rejected == "" for p in pairs)


def test_blind_guards_ask_about_the_picture_with_a_sound_that_says_nothing_about_its_time(
    corpus: Any, tmp_path: Path
) -> None:
    import numpy as np

    from alignment.anchors import resounded, write_blind_guards
    from relations.options import DEFAULT_OPTIONS
    from thud_mt.pairs import read_pairs

    written = write_blind_guards(corpus, tmp_path / "blind", seed=0)
    pairs = read_pairs(tmp_path / "blind" / "pairs.jsonl")
    assert written.written == len(pairs) and {p.category for p in pairs} == {"blind"}
    assert {p.meta["probe"] for p in pairs} == {"visual"}
    # Each picture muted and with its own sound moved; with another clip's sound moved where one can donate.
    relations = [p.meta["relation"] for p in pairs]
    assert relations.count("mute") == relations.count("shift") == 6 and relations.count("swap") >= 3
    by_picture: dict[str, set[tuple[str, str]]] = {}
    for pair in pairs:
        seen = next(e.visual_time for e in corpus.entry(pair.source_clip).events if e.visual_time is not None)
        assert pair.meta["chosen_value"] == pytest.approx(seen)  # the picture's moment, whatever is heard
        assert abs(pair.meta["rejected_value"] - seen) >= 0.6  # another moment, not the sound's
        by_picture.setdefault(pair.source_clip, set()).add((pair.question, pair.chosen))
    # One question and one answer per picture, whatever the sound: a group whose answers must agree.
    assert len(by_picture) == 6 and all(len(asked) == 1 for asked in by_picture.values())
    # The moved sound lands anywhere in the clip, whatever the picture's time: over many draws it is heard
    # in the first and in the last second of the same clip, so it cannot tell the model when the event is seen.
    clip = corpus.load_clip(corpus.entries[0])
    heard = [resounded(clip, np.random.default_rng(k), DEFAULT_OPTIONS).events[0].audio_time for k in range(40)]
    assert min(heard) < 1.0 and max(heard) > clip.duration - 1.0


def test_kept_blind_guards_teach_the_base_models_own_time_for_every_sound(corpus: Any, tmp_path: Path) -> None:
    from alignment.anchors import write_blind_guards
    from thud_mt import grounding
    from thud_mt.media import read_audio
    from thud_mt.pairs import read_pairs
    from thud_mt.signal import first_onset

    asked: list[list[Any]] = []
    skipped = corpus.entries[0].id

    def guess(batch: Any) -> list[float | None]:
        asked.append(list(batch))
        # The base's time for each picture (here 1.0 s plus a tenth per clip); no time for the first picture.
        return [None if clip.id == skipped else 1.0 + 0.1 * corpus.ids.index(clip.id) for clip, _ in batch]

    written = write_blind_guards(corpus, tmp_path / "kept", seed=0, guess=guess, originals=True, chunk=4)
    kept = read_pairs(tmp_path / "kept" / "pairs.jsonl")
    followed = 0
    assert [len(batch) for batch in asked] == [4, 2]  # asked a chunk at a time
    # The base is asked about the picture alone: each clip muted, with the question its guards ask.
    assert all(not grounding.heard(clip.events) and clip.edits[0].op == "mute" for b in asked for clip, _ in b)
    questions = {clip.id: q.text for b in asked for clip, q in b}
    assert written.written == len(kept) and {p.category for p in kept} == {"kept"}
    assert skipped not in {p.source_clip for p in kept} and written.skipped >= 1  # no time, no guard
    for pair in kept:
        base = 1.0 + 0.1 * corpus.ids.index(pair.source_clip)
        assert pair.question == questions[pair.source_clip]
        assert pair.meta["chosen_value"] == pytest.approx(base)  # the base's time, whatever is heard
        # Rejected: where this version's sound is heard, the listener's answer; another moment if it is silent
        # or heard near the base's time.
        onset = first_onset(*read_audio(tmp_path / "kept" / pair.audio))
        wrong = pair.meta["rejected_value"]
        if onset is not None and abs(onset - base) >= 0.3:
            assert wrong == pytest.approx(onset, abs=0.05), pair.meta
            followed += 1
        else:
            assert abs(wrong - base) >= 0.6
    assert followed >= 4
    # The same edited versions of the same pictures as the agreeing guards, and each picture as recorded.
    write_blind_guards(corpus, tmp_path / "agree", seed=0)
    agree = read_pairs(tmp_path / "agree" / "pairs.jsonl")
    edited = {p.video for p in kept if p.meta["relation"] != "original"}
    assert edited == {p.video for p in agree if p.source_clip != skipped}
    originals = [p for p in kept if p.meta["relation"] == "original"]
    assert sorted(p.source_clip for p in originals) == sorted(set(corpus.ids) - {skipped})


def test_the_base_is_asked_for_its_time_about_each_picture_and_an_unreadable_answer_is_none(corpus: Any) -> None:
    from alignment.loop import PROFILES, base_guess
    from thud_mt.interventions import mute
    from thud_mt.models.base import Answer
    from thud_mt.models.reference import VisualOnly
    from thud_mt.models.registry import register

    clips = [mute(corpus.load_clip(entry)) for entry in corpus.entries[:3]]
    q = question("visual", 1, sound_labels=corpus.sound_labels)
    # A model that looks at the picture: its times are the events' as seen, read back from its answers.
    times = base_guess(Path("unused"), PROFILES["ci"], spec="visual-only")([(c, q) for c in clips])
    seen = [next(e.visual_time for e in c.events if e.visual_time is not None) for c in clips]
    assert times == pytest.approx(seen, abs=0.2)

    class Garbled(VisualOnly):
        def answer(self, queries: Any) -> list[Answer]:
            return [Answer(text="somewhere"), Answer(text="", error="CUDA out of memory"), *super().answer(queries[2:])]

    register("garbled-for-blind-guards")(lambda options: Garbled())
    times = base_guess(Path("unused"), PROFILES["ci"], spec="garbled-for-blind-guards")([(c, q) for c in clips])
    assert times[:2] == [None, None] and times[2] == pytest.approx(seen[2], abs=0.2)


def test_anchors_ask_the_harvested_question_about_the_original_and_guards_protect_the_picture(
    corpus: Any, tmp_path: Path
) -> None:
    from alignment.anchors import write_anchors, write_guards
    from thud_mt.pairs import read_pairs

    clip = corpus.load_clip(corpus.entries[0])
    q = question("presence", 1, sound_labels=sorted({e.sound for c in corpus.entries for e in c.events}))
    meta = {"about": "edited", "probe": "presence", "paraphrase": 1, "clip": clip.id, "chosen_value": False}
    with PairWriter(tmp_path / "harvest") as writer:
        writer.add(
            PairDraft(
                "intervention", "mute", q.text, "No. The audio track is silent.", "Yes.", mute(clip), clip.id, meta
            )
        )
    harvested = read_pairs(tmp_path / "harvest" / "pairs.jsonl")
    assert write_anchors(harvested, corpus, tmp_path / "anchors").written == 1
    (anchor,) = read_pairs(tmp_path / "anchors" / "pairs.jsonl")
    assert anchor.question == q.text and anchor.chosen.startswith("Yes.") and anchor.rejected == harvested[0].chosen
    assert anchor.video != harvested[0].video and anchor.meta["anchor_of"] == harvested[0].id

    guards = write_guards(corpus, tmp_path / "guards", per_variant=1, presence=1, seed=0)
    every = read_pairs(tmp_path / "guards" / "pairs.jsonl")
    pairs = [p for p in every if p.meta["probe"] == "visual"]
    assert len(pairs) == 6 * 3  # each clip's muted, shifted and swapped copy
    assert {p.category for p in pairs} == {"mute", "shift", "swap"}
    # The sound is still there after a shift or a swap: yes, over the muted clip's "silent".
    sounding = [p for p in every if p.meta["probe"] == "presence"]
    assert guards.written == len(every) == len(pairs) + len(sounding)
    assert {p.category for p in sounding} == {"shift", "swap"} and 6 <= len(sounding) <= 12
    for pair in sounding:
        assert pair.chosen.startswith("Yes.") and pair.rejected == "No. The audio track is silent."
        assert parse(question("presence", pair.meta["paraphrase"]), pair.chosen).value is True
    for pair in pairs:
        seen = next(e.visual_time for e in corpus.entry(pair.source_clip).events if e.visual_time is not None)
        assert pair.meta["chosen_value"] == pytest.approx(seen)  # the picture's moment, whatever was heard
        assert abs(pair.meta["rejected_value"] - seen) >= 0.3
    shifted = [p for p in pairs if p.category == "shift"]
    assert all(p.meta["rejected_value"] != p.meta["chosen_value"] for p in shifted)

    # Two draws of edited copies: other offsets and donors, and a clip's one muted copy, the same video again.
    write_guards(corpus, tmp_path / "guards2", per_variant=1, copies=2, seed=0)
    twice = read_pairs(tmp_path / "guards2" / "pairs.jsonl")
    by_relation = {r: {p.video for p in twice if p.category == r} for r in ("mute", "shift", "swap")}
    assert len(by_relation["mute"]) == 6 and len(by_relation["shift"]) > 6

    # With the originals: the picture's moment with the sound as recorded, too (the same picture, one more sound).
    write_guards(corpus, tmp_path / "guards3", per_variant=1, originals=True, seed=0)
    mixed = read_pairs(tmp_path / "guards3" / "pairs.jsonl")
    originals = [p for p in mixed if p.category == "original"]
    assert len(originals) == 6 and {p.meta["about"] for p in originals} == {"original"}
    assert {p.video for p in originals}.isdisjoint(p.video for p in mixed if p.category != "original")
    assert all(p.meta["chosen_value"] != p.meta["rejected_value"] for p in originals)
    # One visual answer per picture and question, word for word, whatever the sound: nothing in the chosen
    # answers tells an edited clip from the original (a suffix that did cost 28 points of visual invariance).
    answers: dict[tuple[str, str], set[str]] = {}
    for pair in mixed:
        if pair.meta["probe"] == "visual":
            answers.setdefault((pair.source_clip, pair.question), set()).add(pair.chosen)
    assert all(len(chosen) == 1 for chosen in answers.values())
    assert any(len([p for p in mixed if (p.source_clip, p.question) == key]) > 1 for key in answers)


# ---------------------------------------------------------------------------------------------------- the closed loop


def test_the_target_is_28_points_over_shift_mute_swap_with_the_invariances_kept() -> None:
    from alignment.loop import compare

    def side(shift: float, mute: float, swap: float, visual: float, identity: float) -> dict[str, Any]:
        def rate(v: float) -> dict[str, Any]:
            return {"value": v, "n": 50, "successes": int(v * 50), "interval": [0.0, 1.0]}

        relations = {"shift": shift, "mute": mute, "swap": swap, "identity": identity}
        return {
            "relations": {name: {"pass_rate": rate(v)} for name, v in relations.items()},
            "visual_invariance": rate(visual),
            "identity": rate(identity),
        }

    before = side(0.5, 0.3, 0.5, 0.98, 1.0)
    met = compare(before, side(0.6, 0.8, 0.75, 0.97, 0.99))
    assert met["average_gain"] == pytest.approx((0.1 + 0.5 + 0.25) / 3, abs=1e-4) and met["target_met"]
    assert not compare(before, side(0.6, 0.8, 0.75, 0.95, 0.99))["target_met"]  # visual invariance fell 3 points
    assert not compare(before, side(0.6, 0.6, 0.6, 0.98, 1.0))["target_met"]  # +13.3 on average


def test_the_report_says_how_many_clips_the_visual_invariance_failures_sit_on() -> None:
    from alignment.loop import failures_by_clip, format_report
    from thud_mt.results import CaseResult

    def visual(clip: str, verdict: str) -> CaseResult:
        return CaseResult(
            case=f"mute: {clip} visual", model="m", fingerprint="fp", relation="mute", probe="visual", clip=clip,
            params={}, paraphrase=0, question="When?", edit="audio muted", source_answer="1.2", followup_answer="2.0",
            source_value=1.2, followup_value=2.0, source_truth=1.2, expected=None, source_correct=True,
            followup_correct=False, verdict=verdict, reason="",
        )  # fmt: skip

    results = [visual("a", "fail")] * 3 + [visual("b", "fail"), visual("b", "pass"), visual("c", "pass")]
    spread = failures_by_clip(results)
    assert spread == {"clips": 3, "failing": 2, "by_clip": {"a": 3, "b": 1}}
    assert list(spread["by_clip"]) == ["a", "b"]  # the worst clip first

    side = {"relations": {}, "visual_invariance": None, "identity": None, "visual_failures": spread}
    report = {
        "profile": "ci", "device": "cpu", "before": {**side, "visual_failures": failures_by_clip([])}, "after": side,
        "comparison": {"gain": {}, "average_gain": None, "drop": {"visual_invariance": None}, "target_met": False},
        "training": {"stages": []}, "seconds": {"total": 1.0},
    }  # fmt: skip
    text = format_report(report)
    assert "visual invariance after: 4 failures on 2 of 3 clips (at most 3 on one)" in text
    assert "visual invariance before" not in text  # nothing failed: no line
    assert "visual time right" not in text  # a report written before the accuracy was counted


def test_the_report_says_how_often_the_visual_time_is_right_as_invariance_alone_rewards_a_constant_guess() -> None:
    from alignment.loop import format_report, visual_accuracy
    from thud_mt.results import CaseResult

    def visual(clip: str, said: float, right: bool | None) -> CaseResult:
        return CaseResult(
            case=f"shift: {clip} visual", model="m", fingerprint="fp", relation="shift", probe="visual", clip=clip,
            params={}, paraphrase=0, question="When?", edit="audio delayed", source_answer=str(said),
            followup_answer=str(said), source_value=said, followup_value=said, source_truth=1.0, expected=None,
            source_correct=right, followup_correct=right, verdict="pass" if right is not None else "invalid", reason="",
        )  # fmt: skip

    # One time for every picture: invariant on all four, right on the one picture whose event is then.
    guesser = [visual("a", 1.0, True), visual("b", 1.0, False), visual("c", 1.0, False), visual("d", 1.0, False)]
    # An unreadable original is not counted, nor one question asked again about another edit of its clip.
    accuracy = visual_accuracy([*guesser, visual("e", 0.0, None), visual("a", 1.0, True)])
    assert accuracy is not None and (accuracy["successes"], accuracy["n"], accuracy["value"]) == (1, 4, 0.25)
    assert visual_accuracy([visual("e", 0.0, None)]) is None

    side = {"relations": {}, "visual_invariance": None, "identity": None}
    report = {
        "profile": "ci", "device": "cpu", "before": {**side, "visual_accuracy": accuracy}, "after": side,
        "comparison": {"gain": {}, "average_gain": None, "drop": {"visual_invariance": None}, "target_met": False},
        "training": {"stages": []}, "seconds": {"total": 1.0},
    }  # fmt: skip
    assert "visual time right on the original: before 25.0% of 4, after -" in format_report(report)


def test_every_profile_can_be_chosen_on_the_command_line() -> None:
    from alignment.loop import PROFILES

    size = next(p for p in main.commands["loop"].params if p.name == "size")
    assert sorted(size.type.choices) == sorted(PROFILES) and all(p.name == k for k, p in PROFILES.items())


def test_profile_sizes_are_changed_by_name_and_a_wrong_name_is_an_error() -> None:
    from alignment.loop import PROFILES, LoopError, with_overrides

    changed = with_overrides(PROFILES["ci"], ["clips=24", "recipe.dpo_lr=1e-5", "mix_ratio=0.3", "model_size=small"])
    assert (changed.clips, changed.recipe.dpo_lr, changed.mix_ratio, changed.model_size) == (24, 1e-5, 0.3, "small")
    assert changed.recipe.lr == PROFILES["ci"].recipe.lr and PROFILES["ci"].clips == 12  # the rest as it was
    with pytest.raises(LoopError, match="no field 'epochs'"):
        with_overrides(PROFILES["ci"], ["recipe.epochs=2"])
    with pytest.raises(LoopError, match="is not a int"):
        with_overrides(PROFILES["ci"], ["clips=many"])
    with pytest.raises(LoopError, match=r"needs recipe\.sound_invariance"):  # groups nothing would train on
        with_overrides(PROFILES["ci"], ["blind_pictures=8", "blind_answers=agree"])
    agree = ["blind_pictures=8", "blind_answers=agree", "recipe.sound_invariance=1"]
    assert with_overrides(PROFILES["ci"], agree).blind_pictures == 8
    assert with_overrides(PROFILES["ci"], ["blind_pictures=8"]).blind_answers == "base"  # kept guards need no term
    with pytest.raises(LoopError, match="expected 'agree' or 'base'"):
        with_overrides(PROFILES["ci"], ["blind_answers=truth"])


def test_overlapped_steps_run_at_once_and_a_failed_one_leaves_the_others_done(tmp_path: Path) -> None:
    import threading

    from alignment.loop import LoopError, _Steps

    together = threading.Barrier(2, timeout=20)  # passed only if both steps wait at the same time
    calls: list[str] = []

    def meeting(name: str) -> Callable[[], str]:
        def work() -> str:
            calls.append(name)
            together.wait()
            return name.upper()

        return work

    def broken() -> str:
        calls.append("broken")
        raise LoopError("the suites stopped with exit code 2")

    steps = _Steps(tmp_path, lambda text: None)
    with pytest.raises(LoopError, match="exit code 2"):
        steps.all({"a": meeting("a"), "broken": broken, "b": meeting("b")}, concurrent=True)
    assert sorted(calls) == ["a", "b", "broken"]
    assert {p.stem for p in (tmp_path / "steps").glob("*.json")} == {"a", "b"}  # the finished ones are kept
    # The rerun redoes only the failed step; results come back by name, in the order given.
    calls.clear()
    done = steps.all({"a": meeting("a"), "broken": lambda: "fixed", "b": meeting("b")}, concurrent=True)
    assert done == {"a": "A", "broken": "fixed", "b": "B"} and list(done) == ["a", "broken", "b"] and calls == []
    # Two failures: the first is raised and names the second.
    with pytest.raises(LoopError, match="exit code 2") as raised:
        _Steps(tmp_path / "again", lambda text: None).all({"x": broken, "y": broken}, concurrent=True)
    assert raised.value.__notes__ == ["[y] also failed: LoopError: the suites stopped with exit code 2"]
    # Not overlapped: one after the other, in order.
    order: list[str] = []
    steps.all({n: (lambda n=n: order.append(n)) for n in ("c", "d", "e")}, concurrent=False)
    assert order == ["c", "d", "e"]


@pytest.mark.loop
def test_the_closed_loop_runs_end_to_end_and_reports_before_and_after(tmp_path: Path) -> None:
    """The CI profile, cut to a few steps per stage: the mechanics, not the gain (that is the GPU profile's)."""
    out = tmp_path / "loop"
    args = ["loop", "--out", str(out), "--size", "ci", "--quiet", "--json-out", str(tmp_path / "report.json")]
    args += ["--set", "stage0.max_steps=8", "--set", "recipe.max_steps=3"]
    args += ["--set", "blind_pictures=3", "--set", "blind_answers=agree", "--set", "recipe.sound_invariance=1"]
    args += ["--set", "overlap=true"]  # the gpu profile's way: before, harvest and blind guards at once
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "average gain over shift, mute, swap" in result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report == json.loads((out / "loop.json").read_text())
    assert report["packages"]["hypothesis"] == hypothesis.__version__  # the draws depend on it
    assert f"hypothesis {hypothesis.__version__}" in result.output
    for side in ("before", "after"):
        relations = report[side]["relations"]
        assert set(relations) == {"shift", "mute", "swap", "identity"}
        for rates in (*(r["pass_rate"] for r in relations.values()), report[side]["visual_invariance"]):
            # A model trained for a few steps may leave a rate without judged cases (value None); never a
            # value outside its interval.
            lo, hi = rates["interval"]
            assert 0 <= lo <= hi <= 1 and (rates["value"] is None or lo <= rates["value"] <= hi)
        assert all(r["n"] > 0 for r in relations.values())  # every relation's cases were run and recorded
    assert set(report["comparison"]["gain"]) == {"shift", "mute", "swap", "identity"}
    assert [s["stage"] for s in report["training"]["stages"]] == ["sft", "dpo"]
    assert all(s["steps"] == 3 and s["steps_per_second"] > 0 for s in report["training"]["stages"])
    # Each stage's own peak resident set: at least the loaded torch and model, far below this machine's memory.
    assert all(2**27 < s["peak_resident_bytes"] < 2**34 for s in report["training"]["stages"])
    harvest = report["harvest"]
    assert harvest["intervention"] > 0 and harvest["anchors"] > 0 and harvest["general"] > 0
    assert set(harvest["seconds"]) == {"suites", "general", "anchors", "guards"}  # where its time went
    # Held-out clips are only ever tested on: no result before or after, and no pair, comes from a training clip.
    train_ids = {e["id"] for e in json.loads((out / "corpus" / "train.json").read_text())["clips"]}
    held_ids = {e["id"] for e in json.loads((out / "corpus" / "heldout.json").read_text())["clips"]}
    assert train_ids and held_ids and not train_ids & held_ids
    for name in ("before", "after"):
        rows = [json.loads(line) for line in (out / "results" / f"{name}.jsonl").read_text().splitlines()]
        assert rows and {r["clip"] for r in rows} <= held_ids
    before = {json.loads(line)["fingerprint"] for line in (out / "results" / "before.jsonl").read_text().splitlines()}
    after = {json.loads(line)["fingerprint"] for line in (out / "results" / "after.jsonl").read_text().splitlines()}
    assert len(before) == len(after) == 1 and before != after  # the base, then the trained model
    for folder in ("intervention", "anchors", "general"):
        sources = {json.loads(line)["source_clip"] for line in (out / "harvest" / folder / "pairs.jsonl").open()}
        assert sources <= train_ids, folder
    # The blind guards' pictures are neither training nor held-out clips, and the recipe trains on them.
    blind = {json.loads(line)["source_clip"] for line in (out / "blind" / "pairs" / "pairs.jsonl").open()}
    assert len(blind) == 3 and not blind & (train_ids | held_ids) and report["blind_guards"]["pairs"] >= 6
    assert set(report["blind_guards"]["seconds"]) == {"pictures", "model_load", "guards"}  # where its time went
    # Stage 1 trains on every harvested pair, anchor and guard, and one group per blind picture.
    counted = harvest["intervention"] + harvest["anchors"] + harvest["guards"] + len(blind)
    assert report["training"]["sft_pairs"] == counted
    # Every step left its marker; stage 0's data and its training are apart, so a run cut short says which
    # of them took the time.
    steps = ["corpus", "split", "random-model", "clever-hans-data", "clever-hans-base", "before", "harvest"]
    steps += ["blind-guards", "train"]
    assert {p.stem for p in (out / "steps").glob("*.json")} == {*steps, "after"}
    assert report["stage0"]["pairs"] > 0 and report["stage0"]["clips"] == len(train_ids)
    # A rerun finds every step done and reports the same.
    again = CliRunner().invoke(main, ["loop", "--out", str(out), "--size", "ci", "--quiet"])
    assert again.exit_code == 0 and "done in an earlier run" in again.output
