"""The orphan sightings of each host, kept in the store so a new leader continues them.

The leader's monitor reads a host's sightings before a sweep and writes them
back after (:mod:`cloudburst.drivers.orphans` says what they mean): a grace
period started under one leader runs on under the next instead of starting
again. Times are UNIX times.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import Connection, delete, insert, select

from cloudburst.store.id_lists import one_of
from cloudburst.store.schema import orphan_sightings

#: (UNIX time first seen, sweeps in a row that saw it), by orphan (deploy id).
Sightings = Mapping[str, tuple[float, int]]

#: Host ids per statement in reads of many hosts.
CHUNK = 500


def sightings(connection: Connection, host_id: int) -> dict[str, tuple[float, int]]:
    """Host ``host_id``'s orphans as its last sweep left them."""
    rows = connection.execute(
        select(orphan_sightings.c.orphan, orphan_sightings.c.first_seen,
               orphan_sightings.c.sweeps).where(orphan_sightings.c.host_id == host_id))
    return {orphan: (first_seen, sweeps) for orphan, first_seen, sweeps in rows}


_OF_HOSTS = select(orphan_sightings.c.host_id, orphan_sightings.c.orphan,
                   orphan_sightings.c.first_seen, orphan_sightings.c.sweeps).where(
    one_of(orphan_sightings.c.host_id, "host_ids"))


def sightings_of(connection: Connection, host_ids: Sequence[int]
                 ) -> dict[int, dict[str, tuple[float, int]]]:
    """:func:`sightings` of each of ``host_ids`` (those with none left out), in one read."""
    found: dict[int, dict[str, tuple[float, int]]] = {}
    for start in range(0, len(host_ids), CHUNK):
        for host_id, orphan, first_seen, sweeps in connection.execute(
                _OF_HOSTS, {"host_ids": list(host_ids[start:start + CHUNK])}):
            found.setdefault(host_id, {})[orphan] = (first_seen, sweeps)
    return found


def keep(connection: Connection, host_id: int, seen: Sightings) -> None:
    """Replace host ``host_id``'s sightings by ``seen``."""
    connection.execute(delete(orphan_sightings).where(orphan_sightings.c.host_id == host_id))
    if seen:
        connection.execute(insert(orphan_sightings), [
            {"host_id": host_id, "orphan": orphan, "first_seen": first, "sweeps": sweeps}
            for orphan, (first, sweeps) in seen.items()])
