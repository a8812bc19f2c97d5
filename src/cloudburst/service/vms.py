"""VM use cases: allocate, read, deploy, act, update, rename."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Connection

from cloudburst.daemon.lifecycle import LifecycleManager
from cloudburst.errors import ApiArgumentError, IllegalActionError
from cloudburst.model.cost import hourly_cost
from cloudburst.model.lifecycle import ACTION_EVENTS, Event
from cloudburst.model.records import VmRecord
from cloudburst.model.snapshots import vm_snapshot
from cloudburst.model.states import LcmState, VmState
from cloudburst.service.vm_template import prepare
from cloudburst.store import quota_pool, vm_pool
from cloudburst.store.database import Database
from cloudburst.store.sequences import next_ids
from cloudburst.store.vm_pool import VmStamp
from cloudburst.store.vm_search import (
    VmCount,
    VmRow,
    VmSearch,
    priced_vms,
    search_owners,
    search_vms,
    vm_counts,
)
from cloudburst.template import Template
from cloudburst.template.limits import check_name, check_template, parse_submitted

#: Validators for driver-specific template rules (e.g. EC2's AMI), run at allocation.
TemplateCheck = Callable[[Template], None]


#: Ids per query when reading VMs by id (well under every backend's parameter limit).
_ID_CHUNK = 900


def _state_filter(state: int) -> list[VmState] | None:
    """oned's pool state argument as store states (``None``: no state filter).

    Raises:
        ApiArgumentError: not -2, -1 or a VM state number.
    """
    if state < -2 or (state >= 0 and state not in {int(s) for s in VmState}):
        raise ApiArgumentError("Incorrect state filter")
    return [VmState(state)] if state >= 0 else None


class VmService:
    """What users can do with VMs."""

    def __init__(self, db: Database, lifecycle: LifecycleManager,
                 on_new_vm: Callable[[], None],
                 checks: Callable[[], list[TemplateCheck]] = list) -> None:
        self.db = db
        self.lifecycle = lifecycle
        self._on_new_vm = on_new_vm
        self._checks = checks

    async def allocate(self, text: str, *, hold: bool = False, uid: int = 0, gid: int = 0,
                       name: str | None = None) -> int:
        """Create a VM from template text; returns its id.

        Raises:
            TemplateError: the text does not parse (line and column named).
            ValidationError: a mandatory attribute is missing or wrong.
        """
        return await self.allocate_template(parse_submitted(text), hold=hold, uid=uid, gid=gid,
                                            name=name)

    async def allocate_template(self, template: Template, *, hold: bool = False, uid: int = 0,
                                gid: int = 0, name: str | None = None,
                                name_prefix: str | None = None) -> int:
        """Create a VM from a parsed template; returns its id.

        Its name: ``name``, else the template's ``NAME``, else
        ``<name_prefix>-<id>`` (a registered template's name), else ``one-<id>``.
        """
        check_template(template)
        name = check_name("VM", name) if name and name.strip() else None
        prepared = prepare(template)
        for check in self._checks():
            check(template)
        now = int(time.time())
        state = VmState.HOLD if hold else VmState.PENDING

        def write(connection: Connection) -> VmRecord:
            quota_pool.check_vm(connection, uid=uid, gid=gid, cpu=prepared.cpu,
                           memory=prepared.memory, running=not hold)
            vm_id = next_ids(connection, "vm")
            system = prepared.template.copy()
            system.set("VMID", str(vm_id))
            record = VmRecord(
                id=vm_id, name=name or prepared.name or f"{name_prefix or 'one'}-{vm_id}",
                uid=uid, gid=gid,
                state=state, lcm_state=LcmState.LCM_INIT, prev_state=state,
                prev_lcm_state=LcmState.LCM_INIT, stime=now, etime=0, deploy_id="",
                host_id=None, template=system, user_template=prepared.user_template,
                cpu=prepared.cpu, memory=prepared.memory, version=0,
            )
            vm_pool.insert_vms(connection, [record])
            return record

        created = await self.db.write(write)
        vm_id = created.id
        self.lifecycle.files.log(vm_id, "I", f"New state is {state.name}")
        self.lifecycle.events.publish("vm", vm_id, vm_snapshot(created))
        if not hold:
            self._on_new_vm()
        return vm_id

    async def info(self, vm_id: int) -> VmRecord:
        """The VM with its history.

        Raises:
            NotFoundError: no such VM.
        """
        return await self.db.read(lambda connection: vm_pool.get_vm(connection, vm_id))

    async def pool(self, *, state: int = -1, uid: int | None = None, first_id: int | None = None,
                   last_id: int | None = None, offset: int = 0, limit: int | None = None,
                   with_history: bool = True) -> list[VmRecord]:
        """VMs by OpenNebula's pool filters (state -2 any, -1 any but DONE, >= 0 that state)."""
        states = _state_filter(state)

        def read(connection: Connection) -> list[VmRecord]:
            return vm_pool.list_vms(
                connection, states=states, exclude_done=state == -1, uid=uid,
                first_id=first_id, last_id=last_id, offset=offset, limit=limit,
                with_history=with_history)

        return await self.db.read(read)

    async def pool_stamps(self, *, state: int = -1, uid: int | None = None,
                          first_id: int | None = None, last_id: int | None = None,
                          offset: int = 0, limit: int | None = None,
                          descending: bool = False) -> list[VmStamp]:
        """What :meth:`pool` would list, as stamps (for callers that cache documents);
        ``descending`` lists (and pages) from the highest id, as oned's pools do."""
        states = _state_filter(state)

        def read(connection: Connection) -> list[VmStamp]:
            return vm_pool.list_vm_stamps(
                connection, states=states, exclude_done=state == -1, uid=uid,
                first_id=first_id, last_id=last_id, offset=offset, limit=limit,
                descending=descending)

        return await self.db.read(read)

    async def records(self, vm_ids: Sequence[int]) -> list[VmRecord]:
        """The given VMs with their history, ordered by id (missing ones left out)."""
        def read(connection: Connection) -> list[VmRecord]:
            found: list[VmRecord] = []
            for start in range(0, len(vm_ids), _ID_CHUNK):
                found.extend(vm_pool.list_vms(connection, ids=vm_ids[start:start + _ID_CHUNK]))
            return sorted(found, key=lambda vm: vm.id)

        return await self.db.read(read)

    async def search(self, search: VmSearch) -> tuple[int, list[VmRow]]:
        """How many VMs match ``search``, and the page it asks for.

        Raises:
            KeyError: an unknown sort key.
        """
        return await self.db.read(lambda connection: search_vms(connection, search))

    async def search_owners(self, search: VmSearch) -> list[tuple[int, int, int, int]]:
        """``(id, uid, gid, perms)`` of every VM ``search`` matches, in order, unpaged."""
        return await self.db.read(lambda connection: search_owners(connection, search))

    async def counts(self, ids: Sequence[int] | None = None) -> list[VmCount]:
        """Live VMs grouped by state and host (only ``ids`` when given)."""
        return await self.db.read(lambda connection: vm_counts(connection, ids))

    async def hourly_costs(self, host_ids: Sequence[int]) -> dict[int, float]:
        """Cost per hour of the VMs holding capacity on ``host_ids`` whose cost is known."""
        if not host_ids:
            return {}

        costs: dict[int, float] = {}
        for vm_id, cpu, memory, template in await self.db.read(
                lambda connection: priced_vms(connection, host_ids)):
            cost = hourly_cost(template, cpu, memory)
            if cost is not None:
                costs[vm_id] = cost
        return costs

    def cooloffs(self) -> dict[int, tuple[int, float]]:
        """Hosts some VMs are kept off after a "no capacity" answer.

        Returns ``{host_id: (how many VMs, seconds until the last of them may return)}``.
        """
        now = time.monotonic()
        found: dict[int, tuple[int, float]] = {}
        for hosts in self.lifecycle.capacity_backoff.values():
            for host_id, until in hosts.items():
                if until > now:
                    count, longest = found.get(host_id, (0, 0.0))
                    found[host_id] = (count + 1, max(longest, until - now))
        return found

    async def log_tail(self, vm_id: int, lines: int = 200) -> list[str]:
        """The last ``lines`` lines of the VM's log (empty when it has none yet)."""
        path = self.lifecycle.files.log_path(vm_id)

        def read() -> list[str]:
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    return [line.rstrip("\n") for line in handle.readlines()[-lines:]]
            except FileNotFoundError:
                return []

        return await asyncio.to_thread(read)

    async def deploy(self, vm_id: int, host_id: int, *, enforce: bool = False) -> int:
        """Deploy a PENDING or HOLD VM on a chosen host."""
        await self.lifecycle.deploy(vm_id, host_id, enforce=enforce)
        return vm_id

    async def action(self, action: str, vm_id: int) -> int:
        """Perform a ``one.vm.action`` by name.

        Raises:
            IllegalActionError: unknown/unsupported action, or wrong state.
            NotFoundError: no such VM.
        """
        event = ACTION_EVENTS.get(action)
        if event is None:
            supported = ", ".join(sorted(ACTION_EVENTS))
            raise IllegalActionError(f'Action "{action}" is not supported (supported: '
                                     f"{supported})")
        if event in (Event.TERMINATE, Event.TERMINATE_HARD):
            await self.lifecycle.terminate(vm_id, hard=event is Event.TERMINATE_HARD,
                                           action=action)
        elif event in (Event.REBOOT, Event.REBOOT_HARD):
            await self.lifecycle.reboot(vm_id, hard=event is Event.REBOOT_HARD)
        elif event is Event.HOLD:
            await self.lifecycle.hold(vm_id)
        else:
            await self.lifecycle.release(vm_id)
        return vm_id

    async def update(self, vm_id: int, text: str, *, merge: bool) -> int:
        """Replace (or merge into) the VM's USER_TEMPLATE."""
        new = parse_submitted(text)

        def write(connection: Connection) -> None:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            user_template = vm.user_template.copy() if merge else Template()
            user_template.merge(new, replace=True)
            check_template(user_template)
            vm_pool.update_vm(connection, vm, user_template=user_template)

        await self.db.write(write)
        return vm_id

    async def rename(self, vm_id: int, name: str) -> int:
        """Give the VM a new name."""
        name = check_name("VM", name)

        def write(connection: Connection) -> None:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            vm_pool.update_vm(connection, vm, name=name)

        await self.db.write(write)
        return vm_id

