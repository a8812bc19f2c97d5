"""The user pool: users, their group memberships and login tokens.

Passwords are stored only as salted scrypt hashes; login tokens only as
SHA-256 digests (they are long random strings, so a fast hash is enough).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, insert, select, update

from cloudburst.errors import NotFoundError
from cloudburst.model.records import LoginToken, UserRecord
from cloudburst.store.prepared import Prepared
from cloudburst.store.schema import group_admins, login_tokens, user_groups, users
from cloudburst.template import Template

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password`` in a self-describing string."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the stored hash (constant-time compare)."""
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    salt = base64.b64decode(salt_b64)
    expected = base64.b64decode(digest_b64)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=len(expected), **_SCRYPT)
    return hmac.compare_digest(digest, expected)


def token_digest(token: str) -> str:
    """The stored form of a login token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _record(row: Row[Any] | Any, groups: tuple[int, ...]) -> UserRecord:
    return UserRecord(
        id=row.id, name=row.name, gid=row.gid, password_hash=row.password_hash,
        auth_driver=row.auth_driver, enabled=bool(row.enabled),
        template=Template.from_stored_json(json.loads(row.template)),
        groups=groups or (row.gid,),
    )


# The per-call reads (authentication) are prepared: SQLAlchemy's building and running of
# a statement costs several times more than the statement. A user is read with its groups
# in one statement (a row per group): on a networked store each is a round trip.
_USER_WITH_GROUPS = (select(users, user_groups.c.group_id)
                     .select_from(users.outerjoin(user_groups,
                                                  user_groups.c.user_id == users.c.id))
                     .order_by(user_groups.c.group_id))
_USER_BY_ID = Prepared(_USER_WITH_GROUPS.where(users.c.id == bindparam("user_id")))
_USER_BY_NAME = Prepared(_USER_WITH_GROUPS.where(users.c.name == bindparam("name")))
_TOKEN = Prepared(select(login_tokens).where(login_tokens.c.user_id == bindparam("user_id"),
                                             login_tokens.c.digest == bindparam("digest")))
_NAMES = select(users.c.id, users.c.name)
_NAME_OF = Prepared(select(users.c.name).where(users.c.id == bindparam("user_id")))


#: Users decoded from their rows, keyed by the rows themselves (see _with_groups).
_DECODED: dict[tuple[Any, ...], UserRecord] = {}
_DECODED_MOST = 256


def _with_groups(rows: Sequence[Any]) -> UserRecord | None:
    """The user of :data:`_USER_WITH_GROUPS`'s rows (None: no row, no such user).

    Every API call authenticates, reading its user: a user is decoded (its template's
    JSON) once per content of its rows, which are the key: a changed password, name,
    template or group, or a disabled user, give other rows, hence a fresh record. Equal
    rows share one record (read-only: the template is copied before any change).
    """
    if not rows:
        return None
    key = tuple(rows)
    user = _DECODED.get(key)
    if user is None:
        user = _record(rows[0], tuple(row.group_id for row in rows if row.group_id is not None))
        if len(_DECODED) >= _DECODED_MOST:
            _DECODED.clear()
        _DECODED[key] = user
    return user


def _groups_of(connection: Connection, user_ids: list[int] | None) -> dict[int, tuple[int, ...]]:
    query = select(user_groups.c.user_id, user_groups.c.group_id)
    if user_ids is not None:
        query = query.where(user_groups.c.user_id.in_(user_ids))
    found: dict[int, list[int]] = defaultdict(list)
    for user_id, group_id in connection.execute(query.order_by(user_groups.c.group_id)):
        found[user_id].append(group_id)
    return {user_id: tuple(ids) for user_id, ids in found.items()}


def insert_user(connection: Connection, record: UserRecord) -> None:
    """Store a new user (the record carries the hash, never the password), in its group."""
    connection.execute(insert(user_groups).values(user_id=record.id, group_id=record.gid))
    connection.execute(insert(users).values(
        id=record.id, name=record.name, gid=record.gid, password_hash=record.password_hash,
        auth_driver=record.auth_driver, enabled=int(record.enabled),
        template=json.dumps(record.template.to_json()),
    ))


def get_user(connection: Connection, user_id: int) -> UserRecord:
    """The user ``user_id``.

    Raises:
        NotFoundError: no such user.
    """
    user = _with_groups(_USER_BY_ID.rows(connection, user_id=user_id))
    if user is None:
        raise NotFoundError(f"USER {user_id} does not exist")
    return user


def find_user(connection: Connection, name: str) -> UserRecord | None:
    """The user called ``name``, if any."""
    return _with_groups(_USER_BY_NAME.rows(connection, name=name))


def user_names(connection: Connection) -> dict[int, str]:
    """Every user's name by id."""
    return {row.id: row.name for row in connection.execute(_NAMES)}


