"""``python -m alignment train`` and ``python -m alignment loop``."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

import click

from thud_mt.errors import ThudError


def _model_options(raw: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE, e.g. max_frames=8", param_hint="--model-option")
        out[key] = value
    return out


def _mix_ratio(raw: str | None) -> float | Literal["all"] | None:
    if raw is None or raw == "all":
        return raw  # type: ignore[return-value]
    try:
        return float(raw)
    except ValueError:
        raise click.BadParameter(f"{raw!r}: expected a number in 0-1 or 'all'", param_hint="--mix-ratio") from None


def _quiet_libraries(*, progress: bool = True) -> None:
    """Keep the terminal for progress and our messages: these libraries' notices are not the user's business."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if not progress:
        hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*gradient checkpointing.*")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Train Qwen-Omni on thud-mt preference pairs (SFT -> DPO), and the closed loop around the suites."""


@main.command()
@click.option("--model-path", required=True, help="The Qwen-Omni weights folder (or cached hub id) to start from.")
@click.option(
    "--pairs",
    "pairs",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="A pairs.jsonl (or its folder) from --thud-harvest; repeatable.",
)
@click.option(
    "--general",
    multiple=True,
    type=click.Path(path_type=Path),
    help="General preference pairs (thud harvest general); repeatable.",
)
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="Output folder (logs, checkpoints, final/)."
)
@click.option(
    "--mix-ratio",
    default=None,
    help="Share of general pairs in the stage-2 DPO mix, 0-1, or 'all' to keep every pair "
    "[default: 0.5 with --general, else 0].",
)
@click.option(
    "--split",
    type=click.Choice(["train", "eval", "all"]),
    default="train",
    show_default=True,
    help="Which pairs to train on (split by source clip when harvested).",
)
@click.option("--sft-epochs", type=float, default=1.0, show_default=True, help="Stage 1 epochs (0 skips it).")
@click.option("--dpo-epochs", type=float, default=1.0, show_default=True, help="Stage 2 epochs (0 skips it).")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Learning rate (both stages unless --dpo-lr).")
@click.option("--dpo-lr", type=float, default=None, help="Stage 2 learning rate [default: --lr].")
@click.option("--beta", type=float, default=0.1, show_default=True, help="DPO beta.")
@click.option("--dpo-sft-weight", type=float, default=0.0, show_default=True, help="Weight of the chosen NLL in DPO.")
@click.option(
    "--sound-invariance",
    type=float,
    default=0.0,
    show_default=True,
    help="Weight making the answers of a group of category 'blind' or 'kept' (one picture, several sounds) agree "
    "(stage 2: 'kept' groups only).",
)
@click.option(
    "--dpo-sound-invariance",
    type=float,
    default=None,
    help="Stage 2's weight of that term [default: --sound-invariance].",
)
@click.option("--batch-size", type=int, default=4, show_default=True, help="Pairs per step (per device).")
@click.option("--grad-accum", type=int, default=1, show_default=True, help="Gradient accumulation steps.")
@click.option("--max-steps", type=int, default=None, help="Cap on each stage's optimizer steps.")
@click.option("--lora/--no-lora", default=False, show_default=True, help="Train LoRA adapters (merged into final/).")
@click.option("--lora-rank", type=int, default=16, show_default=True)
@click.option("--save-steps", type=int, default=50, show_default=True, help="Checkpoint every N steps.")
@click.option("--logging-steps", type=int, default=10, show_default=True, help="Log every N steps.")
@click.option("--gradient-checkpointing", is_flag=True, help="Trade compute for memory (large models).")
@click.option("--workers", type=int, default=0, show_default=True, help="Dataloader processes decoding media.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue a run in --out from its latest checkpoint.")
@click.option(
    "--model-option",
    multiple=True,
    metavar="KEY=VALUE",
    help="Preprocessing and loading settings as the suites take them (max_frames=8, dtype=bfloat16, ...).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(**kw: Any) -> None:
    """Stage 1 SFT on intervention pairs' chosen answers, stage 2 DPO on a mix with general pairs."""
    from alignment.recipe import RecipeConfig, TrainOptions
    from alignment.recipe import train as run

    _quiet_libraries(progress=not kw["quiet"])
    try:
        options = TrainOptions(
            sft_epochs=kw["sft_epochs"],
            dpo_epochs=kw["dpo_epochs"],
            lr=kw["lr"],
            dpo_lr=kw["dpo_lr"],
            beta=kw["beta"],
            dpo_sft_weight=kw["dpo_sft_weight"],
            sound_invariance=kw["sound_invariance"],
            dpo_sound_invariance=kw["dpo_sound_invariance"],
            batch_size=kw["batch_size"],
            grad_accum=kw["grad_accum"],
            max_steps=kw["max_steps"],
            lora=kw["lora"],
            lora_rank=kw["lora_rank"],
            seed=kw["seed"],
            save_steps=kw["save_steps"],
            logging_steps=kw["logging_steps"],
            gradient_checkpointing=kw["gradient_checkpointing"],
            workers=kw["workers"],
            progress=not kw["quiet"],
        )
        config = RecipeConfig(
            model_path=kw["model_path"],
            pairs=tuple(kw["pairs"]),
            general=tuple(kw["general"]),
            out=kw["out"],
            mix_ratio=_mix_ratio(kw["mix_ratio"]),
            split=None if kw["split"] == "all" else kw["split"],
            resume=kw["resume"],
            model_options=_model_options(kw["model_option"]),
            options=options,
        )
        report = run(config)
    except ThudError as exc:
        raise click.ClickException(str(exc)) from None
    for stage in report.stages:
        state = "reused" if stage.skipped else f"{stage.steps} steps, {stage.steps_per_second:.2f} steps/s"
        click.echo(f"{stage.stage}: {state}")
    click.echo(f"final model: {report.final}  (pytest suites/ --model=qwen-omni --model-path {report.final})")


@main.command()
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Working folder of the loop.")
@click.option(
    "--size",
    type=click.Choice(["ci", "cpu", "gpu"]),  # alignment.loop.PROFILES (not imported for --help: it loads torch)
    default="ci",
    show_default=True,
    help="Sizes profile: ci (the mechanics, minutes), cpu (the gain on 2 cores, ~25 min), gpu (one GPU).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Change one size of the profile: clips=24, max_examples=2, recipe.sft_epochs=3, stage0.lr=0.001.",
)
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="Also write the report here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def loop(out: Path, size: str, seed: int, overrides: tuple[str, ...], json_out: Path | None, quiet: bool) -> None:
    """Suites on held-out clips, harvest on training clips, train, suites again: the before/after table."""
    from alignment.loop import PROFILES, format_report, run_loop, with_overrides

    _quiet_libraries(progress=not quiet)
    try:
        profile = with_overrides(PROFILES[size], overrides)
        report = run_loop(out, profile, seed=seed, progress=not quiet)
    except ThudError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_report(report))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
