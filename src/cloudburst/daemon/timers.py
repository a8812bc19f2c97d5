"""The monitor's per-host timers: a deadline queue, and the phase that spreads hosts.

Each tick the monitor starts what is due. Walking every host to find it costs
O(hosts) per tick (10,000 hosts, a tick a second, several a second while VMs
start); :class:`Deadlines` keeps the due times in a heap, so a tick costs
O(due x log hosts) and a quiet tick next to nothing.

Hosts created together (a batch of ``onehost create``, a daemon that sees every
host at its start) would have timers that fire together: ten thousand hosts'
polls in one tick, a driver that polls across hosts asked about 50,000 VMs in
one call, then nothing for the rest of the interval. So a host's timer runs on
its own grid, the times ``phase + k x interval``, the phase a fixed fraction of
the interval drawn from the host id (multiples of the golden ratio: any run of
consecutive ids spreads evenly over the interval). :func:`next_on_grid` gives
the next point of that grid: never more than one interval away, so nothing is
polled less often than its interval says; a late tick delays one round, not the
grid, so hosts do not drift into step with each other.
"""

from __future__ import annotations

import heapq

__all__ = ["Deadlines", "first_on_grid", "next_on_grid", "phase"]

#: The fractional part of the golden ratio: k x this, modulo 1, spreads evenly for any k range.
_GOLDEN = 0.6180339887498949


def phase(key: int, interval: float) -> float:
    """Where in each ``interval`` the grid of ``key`` falls, in ``[0, interval)``."""
    return (key * _GOLDEN) % 1.0 * interval


def next_on_grid(key: int, now: float, interval: float) -> float:
    """The first time after ``now`` on the grid of ``key``: in ``(now, now + interval]``."""
    return now + interval - (now - phase(key, interval)) % interval


def first_on_grid(key: int, now: float, interval: float, since_last: float) -> float:
    """When to run a timer first whose work was last done ``since_last`` seconds ago
    (by this process or another): at the next point of its grid, but no more than
    one interval after that last time (at ``now`` if that is past)."""
    return min(next_on_grid(key, now, interval), now + max(0.0, interval - since_last))


class Deadlines:
    """A due time per key (a host id), taken in time order."""

    def __init__(self) -> None:
        self._at: dict[int, float] = {}
        #: ``(time, key)``; an entry whose time is no longer the key's is skipped.
        self._heap: list[tuple[float, int]] = []

    def __contains__(self, key: int) -> bool:
        return key in self._at

    def __len__(self) -> int:
        return len(self._at)

    def get(self, key: int) -> float | None:
        return self._at.get(key)

    def set(self, key: int, at: float) -> None:
        """``key`` is due at ``at`` (instead of any time it had)."""
        if self._at.get(key) == at:
            return
        self._at[key] = at
        heapq.heappush(self._heap, (at, key))
        if len(self._heap) > 2 * len(self._at) + 64:  # mostly replaced times: drop them
            self._heap = [(at, key) for key, at in self._at.items()]
            heapq.heapify(self._heap)

    def drop(self, key: int) -> None:
        self._at.pop(key, None)

    def pop_due(self, now: float) -> list[int]:
        """The keys due at ``now``, in time order, each removed: the caller sets
        the next time of those it keeps."""
        due: list[int] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, key = heapq.heappop(heap)
            if self._at.get(key) == at:
                del self._at[key]
                due.append(key)
        return due
