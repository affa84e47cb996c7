"""The two-stage recipe: SFT warm-up on intervention pairs' chosen answers, then DPO on a mix with general pairs.

``train(config)`` checks everything a user can get wrong first (the model
folder is a Qwen-Omni model, every pairs file parses and its media exist and
decode, the mix can be made, the output folder is new or ``--resume`` was
given), then loads the model and collates one batch of each stage, and only
then trains. Layout of the output folder::

    OUT/logs/train.log, stage1.jsonl, stage2.jsonl    progress and Trainer logs
    OUT/stage1/checkpoint-N/ ... model/                SFT checkpoints, its result
    OUT/stage2/checkpoint-N/ ... model/                DPO checkpoints, its result
    OUT/final/                                         the thinker (LoRA merged), processor, configs
    OUT/summary.json                                   counts, steps, steps/s, peak GPU and resident memory

``--resume`` skips a stage whose ``model/`` is complete and continues a stage
from its latest checkpoint. Stage 2's reference model is stage 1's result.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alignment.anchors import BLIND, KEPT
from alignment.data import (
    Mix,
    by_kind,
    check_media_readable,
    consistency_groups,
    load_rows,
    mix_pairs,
    to_dataset,
    with_groups,
)
from alignment.errors import AlignmentError, MixError, OutputFolderError
from alignment.model import Loaded, is_saved, load_for_training, omni_arch, save_model
from thud_mt.memory import PeakMemory
from thud_mt.pairs import Split

Stage = Literal["sft", "dpo"]
STAGE_DIRS: dict[Stage, str] = {"sft": "stage1", "dpo": "stage2"}
log = logging.getLogger("alignment")


@dataclass(frozen=True)
class TrainOptions:
    """Hyperparameters and run settings (the CLI's options); each stage is capped by ``max_steps`` if given."""

    sft_epochs: float = 1.0
    dpo_epochs: float = 1.0
    lr: float = 1e-4
    dpo_lr: float | None = None  # None: lr
    beta: float = 0.1
    dpo_sft_weight: float = 0.0  # > 0: add the chosen answers' NLL to the DPO loss (RPO), weighted
    # Weight of the term making a consistency group's answers agree (the versions of one picture in pairs of
    # category "blind" or "kept", alignment.anchors); 0: no term, and "blind" pairs are left out. Stage 2
    # applies it to the "kept" groups only (the "blind" ones have no answer to prefer).
    sound_invariance: float = 0.0
    # Stage 2's weight of the same term on the kept groups; None: sound_invariance. The gpu loop profile
    # uses 10 in stage 1 and 100 here (docs/architecture.md, "Kept guards").
    dpo_sound_invariance: float | None = None
    batch_size: int = 4
    grad_accum: int = 1
    max_steps: int | None = None
    warmup: float = 0.05  # share of a stage's steps
    lora: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_targets: str = "all-linear"  # every linear layer but the LM head: text model, vision and audio towers
    seed: int = 0
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 10
    gradient_checkpointing: bool = False
    workers: int = 0  # dataloader processes decoding media ahead of the model
    media_cache: int = 64  # clips kept decoded per dataloader process
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("sft_epochs", "dpo_epochs", "warmup"):
            if getattr(self, name) < 0:
                raise AlignmentError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "grad_accum", "save_steps", "logging_steps", "lora_rank"):
            if getattr(self, name) < 1:
                raise AlignmentError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise AlignmentError(f"--max-steps must be >= 1, got {self.max_steps}")
        for name in ("sound_invariance", "dpo_sound_invariance"):
            if (getattr(self, name) or 0.0) < 0:
                raise AlignmentError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or (self.dpo_lr is not None and self.dpo_lr <= 0) or self.beta <= 0:
            raise AlignmentError("--lr, --dpo-lr and --beta must be positive")

    @property
    def dpo_invariance(self) -> float:
        """Stage 2's sound-invariance weight."""
        return self.sound_invariance if self.dpo_sound_invariance is None else self.dpo_sound_invariance


@dataclass(frozen=True)
class RecipeConfig:
    """One ``python -m alignment train`` run."""

    model_path: str
    pairs: tuple[Path, ...]
    out: Path
    general: tuple[Path, ...] = ()
    # The general share of the DPO mix; None: 0.5 with --general, else 0 (intervention pairs only);
    # "all": every pair of both kinds, none dropped.
    mix_ratio: float | Literal["all"] | None = None
    split: Split | None = "train"  # None: both splits (the closed loop holds out whole clips instead)
    resume: bool = False
    model_options: Mapping[str, str] = field(default_factory=dict)  # --model-option, as the suites take them
    options: TrainOptions = field(default_factory=TrainOptions)

    @property
    def ratio(self) -> float | None:
        """The ratio ``mix_pairs`` is given (None: keep every pair)."""
        if self.mix_ratio == "all":
            return None
        if self.mix_ratio is not None:
            return self.mix_ratio
        return 0.5 if self.general else 0.0


