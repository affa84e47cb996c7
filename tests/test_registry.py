"""Finding a model by name: registered, built-in, entry point, module path, file path."""

from __future__ import annotations

from pathlib import Path

import pytest

from thud_mt.models import registry
from thud_mt.models.base import Answer, Capabilities
from thud_mt.models.registry import ModelOptions, ModelSpecError, create, resolve


class Echo:
    name = "echo"
    capabilities = Capabilities()
    fingerprint = "echo-1"

    def answer(self, queries):
        return [Answer(text="Yes.") for _ in queries]


def echo(options: ModelOptions) -> Echo:
    return Echo()


def test_builtin_names_resolve_to_the_reference_models() -> None:
    assert create("listener", ModelOptions()).name == "listener"
    assert create("visual-only", ModelOptions()).name == "visual-only"
    assert create("chance", ModelOptions(seed=3)).name == "chance"


def test_a_registered_name_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTERED", {})
    registry.register("echo")(echo)
    assert resolve("echo") is echo
    assert "echo" in registry.available()


def test_module_and_file_paths(tmp_path: Path) -> None:
    assert resolve("thud_mt.models.reference:chance").__name__ == "chance"
    model_file = tmp_path / "my_model.py"
    model_file.write_text("def factory(options):\n    return 'built'\n")
    assert resolve(f"{model_file}:factory")(ModelOptions()) == "built"


def test_entry_points_extend_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeEntryPoint:
        name = "third-party"

        def load(self):
            return echo

    monkeypatch.setattr(registry, "entry_points", lambda group: [FakeEntryPoint()] if group == "thud_mt.models" else [])
    assert resolve("third-party") is echo
    assert "third-party" in registry.available()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nobody", "unknown model. Use one of"),
        ("no_such_module_xyz:factory", "cannot import no_such_module_xyz"),
        ("thud_mt.models.registry:nothing", "has no 'nothing'"),
        ("missing/file.py:factory", "no such file"),
    ],
)
def test_bad_specs_say_what_to_type(spec: str, message: str) -> None:
    with pytest.raises(ModelSpecError, match=message):
        resolve(spec)
