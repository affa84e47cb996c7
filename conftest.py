"""Root conftest: the thud plugin for a source checkout that is not pip-installed.

An installed thud-mt registers ``thud_mt.plugin`` through its ``pytest11``
entry point; registering it here as well would load it twice, so this only
steps in when the entry point is absent.
"""

from importlib.metadata import entry_points

if not any(ep.value == "thud_mt.plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["thud_mt.plugin"]
