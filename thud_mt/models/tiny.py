"""Random-weight Qwen Omni models built offline, for CI and benchmarks.

``build_tiny(arch, out)`` writes a folder that loads exactly as downloaded
weights do (``from_pretrained(out)`` for the thinker class and the processor):
the full model's ``config.json`` (``model_type`` ``qwen2_5_omni`` /
``qwen3_omni_moe``, talker disabled) with the weights under the checkpoint's
``thinker.`` prefix, a ``generation_config.json``, and a processor whose
tokenizer is a byte-level BPE trained here on the probes' own wording, carrying
every special token the processor and the chat template use. The encoders keep
the real patch sizes, merge sizes and mel settings, so token counts and
audio-video interleaving follow the real models; only widths and depths shrink.

Sizes: ``tiny`` (0.26 M parameters for qwen2.5-omni, 0.36 M for qwen3-omni:
milliseconds per query on a CPU), ``small`` (4.8 M: trained from random
weights in minutes on a GPU by the alignment loop) and ``100m`` (103 M /
105 M, for throughput benchmarks on a GPU). The weights are random but seeded: the same arch, size
and seed give the same files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from thud_mt.errors import ThudError

Arch = Literal["qwen2.5-omni", "qwen3-omni"]
Size = Literal["tiny", "small", "100m"]
ARCHES: tuple[Arch, ...] = ("qwen2.5-omni", "qwen3-omni")
SIZES: tuple[Size, ...] = ("tiny", "small", "100m")


class TinyBuildError(ThudError):
    """A tiny model that cannot be built (unknown arch or size, transformers missing)."""


@dataclass(frozen=True)
class Widths:
    """Everything that differs between ``tiny`` and ``100m``; heads and depths are kept divisible."""

    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_ffn: int
    vision_hidden: int
    vision_depth: int
    vision_heads: int
    vision_ffn: int
    audio_hidden: int
    audio_layers: int
    audio_heads: int
    audio_ffn: int
    experts: int  # qwen3-omni only (MoE)
    experts_per_token: int
    expert_ffn: int
    vocab_target: int  # BPE merges stop earlier when the training text runs out of pairs
    init_std: float  # weights ~ N(0, std): tiny uses 0.1 so that frames and sounds visibly move the logits


WIDTHS: dict[Size, Widths] = {
    "tiny": Widths(64, 2, 4, 2, 128, 32, 2, 2, 64, 32, 2, 2, 64, 4, 2, 32, 512, 0.1),
    # Trained from scratch in minutes on a GPU (the alignment loop's GPU profile): wide enough to write a
    # sentence that stays on topic, small enough that a step costs what a tiny one does there.
    "small": Widths(256, 4, 4, 2, 768, 128, 2, 2, 256, 128, 2, 2, 256, 4, 2, 128, 1024, 0.05),
    "100m": Widths(768, 12, 12, 4, 2048, 384, 6, 6, 1536, 384, 4, 6, 1536, 8, 2, 256, 4096, 0.02),
}


@dataclass(frozen=True)
class Tokens:
    """The special tokens an architecture's processor and chat template use, by role."""

    image: str
    audio: str
    video: str
    vision_bos: str
    vision_eos: str
    audio_bos: str
    audio_eos: str

    def extra(self) -> dict[str, str]:
        """The tokenizer attributes the processors read (``tokenizer.audio_token`` ...)."""
        return {
            "image_token": self.image,
            "audio_token": self.audio,
            "video_token": self.video,
            "vision_bos_token": self.vision_bos,
            "vision_eos_token": self.vision_eos,
            "audio_bos_token": self.audio_bos,
            "audio_eos_token": self.audio_eos,
        }


TOKENS: dict[Arch, Tokens] = {
    "qwen2.5-omni": Tokens(
        "<|IMAGE|>", "<|AUDIO|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>", "<|audio_bos|>", "<|audio_eos|>"
    ),
    "qwen3-omni": Tokens(
        "<|image_pad|>",
        "<|audio_pad|>",
        "<|video_pad|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|audio_start|>",
        "<|audio_end|>",
    ),
}
PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"

# The released models' chat templates, cut to what a chat of text, audio, images and video needs.
_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' and default_system %}"
    "{{- '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' or 'image' in content %}{{- '{vision_bos}{image}{vision_eos}' }}"
    "{%- elif content['type'] == 'audio' or 'audio' in content %}{{- '{audio_bos}{audio}{audio_eos}' }}"
    "{%- elif content['type'] == 'video' or 'video' in content %}{{- '{vision_bos}{video}{vision_eos}' }}"
    "{%- elif 'text' in content %}{{- content['text'] }}"
    "{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
_DEFAULT_SYSTEM: dict[Arch, str] = {"qwen2.5-omni": "You are a helpful assistant.", "qwen3-omni": ""}


