"""A per-loop cache of host rows, refreshed by version.

The scheduler and the monitor look at every host many times a second. Reading
and decoding 2,500 host templates each time would dominate their cost; a
``SELECT id, version`` is cheap, so only rows whose version changed are read
again. Allocation counters are not cached (they are left at 0): they change
with every placement and are read fresh by whoever needs them.
"""

from __future__ import annotations

from sqlalchemy import Connection

from cloudburst.model.records import HostRecord
from cloudburst.store import host_pool


class HostCache:
    """Host records as of the last :meth:`refresh`, ordered by id."""

    def __init__(self) -> None:
        self._hosts: dict[int, HostRecord] = {}
        #: Grows each time a refresh finds a host added, changed or removed.
        self.generation = 0

    def refresh(self, connection: Connection) -> list[HostRecord]:
        """Bring the cache up to date and return every host (without usage)."""
        versions = host_pool.host_versions(connection)
        stale = [host_id for host_id, version in versions.items()
                 if (cached := self._hosts.get(host_id)) is None or cached.version != version]
        gone = [host_id for host_id in self._hosts if host_id not in versions]
        if stale or gone:
            self.generation += 1
        if stale:
            for host in host_pool.list_hosts(connection, host_ids=stale, with_vms=False,
                                             with_usage=False):
                self._hosts[host.id] = host
        for host_id in gone:
            del self._hosts[host_id]
        return [self._hosts[host_id] for host_id in sorted(versions)]
