"""TRL trainers that take the omni collators' batches as they are.

Stage 1 uses ``trl.SFTTrainer`` itself: with ``skip_prepare_dataset`` and our
collator it forwards every batch key to the model (``model(**inputs,
fused_lm_head=True)``), media included, and its fused LM head scores only the
answer tokens. Nothing needs overriding for plain pairs; ``compute_loss`` only
adds the sound-invariance term where a batch holds consistency groups.

Stage 2 subclasses ``trl.DPOTrainer``. Its loss already forwards every batch
key except the masks to the policy and the reference model (both halves of
the batch, chosen and rejected, carry their media); what it cannot do is
prepare our dataset: it would tokenize text-only prompts and drop the clips.
``_prepare_dataset`` is therefore the identity here (the collator decodes
media and tokenizes per batch), and every column is kept for the collator.
``compute_loss`` adds the same sound-invariance term on batches carrying kept
groups (``consistency``).

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
    """``SFTTrainer`` on omni batches, plus the sound-invariance term on batches with consistency groups.

    A batch without groups goes to ``SFTTrainer.compute_loss`` untouched. One with groups is scored from the
    model's full logits, as a plain ``Trainer`` would (TRL's fused head keeps none): the labelled rows' NLL,
    per token as TRL counts them, plus ``sound_invariance`` times the groups' divergence (``sound_divergence``),
    logged as ``sound_invariance``.
    """

    def __init__(
        self,
        *,
        model: Any,
        args: SFTConfig,
        data_collator: Any,
        train_dataset: Any,
        sound_invariance: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if not (args.dataset_kwargs or {}).get("skip_prepare_dataset") or args.remove_unused_columns:
            raise ValueError("omni SFT needs skip_prepare_dataset and remove_unused_columns=False: use sft_config()")
        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset, **kwargs)
        self.sound_invariance = sound_invariance

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        groups, mask = inputs.pop("consistency_groups", None), inputs.pop("consistency_mask", None)
        if groups is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        import torch
        import torch.nn.functional as F

        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False)
        # Position t predicts token t + 1. Only the scored positions are upcast: a full float copy of a real
        # model's logits would double the largest tensor of the step.
        logits = outputs.logits[:, :-1]
        targets = labels[:, 1:]
        labelled = targets != -100
        # Scaled as TRL's own SFT loss is: over the tokens of every accumulated batch when the Trainer counts
        # them (it then leaves gradient accumulation to the loss), so a batch with groups weighs as one without.
        tokens = labelled.sum() if num_items_in_batch is None else num_items_in_batch
        total = F.cross_entropy(logits[labelled].float(), targets[labelled], reduction="sum")
        nll = total / torch.as_tensor(tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            nll = nll * (self.accelerator.num_processes // self.get_tp_size())
        divergence = sound_divergence(logits, groups, mask[:, 1:])
        mode = "train" if model.training else "eval"
        self._metrics[mode]["sound_invariance"].append(float(divergence.detach()))
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
        loss = nll + self.sound_invariance * divergence / steps  # a per-batch mean, like TRL's MoE aux loss
        return (loss, outputs) if return_outputs else loss


def sound_divergence(logits: Any, groups: Any, mask: Any) -> Any:
    """Mean over groups of the Jensen-Shannon divergence of their members' next-token distributions, per
    answer token: zero exactly when every member of a group (one picture and question, several sounds)
    would answer alike. ``logits`` (B, T, V) score ``mask``'s positions (B, T); ``groups`` (B,) is each row's
    group, -1 for rows outside any. Every member gets gradient: no side is the target."""
    import math

    import torch

    terms = []
    for g in groups.unique().tolist():
        if g < 0:
            continue
        rows = (groups == g).nonzero().flatten().tolist()
        per_row = [logits[r][mask[r]].float().log_softmax(-1) for r in rows]  # (answer tokens, V) each
        n = min(len(p) for p in per_row)  # the same answer after each member: equal unless truncated
        logp = torch.stack([p[:n] for p in per_row])  # (members, tokens, V)
        mean = logp.logsumexp(0) - math.log(len(rows))  # log of the members' average distribution
        terms.append((logp.exp() * (logp - mean)).sum(-1).mean())
    return torch.stack(terms).mean() if terms else logits.sum() * 0.0


class OmniDPOTrainer(DPOTrainer):
    """``DPOTrainer`` whose dataset rows reach the omni collator untouched, plus the sound-invariance term.

    A batch with ``consistency`` (kept groups' members, each with the chosen answer) adds ``sound_invariance``
    times their divergence to TRL's loss, logged as ``sound_invariance``. TRL's fused LM head yields only the
    completions' log-probs, and agreement needs whole distributions, so the members get a forward of their
    own, with full logits, on the policy alone.
    """

    def __init__(
        self,
        *,
        model: Any,
        args: DPOConfig,
        data_collator: Any,
        train_dataset: Any,
        sound_invariance: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if args.remove_unused_columns or args.precompute_ref_log_probs:
            raise ValueError("omni DPO computes reference log-probs per batch from raw rows: use dpo_config()")
        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset, **kwargs)
        self.sound_invariance = sound_invariance

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        members = inputs.pop("consistency", None)
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if members is None or not self.sound_invariance:
            return result
        scored = {k: v for k, v in members.items() if k not in ("consistency_groups", "consistency_mask")}
        logits = model(**scored, use_cache=False).logits[:, :-1]
        divergence = sound_divergence(logits, members["consistency_groups"], members["consistency_mask"][:, 1:])
        mode = "train" if model.training else "eval"
        self._metrics[mode]["sound_invariance"].append(float(divergence.detach()))
        if return_outputs:
            loss, outputs = result
            return loss + self.sound_invariance * divergence, outputs
        return result + self.sound_invariance * divergence

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: DPOConfig, dataset_name: str) -> Any:
        # Tokenizing here would turn each clip's prompt into text alone; the collator does it with the media.
        return dataset
