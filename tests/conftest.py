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

import pytest
from hypothesis import HealthCheck, settings

_RELAXED = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow],
            "print_blob": True}

settings.register_profile("ci", derandomize=True, database=None, **_RELAXED)
settings.register_profile("dev", **_RELAXED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: pytest-timeout's bound for end-to-end tests without their own: they start real
#: servers (daemons, moto, the OpenNebula peer, libvirtd) and on 2 busy cores take
#: several times their quiet duration. The bound catches hangs, it is not a speed goal.
E2E_TIMEOUT = 600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT))
