"""Test-wide settings: the Hypothesis profiles.

``ci`` (the default): no deadline and no ``too_slow`` health check, so a
property test never fails because 2 shared cores are busy; examples are
derived from each test (``derandomize``), so every run tries the same cases
and a failure reproduces. Each test's ``max_examples`` stays as it sets it.
``dev`` is the same with random examples, for hunting new failures locally:
``HYPOTHESIS_PROFILE=dev pytest tests/unit``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_RELAXED = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow],
            "print_blob": True}

settings.register_profile("ci", derandomize=True, database=None, **_RELAXED)
settings.register_profile("dev", **_RELAXED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