@dataclass(frozen=True)
class Plan:
    """A checked run: what each stage trains on."""

    config: RecipeConfig
    sft_rows: tuple[dict[str, str], ...]
    mix: Mix

    @property
    def stages(self) -> tuple[Stage, ...]:
        o = self.config.options
        out: list[Stage] = []
        if self.sft_rows and (o.sft_epochs > 0 or o.max_steps):
            out.append("sft")
        if o.dpo_epochs > 0:
            out.append("dpo")
        return tuple(out)


@dataclass(frozen=True)
class StageReport:
    stage: Stage
    examples: int
    steps: int
    seconds: float
    steps_per_second: float
    peak_memory_bytes: int | None  # torch.cuda.max_memory_allocated during the stage; None on a CPU
    final_loss: float | None
    resumed_from: str | None
    skipped: bool = False  # a complete result from an earlier run was reused
    # The training process's peak resident set during the stage (Linux; None elsewhere): on a CPU the model's
    # memory, on a GPU the host's share. Dataloader workers are processes of their own and not counted.
    peak_resident_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainReport:
    out: Path
    final: Path
    sft_pairs: int
    mix: Mix
    stages: tuple[StageReport, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "final": str(self.final),
            "sft_pairs": self.sft_pairs,
            "mix": {"intervention": self.mix.intervention, "general": self.mix.general, "ratio": self.mix.ratio},
            "stages": [s.to_json() for s in self.stages],
        }


# ---------------------------------------------------------------------------------------------------- checks


# TRL's fused LM head reads the backbone output's last_hidden_state, which the Qwen-Omni thinker's output has
# from transformers 5.21 on (5.17 to 5.20 fail at the first step; bisected with TRL 1.16).
MIN_TRANSFORMERS = (5, 21)


def check_transformers() -> None:
    """An error before anything is loaded where the installed transformers cannot train the thinker."""
    import transformers

    version = transformers.__version__
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < MIN_TRANSFORMERS:
        need = ".".join(map(str, MIN_TRANSFORMERS))
        raise AlignmentError(
            f"transformers {version} cannot train a Qwen-Omni thinker with TRL (its output has no "
            f"last_hidden_state for the fused LM head); pip install 'transformers>={need}'"
        )


def plan(config: RecipeConfig) -> Plan:
    """Every check that needs no model loaded; raises a ``ThudError`` naming what to fix."""
    check_transformers()
    omni_arch(config.model_path)
    if not config.pairs:
        raise AlignmentError("no --pairs given: pass the pairs.jsonl (or its folder) that harvesting wrote")
    ratio = config.ratio
    if config.general and ratio == 0:
        log.warning("--general given with --mix-ratio 0: the general pairs are not used")
    if not config.general and ratio is not None and ratio > 0:
        raise MixError(f"--mix-ratio {ratio:g} asks for general pairs: pass --general FILE")
    rows = load_rows([*config.pairs, *config.general], split=config.split)
    check_media_readable(rows)
    intervention, general = by_kind([r for r in rows if r["category"] != BLIND])
    o = config.options
    blind = consistency_groups(rows, BLIND)
    if blind and not o.sound_invariance:
        log.warning("%d groups of category %r left out: pass --sound-invariance to train on them", len(blind), BLIND)
    # Kept guards are learned as pairs either way; with the term, each picture's versions must also agree:
    # in stage 1 as extra rows, in stage 2 as the first version's pair carrying the others (``twins``).
    kept = consistency_groups(rows, KEPT)
    groups = [*blind, *kept] if o.sound_invariance else []
    intervention_sft = [*intervention, *groups]
    intervention_dpo = with_groups(intervention, kept) if o.dpo_invariance else intervention
    if o.sft_epochs > 0 and not intervention_sft:
        raise AlignmentError(
            f"stage 1 (SFT) has no intervention pairs{_split_note(config)} in {', '.join(map(str, config.pairs))}; "
            "pass --sft-epochs 0 to skip it"
        )
    mix = mix_pairs(intervention_dpo, general, ratio, seed=o.seed) if o.dpo_epochs > 0 else Mix((), 0, 0, None)
    _check_output(config)
    return Plan(config, tuple(intervention_sft), mix)


def _split_note(config: RecipeConfig) -> str:
    return f" of split {config.split}" if config.split else ""


