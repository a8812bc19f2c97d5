"""Browser sessions of the dashboard: who is logged in, their CSRF token, when it ends.

A session is created by a successful login and named by a random id that
travels only in the ``cloudburst_session`` cookie (``HttpOnly``,
``SameSite=Strict``, path ``/``). Each session has its own random CSRF token,
which the page reads from ``GET /api/v1/session`` and sends back in the
``X-CSRF-Token`` header of every request that changes something; the server
compares it with the session's in constant time.

A session ends at logout, after :data:`IDLE_SECONDS` without a request, or
:data:`MAX_SECONDS` after login, whichever comes first. Sessions live in the
daemon's memory: a restart logs everyone out, which is the safe direction.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["COOKIE", "IDLE_SECONDS", "MAX_SECONDS", "Session", "SessionStore"]

#: The session cookie's name.
COOKIE: Final = "cloudburst_session"
#: A session unused this long ends.
IDLE_SECONDS: Final = 30 * 60.0
#: A session ends this long after login whatever its use.
MAX_SECONDS: Final = 12 * 3600.0
#: Sessions kept at most; the least recently used beyond it are ended.
MAX_SESSIONS: Final = 10_000


@dataclass(slots=True)
class Session:
    """One logged-in browser."""

    id: str
    user_id: int
    csrf_token: str
    created: float
    last_seen: float

    def csrf_matches(self, token: str | None) -> bool:
        """Whether ``token`` is this session's CSRF token (constant-time)."""
        return token is not None and hmac.compare_digest(token.encode(),
                                                         self.csrf_token.encode())


class SessionStore:
    """The open sessions (see the module docstring)."""

    def __init__(self, *, idle_seconds: float = IDLE_SECONDS, max_seconds: float = MAX_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def create(self, user_id: int) -> Session:
        """A new session for ``user_id``."""
        now = self._clock()
        self._expire(now)
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda session: session.last_seen)
            del self._sessions[oldest.id]
        session = Session(id=secrets.token_urlsafe(32), user_id=user_id,
                          csrf_token=secrets.token_urlsafe(32), created=now, last_seen=now)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session named ``session_id`` (its idle timer restarts), else ``None``."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if self._expired(session, now):
            del self._sessions[session_id]
            return None
        session.last_seen = now
        return session

    def alive(self, session_id: str) -> bool:
        """Whether the session is still open, without counting this as a use.

        A page left open with its live stream does not keep a session alive.
        """
        session = self._sessions.get(session_id)
        return session is not None and not self._expired(session, self._clock())

    def end(self, session_id: str) -> None:
        """Log the session out (nothing happens for an unknown id)."""
        self._sessions.pop(session_id, None)

    def end_user(self, user_id: int) -> None:
        """End every session of ``user_id`` (e.g. the user was disabled)."""
        for session in [s for s in self._sessions.values() if s.user_id == user_id]:
            del self._sessions[session.id]

    def __len__(self) -> int:
        return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return (now - session.last_seen > self.idle_seconds
                or now - session.created > self.max_seconds)

    def _expire(self, now: float) -> None:
        for session in [s for s in self._sessions.values() if self._expired(s, now)]:
            del self._sessions[session.id]
