"""The leader lease of daemons sharing a PostgreSQL store, and its fence.

One row of ``leases`` (name ``leader``) says which daemon leads, under which
**epoch**, until when. Times are the database server's clock
(``clock_timestamp()``), so the daemons' clocks never have to agree.

* :func:`acquire` takes the lease when it is free or expired and bumps the
  epoch: every leadership has its own number.
* :func:`renew` extends it, only for the holder of the current epoch and only
  while it has not expired.
* :func:`fence` runs first in each of the leader's write transactions. It
  checks that the leader still holds its epoch and takes a ``KEY SHARE`` lock
  on the row. A takeover locks the row ``FOR UPDATE``, which waits until those
  transactions end: either the leader's writes commit before the lease changes
  hands, or the fence refuses them. Two leaders can never both write. A
  renewal's ``UPDATE`` only needs a ``NO KEY UPDATE`` lock, which ``KEY SHARE``
  does not block, so the leader's writes never delay its own renewals.

A SQLite store is one daemon's: :class:`SoleStoreLock` holds an exclusive
lock on a file beside the database for the daemon's life, which the kernel
drops when the process dies, however it dies.
"""

from __future__ import annotations

import fcntl
import math
import os
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Connection, make_url, text

from cloudburst.errors import LeaseLostError, StoreInUseError

LEADER = "leader"

_NOW = "extract(epoch from clock_timestamp())"

_STATE = text(f"SELECT expires < {_NOW} FROM leases WHERE name = :name")

_CREATE = text("""
    INSERT INTO leases (name, holder, epoch, expires) VALUES (:name, '', 0, 0)
    ON CONFLICT (name) DO NOTHING
""")

_LOCK = text(f"""
    SELECT expires < {_NOW}, CASE WHEN holder = '' THEN NULL ELSE {_NOW} - expires END
      FROM leases WHERE name = :name FOR UPDATE
""")

_TAKE = text(f"""
    UPDATE leases SET holder = :holder, epoch = epoch + 1, expires = {_NOW} + :duration
     WHERE name = :name
    RETURNING epoch
""")

_RENEW = text(f"""
    UPDATE leases SET expires = {_NOW} + :duration
     WHERE name = :name AND holder = :holder AND epoch = :epoch AND expires >= {_NOW}
    RETURNING epoch
""")

_RELEASE = text(f"""
    UPDATE leases SET expires = {_NOW}
     WHERE name = :name AND holder = :holder AND epoch = :epoch
""")

_FENCE = text("""
    SELECT epoch FROM leases WHERE name = :name AND holder = :holder AND epoch = :epoch
       FOR KEY SHARE
""")

_CURRENT = text(f"SELECT holder, epoch, expires - {_NOW} FROM leases WHERE name = :name")


class Taken(NamedTuple):
    """A lease just taken."""

    #: The new epoch.
    epoch: int
    #: Seconds since the previous holder's lease ended (expired, or released):
    #: it may have acted until then. Infinite when nobody held it before.
    quiet: float


def acquire(connection: Connection, holder: str, duration: float) -> Taken | None:
    """Take the lease if it is free or expired (else None).

    Looks first without a lock, so a follower's attempts never queue behind the
    leader's write transactions; only an expired lease is locked and taken.
    """
    parameters = {"name": LEADER, "holder": holder, "duration": duration}
    expired = connection.execute(_STATE, parameters).scalar()
    if expired is None:
        connection.execute(_CREATE, parameters)
    elif not expired:
        return None
    locked = connection.execute(_LOCK, parameters).first()
    if locked is None or not locked[0]:
        return None
    quiet = math.inf if locked[1] is None else max(0.0, float(locked[1]))
    return Taken(int(connection.execute(_TAKE, parameters).scalar_one()), quiet)


def renew(connection: Connection, holder: str, epoch: int, duration: float) -> bool:
    """Extend the lease ``holder`` holds under ``epoch``; False if it was lost."""
    row = connection.execute(_RENEW, {"name": LEADER, "holder": holder, "epoch": epoch,
                                      "duration": duration}).first()
    return row is not None


def release(connection: Connection, holder: str, epoch: int) -> None:
    """Give the lease up now, so a follower need not wait for it to expire."""
    connection.execute(_RELEASE, {"name": LEADER, "holder": holder, "epoch": epoch})


def fence(connection: Connection, holder: str, epoch: int) -> None:
    """Refuse the transaction unless ``holder`` still leads under ``epoch``.

    Raises:
        LeaseLostError: another daemon took the lease (or it was released).
    """
    row = connection.execute(_FENCE, {"name": LEADER, "holder": holder,
                                      "epoch": epoch}).first()
    if row is None:
        raise LeaseLostError(f"this daemon no longer leads (epoch {epoch} was superseded); "
                             "the write was not applied")


def current(connection: Connection) -> tuple[str, int, float] | None:
    """(holder, epoch, seconds until expiry) of the lease, if it was ever taken."""
    row = connection.execute(_CURRENT, {"name": LEADER}).first()
    return None if row is None else (str(row[0]), int(row[1]), float(row[2]))


class SoleStoreLock:
    """An exclusive lock on a SQLite store, held while the daemon runs."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Raises:
            StoreInUseError: another live daemon holds the store.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise StoreInUseError(
                f"another daemon already uses the SQLite store {self.database}; a SQLite "
                "store serves one daemon (share a PostgreSQL store to run several)") from None
        self._descriptor = descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


def sole_store_lock(url: str) -> SoleStoreLock | None:
    """Lock the SQLite store file ``url`` names for this daemon (None: not a file store).

    Raises:
        StoreInUseError: another daemon holds it.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    lock = SoleStoreLock(Path(parsed.database).resolve())
    lock.acquire()
    return lock