def _check_output(config: RecipeConfig) -> None:
    out = config.out
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"--out {out} is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()) and not config.resume:
        raise OutputFolderError(
            f"--out {out} already holds a run; pass --resume to continue it, or choose a new folder"
        )


# ---------------------------------------------------------------------------------------------------- stages


class _JsonLogs:
    """A ``TrainerCallback`` appending each log record (loss, rewards, lr ...) to a JSON Lines file."""

    def __new__(cls, path: Path) -> Any:
        from transformers import TrainerCallback

        class JsonLogs(TrainerCallback):
            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
                if logs:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with path.open("a", encoding="utf-8") as f:
                        f.write(json.dumps({"step": state.global_step, **logs}, default=float) + "\n")

        return JsonLogs()


def _training_args(stage: Stage, out: Path, options: TrainOptions) -> Any:
    import torch
    from transformers import TrainingArguments

    from alignment.trainers import dpo_config, sft_config

    cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = {
        "output_dir": str(out),
        "per_device_train_batch_size": options.batch_size,
        "gradient_accumulation_steps": options.grad_accum,
        "num_train_epochs": options.sft_epochs if stage == "sft" else options.dpo_epochs,
        "max_steps": options.max_steps or -1,
        "learning_rate": options.lr if stage == "sft" or options.dpo_lr is None else options.dpo_lr,
        "lr_scheduler_type": "cosine",
        "logging_steps": options.logging_steps,
        "save_strategy": "steps",
        "save_steps": options.save_steps,
        "save_total_limit": options.save_total_limit,
        "seed": options.seed,
        "report_to": "none",
        "bf16": cuda,  # mixed precision over float32 weights on a GPU; plain float32 on a CPU
        "use_cpu": not cuda,
        "dataloader_num_workers": options.workers,
        # Kept across epochs, and with them each process's decoded clips (media_cache); DataLoader refuses the
        # flag without worker processes.
        "dataloader_persistent_workers": options.workers > 0,
        "disable_tqdm": not options.progress,
    }
    # Names moved between transformers releases: gradient_checkpointing became activation_checkpointing (5.2x),
    # warmup_ratio became a fractional warmup_steps; use whichever this one has.
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    kwargs[key] = options.gradient_checkpointing
    kwargs["warmup_ratio" if "warmup_ratio" in names else "warmup_steps"] = options.warmup
    if stage == "sft":
        return sft_config(**kwargs)
    losses = ["sigmoid", "sft"] if options.dpo_sft_weight > 0 else ["sigmoid"]
    weights = [1.0, options.dpo_sft_weight] if options.dpo_sft_weight > 0 else None
    return dpo_config(beta=options.beta, loss_type=losses, loss_weights=weights, **kwargs)


def _peft_config(options: TrainOptions) -> Any:
    if not options.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=options.lora_rank, lora_alpha=options.lora_alpha, lora_dropout=0.0, target_modules=options.lora_targets
    )


def collators(loaded: Loaded, options: TrainOptions) -> tuple[Any, Any]:
    """(SFT collator, DPO collator) making inputs exactly as the adapter does under ``loaded.settings``."""
    from alignment.collators import DPOCollator, OmniEncoder, SFTCollator
    from alignment.data import MediaReader

    reader = MediaReader(loaded.settings.max_frames, loaded.settings.sample_rate, options.media_cache)
    dtype = next(loaded.thinker.parameters()).dtype
    encoder = OmniEncoder(loaded.processor, loaded.settings, reader, dtype)
    return SFTCollator(encoder), DPOCollator(encoder)


def _trainer(stage: Stage, loaded: Loaded, common: dict[str, Any], options: TrainOptions) -> Any:
    from alignment.trainers import OmniDPOTrainer, OmniSFTTrainer

    sft_collator, dpo_collator = collators(loaded, options)
    if stage == "sft":
        trainer = OmniSFTTrainer(data_collator=sft_collator, sound_invariance=options.sound_invariance, **common)
    else:
        ref = None
        if not options.lora:  # with LoRA the reference is the same weights with the adapter off
            ref = copy.deepcopy(loaded.thinker).eval()
            ref.requires_grad_(False)
        trainer = OmniDPOTrainer(
            data_collator=dpo_collator, ref_model=ref, sound_invariance=options.dpo_invariance, **common
        )
    if not options.progress:  # without progress bars, Trainer prints every log record instead
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


