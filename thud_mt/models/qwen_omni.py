"""``qwen-omni`` (Qwen2.5-Omni) and ``qwen3-omni`` (Qwen3-Omni-MoE): transformers' thinker, text out only.

The clip's arrays go straight to the processor (transformers' own file loading
needs torchcodec): frames sampled uniformly to ``max_frames`` with the
effective fps passed explicitly, since fps sets where each frame sits on the
time axis the audio tokens share; the clip's audio, mono at the feature
extractor's rate, goes in as *the video's* audio, so the processor interleaves
audio and video tokens in time (``use_audio_in_video``). An edited clip's
audio is therefore exactly what the model hears.

Each query is preprocessed on its own (so its inputs never depend on what it
was batched with, which the answer cache relies on) by a pool of worker
threads that runs ahead of the model: while the model generates for batch k,
the workers prepare batches k+1 and k+2. Batches are collated here: prompts
padded on the left, video patches concatenated, mel features padded and masked.

Scoring: ``generate`` decodes greedily and the runner parses the text;
``logprob`` scores each of ``question.choices`` by the summed log-probability
of its tokens after the prompt (one forward pass over prompt + choice for all
of a query's choices), returning ``Answer(text="", scores=...)``. Questions
without choices (numbers) are generated in either mode.

Works with transformers 5.17 (``use_audio_in_video``) and 5.2x
(``load_audio_from_video`` with one audio per video).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from thud_mt.clip import Clip
from thud_mt.errors import ThudError
from thud_mt.models.base import Answer, Capabilities, Query
from thud_mt.models.registry import ModelOptions

Scoring = Literal["generate", "logprob"]


class ModelPathError(ThudError):
    """``--model-path`` names no usable weights; the message says how to get them."""


class ModelArchitectureError(ThudError):
    """The weights folder holds another kind of model than the one asked for."""


class ModelOptionError(ThudError):
    """A ``--model-option`` the adapter does not know, or a value it cannot use."""


class ModelLoadError(ThudError):
    """transformers could not load the weights or the processor (damaged or incomplete files)."""


@dataclass(frozen=True)
class Arch:
    """What differs between the two families."""

    model: str  # the --model name
    title: str
    tiny_arch: str  # thud models build-tiny --arch
    hub_example: str
    model_types: tuple[str, ...]  # config.json model_type values this adapter loads
    thinker: str  # transformers class
    factor: int  # pixels per merged video token side: patch_size * merge_size
    system: str  # system prompt unless --model-option system=...


QWEN25 = Arch(
    model="qwen-omni",
    title="Qwen2.5-Omni",
    tiny_arch="qwen2.5-omni",
    hub_example="Qwen/Qwen2.5-Omni-7B",
    model_types=("qwen2_5_omni", "qwen2_5_omni_thinker"),
    thinker="Qwen2_5OmniThinkerForConditionalGeneration",
    factor=28,
    # The model card's system prompt: the one Qwen2.5-Omni was trained to hear video soundtracks under.
    system="You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
    "auditory and visual inputs, as well as generating text and speech.",
)
QWEN3 = Arch(
    model="qwen3-omni",
    title="Qwen3-Omni",
    tiny_arch="qwen3-omni",
    hub_example="Qwen/Qwen3-Omni-30B-A3B-Instruct",
    model_types=("qwen3_omni_moe", "qwen3_omni_moe_thinker"),
    thinker="Qwen3OmniMoeThinkerForConditionalGeneration",
    factor=32,
    system="",
)
ARCHS: dict[str, Arch] = {a.model: a for a in (QWEN25, QWEN3)}


# ---------------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class OmniSettings:
    """``--model-option KEY=VALUE`` settings; ``None`` pixel bounds mean "per architecture" (see ``resolved``)."""

    max_frames: int = 16  # frames sampled uniformly over the clip (made even: frames pair into temporal patches)
    min_pixels: int | None = None  # per frame; default 4 merged tokens' worth, so small frames are not upscaled
    max_pixels: int | None = None  # per frame; default 128 merged tokens' worth (28x28 px each on 2.5, 32x32 on 3)
    sample_rate: int = 16000  # what the feature extractor expects; the clip's audio is resampled to it
    batch_size: int = 4  # queries per generate call (prompts padded on the left)
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on CPU; or float32, bfloat16, float16
    device: str = "auto"  # auto: cuda when available, else cpu; or any torch device string
    max_new_tokens: int = 32
    use_audio_in_video: bool = True  # False: the audio goes in as a separate item, not interleaved with the frames
    workers: int = dataclasses.field(default_factory=lambda: default_workers())  # preprocessing threads; 0: inline
    prefetch: int = 2  # batches prepared ahead of the one the model is working on
    system: str | None = None  # system prompt; None: the architecture's default, "" for none

    def resolved(self, arch: Arch) -> OmniSettings:
        return dataclasses.replace(
            self,
            min_pixels=self.min_pixels if self.min_pixels is not None else 4 * arch.factor**2,
            max_pixels=self.max_pixels if self.max_pixels is not None else 128 * arch.factor**2,
            system=self.system if self.system is not None else arch.system,
        )


_POSITIVE_INTS = ("max_frames", "min_pixels", "max_pixels", "sample_rate", "batch_size", "max_new_tokens")
_COUNTS = ("workers", "prefetch")  # may be 0


def default_workers() -> int:
    """Half the cores, 1 to 4: the model's own thread pool keeps the rest busy."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


