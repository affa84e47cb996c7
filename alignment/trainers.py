"""TRL trainers that take the omni collators' batches as they are.

Stage 1 uses ``trl.SFTTrainer`` itself: with ``skip_prepare_dataset`` and our
collator it forwards every batch key to the model (``model(**inputs,
fused_lm_head=True)``), media included, and its fused LM head scores only the
answer tokens. Nothing needs overriding beyond the construction.

Stage 2 subclasses ``trl.DPOTrainer``. Its loss already forwards every batch
key except the masks to the policy and the reference model (both halves of
the batch, chosen and rejected, carry their media); what it cannot do is
prepare our dataset: it would tokenize text-only prompts and drop the clips.
``_prepare_dataset`` is therefore the identity here (the collator decodes
media and tokenizes per batch), and every column is kept for the collator.

The reference model is a frozen copy of the stage-1 model, or with LoRA the
same weights with the adapter switched off (TRL's own mechanism).
"""

from __future__ import annotations

from typing import Any

from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer


def sft_config(**kwargs: Any) -> SFTConfig:
    """An ``SFTConfig`` for pre-collated omni batches: no dataset preparation, every column kept."""
    return SFTConfig(
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,  # the collator needs the paths and texts, not the model's argument names
        **kwargs,
    )


def dpo_config(**kwargs: Any) -> DPOConfig:
    """A ``DPOConfig`` for pre-collated omni batches (the reference log-probs are computed per batch)."""
    return DPOConfig(remove_unused_columns=False, precompute_ref_log_probs=False, **kwargs)


class OmniSFTTrainer(SFTTrainer):
    """``SFTTrainer`` on omni batches (see the module docstring for why no override is needed)."""

    def __init__(self, *, model: Any, args: SFTConfig, data_collator: Any, train_dataset: Any, **kwargs: Any) -> None:
        if not (args.dataset_kwargs or {}).get("skip_prepare_dataset") or args.remove_unused_columns:
            raise ValueError("omni SFT needs skip_prepare_dataset and remove_unused_columns=False: use sft_config()")
        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset, **kwargs)


class OmniDPOTrainer(DPOTrainer):
    """``DPOTrainer`` whose dataset rows reach the omni collator untouched."""

    def __init__(self, *, model: Any, args: DPOConfig, data_collator: Any, train_dataset: Any, **kwargs: Any) -> None:
        if args.remove_unused_columns or args.precompute_ref_log_probs:
            raise ValueError("omni DPO computes reference log-probs per batch from raw rows: use dpo_config()")
        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset, **kwargs)

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: DPOConfig, dataset_name: str) -> Any:
        # Tokenizing here would turn each clip's prompt into text alone; the collator does it with the media.
        return dataset
