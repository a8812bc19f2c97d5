"""Which daemon drives: the leader lease loop.

Every daemon serves the API; exactly one -- the leader -- runs the scheduler,
the monitor, recovery and driver work. :class:`Leadership` decides which:

* On a **SQLite** store the daemon is alone (a second one is refused at start
  by :class:`~cloudburst.store.lease.SoleStoreLock`) and leads from the start.
* On a **PostgreSQL** store the daemons compete for the lease row
  (:mod:`cloudburst.store.lease`). A follower tries to take it every
  ``RETRY`` seconds; the leader renews it every ``RENEW`` seconds. Elected,
  the daemon sets the store's write fence to its epoch and calls
  ``elected``. It steps down -- calls ``deposed`` and stops driving at once --
  when a renewal is refused, when the fence refuses a write, or when it could
  not renew for ``DURATION - RENEW`` seconds (its database connection is gone):
  always before the lease expires in the database, so before a rival can
  take it. Writes it had queued are fenced by the epoch until it has stopped.
  A deposed daemon competes again only after ``DURATION``: a rival takes over
  meanwhile, and two loaded daemons do not pass the lease back and forth.

Lease statements use their own connections (never the writer queue, which a
burst may fill) with short TCP and statement time limits, so a cut network
is noticed in seconds rather than at the kernel's TCP time-out. Renewals are
made from the moment of election by a small process of their own
(:mod:`cloudburst.daemon.lease_keeper`), so neither a loop kept busy by
recovery or a burst nor the daemon's garbage collections cost the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Connection, Engine

from cloudburst import metrics
from cloudburst.config.settings import LeaseSettings
from cloudburst.daemon.lease_keeper import STATEMENT_TIMEOUT, LeaseKeeper, lease_engine
from cloudburst.errors import LeaseLostError
from cloudburst.store import lease
from cloudburst.store.database import Database

log = logging.getLogger(__name__)

T = TypeVar("T")

class Leadership:
    """Holds, renews and gives up the leader lease; see the module docstring."""

    def __init__(self, db: Database, settings: LeaseSettings, *,
                 elected: Callable[[], Awaitable[None]],
                 deposed: Callable[[], Awaitable[None]]) -> None:
        self.db = db
        self.settings = settings
        self.shared = not db.is_sqlite
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        #: The epoch this daemon leads under; None while it follows.
        self.epoch: int | None = None
        #: When it last became leader: seconds since the previous leader's lease had
        #: ended (it may have called providers until then); infinite when nobody led
        #: before it, or on SQLite.
        self.quiet = math.inf
        #: How many times this daemon became leader or stopped being it.
        self.changes = 0
        self._elected = elected
        self._deposed = deposed
        self._engine = lease_engine(db.url) if self.shared else None
        self._keeper = LeaseKeeper(db.url, self.holder, settings) if self.shared else None
        # Lease statements may hang on a cut connection: keep them off the
        # loop's default executor, and give a hung one company.
        self._executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="lease")
        self._lost = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        return self.epoch is not None

    def refusal(self) -> str | None:
        """Why no driver call may start now, or None: this daemon leads and its lease
        is known to hold. Checked before each call, so a leader resumed after a stop
        longer than its lease acts on nothing before its loop has seen it stepped down."""
        if self.epoch is None:
            return "this daemon does not lead"
        reason = self._keeper.lapsed() if self._keeper is not None else None
        return None if reason is None else f"this daemon no longer leads: {reason}"

    @property
    def engine(self) -> Engine:
        """The lease statements' engine (shared stores only)."""
        assert self._engine is not None
        return self._engine

    async def start(self) -> None:
        """Lead at once on SQLite; on PostgreSQL try once now, then keep competing."""
        if not self.shared:
            await self._become(0, time.monotonic())
            return
        assert self._keeper is not None
        await asyncio.to_thread(self._keeper.start)
        asked_at = time.monotonic()
        taken = await self._attempt(lease.acquire, self.holder, self.settings.duration)
        if taken is not None:
            await self._become(taken.epoch, asked_at, taken.quiet)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="leadership")

    async def _run(self) -> None:
        """Compete for the lease until :meth:`stop`; lead while holding it."""
        while not self._stopped.is_set():
            if self.epoch is None:
                try:
                    await asyncio.to_thread(self.keeper.start)  # if it died
                except RuntimeError as exc:
                    log.warning("cannot compete for the lease: %s", exc)
                    await self._pause(self.settings.duration)
                    continue
                asked_at = time.monotonic()
                taken = await self._attempt(lease.acquire, self.holder, self.settings.duration)
                if taken is not None and not self._stopped.is_set():
                    await self._become(taken.epoch, asked_at, taken.quiet)
                    continue
                await self._pause(self.settings.retry)
            else:
                await self._hold(self.epoch)
                if not self._stopped.is_set():
                    # Just deposed (too slow to renew, or fenced): leave the lease to a
                    # rival for one lease time rather than race for it again at once, so
                    # two loaded daemons do not hand it back and forth, each handover
                    # restarting the work in flight.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopped.wait(), self.settings.duration)

    async def stop(self) -> None:
        """Stop competing; a leader steps down and releases the lease for a successor."""
        self._stopped.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        epoch = self.epoch
        if epoch is not None:
            await self._step_down("the daemon is stopping")
            if self.shared:
                await self._attempt(lease.release, self.holder, epoch)
                log.info("lease released (epoch %d)", epoch)
        if self._engine is not None:
            self._engine.dispose()
        if self._keeper is not None:
            await asyncio.to_thread(self._keeper.close)
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def keeper(self) -> LeaseKeeper:
        """The renewing process's handle (shared stores only)."""
        assert self._keeper is not None
        return self._keeper

    async def _hold(self, epoch: int) -> None:
        """Lead until the lease is lost, cannot be renewed in time, or the daemon stops.

        Renewals are made by the keeper process, so a loop busy with a burst or
        a recovery never delays them: the lease stays while the daemon lives and
        reaches the database.
        """
        while self.epoch == epoch and not self._stopped.is_set():
            await self._pause(self.settings.renew)
            if self._stopped.is_set():
                return
            if self._lost.is_set():
                await self._step_down("a write was fenced: another daemon took the lease")
                return
            reason = self.keeper.failure()
            if reason is not None:
                await self._step_down(reason)
                return

    async def _become(self, epoch: int, asked_at: float, quiet: float = math.inf) -> None:
        """Lead under ``epoch``, taken by a request sent at ``asked_at`` (monotonic), the
        previous leader's lease having ended ``quiet`` seconds before."""
        self.epoch = epoch
        self.quiet = quiet
        self.changes += 1
        metrics.leadership_changed(epoch, epoch)
        self._lost.clear()
        if self.shared:
            # Renewals start now, not after recovery: that may take longer than the lease.
            self.keeper.lead(epoch, asked_at)
            loop = asyncio.get_running_loop()
            holder, lost = self.holder, self._lost

            def fence(connection: Connection) -> None:
                try:
                    lease.fence(connection, holder, epoch)
                except LeaseLostError:
                    loop.call_soon_threadsafe(lost.set)
                    raise

            self.db.fence = fence
            log.info("this daemon leads (epoch %d, holder %s)", epoch, self.holder)
        started = time.monotonic()
        await self._elected()
        log.info("driving %.1f s after the election (epoch %d)", time.monotonic() - started,
                 epoch)

    async def _step_down(self, reason: str) -> None:
        """Stop driving now; writes queued meanwhile stay fenced by the old epoch."""
        if self.epoch is None:
            return
        if self._keeper is not None:
            self._keeper.follow()
        log.log(logging.INFO if self._stopped.is_set() else logging.WARNING,
                "this daemon stops leading (epoch %d): %s", self.epoch, reason)
        metrics.leadership_changed(None, self.epoch)
        self.epoch = None
        self.changes += 1
        started = time.monotonic()
        try:
            await self._deposed()
        finally:
            # Everything queued before this no-op has been through the fence.
            with contextlib.suppress(Exception):
                await self.db.write(lambda connection: None)
            self.db.fence = None
            log.info("stopped driving in %.1f s", time.monotonic() - started)

    async def _pause(self, seconds: float) -> None:
        waiters = [asyncio.ensure_future(self._stopped.wait()),
                   asyncio.ensure_future(self._lost.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _attempt(self, statement: Callable[..., T], *args: object,
                       timeout: float = STATEMENT_TIMEOUT) -> T | None:
        """Run one lease statement in its own transaction; None if it failed or hung."""
        engine = self._engine
        assert engine is not None

        def run() -> T:
            with engine.begin() as connection:
                return statement(connection, *args)

        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._executor, run), timeout)
        except TimeoutError:
            log.warning("lease %s did not answer within %.1f s", statement.__name__, timeout)
        except Exception as exc:
            log.warning("lease %s failed: %s", statement.__name__, str(exc).splitlines()[0])
        return None
