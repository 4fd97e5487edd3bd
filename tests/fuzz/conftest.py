"""Hypothesis profiles of the fuzz stage: `default` keeps it seconds long inside `make test`;
`make fuzz` selects `fuzz` (HYPOTHESIS_PROFILE=fuzz) for a longer run."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "derandomize": False,
           "suppress_health_check": [HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("default", max_examples=40, **_COMMON)
settings.register_profile("fuzz", max_examples=1500, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
