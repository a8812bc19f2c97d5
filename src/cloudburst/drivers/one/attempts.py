"""Never two partner VMs for one deploy: what earlier attempts of a token did.

A retried or replayed deploy first looks for a partner VM with its token in
a pool listing taken *after* the earlier attempt ended (a listing begun
earlier may miss what that attempt created), and ``find`` does the same after
a restart; only when none exists is another created. An attempt whose
create call is still in flight (its coroutine was cancelled by the time
limit, the worker thread was not) is waited for instead.
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
    """Deploy attempts per token: when the latest ended, and creations in flight."""

    def __init__(self) -> None:
        #: token -> when the latest create call (or lookup) for it ended
        self._ended: dict[str, float] = {}
        #: token -> a create call still in flight
        self._creating: dict[str, asyncio.Future[int]] = {}

    def _remember(self, token: str, when: float) -> None:
        if len(self._ended) >= _MAX_REMEMBERED:
            oldest = sorted(self._ended, key=self._ended.__getitem__)[: _MAX_REMEMBERED // 10]
            for old in oldest:
                del self._ended[old]
        self._ended[token] = when

    def forget(self, token: str) -> None:
        """The token's deploy succeeded: no later attempt needs to look."""
        self._ended.pop(token, None)

    async def earlier(self, pool: PoolSnapshots, token: str) -> int | None:
        """The partner VM an earlier attempt with ``token`` created, if any.

        Raises:
            DriverError: the pool listing failed.
        """
        creating = self._creating.get(token)
        if creating is not None:
            try:
                return await asyncio.shield(creating)
            except DriverError:
                pass
        ended = self._ended.get(token)
        if ended is None:
            return None
        vm = (await pool.get(ended)).find_token(token)
        return None if vm is None else vm.id

    async def find(self, pool: PoolSnapshots, token: str) -> int | None:
        """Like :meth:`earlier`, but also looks when this process made no attempt.

        A deploy replayed after this lookup must look again, even if it fails.
        """
        found = await self.earlier(pool, token)
        if found is None:
            now = time.monotonic()
            self._remember(token, now)
            vm = (await pool.get(now)).find_token(token)
            found = None if vm is None else vm.id
        return found

    async def create(self, token: str, creation: Coroutine[Any, Any, int]) -> int:
        """Run ``creation`` (the partner call) for ``token``; the new partner VM id.

        The call goes on if the caller is cancelled: a later attempt waits for it.

        Raises:
            DriverError: the creation failed.
        """
        self._remember(token, time.monotonic())
        task = asyncio.ensure_future(creation)
        self._creating[token] = task
        task.add_done_callback(lambda done: self._created(token, done))
        return await asyncio.shield(task)

    def _created(self, token: str, task: asyncio.Future[int]) -> None:
        """A create call ended: later lookups must list the pool after this moment."""
        if self._creating.get(token) is task:
            del self._creating[token]
        if not task.cancelled():
            task.exception()  # retrieved here; the awaiting attempt reports it
        self._remember(token, time.monotonic())
