"""Capacity cool-offs: which sites just refused which instance types, and until when.

A deploy refused for capacity or quota (:class:`~cloudburst.errors.CapacityError`)
records a cool-off for its host and instance type (``''``: the whole host, when
the driver names no type) in the same transaction that sends the VM back to
PENDING. Until it expires, the scheduler places no VM of that type there and
tries the next site at once; ``onehost show`` lists a host's cool-offs. They
live in the store, so every daemon of a shared store sees them and a restart
keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select

from cloudburst.store.schema import cooloffs


@dataclass(frozen=True, slots=True)
class Cooloff:
    """Host ``host_id`` is skipped for VMs of ``instance_type`` ('' = all) until ``until``."""

    host_id: int
    instance_type: str
    until: float
    reason: str


def record(connection: Connection, host_id: int, instance_type: str, until: float,
           reason: str) -> None:
    """Start (or extend) the cool-off of ``host_id`` for ``instance_type``."""
    kind = instance_type.strip().lower()[:64]
    connection.execute(delete(cooloffs).where(cooloffs.c.host_id == host_id,
                                              cooloffs.c.instance_type == kind))
    connection.execute(insert(cooloffs).values(host_id=host_id, instance_type=kind,
                                               until=until, reason=reason[:1000]))


def active(connection: Connection, now: float, host_id: int | None = None) -> list[Cooloff]:
    """Cool-offs not yet expired at ``now`` (UNIX time), of one host or all."""
    query = select(cooloffs).where(cooloffs.c.until > now)
    if host_id is not None:
        query = query.where(cooloffs.c.host_id == host_id)
    return [Cooloff(int(row.host_id), str(row.instance_type), float(row.until), str(row.reason))
            for row in connection.execute(query.order_by(cooloffs.c.host_id,
                                                         cooloffs.c.instance_type))]


def purge(connection: Connection, now: float) -> None:
    """Forget expired cool-offs."""
    connection.execute(delete(cooloffs).where(cooloffs.c.until <= now))
