"""Plumbing shared by the parts of the life-cycle manager.

:class:`ManagerBase` holds the collaborators (store, dispatcher, files), runs
driver work as tracked background tasks and applies one event with a
compare-and-swap (:meth:`ManagerBase.transition`). The module functions are
the transaction helpers every part uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from cloudburst.config.settings import Settings
from cloudburst.daemon.deploy_notes import JournalNotes
from cloudburst.daemon.dispatcher import Dispatcher
from cloudburst.daemon.files import VmFiles
from cloudburst.drivers.base import DeploySpec, HostRef
from cloudburst.errors import (
    ConflictError,
    DriverError,
    IllegalActionError,
    NotFoundError,
)
from cloudburst.events import EventBus
from cloudburst.model import lifecycle
from cloudburst.model.lifecycle import Event
from cloudburst.model.records import HostRecord, VmRecord
from cloudburst.model.snapshots import vm_snapshot
from cloudburst.model.states import vm_state_label
from cloudburst.store import host_pool, vm_pool
from cloudburst.store.database import Database
from cloudburst.store.schema import history

log = logging.getLogger("cloudburst.daemon.lifecycle")

#: Seconds a host that reported "no capacity" is skipped for that VM.
CAPACITY_BACKOFF = 60.0

#: History ``ACTION`` codes (OpenNebula's VMActions numbering for the ones we use).
ACTION_CODES = {"none": 0, "delete": 13, "terminate": 27, "terminate-hard": 28}


@dataclass(frozen=True, slots=True)
class Placement:
    """A VM placed on a host, as the deploy transaction returns it.

    ``prolog`` is the VM as it entered PROLOG; ``vm`` as it left the
    transaction (BOOT, since no host needs file transfers).
    """

    vm: VmRecord
    host: HostRecord
    seq: int
    prolog: VmRecord | None = None


def _now() -> int:
    return int(time.time())


_CURRENT_SEQ = select(func.max(history.c.seq)).where(history.c.vm_id == bindparam("vm_id"))


def _current_seq(connection: Connection, vm_id: int) -> int:
    value = connection.execute(_CURRENT_SEQ, {"vm_id": vm_id}).scalar()
    return -1 if value is None else int(value)


def _advance(connection: Connection, vm: VmRecord, event: Event, **changes: Any) -> VmRecord:
    """Apply ``event`` to ``vm`` as last seen, re-reading it once if it changed since.

    Most transitions follow the write that produced ``vm``, so the first
    compare-and-swap usually succeeds without a read.
    """
    try:
        state, lcm_state = lifecycle.apply(vm.position, event)
        return vm_pool.update_vm(connection, vm, state=state, lcm_state=lcm_state, **changes)
    except IllegalActionError:
        pass  # stale copy (or a lost race): decide again on the stored record
    current = vm_pool.get_vm(connection, vm.id, with_history=False)
    state, lcm_state = lifecycle.apply(current.position, event)
    return vm_pool.update_vm(connection, current, state=state, lcm_state=lcm_state, **changes)


def token_for(install_id: str, vm_id: int, seq: int) -> str:
    """The idempotency token of the deploy of ``vm_id``'s ``seq``-th stay (<= 64 chars)."""
    return f"{install_id}-vm{vm_id}-{seq}"


