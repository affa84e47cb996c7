"""Shared fixtures for the framework's own tests."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings

from helpers import make_clip
from thud_mt.clip import Clip

# The real Debian media set, fetched once per machine into the thud cache.
pytest_plugins = ["fixtures_debian"]

# Media round trips take tens of milliseconds: no per-example deadline, and CI
# runs the same examples every time so a red build is reproducible.
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("dev"), derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def clip_factory() -> Callable[..., Clip]:
    return make_clip