def run_stage(
    stage: Stage,
    loaded: Loaded,
    rows: Sequence[dict[str, str]],
    out: Path,
    options: TrainOptions,
    logs: Path,
    *,
    resume: bool,
) -> tuple[Any, StageReport]:
    """Train one stage from ``loaded.thinker``; returns the trained model (LoRA merged) and the report."""
    from transformers.trainer_utils import get_last_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    checkpoint = get_last_checkpoint(str(out)) if resume else None
    args = _training_args(stage, out, options)
    common = {
        "model": loaded.thinker,
        "args": args,
        "train_dataset": to_dataset(rows),
        "processing_class": loaded.processor,
        "peft_config": _peft_config(options),
        "callbacks": [_JsonLogs(logs / f"{out.name}.jsonl")],
    }
    with warnings.catch_warnings():
        # PEFT and TRL 1.x call transformers' renamed is_gradient_checkpointing: not the user's business.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        trainer = _trainer(stage, loaded, common, options)
        log.info("%s: %d pairs, from %s", stage, len(rows), checkpoint or "the start")
        memory = PeakMemory()
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    peaks = memory.read()
    steps = int(trainer.state.global_step)
    done_here = steps - (int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else 0)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    report = StageReport(
        stage=stage,
        examples=len(rows),
        steps=steps,
        seconds=round(seconds, 3),
        steps_per_second=round(done_here / seconds, 4) if seconds > 0 else 0.0,
        peak_memory_bytes=peaks.gpu_bytes,
        final_loss=float(losses[-1]) if losses else float(result.training_loss),
        resumed_from=checkpoint,
        peak_resident_bytes=peaks.resident_bytes,
    )
    log.info("%s: %d steps in %.1f s (%.2f steps/s)", stage, steps, seconds, report.steps_per_second)
    return trainer.model, report


def reused_report(stage: Stage, result: Path) -> StageReport:
    """The report of a stage complete in an earlier run, as that run recorded it in ``result`` (its steps/s
    and peak memory are the figures a run split over several calls reports), marked ``skipped``."""
    from alignment.model import DONE

    try:
        info = json.loads((result / DONE).read_text(encoding="utf-8"))
        fields = [f for f in dataclasses.fields(StageReport) if f.name not in ("stage", "skipped")]
        # A field with a default was added later: results saved before it keep the default.
        known = {f.name: info[f.name] for f in fields if f.name in info or f.default is dataclasses.MISSING}
        return StageReport(stage=stage, skipped=True, **known)
    except (OSError, ValueError, KeyError, TypeError):  # saved by an older version: counts unknown
        return StageReport(stage, 0, 0, 0.0, 0.0, None, None, str(result), skipped=True)


def _log_to(logs: Path) -> logging.Handler:
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def train(config: RecipeConfig) -> TrainReport:
    """Check, then SFT (stage 1) and DPO (stage 2), then write ``OUT/final``; see the module docstring."""
    checked = plan(config)  # before anything is loaded or written
    out, options = config.out, config.options
    logs = out / "logs"
    handler = _log_to(logs)
    try:
        log.info(
            "plan: %d SFT pairs; DPO mix %d intervention + %d general; stages %s",
            len(checked.sft_rows),
            checked.mix.intervention,
            checked.mix.general,
            ", ".join(checked.stages) or "none",
        )
        loaded = load_for_training(config.model_path, config.model_options)
        _dry_run(checked, loaded, options)
        reports: list[StageReport] = []
        for stage in checked.stages:
            folder = out / STAGE_DIRS[stage]
            result = folder / "model"
            if config.resume and is_saved(result):
                log.info("%s: complete in an earlier run, reusing %s", stage, result)
                loaded = load_for_training(result, config.model_options)
                reports.append(reused_report(stage, result))
                continue
            rows = checked.sft_rows if stage == "sft" else checked.mix.rows
            model, report = run_stage(stage, loaded, rows, folder, options, logs, resume=config.resume)
            save_model(model, loaded.processor, result, {"stage": stage, **report.to_json()})
            reports.append(report)
            # The next stage starts from (and, for DPO, is anchored to) exactly what was saved.
            loaded = load_for_training(result, config.model_options)
        final = save_model(
            loaded.thinker,
            loaded.processor,
            out / "final",
            {"stages": [r.to_json() for r in reports], "base": str(config.model_path)},
        )
        report = TrainReport(out, final, len(checked.sft_rows), checked.mix, tuple(reports))
        (out / "summary.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
        log.info("final model: %s", final)
        return report
    finally:
        log.removeHandler(handler)
        handler.close()


def _dry_run(checked: Plan, loaded: Loaded, options: TrainOptions) -> None:
    """Collate one batch per stage, so a processor or media problem shows before the first step."""
    sft, dpo = collators(loaded, options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "sft" in checked.stages:
            sft(list(checked.sft_rows[: options.batch_size]))
        if "dpo" in checked.stages:
            dpo(list(checked.mix.rows[: options.batch_size]))
