"""Which orphans of a cloud site are old enough to be terminated, across sweeps.

An orphan is an instance (or partner VM, or domain) carrying this
installation's tags that no live VM owns. One listing may predate a launch
that is just being recorded, so a single sighting is never enough: an orphan
is *due* once two sweeps of its host in a row have seen it **and** it was
first seen at least the grace period ago. An orphan that a sweep of its host
no longer finds is forgotten, and starts afresh if it shows up again.

The sightings of a host are not the driver's to keep: the caller (the
leader's monitor) loads them from the store before a sweep and stores them
after, so a new leader continues every grace period where the old one left
it. Times are UNIX times for that reason (every daemon of a shared store
reads them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: Sweeps in a row that must have seen an orphan before it is terminated.
SIGHTINGS_BEFORE_TERMINATION = 2

#: (UNIX time first seen, sweeps in a row that saw it) of one orphan.
Sighting = tuple[float, int]


class OrphanSightings:
    """One host's orphans, by deploy id: when each was first seen and by how many sweeps.

    A driver's ``sweep`` calls :meth:`observe` with what it found, terminates
    :meth:`due` ones and :meth:`forget`-s those it terminated; :attr:`seen`
    is then what the caller keeps for the next sweep.
    """

    def __init__(self, seen: Mapping[str, Sighting] | None = None) -> None:
        self._seen: dict[str, Sighting] = dict(seen or {})

    @property
    def seen(self) -> dict[str, Sighting]:
        """The sightings to keep for the next sweep (sweeps counted up to the rule's 2)."""
        return dict(self._seen)

    def observe(self, orphans: Iterable[str], now: float) -> dict[str, float]:
        """Record a sweep that found ``orphans`` at UNIX time ``now``; their ages in seconds.

        The orphans this sweep did not find are forgotten.
        """
        found = list(dict.fromkeys(orphans))
        seen: dict[str, Sighting] = {}
        for orphan in found:
            first, sweeps = self._seen.get(orphan, (now, 0))
            seen[orphan] = (first, min(sweeps + 1, SIGHTINGS_BEFORE_TERMINATION))
        self._seen = seen
        return {orphan: max(0.0, now - seen[orphan][0]) for orphan in found}

    def due(self, ages: Mapping[str, float], grace_period: float) -> list[str]:
        """The orphans of ``ages`` (from :meth:`observe`) to terminate now, in its order."""
        return [orphan for orphan, age in ages.items()
                if age >= grace_period
                and self._seen[orphan][1] >= SIGHTINGS_BEFORE_TERMINATION]

    def forget(self, orphan: str) -> None:
        """Drop ``orphan`` (terminated): a later sighting counts from scratch."""
        self._seen.pop(orphan, None)
