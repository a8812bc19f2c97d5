"""Which orphans of a cloud site are old enough to be terminated, across sweeps.

An orphan is an instance (or partner VM) carrying this installation's tags
that no live VM owns. One listing may predate a launch that is just being
recorded, so a single sighting is never enough: an orphan is *due* once two
sweeps of its host in a row have seen it **and** it was first seen at least
the grace period ago. An orphan that a sweep of its host no longer finds is
forgotten, and starts afresh if it shows up again.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

#: Sweeps in a row that must have seen an orphan before it is terminated.
SIGHTINGS_BEFORE_TERMINATION = 2


class OrphanTracker(Generic[K]):
    """When each orphan of each host was first seen, and by how many sweeps.

    ``K`` is the driver's name for an orphan (an instance id, a partner VM id).
    """

    def __init__(self) -> None:
        #: (host id, orphan) -> (monotonic time first seen, sweeps that saw it)
        self._seen: dict[tuple[int, K], tuple[float, int]] = {}

    def observe(self, host_id: int, orphans: Iterable[K], now: float) -> dict[K, float]:
        """Record a sweep of host ``host_id`` that found ``orphans``; their ages in seconds.

        The host's orphans that this sweep did not find are forgotten.
        """
        ages: dict[K, float] = {}
        for orphan in orphans:
            first, sweeps = self._seen.get((host_id, orphan), (now, 0))
            self._seen[host_id, orphan] = (first, sweeps + 1)
            ages[orphan] = now - first
        for key in [key for key in self._seen if key[0] == host_id and key[1] not in ages]:
            del self._seen[key]
        return ages

    def due(self, host_id: int, ages: dict[K, float], grace_period: float) -> list[K]:
        """The orphans of ``ages`` (from :meth:`observe`) to terminate now, in its order."""
        return [orphan for orphan, age in ages.items()
                if age >= grace_period
                and self._seen[host_id, orphan][1] >= SIGHTINGS_BEFORE_TERMINATION]

    def forget(self, host_id: int, orphan: K) -> None:
        """Drop ``orphan`` (terminated): a later sighting counts from scratch."""
        self._seen.pop((host_id, orphan), None)