def user_name(connection: Connection, user_id: int) -> str | None:
    """The name of user ``user_id``; None when there is no such user."""
    row = _NAME_OF.first(connection, user_id=user_id)
    return None if row is None else str(row.name)


def list_users(connection: Connection) -> list[UserRecord]:
    """All users ordered by id."""
    groups = _groups_of(connection, None)
    return [_record(row, groups.get(row.id, ()))
            for row in connection.execute(select(users).order_by(users.c.id))]


def update_user(connection: Connection, user_id: int, **values: object) -> None:
    """Change columns of user ``user_id`` (``template`` as a :class:`Template`).

    Raises:
        NotFoundError: no such user.
    """
    template = values.get("template")
    if isinstance(template, Template):
        values["template"] = json.dumps(template.to_json())
    if "enabled" in values:
        values["enabled"] = int(bool(values["enabled"]))
    if connection.execute(update(users).where(users.c.id == user_id).values(**values)
                          ).rowcount != 1:
        raise NotFoundError(f"USER {user_id} does not exist")


def delete_user(connection: Connection, user_id: int) -> None:
    """Remove a user with its memberships, admin roles and tokens."""
    for table, column in ((user_groups, user_groups.c.user_id),
                          (group_admins, group_admins.c.user_id),
                          (login_tokens, login_tokens.c.user_id)):
        connection.execute(delete(table).where(column == user_id))
    if connection.execute(delete(users).where(users.c.id == user_id)).rowcount != 1:
        raise NotFoundError(f"USER {user_id} does not exist")


def add_membership(connection: Connection, user_id: int, group_id: int) -> None:
    """Put the user in the group (no-op when already there)."""
    exists = connection.execute(select(user_groups.c.user_id).where(
        user_groups.c.user_id == user_id, user_groups.c.group_id == group_id)).first()
    if exists is None:
        connection.execute(insert(user_groups).values(user_id=user_id, group_id=group_id))


def remove_membership(connection: Connection, user_id: int, group_id: int) -> None:
    """Take the user out of the group (and of its admins)."""
    connection.execute(delete(user_groups).where(user_groups.c.user_id == user_id,
                                                 user_groups.c.group_id == group_id))
    connection.execute(delete(group_admins).where(group_admins.c.user_id == user_id,
                                                  group_admins.c.group_id == group_id))


# -- login tokens -------------------------------------------------------------------------


def add_token(connection: Connection, token: LoginToken) -> None:
    connection.execute(insert(login_tokens).values(
        digest=token.digest, user_id=token.user_id, prefix=token.prefix,
        expires=token.expires, egid=token.egid))


def find_token(connection: Connection, user_id: int, digest: str) -> LoginToken | None:
    row = _TOKEN.first(connection, user_id=user_id, digest=digest)
    return None if row is None else LoginToken(row.digest, row.user_id, row.prefix,
                                               row.expires, row.egid)


def list_tokens(connection: Connection, user_id: int) -> list[LoginToken]:
    rows = connection.execute(select(login_tokens).where(login_tokens.c.user_id == user_id)
                              .order_by(login_tokens.c.expires))
    return [LoginToken(row.digest, row.user_id, row.prefix, row.expires, row.egid)
            for row in rows]


def delete_token(connection: Connection, digest: str) -> None:
    connection.execute(delete(login_tokens).where(login_tokens.c.digest == digest))


def delete_expired_tokens(connection: Connection, user_id: int, now: int) -> None:
    connection.execute(delete(login_tokens).where(
        login_tokens.c.user_id == user_id, login_tokens.c.expires >= 0,
        login_tokens.c.expires <= now))
