"""Never two partner VMs for one of our VMs: what earlier deploy attempts did.

Attempts are told apart by our VM (its ``CLOUDBURST_ORIGIN`` tag), not only
by the deploy token: the core may retry a deploy under a new token. A
retried or replayed deploy first looks for the partner VM of its token, or
else a live one of its VM (:meth:`.pool.Snapshot.find_deployed`), in a pool
listing taken *after* the earlier attempt ended (a listing begun earlier may
miss what that attempt created), and ``find`` does the same after a
restart; only when none exists is another created. An attempt whose create
call is still in flight (its coroutine was cancelled by the time limit, the
worker thread was not) is waited for instead. A first deploy of a VM in this
process costs no listing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Final

from cloudburst.drivers.one.pool import PoolSnapshots
from cloudburst.errors import DriverError

#: Tokens remembered for retries; older attempts are forgotten beyond this.
_MAX_REMEMBERED: Final = 10_000


class DeployAttempts:
    """Deploy attempts per VM (origin tag): when the latest ended, creations in flight."""

    def __init__(self) -> None:
        #: origin -> when the latest create call (or lookup) for it ended
        self._ended: dict[str, float] = {}
        #: origin -> a create call still in flight
        self._creating: dict[str, asyncio.Future[int]] = {}

    def _remember(self, origin: str, when: float) -> None:
        if len(self._ended) >= _MAX_REMEMBERED:
            oldest = sorted(self._ended, key=self._ended.__getitem__)[: _MAX_REMEMBERED // 10]
            for old in oldest:
                del self._ended[old]
        self._ended[origin] = when

    def forget(self, origin: str) -> None:
        """The VM's deploy succeeded: no later attempt needs to look."""
        self._ended.pop(origin, None)

    async def earlier(self, pool: PoolSnapshots, token: str, origin: str) -> int | None:
        """The partner VM an earlier attempt for our VM ``origin`` created, if any.

        Raises:
            DriverError: the pool listing failed.
        """
        creating = self._creating.get(origin)
        if creating is not None:
            try:
                return await asyncio.shield(creating)
            except DriverError:
                pass
        ended = self._ended.get(origin)
        if ended is None:
            return None
        vm = (await pool.get(ended)).find_deployed(token, origin)
        return None if vm is None else vm.id

    async def find(self, pool: PoolSnapshots, token: str, origin: str) -> int | None:
        """Like :meth:`earlier`, but also looks when this process made no attempt.

        A deploy replayed after this lookup must look again, even if it fails.
        """
        found = await self.earlier(pool, token, origin)
        if found is None:
            now = time.monotonic()
            self._remember(origin, now)
            vm = (await pool.get(now)).find_deployed(token, origin)
            found = None if vm is None else vm.id
        return found

    async def create(self, origin: str, creation: Coroutine[Any, Any, int]) -> int:
        """Run ``creation`` (the partner call) for our VM ``origin``; the new partner VM id.

        The call goes on if the caller is cancelled: a later attempt waits for it.

        Raises:
            DriverError: the creation failed.
        """
        self._remember(origin, time.monotonic())
        task = asyncio.ensure_future(creation)
        self._creating[origin] = task
        task.add_done_callback(lambda done: self._created(origin, done))
        return await asyncio.shield(task)

    def _created(self, origin: str, task: asyncio.Future[int]) -> None:
        """A create call ended: later lookups must list the pool after this moment."""
        if self._creating.get(origin) is task:
            del self._creating[origin]
        if not task.cancelled():
            task.exception()  # retrieved here; the awaiting attempt reports it
        self._remember(origin, time.monotonic())
