"""Polls right after a VM starts running, so its IP shows within seconds.

A VM's IP is known to its driver only once the instance runs (an EC2
instance's public address, an Elastic IP the first poll associates, what a
provider's ``poll`` script prints). Waiting for the host's next regular poll
(``VM_POLLING_INTERVAL``, 30 s by default) would leave ``onevm show`` without
it for that long. So when a VM enters RUNNING its host is polled at once, and
again :data:`FRESH_POLL_DELAYS` seconds later for what the provider learns a
moment after (an instance still ``pending``, an association made by the
previous poll): the delays are the host driver's
(:attr:`~cloudburst.drivers.base.VmDriver.fresh_poll_delays`; a driver whose
first poll knows everything, like the dummy one, is polled once). Polls are
per host and in bulk, so many VMs starting together on one host cost one poll
per delay, not one per VM; and such a poll asks only
about the VMs that started (:meth:`FreshPolls.taken`), not every VM of the host:
the others get their regular poll. (Polling all of them made each start cost
O(VMs on its host): at 10 VMs per host, 40 VM samples per started VM.)

:class:`FreshPolls` learns about new RUNNING VMs from the daemon's event bus
(committed changes only) and tells the monitor which hosts are due.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
from collections.abc import Callable, Mapping
from typing import Final

from cloudburst.drivers.base import VmDriver
from cloudburst.events import EventBus, Resync, SubscriptionClosed
from cloudburst.model.states import LcmState

__all__ = ["FRESH_POLL_DELAYS", "MERGE_WITHIN", "FreshPolls"]

#: Seconds after a VM enters RUNNING at which its host is polled, unless its driver says.
FRESH_POLL_DELAYS: Final = VmDriver.fresh_poll_delays
#: Seconds a due poll may come after the time asked for, serving it (see vm_changed).
MERGE_WITHIN: Final = 0.25


class FreshPolls:
    """Due times of the polls that follow VMs entering RUNNING, per host."""

    def __init__(self, delays: tuple[float, ...] = FRESH_POLL_DELAYS,
                 delays_of: Callable[[int], tuple[float, ...]] | None = None) -> None:
        """``delays_of(host id)``: the delays for VMs starting on that host
        (its driver's); without it, ``delays`` for every host."""
        self.delays = delays
        self._delays_of = delays_of
        self._due: dict[int, list[float]] = {}
        #: The VMs each host's fresh polls are for, with the time of their last one.
        self._vms: dict[int, dict[int, float]] = {}
        #: VMs last seen RUNNING: a later change of a running VM is no new start.
        self._running: set[int] = set()
        #: Every due time with its host, for :meth:`due_hosts` (served ones are skipped).
        self._queue: list[tuple[float, int]] = []
        #: Hosts whose first due time has come and that no poll has taken yet.
        self._ready: set[int] = set()

    def vm_changed(self, vm: Mapping[str, object], now: float) -> bool:
        """Note a VM's committed change; True when it just entered RUNNING (polls due)."""
        vm_id, host_id = vm.get("id"), vm.get("host_id")
        if not isinstance(vm_id, int):
            return False
        if vm.get("lcm_state") != LcmState.RUNNING:
            self._running.discard(vm_id)
            return False
        if vm_id in self._running or not isinstance(host_id, int):
            return False
        self._running.add(vm_id)
        delays = self.delays if self._delays_of is None else self._delays_of(host_id)
        self._vms.setdefault(host_id, {})[vm_id] = now + max(delays)
        times = self._due.setdefault(host_id, [])
        for delay in delays:
            at = now + delay
            index = bisect.bisect_left(times, at)
            # A poll due at most MERGE_WITHIN later serves this one too: a burst of
            # starts keeps a short list (re-sorting it per VM was quadratic).
            if index == len(times) or times[index] > at + MERGE_WITHIN:
                times.insert(index, at)
                heapq.heappush(self._queue, (at, host_id))
        return True

    def due(self, host_id: int, now: float) -> bool:
        """Whether a fresh poll of ``host_id`` is due at ``now``."""
        times = self._due.get(host_id)
        return times is not None and bool(times) and times[0] <= now

    def due_hosts(self, now: float) -> set[int]:
        """The hosts a fresh poll is due for at ``now`` (as :meth:`due` says): a
        cost of the due times come since the last call, not of every host."""
        queue = self._queue
        while queue and queue[0][0] <= now:
            self._ready.add(heapq.heappop(queue)[1])
        # A host stays ready until a poll takes it (the monitor may have to wait).
        self._ready = {host_id for host_id in self._ready if self.due(host_id, now)}
        return set(self._ready)

    def taken(self, host_id: int, now: float) -> frozenset[int]:
        """A poll of ``host_id`` starts at ``now``: it serves every due time up to now.

        Returns the VMs that poll is for: those that started on the host and whose
        fresh polls are not over (a VM whose last one is served now is included,
        then forgotten).
        """
        later = [due for due in self._due.get(host_id, ()) if due > now]
        self._ready.discard(host_id)
        if later:
            self._due[host_id] = later
        else:
            self._due.pop(host_id, None)
        started = self._vms.get(host_id)
        if not started:
            return frozenset()
        served = frozenset(started)
        for vm_id in [vm_id for vm_id, last in started.items() if last <= now]:
            del started[vm_id]
        if not started or not later:
            del self._vms[host_id]
        return served

    def forget_host(self, host_id: int) -> None:
        self._due.pop(host_id, None)
        self._vms.pop(host_id, None)
        self._ready.discard(host_id)

    async def watch(self, bus: EventBus, clock: Callable[[], float],
                    wake: Callable[[], None]) -> None:
        """Follow VM changes on ``bus`` until cancelled; ``wake`` the monitor when due."""
        subscription = bus.subscribe(("vm",))
        try:
            while True:
                change = await subscription.get()
                if isinstance(change, Resync):
                    continue  # changes were lost; the regular polls still come
                if self.vm_changed(change.data, clock()):
                    wake()
        except SubscriptionClosed:
            return
        finally:
            with contextlib.suppress(Exception):
                subscription.close()


