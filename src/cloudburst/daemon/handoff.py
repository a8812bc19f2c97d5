"""Work a follower leaves to the leader, on a shared PostgreSQL store.

A follower serves the API but never runs the scheduler or a driver. When one
of its API calls creates work -- a new pending VM, freed capacity, a VM left
in an in-flight state (``onevm deploy``, ``onevm terminate``) -- the change is
already committed with its journal entry; the follower then sends a
PostgreSQL ``NOTIFY`` (:class:`Notifier`). The leader listens
(:class:`Listener`), wakes its scheduler and lets the :class:`Adopter` pick up
in-flight VMs nobody works on. A notification may name hosts created, enabled
or updated through the follower: the leader monitors them at once.

Work that leaves a VM where it is (a reboot, a reset) has no in-flight state
to adopt: a follower journals it ``handed`` and the adopter takes it from the
journal. The adopter takes a VM that is in flight, that no task of the leader works
on, and that it saw unchanged (same row version) in an earlier scan at least
``settle`` seconds before. The leader's own work starts the moment its write
commits, so it is never taken twice; work whose task died is taken too. Scans
also run every ``interval`` seconds, in case a notification was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text

from cloudburst.daemon.lifecycle import LifecycleManager
from cloudburst.daemon.recovery import resume, take_handed
from cloudburst.errors import CloudburstError
from cloudburst.model import lifecycle
from cloudburst.model.records import VmRecord
from cloudburst.store import vm_pool
from cloudburst.store.database import Database

log = logging.getLogger(__name__)

CHANNEL = "cloudburst_work"


class Notifier:
    """Tells the leader, through the store, that there is work (follower side)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._sending = False
        self._again = False
        #: Hosts to name in the next notification: the leader monitors them at once.
        self._hosts: set[int] = set()

    def notify(self, *, monitor: int | None = None) -> None:
        """Send a notification after the writes queued so far (coalesced; never blocks).

        ``monitor`` names a host the leader should monitor now (created,
        enabled or updated through this daemon).

        On SQLite nothing is sent: the store serves one daemon, which only
        stops leading when it stops, so there is no leader to tell; the work
        waits in the store (state and journal) for the next start's recovery.
        """
        if self.db.is_sqlite:
            return
        if monitor is not None:
            self._hosts.add(monitor)
        if self._sending:
            self._again = True
            return
        self._sending = True
        asyncio.get_running_loop().create_task(self._send(), name="notify-leader")

    async def _send(self) -> None:
        try:
            while True:
                self._again = False
                hosts, self._hosts = self._hosts, set()
                try:
                    await self.db.write(functools.partial(_notify, payload=payload_of(hosts)))
                except Exception as exc:
                    log.warning("could not notify the leader: %s", str(exc).splitlines()[0])
                if not self._again:
                    return
        finally:
            self._sending = False


def payload_of(hosts: set[int]) -> str:
    """A notification's payload: ``monitor:<id>,<id>...`` or empty."""
    return f"monitor:{','.join(map(str, sorted(hosts)))}" if hosts else ""


def hosts_in(payload: str) -> list[int]:
    """The hosts a notification asks the leader to monitor (see :func:`payload_of`)."""
    kind, _, ids = payload.partition(":")
    if kind != "monitor":
        return []
    return [int(part) for part in ids.split(",") if part.strip().isdigit()]


def _notify(connection: Connection, payload: str) -> None:
    # Payloads stay far below PostgreSQL's 8000-byte limit: a few host ids.
    connection.execute(text("SELECT pg_notify(:channel, :payload)"),
                       {"channel": CHANNEL, "payload": payload[:7000]})


class Listener:
    """Calls ``on_work(payload)`` on the loop for each notification on ``channel``
    (by default: a follower's, for the leader).

    Listens on its own connection in a thread, reconnecting after errors; calls
    ``on_work("")`` once listening (what was sent before may have been missed).
    """

    def __init__(self, engine: Engine, on_work: Callable[[str], None], *,
                 channel: str = CHANNEL) -> None:
        self._engine = engine
        self._on_work = on_work
        self._channel = channel
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._listen, args=(loop,),
                                        name="lease-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        while not self._stop.is_set():
            try:
                pooled = self._engine.raw_connection()
            except Exception as exc:
                log.debug("listener cannot connect: %s", exc)
                self._stop.wait(1.0)
                continue
            try:
                connection = pooled.driver_connection
                assert connection is not None
                connection.autocommit = True
                connection.execute(f"LISTEN {self._channel}")
                # Anything sent before LISTEN took effect is caught by a scan.
                loop.call_soon_threadsafe(self._on_work, "")
                while not self._stop.is_set():
                    for notice in connection.notifies(timeout=0.5, stop_after=1):
                        loop.call_soon_threadsafe(self._on_work, notice.payload)
            except Exception as exc:
                log.debug("listener connection lost: %s", exc)
                pooled.invalidate()
                self._stop.wait(1.0)
            else:
                with contextlib.suppress(Exception):
                    connection.execute(f"UNLISTEN {self._channel}")
                pooled.close()


class Adopter:
    """Resumes in-flight VMs that no task of this (leading) daemon works on."""

    def __init__(self, db: Database, manager: LifecycleManager, *,
                 interval: float = 10.0, settle: float = 1.0) -> None:
        self.db = db
        self.manager = manager
        self.interval = interval
        self.settle = settle
        self._wake = asyncio.Event()
        #: (vm id, version) -> when a scan first saw it idle.
        self._idle: dict[tuple[int, int], float] = {}
        self.adopted = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        self._idle = {}
        while True:
            timeout = self.settle if self._idle else self.interval
            # Not wait_for: on Python 3.11 it swallows a cancellation that comes with the
            # wake-up (both due after the loop was held), and this loop ends only by one.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.scan()
            except CloudburstError as exc:
                log.warning("adopting unattended work failed: %s", exc)
            except Exception:
                log.exception("adopting unattended work failed")

    async def scan(self) -> int:
        """Adopt what has waited long enough; returns how many VMs were adopted."""
        def read(connection: Connection) -> list[tuple[int, int]]:
            return vm_pool.in_flight_versions(connection, lifecycle.IN_FLIGHT)

        await take_handed(self.manager)
        found = await self.db.read(read)
        busy = self.manager.busy_vms()
        now = time.monotonic()
        idle: dict[tuple[int, int], float] = {}
        due: list[tuple[int, int]] = []
        for key in found:
            if key[0] in busy:
                continue
            since = self._idle.get(key, now)
            if now - since >= self.settle:
                due.append(key)
            else:
                idle[key] = since
        self._idle = idle
        for vm_id, version in due:
            def get(connection: Connection, vm_id: int = vm_id) -> VmRecord:
                return vm_pool.get_vm(connection, vm_id, with_history=False)

            vm = await self.db.read(get)
            if vm.version != version or vm.id in self.manager.busy_vms():
                continue  # it moved on meanwhile: someone works on it
            log.info("taking over VM %d left in %s", vm.id, vm.lcm_state.name)
            await resume(self.manager, vm)
            self.adopted += 1
        return len(due)
