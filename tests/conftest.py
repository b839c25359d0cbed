"""Shared pytest setup: hypothesis profiles, the data location and the slow marker."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

# `ci`: reproducible and sized for CI's 2 cores: 1500 examples per property keep the three
# tests/test_properties_*.py files near 2 minutes there (measured; the first draft's 25 took 11 s
# and left whole argument combinations undrawn). `thorough`: 20000, for a long local hunt
# (~25 minutes). Pick with TINYNN_HYPOTHESIS_PROFILE (documented in README.md).
settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=1500,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough", deadline=None, max_examples=20000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile(os.environ.get("TINYNN_HYPOTHESIS_PROFILE", "ci"))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def data_dir() -> Path | None:
    """Where the real MNIST files are: TINYNN_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("TINYNN_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    return SHARED_DATA if SHARED_DATA.is_dir() else None