_DTYPES = ("auto", "float32", "bfloat16", "float16")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_settings(model: str, extra: Mapping[str, str]) -> OmniSettings:
    """``--model-option`` pairs over the defaults; unknown keys and bad values are ``ModelOptionError``s."""
    names = [f.name for f in dataclasses.fields(OmniSettings)]
    changes: dict[str, object] = {}
    for key, raw in extra.items():
        where = f"--model-option {key}={raw}"
        if key not in names:
            raise ModelOptionError(f"{where}: {model} has no option {key!r}; it knows {', '.join(names)}")
        value = raw.strip()
        if key in _POSITIVE_INTS or key in _COUNTS:
            try:
                number = int(value)
            except ValueError:
                raise ModelOptionError(f"{where}: expected a whole number") from None
            low = 0 if key in _COUNTS else 1
            if number < low:
                raise ModelOptionError(f"{where}: must be >= {low}")
            changes[key] = number
        elif key == "use_audio_in_video":
            if value.lower() not in _TRUE + _FALSE:
                raise ModelOptionError(f"{where}: expected true or false")
            changes[key] = value.lower() in _TRUE
        elif key == "dtype":
            if value not in _DTYPES:
                raise ModelOptionError(f"{where}: expected one of {', '.join(_DTYPES)}")
            changes[key] = value
        else:  # device, system: free text
            changes[key] = raw
    settings = OmniSettings(**changes)  # type: ignore[arg-type]
    if (
        settings.min_pixels is not None
        and settings.max_pixels is not None
        and settings.min_pixels > settings.max_pixels
    ):
        raise ModelOptionError(f"--model-option min_pixels={settings.min_pixels} is above max_pixels")
    return settings


# ---------------------------------------------------------------------------------------------------- weights


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _weights_help(arch: Arch) -> str:
    return (
        f"Download them on a machine with internet (hf download {arch.hub_example} --local-dir DIR) and pass "
        f"--model-path DIR, or build a tiny test model: thud models build-tiny --arch {arch.tiny_arch} --out DIR"
    )


