"""Shared test set-up: hypothesis profiles and workspace helpers."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# "ci" keeps the whole suite within the CI budget on 2 cores; "dev" is quicker;
# "thorough" is for a long local run (HYPOTHESIS_PROFILE=thorough).
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "dev", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
