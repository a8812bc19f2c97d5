"""A per-loop cache of host rows, refreshed by version.

The scheduler and the monitor look at every host many times a second. Reading
and decoding 2,500 host templates each time would dominate their cost; a
``SELECT id, version`` is cheap, so only rows whose version changed are read
again. Cheaper still, one aggregate (:func:`~cloudburst.store.host_pool.hosts_stamp`)
tells whether any host was added, removed or written since the last refresh: at
10,000 hosts reading every version on each scheduler pass and monitor tick cost
more than the rest of the tick. Allocation counters are not cached (they are left
at 0): they change with every placement and are read fresh by whoever needs them.
"""

from __future__ import annotations

from sqlalchemy import Connection

from cloudburst.model.records import HostRecord
from cloudburst.store import host_pool


class HostCache:
    """Host records as of the last :meth:`refresh`, ordered by id."""

    def __init__(self) -> None:
        self._hosts: dict[int, HostRecord] = {}
        #: The pool's stamp when ``_hosts`` was last brought up to date, and the
        #: records in id order then.
        self._stamp: tuple[int, int, int] | None = None
        self._ordered: list[HostRecord] = []
        #: Grows each time a refresh finds a host added, changed or removed.
        self.generation = 0

    def refresh(self, connection: Connection) -> list[HostRecord]:
        """Bring the cache up to date and return every host (without usage)."""
        self.update(connection)
        return list(self._ordered)

    def update(self, connection: Connection) -> frozenset[int]:
        """Bring the cache up to date; return the ids of the hosts added, written or
        removed since the last update (every host at the first one)."""
        # The stamp is read before the versions: a change committed in between makes
        # the next stamp differ (one more read of the versions), never go unseen.
        stamp = host_pool.hosts_stamp(connection)
        if stamp == self._stamp:
            return frozenset()
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
        self._stamp = stamp
        self._ordered = [self._hosts[host_id] for host_id in sorted(versions)]
        return frozenset(stale) | frozenset(gone)

    def get(self, host_id: int) -> HostRecord | None:
        """Host ``host_id`` as of the last refresh (None: not known then)."""
        return self._hosts.get(host_id)
