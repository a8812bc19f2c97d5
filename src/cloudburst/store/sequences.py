"""Id allocation and installation metadata.

Ids start at 0 as in OpenNebula and are never reused. They come from one row
per pool in ``sequences``, bumped inside the caller's transaction, so several
daemons sharing a PostgreSQL store cannot hand out the same id.
"""

from __future__ import annotations

import secrets

from sqlalchemy import Connection, bindparam, insert, select, update

from cloudburst.store.schema import meta, sequences


def next_ids(connection: Connection, pool: str, count: int = 1) -> int:
    """Reserve ``count`` consecutive ids of ``pool``; return the first."""
    bumped = connection.execute(_BUMP, {"pool": pool, "count": count}).scalar()
    if bumped is None:
        connection.execute(insert(sequences).values(name=pool, next_id=count))
        return 0
    return int(bumped) - count


def give_back_ids(connection: Connection, pool: str, count: int) -> None:
    """Return the last ``count`` ids :func:`next_ids` reserved in this transaction
    (unused): the transaction holds the sequence's row since, so they are the last."""
    connection.execute(_GIVE_BACK, {"pool": pool, "count": count})


_GIVE_BACK = (update(sequences).where(sequences.c.name == bindparam("pool"))
              .values(next_id=sequences.c.next_id - bindparam("count")))

_BUMP = (
    update(sequences)
    .where(sequences.c.name == bindparam("pool"))
    .values(next_id=sequences.c.next_id + bindparam("count"))
    .returning(sequences.c.next_id)
)


def get_meta(connection: Connection, key: str) -> str | None:
    """The metadata value stored under ``key``, if any."""
    value = connection.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
    return None if value is None else str(value)


def set_meta(connection: Connection, key: str, value: str) -> None:
    """Store ``value`` under ``key`` (insert or replace)."""
    if get_meta(connection, key) is None:
        connection.execute(insert(meta).values(key=key, value=value))
    else:
        connection.execute(update(meta).where(meta.c.key == key).values(value=value))


def installation_id(connection: Connection) -> str:
    """This installation's id, created on first use; cloud resources are tagged with it."""
    existing = get_meta(connection, "installation_id")
    if existing:
        return existing
    created = "cb-" + secrets.token_hex(8)
    set_meta(connection, "installation_id", created)
    return created