class ManagerBase:
    """State and plumbing of the life-cycle manager (see the package docstring)."""

    def __init__(
        self,
        db: Database,
        dispatcher: Dispatcher,
        files: VmFiles,
        settings: Settings,
        install_id: str,
        on_capacity_freed: Callable[[], None],
        events: EventBus | None = None,
    ) -> None:
        self.db = db
        self.dispatcher = dispatcher
        self.files = files
        self.settings = settings
        self.install_id = install_id
        self._on_capacity_freed = on_capacity_freed
        #: Where committed VM changes are published (:mod:`cloudburst.events`).
        self.events = events if events is not None else EventBus()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: vm_id -> {host_id: time until which the host is skipped for it}
        self.capacity_backoff: dict[int, dict[int, float]] = {}
        #: vm_id -> deploys in a row that failed having created nothing
        self.deploy_retries: dict[int, int] = {}
        #: vm_id -> tries in a row of a stop that hit an outage
        self.stop_retries: dict[int, int] = {}
        #: Whether this daemon runs driver work (it leads); see spawn.
        self.drives: Callable[[], bool] = lambda: True
        #: Called instead of running work this daemon does not drive.
        self.hand_off: Callable[[], None] = lambda: None
        #: Drivers' notes on deploys in flight (EC2 batches), in the journal.
        self.deploy_notes = JournalNotes(db)


    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> None:
        """Run driver work in the background, keeping a reference until it ends.

        ``name`` is ``<work>-<vm id>``: :meth:`busy_vms` reads the id from it.
        A daemon that does not lead runs no driver work: the state change that
        asked for it is in the store, and :attr:`hand_off` tells the leader.
        """
        if not self.drives():
            coroutine.close()
            self.hand_off()
            return
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def busy_vms(self) -> set[int]:
        """VMs that background work of this daemon is working on."""
        busy = set()
        for task in self._tasks:
            _, _, vm_id = task.get_name().rpartition("-")
            if vm_id.isdigit():
                busy.add(int(vm_id))
        return busy

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for background work to finish (used at shutdown and in tests)."""
        deadline = time.monotonic() + timeout
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)

    def _logged(self, vm: VmRecord) -> VmRecord:
        """Log and publish a committed state change of ``vm``; returns ``vm``."""
        self.files.log(vm.id, "I", f"New state is {vm_state_label(*vm.position)}")
        self.events.publish("vm", vm.id, vm_snapshot(vm))
        log.debug("VM %d: %s", vm.id, vm_state_label(*vm.position))
        return vm

    async def transition(self, vm_id: int, event: Event, **changes: Any) -> VmRecord:
        """Apply ``event`` to VM ``vm_id`` and write ``changes`` with it.

        Raises:
            NotFoundError: no such VM.
            IllegalActionError: the event is not legal in the VM's state.
        """
        def write(connection: Connection) -> VmRecord:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            state, lcm_state = lifecycle.apply(vm.position, event)
            return vm_pool.update_vm(connection, vm, state=state, lcm_state=lcm_state, **changes)

        return self._logged(await self.db.write(write))


    @staticmethod
    def host_ref(host: HostRecord) -> HostRef:
        """The driver's view of ``host``: id, name and template attributes."""
        return HostRef(id=host.id, name=host.name, attributes=host.template.as_flat_dict())

    async def _host_of(self, vm_id: int) -> HostRecord | None:
        def read(connection: Connection) -> HostRecord | None:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            if vm.host_id is None:
                return None
            try:
                return host_pool.get_host(connection, vm.host_id)
            except NotFoundError:
                return None

        return await self.db.read(read)


    async def _current(self, vm_id: int) -> VmRecord | None:
        def read(connection: Connection) -> VmRecord | None:
            try:
                return vm_pool.get_vm(connection, vm_id, with_history=False)
            except NotFoundError:
                return None

        return await self.db.read(read)

    async def set_error(self, vm_id: int, message: str) -> None:
        """Record an error on a VM without changing its state."""
        def write(connection: Connection) -> None:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            vm_pool.update_vm(connection, vm, error=message)

        with contextlib.suppress(ConflictError, NotFoundError):
            await self.db.write(write)


    async def _find_by_token(self, vm: VmRecord, host: HostRecord) -> str | None:
        def read(connection: Connection) -> int:
            return _current_seq(connection, vm.id)

        seq = await self.db.read(read)
        if seq < 0:
            return None
        token = token_for(self.install_id, vm.id, seq)
        driver = self.dispatcher.vm_driver(host.vm_mad)
        path = self.files.deployment_path(vm.id, seq)
        spec = self._deploy_spec(vm, host, path, token)
        try:
            return await self.dispatcher.run("VM_MAD", host.vm_mad, "find",
                                             lambda: driver.find(spec))
        except DriverError:
            return None

    def _deploy_spec(self, vm: VmRecord, host: HostRecord, path: Path, token: str) -> DeploySpec:
        return DeploySpec(
            vm_id=vm.id, host=self.host_ref(host), deployment_file=path,
            deployment=self.deployment_document(vm), token=token, memory_mb=vm.memory,
            cpu=vm.cpu, notes=self.deploy_notes,
        )

    def deployment_document(self, vm: VmRecord) -> str:
        """The deployment file's contents: the VM's whole template as XML.

        Root ``TEMPLATE`` with ``CPU``, ``MEMORY``, ``PUBLIC_CLOUD``/``EC2``
        sections and everything else the user wrote, plus ``VMID`` and ``NAME``
        (the seed's layout), as plain elements with escaped text
        (``<TYPE>provider_name</TYPE>``), no CDATA.
        """
        template = vm.full_template()
        template.set("VMID", str(vm.id))
        if template.get("NAME") is None:
            template.set("NAME", vm.name)
        return template.to_xml("TEMPLATE", plain=True)