def chat_template(arch: Arch) -> str:
    t = TOKENS[arch]
    template = _TEMPLATE
    for name, value in (
        ("vision_bos", t.vision_bos),
        ("vision_eos", t.vision_eos),
        ("audio_bos", t.audio_bos),
        ("audio_eos", t.audio_eos),
        ("image", t.image),
        ("audio", t.audio),
        ("video", t.video),
    ):
        template = template.replace("{" + name + "}", value)
    system = _DEFAULT_SYSTEM[arch]
    return "{%- set default_system = " + json.dumps(system) + " -%}" + template


def _training_text() -> Iterator[str]:
    """What the BPE learns merges from: every question and canonical answer the suites use, and digits."""
    from thud_mt.probes import PROBE_KINDS, questions, value_text

    for kind in PROBE_KINDS:
        for q in questions(kind):
            yield q.text
            yield from q.choices
            if kind in ("offset", "sound_time", "visual"):
                for tenths in range(-30, 31):
                    if tenths >= 0 or kind == "offset":
                        yield value_text(q, tenths / 10)
    yield "Yes. No. Synchronized. Audio delayed. Audio early. None. 0 1 2 3 4 5 6 7 8 9 seconds"


def build_tokenizer(arch: Arch, vocab_target: int) -> Any:
    """A ``Qwen2Tokenizer`` around a byte-level BPE trained here: every byte is a token, so any text encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    t = TOKENS[arch]
    specials = [PAD, IM_START, IM_END, *dict.fromkeys(t.extra().values())]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_target,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(_training_text()), trainer)
    return Qwen2TokenizerFast(
        tokenizer_object=bpe,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        extra_special_tokens=t.extra(),
        model_max_length=32768,
    )


def _ids(tokenizer: Any, arch: Arch) -> dict[str, int]:
    t = TOKENS[arch]
    convert = tokenizer.convert_tokens_to_ids
    return {
        "pad": convert(PAD),
        "im_start": convert(IM_START),
        "im_end": convert(IM_END),
        "image": convert(t.image),
        "audio": convert(t.audio),
        "video": convert(t.video),
        "vision_bos": convert(t.vision_bos),
        "vision_eos": convert(t.vision_eos),
        "audio_bos": convert(t.audio_bos),
        "audio_eos": convert(t.audio_eos),
        "user": tokenizer("user", add_special_tokens=False).input_ids[0],
    }


def _mrope_section(head_dim: int) -> list[int]:
    """Split ``head_dim / 2`` rotary frequencies over (time, height, width) in the released models' 2:3:3 ratio."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def _qwen25_config(w: Widths, vocab: int, ids: dict[str, int], std: float) -> Any:
    from transformers import Qwen2_5OmniConfig

    head_dim = w.text_hidden // w.text_heads
    thinker = {
        "initializer_range": std,
        "audio_config": {
            "num_mel_bins": 128,
            "initializer_range": std,
            "encoder_layers": w.audio_layers,
            "encoder_attention_heads": w.audio_heads,
            "encoder_ffn_dim": w.audio_ffn,
            "d_model": w.audio_hidden,
            "output_dim": w.text_hidden,
            "n_window": 100,
            "max_source_positions": 1500,
        },
        "vision_config": {
            "depth": w.vision_depth,
            "initializer_range": std,
            "hidden_size": w.vision_hidden,
            "intermediate_size": w.vision_ffn,
            "num_heads": w.vision_heads,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "out_hidden_size": w.text_hidden,
            "fullatt_block_indexes": [w.vision_depth - 1],
        },
        "text_config": {
            "vocab_size": vocab,
            "initializer_range": std,
            "hidden_size": w.text_hidden,
            "intermediate_size": w.text_ffn,
            "num_hidden_layers": w.text_layers,
            "num_attention_heads": w.text_heads,
            "num_key_value_heads": w.text_kv_heads,
            "max_position_embeddings": 32768,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1000000.0,
                "mrope_section": _mrope_section(head_dim),
            },
            "pad_token_id": ids["pad"],
            "eos_token_id": ids["im_end"],
        },
        "audio_token_index": ids["audio"],
        "image_token_index": ids["image"],
        "video_token_index": ids["video"],
        "vision_start_token_id": ids["vision_bos"],
        "vision_end_token_id": ids["vision_eos"],
        "audio_start_token_id": ids["audio_bos"],
        "audio_end_token_id": ids["audio_eos"],
        "user_token_id": ids["user"],
        "position_id_per_seconds": 25,
        "seconds_per_chunk": 2,
    }
    return Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)


