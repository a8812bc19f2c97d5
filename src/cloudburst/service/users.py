"""Users: authentication (passwords and login tokens), the user pool and its changes.

On first start ``oneadmin`` (id 0, group ``oneadmin``) is created with a
random password that is stored only hashed and written once to
``CLOUDBURST_HOME/one_auth`` (mode 0600).

Sessions are ``user:password`` or ``user:token`` (a token from
``one.user.login``). Verifying a scrypt hash is slow, so a verified session
is remembered (keyed by a hash of the session string, never the secret) for
:data:`SESSION_CACHE_SECONDS`, but **every call re-reads the user**: a
disabled or deleted user, a changed password, a revoked or expired token or a
changed group takes effect on the next call, in every daemon sharing the store.
New logins go through :mod:`cloudburst.service.logins` (throttling per client
address and user name, their own bounded password-check thread).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection

from cloudburst.auth import acl
from cloudburst.config.settings import LoginLimits
from cloudburst.errors import (
    ApiArgumentError,
    AuthenticationError,
    IllegalActionError,
    NotFoundError,
    PoolNameError,
    ValidationError,
)
from cloudburst.model.records import LoginToken, UserRecord, scoped
from cloudburst.service.logins import LoginThrottle, PasswordChecker
from cloudburst.store import acl_pool, group_pool, quota_pool, user_pool
from cloudburst.store.database import Database
from cloudburst.store.sequences import next_ids
from cloudburst.template import Template, parse_any

ADMIN_NAME = "oneadmin"
#: ``oneadmin``'s user id, and the id of its group ``oneadmin``.
ADMIN_ID = 0
#: The group new users join unless told otherwise.
USERS_GROUP = 1
#: Seconds a verified session stays cached (the user is still re-read every call).
SESSION_CACHE_SECONDS = 300.0
#: Random bytes in a login token (shown as 64 hex digits, as oned's).
_TOKEN_BYTES = 32
_AUTH_FAILED = "User couldn't be authenticated, aborting call."


def bootstrap_admin(db: Database, auth_file: Path) -> bool:
    """Create ``oneadmin`` and its ``one_auth`` file if there is no user yet.

    Returns whether the user was created. Runs before the loop starts.
    """
    def write(connection: Connection) -> str | None:
        if user_pool.find_user(connection, ADMIN_NAME) is not None:
            return None
        # Hex: a URL-safe token starts with "-" one time in 64, which `--password VALUE`
        # on a command line then takes for an option.
        password = secrets.token_hex(24)
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


@dataclass(frozen=True, slots=True)
class _Verified:
    """What a cached session was verified against: a password hash or a token digest."""

    user_id: int
    password_hash: str
    token_digest: str
    until: float


def _check_token_group(caller: UserRecord, egid: int) -> None:
    """Refuse a new token scoped to ``egid`` that ``caller``'s session may not make."""
    if caller.id == ADMIN_ID or ADMIN_ID in caller.groups:
        return
    if egid == -1:
        if caller.egid >= 0:
            raise ApiArgumentError("Cannot create a full token with a specific group token")
    elif egid not in caller.groups:
        raise ApiArgumentError("EGID is not in user group list")


def _leave_group(connection: Connection, user_id: int, group_id: int) -> None:
    """End a membership, and the user's tokens scoped to that group with it (as oned:
    joining again does not bring them back)."""
    user_pool.remove_membership(connection, user_id, group_id)
    for token in user_pool.list_tokens(connection, user_id):
        if token.egid == group_id:
            user_pool.delete_token(connection, token.digest)


def _check_name(name: str) -> None:
    if not name or name != name.strip() or any(c in name for c in ": \t\n"):
        raise PoolNameError(f"Invalid NAME {name!r}: it cannot be empty or contain "
                              "spaces or ':'")


def _check_password(password: str) -> None:
    if not password:
        raise ValidationError("Invalid password, it cannot be empty")


