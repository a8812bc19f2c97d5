"""The life-cycle manager: the only code that changes a VM's state.

Every change goes through :func:`~cloudburst.daemon.lifecycle.base.step`, the
one helper that applies an event from the transition table
(:mod:`cloudburst.model.lifecycle`) with a compare-and-swap write and journals
the work the new position starts; that work then runs in the background
(:mod:`.work`) and reports back as another event. The parts: :mod:`.base`
(the helper), :mod:`.work` (driver work and its results), :mod:`.deploying`
(placing a VM), :mod:`.observing` (poll results) and, here, the user actions.

A driver that fails, hangs or crashes marks that VM with the error; nothing
propagates beyond the VM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from cloudburst.daemon.lifecycle.base import (
    CAPACITY_BACKOFF,
    ManagerBase,
    Prepare,
    token_for,
)
from cloudburst.daemon.lifecycle.deploying import Deploying
from cloudburst.daemon.lifecycle.observing import Observing, poll_refs
from cloudburst.daemon.lifecycle.work import Working
from cloudburst.errors import (
    ApiArgumentError,
    CloudburstError,
    IllegalActionError,
    NotFoundError,
    UnsupportedActionError,
)
from cloudburst.model import devices, lifecycle
from cloudburst.model.lifecycle import Event, Move
from cloudburst.model.records import HostRecord, VmRecord
from cloudburst.model.states import HostState
from cloudburst.store import host_pool, vm_pool
from cloudburst.template import Template

__all__ = [
    "CAPACITY_BACKOFF",
    "LifecycleManager",
    "MigrationTargets",
    "migration_refusal",
    "poll_refs",
    "token_for",
]


@dataclass(frozen=True, slots=True)
class MigrationTargets:
    """Hosts a VM may migrate to, and which kinds of move it may make now."""

    hosts: tuple[HostRecord, ...]
    cold: bool
    live: bool


def migration_refusal(vm: VmRecord, source: HostRecord | None, target: HostRecord
                      ) -> str | None:
    """Why ``vm`` (on ``source``) cannot migrate to ``target``, capacity aside;
    ``None`` when it can: another host, enabled, with the same VM driver."""
    if vm.host_id == target.id:
        return f"VM {vm.id} is already on host {target.name}"
    if target.state in (HostState.DISABLED, HostState.OFFLINE):
        return f"Host {target.id} ({target.name}) is {target.state.name}"
    if source is not None and source.vm_mad != target.vm_mad:
        return (f"Cannot migrate VM {vm.id} from driver {source.vm_mad} (host {source.name}) "
                f"to driver {target.vm_mad} (host {target.name})")
    return None


class LifecycleManager(Deploying, Observing, Working, ManagerBase):
    """Applies user actions, driver results and poll results to VMs."""

    async def act(self, vm_id: int, event: Event, *, why: str = "") -> VmRecord:
        """A ``one.vm.action``: terminate, poweroff, suspend, resume, resched...

        Terminating a DONE VM is a no-op success. ``why`` replaces the history
        REASON ``"<action> requested"`` (a policy rule acting for the user).

        Raises:
            NotFoundError: no such VM.
            IllegalActionError: not legal in the VM's state.
            UnsupportedActionError: the host's driver cannot do it.
        """
        changes: dict[str, Any] = {}
        if event is Event.RESCHED:
            changes["resched"] = 1
        elif event is Event.UNRESCHED:
            changes["resched"] = 0
        return await self.advance(vm_id, event, changes=changes, why=why,
                                  done_stays=event in (Event.TERMINATE, Event.TERMINATE_HARD))

    async def migrate(self, vm_id: int, host_id: int, *, live: bool,
                      enforce: bool = False) -> VmRecord:
        """Move a RUNNING VM to host ``host_id`` (same driver); ``live`` keeps it running.

        Raises:
            IllegalActionError: same host, another driver, disabled host, or
                not enough room (with ``enforce``).
        """
        def read(connection: Connection) -> None:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            target = host_pool.get_host(connection, host_id, with_usage=enforce)
            source = (host_pool.get_host(connection, vm.host_id, with_usage=False)
                      if vm.host_id is not None and vm.host_id != host_id else None)
            refusal = migration_refusal(vm, source, target)
            if refusal is not None:
                raise IllegalActionError(refusal)
            if enforce and (target.max_cpu - target.cpu_usage < round(vm.cpu * 100)
                            or target.max_mem - target.mem_usage < vm.memory * 1024):
                raise IllegalActionError(f"Host {host_id} ({target.name}) lacks capacity "
                                         f"for VM {vm_id}")

        await self.db.read(read)
        event = Event.MIGRATE_LIVE if live else Event.MIGRATE
        return await self.advance(vm_id, event, args={"host_id": host_id},
                                  journal_host=host_id, changes={"resched": 0})

    async def migration_targets(self, vm_id: int) -> MigrationTargets:
        """Where and how VM ``vm_id`` may migrate now: the hosts :func:`migration_refusal`
        accepts, and whether its state and its host's driver allow a cold and a live move
        (no hosts when neither). Capacity is not checked (``enforce`` is the caller's).

        Raises:
            NotFoundError: no such VM.
        """
        def read(connection: Connection) -> tuple[VmRecord, HostRecord | None,
                                                  list[HostRecord]]:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            if vm.host_id is None:
                return vm, None, []
            try:
                source = host_pool.get_host(connection, vm.host_id, with_usage=False)
            except NotFoundError:
                return vm, None, []
            return vm, source, host_pool.list_hosts(connection, with_vms=False,
                                                    with_usage=False)

        vm, source, hosts = await self.db.read(read)
        if source is None:
            return MigrationTargets((), cold=False, live=False)
        try:
            driver = self.dispatcher.vm_driver(source.vm_mad)
        except CloudburstError:
            return MigrationTargets((), cold=False, live=False)
        cold = lifecycle.is_legal(vm.position, Event.MIGRATE) and driver.supports("migrate")
        live = (lifecycle.is_legal(vm.position, Event.MIGRATE_LIVE)
                and driver.supports("migrate_live"))
        targets = tuple(host for host in hosts if migration_refusal(vm, source, host) is None)
        return MigrationTargets(targets if cold or live else (), cold=cold, live=live)

    async def migrate_rescheduled(self, vm_id: int, host_id: int) -> VmRecord:
        """The scheduler's move of a rescheduled VM: live when its driver can, else cold.

        Raises:
            UnsupportedActionError: the driver can do neither.
        """
        host = await self.host_of(vm_id)
        if host is None:
            raise IllegalActionError(f"VM {vm_id} has no host to move from")
        driver = self.dispatcher.vm_driver(host.vm_mad)
        if not (driver.supports("migrate_live") or driver.supports("migrate")):
            raise UnsupportedActionError(
                f'Action "migrate" is not supported by driver {host.vm_mad} of host '
                f"{host.name}")
        return await self.migrate(vm_id, host_id, live=driver.supports("migrate_live"))

    async def recover(self, vm_id: int, operation: int) -> VmRecord:
        """``one.vm.recover``: 0 failure, 1 success, 2 retry, 3 delete, 4 recreate, 5 delete-db.

        Raises:
            ApiArgumentError: an unknown operation.
        """
        event = lifecycle.RECOVER_EVENTS.get(operation)
        if event is None:
            raise ApiArgumentError(f"Unknown recover operation {operation} (0 failure, "
                                   "1 success, 2 retry, 3 delete, 4 recreate, 5 delete-db)")
        changes: dict[str, Any] = {"error": ""}
        if event is Event.RECOVER_RECREATE:
            changes.update(resched=0)
        return await self.advance(vm_id, event, changes=changes)

    async def resize(self, vm_id: int, *, cpu: float | None, vcpu: int | None,
                     memory: int | None) -> VmRecord:
        """New CPU, VCPU and/or MEMORY (MB); powered-off and parked instances are resized
        by their driver, PENDING/HOLD VMs only change their template. A driver that
        refuses leaves the VM with its former capacity and the error.

        Raises:
            ApiArgumentError: nothing to change, or a value out of range.
        """
        if cpu is None and vcpu is None and memory is None:
            raise ApiArgumentError("resize needs CPU, VCPU or MEMORY")
        if (cpu is not None and not 0 < cpu <= 4096) or (vcpu is not None and not
                                                            0 < vcpu <= 4096) or (
                memory is not None and not 0 < memory <= 64 * 1024 * 1024):
            raise ApiArgumentError("resize: CPU and VCPU must be in 0..4096 and MEMORY in "
                                   "MB above 0")

        def prepare(connection: Connection, vm: VmRecord, moved: Move) -> dict[str, Any]:
            template = vm.template.copy()
            changes: dict[str, Any] = {}
            if cpu is not None:
                template.set("CPU", f"{cpu:g}")
                changes["cpu"] = cpu
            if vcpu is not None:
                template.set("VCPU", str(vcpu))
            if memory is not None:
                template.set("MEMORY", str(memory))
                changes["memory"] = memory
            changes["template"] = template
            return changes

        current = await self._vm(vm_id)
        before = {name: current.template.get(name) for name in ("CPU", "VCPU", "MEMORY")}
        return await self.advance(vm_id, Event.RESIZE, prepare=prepare,
                                  args={"before": before})

    async def snapshot_create(self, vm_id: int, name: str) -> int:
        """Take a system snapshot of a RUNNING VM; returns its ``SNAPSHOT_ID``."""
        vm = await self._vm(vm_id)
        snapshot_id = _next_id(vm.template, "SNAPSHOT", "SNAPSHOT_ID")
        await self.advance(vm_id, Event.SNAPSHOT_CREATE, args={
            "snapshot_id": snapshot_id, "name": name or f"snapshot-{snapshot_id}"})
        return snapshot_id

    async def snapshot_revert(self, vm_id: int, snapshot_id: int) -> VmRecord:
        section = _item(await self._vm(vm_id), "SNAPSHOT", "SNAPSHOT_ID", snapshot_id)
        return await self.advance(vm_id, Event.SNAPSHOT_REVERT, args={
            "snapshot_id": snapshot_id, "hypervisor_id": section.get("HYPERVISOR_ID", "")})

    async def snapshot_delete(self, vm_id: int, snapshot_id: int) -> VmRecord:
        section = _item(await self._vm(vm_id), "SNAPSHOT", "SNAPSHOT_ID", snapshot_id)
        return await self.advance(vm_id, Event.SNAPSHOT_DELETE, args={
            "snapshot_id": snapshot_id, "hypervisor_id": section.get("HYPERVISOR_ID", "")})

    async def attach(self, vm_id: int, section: str, attributes: dict[str, str]) -> VmRecord:
        """Hot-plug a ``DISK`` or ``NIC`` into a RUNNING VM."""
        vm = await self._vm(vm_id)
        device_id = devices.next_id(vm.template, section)
        event = Event.DISK_ATTACH if section == "DISK" else Event.NIC_ATTACH
        return await self.advance(vm_id, event, args={
            "device_id": device_id,
            "attributes": devices.attached(vm.template, section, attributes, device_id)})

    async def detach(self, vm_id: int, section: str, device_id: int) -> VmRecord:
        """Unplug the ``DISK`` or ``NIC`` with that id from a RUNNING VM."""
        attributes = _item(await self._vm(vm_id), section, f"{section}_ID", device_id)
        event = Event.DISK_DETACH if section == "DISK" else Event.NIC_DETACH
        return await self.advance(vm_id, event, args={"device_id": device_id,
                                                      "attributes": attributes})

    async def update_conf(self, vm_id: int, *, context: bool, prepare: Prepare) -> VmRecord:
        """``one.vm.updateconf``: write the template ``prepare`` makes (in the move's
        transaction); with a new CONTEXT (``context``) a RUNNING VM passes HOTPLUG
        while its driver reconfigures the guest (the table says where it is legal).

        Raises:
            StateRefusedError: the VM's state takes no configuration change.
        """
        event = Event.UPDATECONF_CONTEXT if context else Event.UPDATECONF
        return await self.advance(vm_id, event, prepare=prepare)

    async def _vm(self, vm_id: int) -> VmRecord:
        return await self.db.read(
            lambda connection: vm_pool.get_vm(connection, vm_id, with_history=False))


def _next_id(template: Template, section: str, id_key: str) -> int:
    """The next free ``id_key`` of the ``section`` vectors: one more than the highest
    left. As in OpenNebula 6.10 (asked of the peer: snapshots 0, 1, 2; delete 2,
    create: 2; delete 1, create: 3; delete 2 and 3, create: 1), a deleted highest
    id is given again; kvm's snapshot of that name was deleted with it."""
    ids = [int(vector.get(id_key, "-1")) for vector in template.vectors(section)
           if vector.get(id_key, "").isdigit()]
    return max(ids, default=-1) + 1


def _item(vm: VmRecord, section: str, id_key: str, item: int) -> dict[str, str]:
    for vector in vm.template.vectors(section):
        if vector.get(id_key) == str(item):
            return vector
    # oned answers a snapshot, disk or NIC the VM does not have as an action error (0x0800).
    raise IllegalActionError(f"VM {vm.id} has no {section} with {id_key} {item}")


