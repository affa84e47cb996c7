"""Finding a model by name: built-ins, entry points, ``pkg.module:factory`` or ``file.py:factory``.

Modelled on inspect_ai's registry: a factory takes the session's
``ModelOptions`` and returns a ``Model``. Third-party packages add names
through the entry-point group ``thud_mt.models``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from thud_mt.errors import ThudError
from thud_mt.models.base import Model

ENTRY_POINT_GROUP = "thud_mt.models"


class ModelSpecError(ThudError):
    """A ``--model`` value that names no model; the message says what to type."""


@dataclass(frozen=True)
class ModelOptions:
    """What a session tells a model factory."""

    model_path: str | None = None
    corpus: Any = None  # thud_mt.corpus.manifest.Corpus: reference models learn the corpus's sounds from it
    seed: int = 0
    timeout_s: float | None = None
    url: str | None = None  # --model-url: an OpenAI-compatible server's base URL
    name: str | None = None  # --model-name: the model id a server or API knows it by
    scoring: str = "generate"  # --thud-scoring: "generate" (free text, parsed) or "logprob" (score each choice)
    extra: Mapping[str, str] = field(default_factory=dict)  # --model-option KEY=VALUE, adapter-specific
    cache_dir: Path | None = None  # the thud cache: a model may keep what it derives from the corpus there


Factory = Callable[[ModelOptions], Model]
_BUILTIN: dict[str, str] = {
    "listener": "thud_mt.models.reference:listener",
    "visual-only": "thud_mt.models.reference:visual_only",
    "chance": "thud_mt.models.reference:chance",
    "qwen-omni": "thud_mt.models.qwen_omni:qwen_omni",
    "qwen3-omni": "thud_mt.models.qwen_omni:qwen3_omni",
    "openai-compatible": "thud_mt.models.openai_compat:openai_compatible",
    "gemini": "thud_mt.models.gemini:gemini",
}
REPLAY_PREFIX = "replay:"  # --model=replay:PATH answers from a cassette (thud_mt.models.replay)
_REGISTERED: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    """Decorator: make ``factory`` available as ``--model=name`` in this process."""

    def decorate(factory: Factory) -> Factory:
        _REGISTERED[name] = factory
        return factory

    return decorate


def available() -> list[str]:
    names = set(_BUILTIN) | set(_REGISTERED) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def _import_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if module_name.endswith(".py") or "/" in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise ModelSpecError(f"--model {target}: no such file {path}")
        spec = importlib.util.spec_from_file_location(f"thud_user_model_{abs(hash(path.resolve()))}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ModelSpecError(f"--model {target}: cannot import {module_name} ({exc})") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ModelSpecError(f"--model {target}: {module_name} has no {attr!r}") from exc


def resolve(spec: str) -> Factory:
    """The factory a ``--model`` value names."""
    if spec in _REGISTERED:
        return _REGISTERED[spec]
    if spec in _BUILTIN:
        return _import_target(_BUILTIN[spec])
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == spec:
            return ep.load()
    if spec.startswith(REPLAY_PREFIX):
        from thud_mt.models.replay import replay_factory

        return replay_factory(spec[len(REPLAY_PREFIX) :])
    if ":" in spec:
        factory = _import_target(spec)
        if not callable(factory):
            raise ModelSpecError(f"--model {spec}: {factory!r} is not callable")
        return factory
    raise ModelSpecError(
        f"--model {spec}: unknown model. Use one of {', '.join(available())}, "
        "or pkg.module:factory, or path/to/file.py:factory"
    )


def create(spec: str, options: ModelOptions) -> Model:
    model = resolve(spec)(options)
    if not isinstance(model, Model):
        raise ModelSpecError(f"--model {spec}: the factory returned {type(model).__name__}, not a thud_mt Model")
    return model
