"""Users and authentication with OpenNebula's ``user:password`` session string.

On first start ``oneadmin`` (id 0) is created with a random password that is
stored only hashed and written once to ``CLOUDBURST_HOME/one_auth`` (mode 0600).
Successful logins are cached (keyed by a hash of the session, never the
password itself) so that verifying the slow scrypt hash does not cost every
call. New logins go through :mod:`cloudburst.service.logins` (throttling per
client address and user name, their own bounded password-check thread).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from pathlib import Path

from sqlalchemy import Connection

from cloudburst.config.settings import LoginLimits
from cloudburst.errors import AuthenticationError
from cloudburst.model.records import UserRecord
from cloudburst.service.logins import LoginThrottle, PasswordChecker
from cloudburst.store import user_pool
from cloudburst.store.database import Database

ADMIN_NAME = "oneadmin"
#: ``oneadmin``'s user id, and the id of its group ``oneadmin``.
ADMIN_ID = 0
#: Seconds a verified session stays cached.
SESSION_CACHE_SECONDS = 300.0


def bootstrap_admin(db: Database, auth_file: Path) -> bool:
    """Create ``oneadmin`` and its ``one_auth`` file if there is no user yet.

    Returns whether the user was created. Runs before the loop starts.
    """
    def write(connection: Connection) -> str | None:
        if user_pool.find_user(connection, ADMIN_NAME) is not None:
            return None
        password = secrets.token_urlsafe(24)
        user_pool.insert_user(connection, UserRecord(
            id=ADMIN_ID, name=ADMIN_NAME, gid=ADMIN_ID,
            password_hash=user_pool.hash_password(password)))
        return password

    password = db.write_sync(write)
    if password is None:
        return False
    auth_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(auth_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"{ADMIN_NAME}:{password}\n")
    os.chmod(auth_file, 0o600)
    return True


class UserService:
    """Authenticates sessions and reads users."""

    def __init__(self, db: Database, limits: LoginLimits | None = None) -> None:
        self.db = db
        self._sessions: dict[bytes, tuple[UserRecord, float]] = {}
        self._limits = limits or LoginLimits()
        self._throttle = LoginThrottle(self._limits)
        self._passwords = PasswordChecker(self._limits.queue)

    async def authenticate(self, session: object, *, client: str = "") -> UserRecord:
        """The user a ``user:password`` session string names.

        ``client`` is the caller's address, for the login throttle.

        Raises:
            AuthenticationError: missing, malformed or wrong session, or a locked
                client address or user name.
        """
        if not isinstance(session, str) or ":" not in session:
            raise AuthenticationError("User couldn't be authenticated, aborting call.")
        key = hashlib.sha256(session.encode("utf-8", "replace")).digest()
        cached = self._sessions.get(key)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        name, password = session.split(":", 1)
        try:
            self._throttle.check(client, name)
            user = await self.db.read(lambda connection: user_pool.find_user(connection, name))
            if user is not None and not user.enabled:
                user = None
            stored_hash = user.password_hash if user is not None else None
            if not await self._passwords.verify(password, stored_hash):
                self._throttle.failed(client, name)
                raise AuthenticationError("User couldn't be authenticated, aborting call.")
        except AuthenticationError:
            await asyncio.sleep(self._limits.failure_delay)
            raise
        assert user is not None
        self._throttle.succeeded(client, name)
        if len(self._sessions) > 1000:
            self._sessions.clear()
        self._sessions[key] = (user, now + SESSION_CACHE_SECONDS)
        return user

    async def info(self, user_id: int) -> UserRecord:
        return await self.db.read(lambda connection: user_pool.get_user(connection, user_id))

    async def pool(self) -> list[UserRecord]:
        return await self.db.read(user_pool.list_users)

    def close(self) -> None:
        """Stop the password-check thread."""
        self._passwords.close()
