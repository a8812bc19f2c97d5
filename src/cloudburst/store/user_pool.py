"""The user pool. Passwords are stored only as salted scrypt hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from sqlalchemy import Connection, Row, insert, select

from cloudburst.errors import NotFoundError
from cloudburst.model.records import UserRecord
from cloudburst.store.schema import user_groups, users
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


def _record(row: Row[Any]) -> UserRecord:
    return UserRecord(
        id=row.id, name=row.name, gid=row.gid, password_hash=row.password_hash,
        auth_driver=row.auth_driver, enabled=bool(row.enabled),
        template=Template.from_stored_json(json.loads(row.template)),
    )


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
    row = connection.execute(select(users).where(users.c.id == user_id)).first()
    if row is None:
        raise NotFoundError(f"USER {user_id} does not exist")
    return _record(row)


def find_user(connection: Connection, name: str) -> UserRecord | None:
    """The user called ``name``, if any."""
    row = connection.execute(select(users).where(users.c.name == name)).first()
    return None if row is None else _record(row)


def list_users(connection: Connection) -> list[UserRecord]:
    """All users ordered by id."""
    return [_record(row) for row in connection.execute(select(users).order_by(users.c.id))]
