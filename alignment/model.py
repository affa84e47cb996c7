"""The omni thinker for training: which architecture a folder holds, loading it, and saving a loadable folder.

Loading goes through the ``qwen-omni`` adapter's own loader, so a folder that
trains is a folder the suites can load, and every check it makes (weights
present, processor readable, options valid) runs here too. A saved folder
holds the thinker's weights (a LoRA adapter merged in), its config, the
processor and the generation config: ``--model=qwen-omni --model-path DIR``
loads it as it loads downloaded weights.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thud_mt.models.qwen_omni import (
    ARCHS,
    Arch,
    ModelArchitectureError,
    ModelLoadError,
    OmniSettings,
    check_architecture,
    load,
    resolve_model_path,
)
from thud_mt.models.registry import ModelOptions

DONE = "alignment.json"  # written last into a saved folder: a folder without it is incomplete


def omni_arch(model_path: str | Path) -> tuple[Arch, Path]:
    """The Qwen-Omni family a weights folder (or cached hub id) holds, and the folder; anything else is an error."""
    folder = resolve_model_path(ARCHS["qwen-omni"], str(model_path))
    for arch in ARCHS.values():
        try:
            check_architecture(arch, folder)
        except ModelArchitectureError:
            continue
        return arch, folder
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelLoadError(f"{folder / 'config.json'} is not readable JSON ({exc})") from exc
    known = ", ".join(t for arch in ARCHS.values() for t in arch.model_types)
    raise ModelArchitectureError(
        f"{folder} holds a {model_type or 'unnamed'} model, not a Qwen-Omni thinker: alignment trains only omni "
        f"models (config.json model_type one of {known})"
    )


@dataclass(frozen=True)
class Loaded:
    """A thinker ready to train, with the processor and the (resolved) preprocessing settings it is trained under."""

    arch: Arch
    folder: Path
    thinker: Any
    processor: Any
    settings: OmniSettings


def load_for_training(model_path: str | Path, options: Mapping[str, str]) -> Loaded:
    """Load through the adapter; weights in float32 unless ``dtype`` is given (mixed precision does the rest)."""
    arch, folder = omni_arch(model_path)
    extra = {"dtype": "float32", "workers": "0", **options}
    model = load(arch, ModelOptions(model_path=str(folder), extra=extra))
    model.close()
    return Loaded(arch, folder, model.thinker.train(), model.processor, model.settings)


def merged(thinker: Any) -> Any:
    """The plain model behind a PEFT wrapper, with its adapter folded into the weights."""
    from peft import PeftModel

    return thinker.merge_and_unload() if isinstance(thinker, PeftModel) else thinker


def save_model(thinker: Any, processor: Any, folder: Path, info: Mapping[str, Any]) -> Path:
    """Write a loadable model folder atomically (a temporary folder renamed into place), ``info`` last."""
    model = merged(thinker)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)  # weights, config and generation config
    processor.save_pretrained(tmp)
    (tmp / DONE).write_text(json.dumps(dict(info), indent=2, default=str) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def is_saved(folder: Path) -> bool:
    return (folder / DONE).is_file()