def resolve_model_path(arch: Arch, model_path: str | None) -> Path:
    """The local folder holding ``model_path``'s weights: a folder, or a hub id already in the local cache."""
    if not model_path:
        raise ModelPathError(f"{arch.model}: no --model-path given. {_weights_help(arch)}")
    path = Path(model_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelPathError(
                f"{arch.model}: {path} has no config.json, so it is not a model folder. {_weights_help(arch)}"
            )
        return path
    if path.exists():
        raise ModelPathError(f"{arch.model}: --model-path {path} is a file; pass the folder that holds config.json")
    if _HUB_ID.match(model_path):
        cached = _cached_snapshot(model_path)
        if cached is not None:
            return cached
        raise ModelPathError(
            f"{arch.model}: no weights at {model_path} (neither a folder nor a hub id in the local cache). "
            f"{_weights_help(arch)}"
        )
    raise ModelPathError(f"{arch.model}: no weights at {model_path}: no such folder. {_weights_help(arch)}")


def _cached_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or a cache entry without files: both mean "not here"
        return None
    return folder if (folder / "config.json").is_file() else None


def check_architecture(arch: Arch, folder: Path) -> str:
    """The folder's ``model_type``, if it is one this adapter loads."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{arch.model}: {folder / 'config.json'} is not readable JSON ({exc})") from exc
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type in arch.model_types:
        return str(model_type)
    for other in ARCHS.values():
        if model_type in other.model_types:
            raise ModelArchitectureError(
                f"{arch.model}: {folder} holds a {other.title} model (model_type {model_type}); "
                f"use --model={other.model}"
            )
    raise ModelArchitectureError(
        f"{arch.model}: {folder} holds a {model_type or 'unnamed'} model, not {arch.title} "
        f"(config.json model_type must be one of {', '.join(arch.model_types)})"
    )


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_SAMPLE_BYTES = 1 << 20


def weights_digest(folder: Path) -> str:
    """Content digest of a weights folder without reading all of it.

    Small files (config, tokenizer, templates) are hashed whole; each weight
    file by name, size and its first and last MiB (the safetensors header and
    real tensor bytes), so a copied folder keeps its cached answers and a
    different checkpoint of the same shape does not.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(file.name.encode() + b"\0")
        size = file.stat().st_size
        with file.open("rb") as f:
            if file.suffix in _WEIGHT_SUFFIXES and size > 2 * _SAMPLE_BYTES:
                digest.update(str(size).encode())
                digest.update(f.read(_SAMPLE_BYTES))
                f.seek(size - _SAMPLE_BYTES)
                digest.update(f.read(_SAMPLE_BYTES))
            else:
                digest.update(f.read())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------- media


@dataclass(frozen=True)
class Media:
    """What the processor is given for one clip."""

    frames: np.ndarray  # (n, H, W, 3) uint8, n even
    fps: float  # n / clip duration: the sampled frames' rate
    audio: np.ndarray  # (samples,) float32 mono at the feature extractor's rate


def frame_indices(n_frames: int, max_frames: int) -> np.ndarray:
    """``n`` (even, <= max_frames) frames at equal steps from the first: frame k shows time ``k * duration / n``."""
    n = min(n_frames, max_frames)
    n = max(2, n - n % 2)  # frames pair into temporal patches; a one-frame clip shows its frame twice
    return np.floor(np.arange(n) * n_frames / n).astype(np.int64)


def clip_media(clip: Clip, max_frames: int, sample_rate: int) -> Media:
    """Sample ``clip``'s frames and mix its audio to mono at ``sample_rate``."""
    indices = frame_indices(clip.n_frames, max_frames)
    frames = np.ascontiguousarray(clip.frames[indices])
    audio = clip.audio.mean(axis=1, dtype=np.float32) if clip.n_channels > 1 else clip.audio[:, 0]
    if clip.sample_rate != sample_rate:
        from thud_mt.signal import resample  # scipy, only when the rates differ

        audio = resample(audio[:, None], clip.sample_rate, sample_rate)[:, 0]
    return Media(frames=frames, fps=len(indices) / clip.duration, audio=np.ascontiguousarray(audio, np.float32))


# ---------------------------------------------------------------------------------------------------- preprocessing

# One clip and question -> processor tensors, and per-query tensors -> one batch's media: shared by the adapter
# (inference) and alignment/ (training), so a model is trained on exactly the inputs the suites give it.


def chat_prompt(processor: Any, settings: OmniSettings, question: str) -> str:
    """The chat-templated prompt text: system prompt, the video (and its audio), the question, the assistant turn."""
    content: list[dict[str, str]] = [{"type": "video"}]
    if not settings.use_audio_in_video:
        content.append({"type": "audio"})
    content.append({"type": "text", "text": question})
    messages: list[dict[str, Any]] = []
    if settings.system:
        messages.append({"role": "system", "content": [{"type": "text", "text": settings.system}]})
    messages.append({"role": "user", "content": content})
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _audio_kwargs(processor: Any, samples: int) -> dict[str, Any]:
    # Pad each clip's audio to its own length plus one FFT window rather than the extractor's 300 s:
    # the features of the real frames are the same (the padding is zeros either way, and masked),
    # at a hundredth of the cost, and they never depend on the other clips of a batch.
    fft = int(getattr(processor.feature_extractor, "n_fft", 400))
    return {"padding": "max_length", "max_length": samples + fft, "truncation": False}


def _videos_kwargs(processor: Any, settings: OmniSettings, fps: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "fps": fps,
        "do_sample_frames": False,  # frames are sampled here, so their times are known exactly
        "size": {"shortest_edge": settings.min_pixels, "longest_edge": settings.max_pixels},
    }
    if hasattr(type(processor.video_processor), "cap_pixels_per_frame"):
        kwargs["cap_pixels_per_frame"] = False  # max_pixels and max_frames bound the cost already
    return kwargs


def _interleave_kwargs(processor: Any, settings: OmniSettings) -> dict[str, Any]:
    if not settings.use_audio_in_video:
        return {}
    if hasattr(processor, "load_audio_from_video"):  # transformers >= 5.2x: the given audio is the video's
        return {"load_audio_from_video": True, "audio_from_video_indices": [0]}
    return {"use_audio_in_video": True}


def processor_inputs(processor: Any, settings: OmniSettings, media: Media, prompt: str) -> dict[str, Any]:
    """The processor's tensors for one clip and its chat prompt (batch dimension 1); ``settings`` must be resolved."""
    import torch

    arrays = processor(
        text=[prompt],
        videos=[media.frames],
        audio=[media.audio],
        videos_kwargs=_videos_kwargs(processor, settings, media.fps),
        audio_kwargs=_audio_kwargs(processor, len(media.audio)),
        # NumPy out, tensors made here: with "pt" the 5.2x processors feed tensors to np.arange, which
        # warns (a DeprecationWarning per query in every suite run); from_numpy shares the memory.
        return_tensors="np",
        **_interleave_kwargs(processor, settings),
    )
    return {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}


def collate_media(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The media tensors of a batch, in item order: video patches concatenated, mel features padded and masked."""
    import torch

    batch: dict[str, Any] = {}
    for key in ("pixel_values_videos", "video_grid_thw", "video_second_per_grid"):
        if key in items[0]:
            batch[key] = torch.cat([torch.as_tensor(item[key]) for item in items])
    if "input_features" in items[0]:
        frames = max(item["input_features"].shape[-1] for item in items)
        mels = items[0]["input_features"].shape[1]
        features = torch.zeros((len(items), mels, frames), dtype=items[0]["input_features"].dtype)
        mask = torch.zeros((len(items), frames), dtype=torch.long)
        for k, item in enumerate(items):
            n = item["input_features"].shape[-1]
            features[k, :, :n] = item["input_features"][0]
            mask[k, :n] = item["feature_attention_mask"][0]
        batch["input_features"] = features
        batch["feature_attention_mask"] = mask
    if "video_second_per_grid" in batch:  # a time: float32, whatever the model's dtype
        batch["video_second_per_grid"] = batch["video_second_per_grid"].float()
    return batch


# ---------------------------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Prepared:
    """One query's processor output (tensors with a batch dimension of 1), or why there is none."""

    inputs: Mapping[str, Any] | None
    error: str | None = None


_POOL_PREFIX = "thud-qwen-omni-prep"
_MODEL_DTYPE = ("pixel_values_videos", "input_features")  # inputs cast to the weights' dtype


@dataclass(frozen=True)
class _Batch:
    mode: Scoring
    indices: tuple[int, ...]


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Loading logs a progress bar and notices about the unused talker's config: not the user's business."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class QwenOmni:
    """A Qwen Omni thinker behind the ``Model`` protocol."""

    def __init__(
        self,
        arch: Arch,
        folder: Path,
        settings: OmniSettings,
        scoring: Scoring,
        thinker: Any,
        processor: Any,
        digest: str,
        lock: threading.Lock | None = None,
    ) -> None:
        self.arch = arch
        self.folder = folder
        self.settings = settings
        self.scoring = scoring
        self.thinker = thinker
        self.processor = processor
        self.name = arch.model
        self.capabilities = Capabilities(
            audio=True, video=True, audio_in_video=settings.use_audio_in_video, logprobs=True
        )
        self._digest = digest
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        # One call at a time on the weights, across with_settings copies too: the thinker keeps per-call state
        # (its rope deltas), and the runner may start a new call while a timed-out one is still generating.
        self._lock = lock or threading.Lock()
        self._local = threading.local()
        tokenizer = processor.tokenizer
        self._pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        self._generation = self._generation_config()

    # ------------------------------------------------------------ identity

    @property
    def device(self) -> Any:
        return next(self.thinker.parameters()).device

    @property
    def dtype(self) -> Any:
        return next(self.thinker.parameters()).dtype

    @property
    def fingerprint(self) -> str:
        s = self.settings
        identity = {
            "arch": self.arch.model,
            "weights": self._digest,
            "dtype": str(self.dtype),
            "scoring": self.scoring,
            "max_frames": s.max_frames,
            "min_pixels": s.min_pixels,
            "max_pixels": s.max_pixels,
            "sample_rate": s.sample_rate,
            "max_new_tokens": s.max_new_tokens,
            "use_audio_in_video": s.use_audio_in_video,
            "system": s.system,
        }
        blob = json.dumps(identity, sort_keys=True).encode()
        return f"{self.arch.model}-{hashlib.sha256(blob).hexdigest()[:16]}"

    def with_settings(self, **changes: Any) -> QwenOmni:
        """The same loaded weights under other settings (benchmarks compare batch sizes this way)."""
        scoring = changes.pop("scoring", self.scoring)
        settings = dataclasses.replace(self.settings, **changes)
        return QwenOmni(
            self.arch, self.folder, settings, scoring, self.thinker, self.processor, self._digest, self._lock
        )

    # ------------------------------------------------------------ preprocessing (worker threads)

    @lru_cache(maxsize=256)  # noqa: B019 - one per (model, question): prompts repeat across every clip
    def prompt(self, question: str) -> str:
        return chat_prompt(self.processor, self.settings, question)

    def process(self, media: Media, question: str) -> dict[str, Any]:
        """The processor's tensors for one clip and question (batch dimension 1)."""
        return processor_inputs(self._thread_processor(), self.settings, media, self.prompt(question))

    def _thread_processor(self) -> Any:
        """A processor per worker thread: a fast tokenizer's settings live in shared Rust state that
        concurrent calls may not change ("Already borrowed"); copies cost a few MB and a millisecond."""
        if not threading.current_thread().name.startswith(_POOL_PREFIX):
            return self.processor  # the caller's thread, under the model's lock: the only other user
        if getattr(self._local, "processor", None) is None:
            import copy

            self._local.processor = copy.deepcopy(self.processor)
        return self._local.processor

    def prepare(self, query: Query) -> Prepared:
        """Never raises: an unreadable clip or a processor error becomes this query's error."""
        try:
            media = clip_media(query.clip, self.settings.max_frames, self.settings.sample_rate)
            return Prepared(self.process(media, query.question.text))
        except ThudError as exc:
            return Prepared(None, f"{self.name}: clip {query.clip.id}: {exc}")
        except Exception as exc:  # a processor failure must cost this query, not the batch
            return Prepared(
                None, f"{self.name}: preprocessing clip {query.clip.id} failed: {type(exc).__name__}: {exc}"
            )

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.settings.workers, thread_name_prefix=_POOL_PREFIX
                )
            return self._pool

    # ------------------------------------------------------------ batching

    def _batches(self, queries: Sequence[Query]) -> list[_Batch]:
        size = self.settings.batch_size
        generate = [i for i, q in enumerate(queries) if self.scoring == "generate" or not q.question.choices]
        scored = [i for i, q in enumerate(queries) if self.scoring == "logprob" and q.question.choices]
        batches = [_Batch("generate", tuple(generate[k : k + size])) for k in range(0, len(generate), size)]
        # A scored query's choices share one forward pass; queries join it while the rows fit batch_size.
        group: list[int] = []
        rows = 0
        for i in scored:
            n = len(queries[i].question.choices)
            if group and rows + n > size:
                batches.append(_Batch("logprob", tuple(group)))
                group, rows = [], 0
            group.append(i)
            rows += n
        if group:
            batches.append(_Batch("logprob", tuple(group)))
        return batches

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        with self._lock:
            return self._answer(queries)

    def _answer(self, queries: Sequence[Query]) -> list[Answer]:
        answers: list[Answer | None] = [None] * len(queries)
        for batch, prepared in self.pipeline(queries, self._batches(queries)):
            ready = [(i, p) for i, p in zip(batch.indices, prepared, strict=True) if p.inputs is not None]
            for i, p in zip(batch.indices, prepared, strict=True):
                if p.error is not None:
                    answers[i] = Answer(text="", error=p.error)
            if not ready:
                continue
            items: list[Mapping[str, Any]] = [p.inputs for _, p in ready if p.inputs is not None]
            try:
                if batch.mode == "generate":
                    results = self.generate(items)
                else:
                    results = self.score(items, [queries[i].question.choices for i, _ in ready])
            except Exception as exc:  # one failing batch (out of memory, say) must not take the others with it
                message = self._batch_error(exc, len(ready))
                results = [Answer(text="", error=message) for _ in ready]
            for (i, _), result in zip(ready, results, strict=True):
                answers[i] = result
        return [a if a is not None else Answer(text="", error=f"{self.name}: no answer produced") for a in answers]

    def pipeline(self, queries: Sequence[Query], batches: Sequence[_Batch]) -> Iterator[tuple[_Batch, list[Prepared]]]:
        """Yield each batch with its prepared inputs while the workers prepare the next ``prefetch`` batches."""
        if self.settings.workers == 0:  # no overlap: each batch is prepared when the model needs it
            for batch in batches:
                yield batch, [self.prepare(queries[i]) for i in batch.indices]
            return
        pool = self._executor()
        pending: list[list[concurrent.futures.Future[Prepared]]] = []
        ahead = self.settings.prefetch + 1
        submitted = 0
        try:
            for k, batch in enumerate(batches):
                while submitted < len(batches) and submitted < k + ahead:
                    pending.append([pool.submit(self.prepare, queries[i]) for i in batches[submitted].indices])
                    submitted += 1
                futures = pending[k]
                yield batch, [f.result() for f in futures]
                pending[k] = []  # let the batch's tensors go
        finally:
            for futures in pending:
                for f in futures:
                    f.cancel()

    def _batch_error(self, exc: Exception, n: int) -> str:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            torch.cuda.empty_cache()
            return (
                f"{self.name}: out of memory on a batch of {n}; lower --model-option batch_size, max_frames or "
                f"max_pixels ({exc})".splitlines()[0]
            )
        return f"{self.name}: model raised {type(exc).__name__}: {exc}"

    # ------------------------------------------------------------ the model (main thread)

    def collate(
        self, items: Sequence[Mapping[str, Any]], extra_ids: Sequence[Sequence[int]] | None = None
    ) -> dict[str, Any]:
        """One batch from per-query inputs: ids padded on the left (``extra_ids`` appended to each row first),
        video patches concatenated, mel features padded to the longest and masked."""
        import torch

        rows = []
        for k, item in enumerate(items):
            ids = item["input_ids"][0][item["attention_mask"][0].bool()]
            if extra_ids is not None:
                ids = torch.cat([ids, torch.tensor(list(extra_ids[k]), dtype=ids.dtype)])
            rows.append(ids)
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for k, ids in enumerate(rows):
            input_ids[k, length - len(ids) :] = ids
            attention_mask[k, length - len(ids) :] = 1
        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, **collate_media(items)}
        device, dtype = self.device, self.dtype
        return {
            k: v.to(device=device, dtype=dtype if k in _MODEL_DTYPE else None, non_blocking=True)
            for k, v in batch.items()
        }

    def _generation_config(self) -> Any:
        import copy

        config = copy.deepcopy(self.thinker.generation_config)
        # Greedy, whatever the checkpoint's generation_config.json suggests: answers must be reproducible.
        config.do_sample = False
        config.temperature = None
        config.top_p = None
        config.top_k = None
        config.max_new_tokens = self.settings.max_new_tokens
        config.pad_token_id = self._pad_id
        if config.eos_token_id is None:
            config.eos_token_id = self.processor.tokenizer.eos_token_id
        return config

    def generate(self, items: Sequence[Mapping[str, Any]]) -> list[Answer]:
        import torch

        batch = self.collate(items)
        with torch.inference_mode():
            out = self.thinker.generate(
                **batch,
                generation_config=self._generation,
                use_audio_in_video=self.settings.use_audio_in_video,
            )
        new = out[:, batch["input_ids"].shape[1] :].cpu()
        texts = self.processor.tokenizer.batch_decode(new, skip_special_tokens=True)
        eos = self._generation.eos_token_id
        stops = set(eos if isinstance(eos, list) else [eos]) | {self._pad_id}
        return [
            Answer(text=text.strip(), meta={"new_tokens": int(sum(1 for t in row.tolist() if t not in stops))})
            for text, row in zip(texts, new, strict=True)
        ]

    @lru_cache(maxsize=1024)  # noqa: B019 - a handful of choices, asked about every clip
    def choice_ids(self, choice: str) -> tuple[int, ...]:
        return tuple(self.processor.tokenizer(choice, add_special_tokens=False).input_ids)

    def score(self, items: Sequence[Mapping[str, Any]], choices: Sequence[Sequence[str]]) -> list[Answer]:
        """Each choice's summed token log-probability after its prompt, every choice of every item in one pass."""
        import torch

        row_items = [item for item, cs in zip(items, choices, strict=True) for _ in cs]
        row_ids = [self.choice_ids(c) for cs in choices for c in cs]
        batch = self.collate(row_items, row_ids)
        keep = max(len(ids) for ids in row_ids)
        with torch.inference_mode(), self._last_logits(keep + 1):
            logits = self.thinker(**batch, use_audio_in_video=self.settings.use_audio_in_video, use_cache=False).logits
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # position j predicts token j + 1
        totals: list[float] = []
        for r, ids in enumerate(row_ids):
            targets = torch.tensor(ids, device=logprobs.device)
            picked = logprobs[r, keep - len(ids) :].gather(-1, targets[:, None])
            totals.append(float(picked.sum()))
        answers = []
        k = 0
        for cs in choices:
            scores = dict(zip(cs, totals[k : k + len(cs)], strict=True))
            k += len(cs)
            top = max(scores.values())
            weights = {c: math.exp(v - top) for c, v in scores.items()}
            norm = sum(weights.values())
            answers.append(
                Answer(
                    text="",
                    scores=scores,
                    meta={
                        "confidence": {c: w / norm for c, w in weights.items()},
                        "tokens": {c: len(self.choice_ids(c)) for c in cs},
                    },
                )
            )
        return answers

    @contextlib.contextmanager
    def _last_logits(self, keep: int) -> Iterator[None]:
        """Apply the LM head to the last ``keep`` positions only: the full logits of a batch of long multimodal
        prompts over a 152k vocabulary would take gigabytes. (The thinker's forward has no ``logits_to_keep``.)"""
        handle = self.thinker.lm_head.register_forward_pre_hook(lambda _, args: (args[0][:, -keep:], *args[1:]))
        try:
            yield
        finally:
            handle.remove()

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


