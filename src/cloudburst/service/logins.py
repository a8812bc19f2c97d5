"""Password guessing costs the guesser, not everyone else.

* :class:`LoginThrottle` counts failed logins per client address and per user
  name (known or not, so a lockout tells nothing about which users exist).
  ``max_failures`` failures within ``lockout`` seconds lock that address or
  name for ``lockout`` seconds, twice as long at each repeat (at most an hour).
  A locked login is refused without checking the password. Lockouts are logged.
  Sessions already verified are cached by :class:`~cloudburst.service.users.UserService`
  and never throttled, so a lockout of ``oneadmin`` stops new logins only.
* :class:`PasswordChecker` runs the slow scrypt checks on its own single thread,
  with a bounded queue, so guesses never wait in front of the store's reads;
  an unknown or disabled user costs a check against a dummy hash, like a known one.
* Every refused login is answered after ``failure_delay`` seconds (a timer, no
  work), which slows each guessing connection down to a trickle.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from cloudburst.config.settings import LoginLimits
from cloudburst.errors import AuthenticationError
from cloudburst.store import user_pool

log = logging.getLogger(__name__)

__all__ = ["LoginThrottle", "PasswordChecker"]

#: Longest lockout, whatever the repeats.
_MAX_LOCKOUT: Final = 3600.0
#: Keys remembered at most; beyond that, forgotten oldest first.
_MAX_KEYS: Final = 20_000


@dataclass(slots=True)
class _Record:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0
    lockouts: int = 0


class LoginThrottle:
    """Failed logins per client address and per user name, and the lockouts they earn."""

    def __init__(self, limits: LoginLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._records: dict[tuple[str, str], _Record] = {}

    def check(self, client: str, user: str) -> None:
        """Refuse a login from a locked client address or to a locked user name.

        Raises:
            AuthenticationError: naming how long the lockout still lasts.
        """
        now = self._clock()
        wait = max(self._locked_for(("client", client), now), self._locked_for(("user", user), now))
        if wait > 0:
            raise AuthenticationError(
                f"Too many failed logins: try again in {wait:.0f} s (LOGIN_LOCKOUT)")

    def failed(self, client: str, user: str) -> None:
        """Count a failed login; lock the address or name that reached the limit."""
        now = self._clock()
        for key in (("client", client), ("user", user)):
            record = self._record(key)
            record.failures = [at for at in record.failures if now - at < self.limits.lockout]
            record.failures.append(now)
            if len(record.failures) >= self.limits.max_failures and record.locked_until <= now:
                seconds = min(self.limits.lockout * 2 ** record.lockouts, _MAX_LOCKOUT)
                record.locked_until = now + seconds
                record.lockouts += 1
                record.failures.clear()
                log.warning("login lockout: %s %s locked for %.0f s after %d failed logins",
                            key[0], key[1][:64], seconds, self.limits.max_failures)

    def succeeded(self, client: str, user: str) -> None:
        """Forget the failures of a client address and user name that just logged in."""
        for key in (("client", client), ("user", user)):
            record = self._records.get(key)
            if record is not None and record.locked_until <= self._clock():
                del self._records[key]

    def _locked_for(self, key: tuple[str, str], now: float) -> float:
        record = self._records.get(key)
        return record.locked_until - now if record is not None else 0.0

    def _record(self, key: tuple[str, str]) -> _Record:
        record = self._records.get(key)
        if record is None:
            if len(self._records) >= _MAX_KEYS:
                self._forget_idle()
            record = self._records[key] = _Record()
        return record

    def _forget_idle(self) -> None:
        now = self._clock()
        for key in [key for key, record in self._records.items()
                    if record.locked_until <= now]:
            del self._records[key]
        while len(self._records) >= _MAX_KEYS:
            del self._records[next(iter(self._records))]


class PasswordChecker:
    """Verifies passwords on one dedicated thread with a bounded queue."""

    def __init__(self, queue: int) -> None:
        self._queue = queue
        self._pending = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="password")
        self._dummy_hash = self._pool.submit(user_pool.hash_password, secrets.token_urlsafe(16))

    async def verify(self, password: str, stored_hash: str | None) -> bool:
        """Whether ``password`` matches ``stored_hash``; None (no such user) costs the same.

        Raises:
            AuthenticationError: too many checks are already waiting.
        """
        if self._pending >= self._queue:
            raise AuthenticationError("Too many logins in progress: try again shortly "
                                      "(LOGIN_QUEUE)")
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._verify, password, stored_hash)
        finally:
            self._pending -= 1

    def _verify(self, password: str, stored_hash: str | None) -> bool:
        if stored_hash is None:
            user_pool.verify_password(password, self._dummy_hash.result())
            return False
        return user_pool.verify_password(password, stored_hash)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