def _qwen3_config(w: Widths, vocab: int, ids: dict[str, int], std: float) -> Any:
    from transformers import Qwen3OmniMoeConfig

    head_dim = w.text_hidden // w.text_heads
    thinker = {
        "initializer_range": std,
        "audio_config": {
            "num_mel_bins": 128,
            "initializer_range": std,
            "encoder_layers": w.audio_layers,
            "encoder_attention_heads": w.audio_heads,
            "encoder_ffn_dim": w.audio_ffn,
            "d_model": w.audio_hidden,
            "output_dim": w.text_hidden,
            "downsample_hidden_size": max(16, w.audio_hidden // 2),
            "n_window": 50,
            "n_window_infer": 800,
            "conv_chunksize": 500,
            "max_source_positions": 1500,
        },
        "vision_config": {
            "depth": w.vision_depth,
            "initializer_range": std,
            "hidden_size": w.vision_hidden,
            "intermediate_size": w.vision_ffn,
            "num_heads": w.vision_heads,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": w.text_hidden,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [w.vision_depth - 1],
        },
        "text_config": {
            "vocab_size": vocab,
            "initializer_range": std,
            "hidden_size": w.text_hidden,
            "intermediate_size": w.text_ffn,
            "num_hidden_layers": w.text_layers,
            "num_attention_heads": w.text_heads,
            "num_key_value_heads": w.text_kv_heads,
            "head_dim": head_dim,
            "max_position_embeddings": 32768,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1000000.0,
                "mrope_section": _mrope_section(head_dim),
                "interleaved": True,
            },
            "num_experts": w.experts,
            "num_experts_per_tok": w.experts_per_token,
            "moe_intermediate_size": w.expert_ffn,
            "pad_token_id": ids["pad"],
            "eos_token_id": ids["im_end"],
        },
        "audio_token_id": ids["audio"],
        "image_token_id": ids["image"],
        "video_token_id": ids["video"],
        "vision_start_token_id": ids["vision_bos"],
        "vision_end_token_id": ids["vision_eos"],
        "audio_start_token_id": ids["audio_bos"],
        "audio_end_token_id": ids["audio_eos"],
        "user_token_id": ids["user"],
        "position_id_per_seconds": 13,
    }
    return Qwen3OmniMoeConfig(thinker_config=thinker, enable_audio_output=False)


def build_processor(arch: Arch, tokenizer: Any) -> Any:
    """The released models' preprocessing (patch, merge and mel settings) around ``tokenizer``."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor, WhisperFeatureExtractor

    patch = 14 if arch == "qwen2.5-omni" else 16
    factor = patch * 2
    shared = {"patch_size": patch, "temporal_patch_size": 2, "merge_size": 2}
    image = Qwen2VLImageProcessor(min_pixels=4 * factor * factor, max_pixels=1280 * factor * factor, **shared)
    video = Qwen2VLVideoProcessor(min_pixels=4 * factor * factor, max_pixels=768 * factor * factor, **shared)
    audio = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=300, n_fft=400)
    if arch == "qwen2.5-omni":
        from transformers import Qwen2_5OmniProcessor as Processor
    else:
        from transformers import Qwen3OmniMoeProcessor as Processor
    return Processor(
        image_processor=image,
        video_processor=video,
        feature_extractor=audio,
        tokenizer=tokenizer,
        chat_template=chat_template(arch),
    )


def build_tiny(arch: str, out: Path, *, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight ``arch`` model and its processor to ``out``; returns ``out``."""
    if arch not in ARCHES:
        raise TinyBuildError(f"unknown arch {arch!r}: expected one of {', '.join(ARCHES)}")
    if size not in SIZES:
        raise TinyBuildError(f"unknown size {size!r}: expected one of {', '.join(SIZES)}")
    try:
        import torch
        from transformers import GenerationConfig
    except ImportError as exc:
        raise TinyBuildError(
            f"building {arch} needs torch and transformers: pip install 'thud-mt[hf]' ({exc})"
        ) from exc
    from transformers.utils import logging as hf_logging

    kind, widths = cast(Arch, arch), WIDTHS[cast(Size, size)]
    tokenizer = build_tokenizer(kind, widths.vocab_target)
    ids = _ids(tokenizer, kind)
    vocab = len(tokenizer)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # default-config notices about the unused talker are expected here
    hf_logging.disable_progress_bar()
    try:
        if arch == "qwen2.5-omni":
            from transformers import Qwen2_5OmniForConditionalGeneration as Full

            config = _qwen25_config(widths, vocab, ids, widths.init_std)
        else:
            from transformers import Qwen3OmniMoeForConditionalGeneration as Full

            config = _qwen3_config(widths, vocab, ids, widths.init_std)
        torch.manual_seed(seed)
        model = Full(config)
        model.save_pretrained(out)
        build_processor(kind, tokenizer).save_pretrained(out)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    GenerationConfig(
        eos_token_id=[ids["im_end"], ids["pad"]],
        pad_token_id=ids["pad"],
        do_sample=False,
    ).save_pretrained(out)
    return out


def parameter_count(path: Path) -> int:
    """Parameters stored in a folder's safetensors files (header only; no weights are read)."""
    import struct

    total = 0
    for file in sorted(Path(path).glob("*.safetensors")):
        with file.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            n = 1
            for dim in entry["shape"]:
                n *= dim
            total += n
    return total
