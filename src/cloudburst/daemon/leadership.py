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
is noticed in seconds rather than at the kernel's TCP time-out. Renewals run
on a thread of their own from the moment of election, so a loop kept busy by
recovery or a burst never costs the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine

from cloudburst import metrics
from cloudburst.config.settings import LeaseSettings
from cloudburst.errors import LeaseLostError
from cloudburst.store import lease
from cloudburst.store.database import Database, postgres_url

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds one lease statement may take before the attempt counts as failed.
STATEMENT_TIMEOUT = 2.0


def lease_engine(url: str) -> Engine:
    """A small engine for lease statements, quick to notice a dead connection."""
    return create_engine(
        postgres_url(url), pool_size=2, max_overflow=2, pool_pre_ping=True,
        pool_timeout=STATEMENT_TIMEOUT,
        connect_args={
            "connect_timeout": max(1, int(STATEMENT_TIMEOUT)),
            "tcp_user_timeout": int(STATEMENT_TIMEOUT * 1000),
            "keepalives": 1, "keepalives_idle": 1, "keepalives_interval": 1,
            "keepalives_count": 2,
            "options": f"-c statement_timeout={int(STATEMENT_TIMEOUT * 1000)}",
        })


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
        # Lease statements may hang on a cut connection: keep them off the
        # loop's default executor, and give a hung one company.
        self._executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="lease")
        self._lost = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._renewer: _Renewer | None = None

    @property
    def is_leader(self) -> bool:
        return self.epoch is not None

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
        asked_at = time.monotonic()
        taken = await self._attempt(lease.acquire, self.holder, self.settings.duration)
        if taken is not None:
            await self._become(taken.epoch, asked_at, taken.quiet)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="leadership")

    async def _run(self) -> None:
        """Compete for the lease until :meth:`stop`; lead while holding it."""
        while not self._stopped.is_set():
            if self.epoch is None:
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
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _hold(self, epoch: int) -> None:
        """Lead until the lease is lost, cannot be renewed in time, or the daemon stops.

        Renewals run on their own thread (:class:`_Renewer`), so a loop busy
        with a burst or a recovery never delays them: the lease stays while the
        process lives and reaches the database.
        """
        renewer = self._renewer
        assert renewer is not None
        try:
            while self.epoch == epoch and not self._stopped.is_set():
                await self._pause(self.settings.renew)
                if self._stopped.is_set():
                    return
                if self._lost.is_set():
                    await self._step_down("a write was fenced: another daemon took the lease")
                    return
                reason = renewer.failure()
                if reason is not None:
                    await self._step_down(reason)
                    return
        finally:
            renewer.stop()

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
            self._renewer = _Renewer(self.engine, self.holder, epoch, self.settings, asked_at)
            self._renewer.start()
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
        if self._renewer is not None:
            self._renewer.stop()
            self._renewer = None
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


class _Renewer(threading.Thread):
    """Renews one epoch's lease every ``renew`` seconds on a thread of its own."""

    def __init__(self, engine: Engine, holder: str, epoch: int, settings: LeaseSettings,
                 asked_at: float) -> None:
        super().__init__(name=f"lease-renew-{epoch}", daemon=True)
        self.engine = engine
        self.holder = holder
        self.epoch = epoch
        self.settings = settings
        # Stop driving before the database can expire the lease: a renewal
        # sent at t keeps it until at least t + duration on the server.
        self.margin = settings.duration - settings.renew
        self.renewed_at = asked_at
        self.taken = False
        self._stop = threading.Event()

    def failure(self) -> str | None:
        """Why this daemon must stop leading, or None while the lease holds."""
        if self.taken:
            return "the lease was taken by another daemon"
        if time.monotonic() - self.renewed_at >= self.margin:
            return f"the lease could not be renewed for {self.margin:g} s"
        return None

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        connection: Connection | None = None
        renew = self.settings.renew
        # Renewals are due every ``renew`` seconds from the last one's start, not from its
        # end: a slow statement does not push the next one back by its own length.
        due = self.renewed_at + renew
        try:
            while not self._stop.wait(max(0.0, due - time.monotonic())) and not self.taken:
                started = time.monotonic()
                late = started - due
                due = started + renew
                try:
                    if connection is None:
                        connection = self._connect()
                    held = lease.renew(connection, self.holder, self.epoch,
                                       self.settings.duration)
                except Exception as exc:
                    log.warning("lease renew failed: %s", str(exc).splitlines()[0])
                    if connection is not None:
                        with contextlib.suppress(Exception):
                            connection.invalidate()
                            connection.close()
                    connection = None
                    continue
                took = time.monotonic() - started
                metrics.LEASE_RENEW_SECONDS.observe(took)
                metrics.LEASE_RENEW_LATE_SECONDS.observe(max(0.0, late))
                if late + took > renew:
                    log.warning("lease renewal slow: started %.2f s late, answered after "
                                "%.2f s", late, took)
                if held:
                    self.renewed_at = started
                else:
                    self.taken = True
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()

    def _connect(self) -> Connection:
        """A connection kept for this epoch's renewals: each one is then a single
        autocommit ``UPDATE`` (one round trip; no pool check-out, ping or
        ``BEGIN``/``COMMIT``), which keeps renewals quick on a loaded machine."""
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