class UserService:
    """Authenticates sessions; reads and changes users, memberships and tokens."""

    def __init__(self, db: Database, limits: LoginLimits | None = None) -> None:
        self.db = db
        self._sessions: dict[bytes, _Verified] = {}
        self._limits = limits or LoginLimits()
        self._throttle = LoginThrottle(self._limits)
        self._passwords = PasswordChecker(self._limits.queue)

    # -- authentication -----------------------------------------------------------------

    async def authenticate(self, session: object, *, client: str = "") -> UserRecord:
        """The user a ``user:password`` or ``user:token`` session names.

        ``client`` is the caller's address, for the login throttle.

        A session on a group-scoped token (``one.user.login``'s EGID) is the
        user confined to that group: :func:`~cloudburst.model.records.scoped`.
        Such a token stops working when the user leaves the group.

        Raises:
            AuthenticationError: missing, malformed or wrong session, a disabled
                user, or a locked client address or user name.
        """
        if not isinstance(session, str) or ":" not in session:
            raise AuthenticationError(_AUTH_FAILED)
        key = hashlib.sha256(session.encode("utf-8", "replace")).digest()
        cached = self._sessions.get(key)
        now = time.monotonic()
        if cached is not None and cached.until <= now:
            cached = None
        name, secret = session.split(":", 1)
        wall = int(time.time())
        until = now + SESSION_CACHE_SECONDS

        def valid(token: LoginToken | None, user: UserRecord) -> bool:
            return token is not None and (token.expires < 0 or token.expires > wall) and (
                token.egid < 0 or token.egid in user.groups)

        def check(connection: Connection) -> tuple[UserRecord | None, _Verified | None]:
            """The (enabled) user as the session sees itself, and how the session is
            proven without scrypt if it is."""
            user = user_pool.find_user(connection, name)
            if user is None or not user.enabled:
                return None, None
            if cached is not None and cached.user_id == user.id:
                if cached.token_digest:
                    token = user_pool.find_token(connection, user.id, cached.token_digest)
                    if token is not None and valid(token, user):
                        return scoped(user, token.egid), cached
                elif cached.password_hash == user.password_hash:
                    return user, cached
            digest = user_pool.token_digest(secret)
            token = user_pool.find_token(connection, user.id, digest)
            if token is not None and valid(token, user):
                return scoped(user, token.egid), _Verified(user.id, "", digest, until)
            return user, None

        try:
            if cached is None:
                self._throttle.check(client, name)
            user, verified = await self.db.lookup(check)
            if verified is None:
                if cached is not None:
                    self._throttle.check(client, name)
                stored_hash = user.password_hash if user is not None else None
                if not await self._passwords.verify(secret, stored_hash) or user is None:
                    self._sessions.pop(key, None)
                    self._throttle.failed(client, name)
                    raise AuthenticationError(_AUTH_FAILED)
                verified = _Verified(user.id, user.password_hash, "", until)
        except AuthenticationError:
            await asyncio.sleep(self._limits.failure_delay)
            raise
        assert user is not None
        if verified is not cached:
            self._throttle.succeeded(client, name)
        if len(self._sessions) > 1000:
            self._sessions.clear()
        self._sessions[key] = verified
        return user

    def close(self) -> None:
        """Stop the password-check thread."""
        self._passwords.close()

    # -- reading ------------------------------------------------------------------------

    async def info(self, user_id: int) -> UserRecord:
        return await self.db.read(lambda connection: user_pool.get_user(connection, user_id))

    async def pool(self) -> list[UserRecord]:
        return await self.db.read(user_pool.list_users)

    async def names(self) -> dict[int, str]:
        """Every user's name by id."""
        return await self.db.read(user_pool.user_names)

    async def name(self, user_id: int) -> str | None:
        """The name of user ``user_id``; None when there is no such user."""
        return await self.db.lookup(lambda c: user_pool.user_name(c, user_id))

    async def find(self, name: str) -> UserRecord:
        """Raises: NotFoundError: no user called ``name``."""
        user = await self.db.read(lambda connection: user_pool.find_user(connection, name))
        if user is None:
            raise NotFoundError(f"USER named {name} does not exist")
        return user

    async def tokens(self, user_id: int) -> list[LoginToken]:
        return await self.db.read(lambda connection: user_pool.list_tokens(connection, user_id))

    # -- changing -----------------------------------------------------------------------

    async def allocate(self, name: str, password: str, driver: str, groups: list[int]) -> int:
        """A new user in ``groups`` (the first is the primary; default ``users``)."""
        _check_name(name)
        _check_password(password)
        password_hash = user_pool.hash_password(password)
        primary, *secondary = groups or [USERS_GROUP]

        def write(connection: Connection) -> int:
            existing = user_pool.find_user(connection, name)
            if existing is not None:
                raise PoolNameError(f"NAME is already taken by USER {existing.id}.")
            for gid in (primary, *secondary):
                group_pool.get_group(connection, gid)
            user_id = next_ids(connection, "user")
            user_pool.insert_user(connection, UserRecord(
                id=user_id, name=name, gid=primary, password_hash=password_hash,
                auth_driver=driver or "core"))
            for gid in secondary:
                user_pool.add_membership(connection, user_id, gid)
            return user_id

        return await self.db.write(write)

    async def delete(self, user_id: int) -> None:
        """Remove a user, its tokens, memberships, quotas and the ACL rules naming it."""
        if user_id == ADMIN_ID:
            raise IllegalActionError("oneadmin cannot be deleted.")

        def write(connection: Connection) -> None:
            user_pool.delete_user(connection, user_id)
            quota_pool.delete_limits(connection, "user", user_id)
            acl_pool.delete_rules_of(connection, user=acl.INDIVIDUAL | user_id)

        await self.db.write(write)

    async def passwd(self, user_id: int, password: str) -> None:
        _check_password(password)
        password_hash = user_pool.hash_password(password)
        await self.db.write(lambda c: user_pool.update_user(c, user_id,
                                                            password_hash=password_hash))

    async def enable(self, user_id: int, enabled: bool) -> None:
        """Enable or disable; a disabled user's sessions and tokens stop at once."""
        if user_id == ADMIN_ID and not enabled:
            raise IllegalActionError("oneadmin cannot be disabled.")
        await self.db.write(lambda c: user_pool.update_user(c, user_id, enabled=enabled))

    async def update(self, user_id: int, text: str, *, merge: bool) -> None:
        change = parse_any(text)

        def write(connection: Connection) -> None:
            current = user_pool.get_user(connection, user_id).template
            template = current.copy() if merge else Template()
            template.merge(change, replace=True)
            user_pool.update_user(connection, user_id, template=template)

        await self.db.write(write)

    async def chgrp(self, user_id: int, group_id: int) -> None:
        """Make ``group_id`` the primary group (the old primary one is left)."""
        def write(connection: Connection) -> None:
            user = user_pool.get_user(connection, user_id)
            group_pool.get_group(connection, group_id)
            if user.gid != group_id:
                _leave_group(connection, user_id, user.gid)
            user_pool.add_membership(connection, user_id, group_id)
            user_pool.update_user(connection, user_id, gid=group_id)

        await self.db.write(write)

    async def addgroup(self, user_id: int, group_id: int) -> None:
        def write(connection: Connection) -> None:
            user_pool.get_user(connection, user_id)
            group_pool.get_group(connection, group_id)
            user_pool.add_membership(connection, user_id, group_id)

        await self.db.write(write)

    async def delgroup(self, user_id: int, group_id: int) -> None:
        """Take the user out of a secondary group (its tokens of that group go)."""
        def write(connection: Connection) -> None:
            user = user_pool.get_user(connection, user_id)
            if user.gid == group_id:
                raise IllegalActionError("Cannot remove user from its primary group.")
            if group_id not in user.groups:
                raise IllegalActionError(f"User {user_id} is not in group {group_id}.")
            _leave_group(connection, user_id, group_id)

        await self.db.write(write)

    async def login(self, name: str, token: str, expire: int, egid: int,
                    caller: UserRecord) -> str:
        """``one.user.login``: a new token valid ``expire`` seconds (-1: never), or,
        with ``token`` given, that token's new expiry; ``expire`` 0 revokes ``token``
        (every token of the user when it is empty). Returns the token.

        A new token with ``egid`` (not -1) is group-scoped (see :meth:`authenticate`).
        As oned: outside the oneadmin group the ``caller``'s session must be in that
        group, and a session on a group-scoped token cannot make an unscoped one.

        Raises:
            ApiArgumentError: ``expire`` below -1, an unknown ``token``, or an
                ``egid`` the caller may not scope a token to.
        """
        if expire < -1:
            raise ApiArgumentError(f"Wrong expire {expire}: use seconds, 0 or -1")
        if not token and expire != 0:
            _check_token_group(caller, egid)
        now = int(time.time())
        expires = -1 if expire == -1 else now + expire

        def write(connection: Connection) -> str:
            user = user_pool.find_user(connection, name)
            if user is None:
                raise NotFoundError(f"USER named {name} does not exist")
            user_pool.delete_expired_tokens(connection, user.id, now)
            if token:
                digest = user_pool.token_digest(token)
                found = user_pool.find_token(connection, user.id, digest)
                if found is None:
                    raise ApiArgumentError(f"Could not find token: {token[:7]}")
                user_pool.delete_token(connection, digest)
                if expire != 0:
                    user_pool.add_token(connection, LoginToken(
                        digest, user.id, found.prefix, expires, found.egid))
                return token
            if expire == 0:
                for existing in user_pool.list_tokens(connection, user.id):
                    user_pool.delete_token(connection, existing.digest)
                return ""
            created = secrets.token_hex(_TOKEN_BYTES)
            user_pool.add_token(connection, LoginToken(
                user_pool.token_digest(created), user.id, created[:7], expires, egid))
            return created

        return await self.db.write(write)
