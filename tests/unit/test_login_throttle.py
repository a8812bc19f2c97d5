"""Failed-login throttling per client address and per user name."""

from __future__ import annotations

import logging

import pytest

from cloudburst.config.settings import LoginLimits
from cloudburst.errors import AuthenticationError
from cloudburst.service.logins import LoginThrottle


def _throttle(now: list[float]) -> LoginThrottle:
    return LoginThrottle(LoginLimits(max_failures=3, lockout=10.0), clock=lambda: now[0])


def test_an_address_is_locked_after_the_failures_and_for_longer_each_time(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    throttle = _throttle(now)
    for attempt in range(3):
        throttle.check("10.0.0.1", f"user{attempt}")
        throttle.failed("10.0.0.1", f"user{attempt}")
    with pytest.raises(AuthenticationError, match=r"try again in 10 s \(LOGIN_LOCKOUT\)"):
        throttle.check("10.0.0.1", "someone")
    throttle.check("10.0.0.2", "someone")  # other addresses are not affected
    assert "client 10.0.0.1 locked for 10 s" in caplog.text
    now[0] = 10.0
    throttle.check("10.0.0.1", "someone")
    for _ in range(3):
        throttle.failed("10.0.0.1", "x")
    with pytest.raises(AuthenticationError, match="try again in 20 s"):
        throttle.check("10.0.0.1", "someone")


def test_a_user_name_is_locked_whatever_the_address_and_known_or_not() -> None:
    now = [0.0]
    throttle = _throttle(now)
    for n in range(3):
        throttle.failed(f"10.0.1.{n}", "nobody-by-this-name")
    with pytest.raises(AuthenticationError, match="Too many failed logins"):
        throttle.check("10.0.2.1", "nobody-by-this-name")


def test_failures_older_than_the_window_do_not_count_and_success_forgets() -> None:
    now = [0.0]
    throttle = _throttle(now)
    throttle.failed("a", "u")
    throttle.failed("a", "u")
    now[0] = 11.0
    throttle.failed("a", "u")
    throttle.check("a", "u")
    throttle.failed("a", "u")
    throttle.succeeded("a", "u")
    throttle.failed("a", "u")
    throttle.check("a", "u")


def test_lockouts_are_logged_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    throttle = _throttle([0.0])
    for _ in range(3):
        throttle.failed("b", "oneadmin")
    assert "user oneadmin locked" in caplog.text