# ---------------------------------------------------------------------------------------------------- loading


def _torch_settings(settings: OmniSettings) -> tuple[Any, Any]:
    import torch

    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ModelOptionError(f"--model-option device={settings.device}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelOptionError(f"--model-option device={settings.device}: this torch sees no CUDA device")
    name = settings.dtype
    if name == "auto":
        name = "bfloat16" if device.type == "cuda" else "float32"
    return device, getattr(torch, name)


def load(arch: Arch, options: ModelOptions) -> QwenOmni:
    """Check everything a user can get wrong before loading anything heavy; then load."""
    settings = parse_settings(arch.model, options.extra).resolved(arch)
    if options.scoring not in ("generate", "logprob"):
        raise ModelOptionError(f"--thud-scoring {options.scoring}: {arch.model} supports generate and logprob")
    folder = resolve_model_path(arch, options.model_path)
    check_architecture(arch, folder)
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in folder.iterdir()):
        raise ModelPathError(
            f"{arch.model}: {folder} has a config.json but no weight files (*.safetensors). {_weights_help(arch)}"
        )
    try:
        import transformers
    except ImportError as exc:
        raise ModelLoadError(f"{arch.model} needs torch and transformers: pip install 'thud-mt[hf]' ({exc})") from exc
    device, dtype = _torch_settings(settings)
    thinker_class: Callable[..., Any] = getattr(transformers, arch.thinker)
    with _quiet_transformers():
        try:
            processor = transformers.AutoProcessor.from_pretrained(folder)
        except Exception as exc:
            raise ModelLoadError(
                f"{arch.model}: could not load the processor from {folder}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            # Straight onto the GPU when there is one: a 7B checkpoint need not pass through host memory first.
            direct = device.type == "cuda" and importlib.util.find_spec("accelerate") is not None
            placement = {"device_map": {"": str(device)}} if direct else {}
            thinker = thinker_class.from_pretrained(folder, dtype=dtype, **placement)
        except Exception as exc:
            raise ModelLoadError(
                f"{arch.model}: could not load the weights in {folder}: {type(exc).__name__}: {exc}"
            ) from exc
    rate = int(getattr(processor.feature_extractor, "sampling_rate", settings.sample_rate))
    if rate != settings.sample_rate:
        raise ModelOptionError(
            f"--model-option sample_rate={settings.sample_rate}: {folder}'s feature extractor expects {rate} Hz"
        )
    thinker = thinker.to(device).eval()
    scoring = cast(Scoring, options.scoring)
    return QwenOmni(arch, folder, settings, scoring, thinker, processor, weights_digest(folder))


def qwen_omni(options: ModelOptions) -> QwenOmni:
    """``--model=qwen-omni``: Qwen2.5-Omni's thinker."""
    return load(QWEN25, options)


def qwen3_omni(options: ModelOptions) -> QwenOmni:
    """``--model=qwen3-omni``: Qwen3-Omni-MoE's thinker."""
    return load(QWEN3, options)
