"""Listings of the partner's VM pool, shared by everyone waiting at the same time.

A deploy that must see what an earlier attempt created asks for a listing
*requested after* that attempt's call ended, and a hundred VMs waiting for
their partner VMs to boot share one ``one.vmpool.infoextended`` per round:
:class:`PoolSnapshots` coalesces the calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from cloudburst.drivers.one.documents import RemoteVm
from cloudburst.drivers.one.partner_vms import is_failed, is_leaving
from cloudburst.model.states import VmState


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The partner account's VMs (DONE excluded) as one listing saw them.

    ``started`` is the ``time.monotonic()`` at which the listing was requested:
    everything the partner had committed before then is in it.
    """

    started: float
    vms: tuple[RemoteVm, ...]

    def find(self, vm_id: int) -> RemoteVm | None:
        """The partner VM ``vm_id``, ``None`` when it is not listed."""
        for vm in self.vms:
            if vm.id == vm_id:
                return vm
        return None

    def find_deployed(self, token: str, origin: str) -> RemoteVm | None:
        """The partner VM a deploy of our VM made: the first not DONE with deploy token
        ``token``, else one tagged with ``origin`` (our VM) that is neither leaving nor
        failed (an earlier attempt's, retried under another token)."""
        for vm in self.vms:
            if vm.token == token and vm.state != VmState.DONE:
                return vm
        for vm in self.vms:
            if vm.origin == origin and vm.state != VmState.DONE and not is_leaving(vm) \
                    and not is_failed(vm):
                return vm
        return None


class PoolSnapshots:
    """Coalesces ``one.vmpool.infoextended`` calls: one listing serves every waiter.

    :meth:`get` returns a snapshot *requested* no earlier than ``newer_than``
    (a ``time.monotonic()`` value), joining a listing in flight when that one
    qualifies.
    """

    def __init__(self, fetch: Callable[[], Coroutine[Any, Any, list[RemoteVm]]]) -> None:
        self._fetch = fetch
        self._last: Snapshot | None = None
        self._flight: asyncio.Task[Snapshot] | None = None
        self._flight_started = float("-inf")

    async def _listing(self, started: float) -> Snapshot:
        snapshot = Snapshot(started, tuple(await self._fetch()))
        if self._last is None or started >= self._last.started:
            self._last = snapshot
        return snapshot

    async def get(self, newer_than: float) -> Snapshot:
        """A snapshot requested at or after ``newer_than``.

        Raises:
            DriverError: the listing failed.
        """
        if self._last is not None and self._last.started >= newer_than:
            return self._last
        flight = self._flight
        if flight is None or flight.done() or self._flight_started < newer_than:
            started = time.monotonic()
            flight = asyncio.ensure_future(self._listing(started))
            flight.add_done_callback(_retrieve)
            self._flight, self._flight_started = flight, started
        return await asyncio.shield(flight)


def _retrieve(task: asyncio.Future[Snapshot]) -> None:
    """Mark a listing's failure as seen (its waiters report it; none may be left)."""
    if not task.cancelled():
        task.exception()
