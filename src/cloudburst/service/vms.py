"""VM use cases: allocate, read, deploy, act, update, rename."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sqlalchemy import Connection

from cloudburst.daemon.lifecycle import LifecycleManager, MigrationTargets
from cloudburst.errors import (
    ApiArgumentError,
    CloudburstError,
    IllegalActionError,
    LockedError,
    NotFoundError,
    StateRefusedError,
    ValidationError,
)
from cloudburst.model import devices
from cloudburst.model.cost import vm_price
from cloudburst.model.lifecycle import ACTION_EVENTS, Move
from cloudburst.model.records import VmRecord
from cloudburst.model.snapshots import vm_snapshot
from cloudburst.model.states import LcmState, VmState
from cloudburst.service.vm_template import (
    check_raw,
    expand_context,
    prepare,
    reconfigured,
    refers_in_context,
)
from cloudburst.store import (
    backoffs,
    group_pool,
    ownership,
    quota_pool,
    user_pool,
    vm_logs,
    vm_pool,
)
from cloudburst.store.database import Database
from cloudburst.store.deferred import Deferred
from cloudburst.store.ownership import OwnedRead, Ownership
from cloudburst.store.sequences import give_back_ids, next_ids
from cloudburst.store.spending import open_stay_prices
from cloudburst.store.turn_writes import TurnWrites
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
from cloudburst.template.variables import references

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Validators for driver-specific template rules (e.g. EC2's AMI), run at allocation.
TemplateCheck = Callable[[Template], None]
#: Renders a VM's XML document as ``one.vm.info`` gives it (the VM, its owner's
#: name, its group's name): what ``$TEMPLATE`` in CONTEXT stands for.
VmDocument = Callable[[VmRecord, str, str], str]


#: Operation levels a lock refuses (OpenNebula's USE, MANAGE, ADMIN; 4 is everything).
_LOCK_LEVELS = {1: "use", 2: "manage", 3: "admin", 4: "all"}
_MANAGE, _ADMIN = 2, 3

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
                 checks: Callable[[], list[TemplateCheck]] = list,
                 document: VmDocument | None = None,
                 vm_mads: Callable[[], Collection[str]] = tuple) -> None:
        self.db = db
        self.lifecycle = lifecycle
        self._on_new_vm = on_new_vm
        self._checks = checks
        self._document = document
        #: The configured VM drivers' names (what a RAW section's TYPE may name).
        self._vm_mads = vm_mads
        #: The creations asked in one turn of the loop, written together.
        self._creations: TurnWrites[_Creation, VmRecord] = TurnWrites(db, _create_all)

    def _expanded(self, connection: Connection, vm: VmRecord, template: Template,
                  user_template: Template) -> Template:
        """``template`` (the system template of ``vm``, or its new one) with its
        CONTEXT's references expanded, in ``connection``'s transaction (the owner
        and group are read only when there is a reference to expand)."""
        if not refers_in_context(template):
            return template
        owner = _found(user_pool.get_user, connection, vm.uid)
        group = _found(group_pool.get_group, connection, vm.gid)
        render = self._document
        document = None if render is None else (
            lambda: render(replace(vm, template=template, user_template=user_template),
                           owner.name if owner else "", group.name if group else ""))
        return expand_context(template, user_template, vm_id=vm.id, name=vm.name,
                              owner=owner, group=group, document=document)

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
        check_raw(template, self._vm_mads())
        for check in self._checks():
            check(template)
        now = int(time.time())
        state = VmState.HOLD if hold else VmState.PENDING

        def check_quota(connection: Connection, later: Deferred) -> None:
            quota_pool.check_vm(connection, uid=uid, gid=gid, cpu=prepared.cpu,
                                memory=prepared.memory, later=later)

        def build(connection: Connection, vm_id: int) -> VmRecord:
            system = devices.numbered(prepared.template)
            system.set("VMID", str(vm_id))
            if hold:
                system.set("SUBMIT_ON_HOLD", "YES")  # as oned records a VM submitted held
            vm_name = name or prepared.name or f"{name_prefix or 'one'}-{vm_id}"
            record = VmRecord(
                id=vm_id, name=vm_name,
                uid=uid, gid=gid,
                state=state, lcm_state=LcmState.LCM_INIT, prev_state=state,
                prev_lcm_state=LcmState.LCM_INIT, stime=now, etime=0, deploy_id="",
                host_id=None, template=system, user_template=prepared.user_template,
                cpu=prepared.cpu, memory=prepared.memory, version=0,
            )
            return replace(record, template=self._expanded(
                connection, record, system, prepared.user_template))

        created = await self._creations.ask(_Creation(check_quota, build))
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
        return await self.db.lookup(lambda connection: vm_pool.get_vm(connection, vm_id))

    @staticmethod
    def info_read(vm_id: int) -> OwnedRead[vm_pool.NamedVm]:
        """A read of the VM with its history and its owner's and group's names, for the
        access check of a call that shows it (``AccessService.require(..., read=)``):
        the check takes the VM's ownership from the same row, one statement for both.

        The read raises NotFoundError when there is no such VM.
        """
        def read(connection: Connection) -> tuple[vm_pool.NamedVm, Ownership]:
            named = vm_pool.get_named_vm(connection, vm_id)
            vm = named.vm
            return named, ownership.of_vm(vm.uid, vm.gid, vm.perms, named.host_cluster)

        return read

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
                          descending: bool = False,
                          ids: Sequence[int] | None = None) -> list[VmStamp]:
        """What :meth:`pool` would list, as stamps (for callers that cache documents);
        ``descending`` lists (and pages) from the highest id, as oned's pools do;
        ``ids``: only those VMs. The list may be one returned before: do not change it."""
        states = _state_filter(state)

        def read(connection: Connection) -> list[VmStamp]:
            found: list[VmStamp] = []
            chunks = [None] if ids is None else [
                ids[start:start + _ID_CHUNK] for start in range(0, len(ids), _ID_CHUNK)]
            for chunk in chunks:
                found.extend(vm_pool.list_vm_stamps(
                    connection, states=states, exclude_done=state == -1, uid=uid,
                    first_id=first_id, last_id=last_id, offset=offset, limit=limit,
                    descending=descending, ids=chunk))
            return found

        if ids is not None:
            return await self.db.read(read)
        return await self.db.read_unchanged(
            ("vm stamps", state, uid, first_id, last_id, offset, limit, descending), read)

    async def stamped(self, vm_ids: Sequence[int]) -> list[tuple[VmStamp, VmRecord]]:
        """The given VMs that are not DONE, with their history and stamps, by id."""
        return await self.db.read(lambda connection: vm_pool.stamped_vms(connection, vm_ids))

    async def records(self, vm_ids: Sequence[int]) -> list[VmRecord]:
        """The given VMs with their history, ordered by id (missing ones left out)."""
        return await self.db.read(lambda connection: vm_pool.read_vms(connection, vm_ids))

    async def search(self, search: VmSearch) -> tuple[int, list[VmRow]]:
        """How many VMs match ``search``, and the page it asks for.

        Raises:
            KeyError: an unknown sort key.
        """
        return await self.db.read(lambda connection: search_vms(connection, search))

    async def search_owners(self, search: VmSearch) -> list[tuple[int, int, int, int]]:
        """``(id, uid, gid, perms)`` of every VM ``search`` matches, in order, unpaged."""
        return await self.db.read(lambda connection: search_owners(connection, search))

    async def live_count(self) -> int:
        """How many VMs are not DONE."""
        return await self.db.read(vm_pool.count_live)

    async def counts(self, ids: Sequence[int] | None = None) -> list[VmCount]:
        """Live VMs grouped by state and host (only ``ids`` when given)."""
        return await self.db.read(lambda connection: vm_counts(connection, ids))

    async def hourly_costs(self, host_ids: Sequence[int]) -> dict[int, float]:
        """Cost per hour of the VMs holding capacity on ``host_ids`` whose cost is known
        (a cloud stay's recorded price, else the template's showback)."""
        if not host_ids:
            return {}

        def read(connection: Connection) -> tuple[list[tuple[int, float, int, Template]],
                                                  dict[int, float]]:
            return priced_vms(connection, host_ids), open_stay_prices(connection, host_ids)

        showback, stays = await self.db.read(read)
        costs: dict[int, float] = dict(stays)
        for vm_id, cpu, memory, template in showback:
            cost = vm_price(stays.get(vm_id), template, cpu, memory)
            if cost is not None:
                costs[vm_id] = cost
        return costs

    async def cooloffs(self) -> dict[int, tuple[int, float]]:
        """Hosts some VMs are kept off after a failed deploy (no capacity, an outage, a quota).

        Returns ``{host_id: (how many VMs, seconds until the last of them may return)}``.
        """
        now = time.time()
        skipped = await self.db.read(lambda connection: backoffs.skipped_hosts(connection, now))
        found: dict[int, tuple[int, float]] = {}
        for hosts in skipped.values():
            for host_id, until in hosts.items():
                count, longest = found.get(host_id, (0, 0.0))
                found[host_id] = (count + 1, max(longest, until - now))
        return found

    async def log_tail(self, vm_id: int, lines: int = 200) -> list[str]:
        """The last ``lines`` lines of the VM's log, whichever daemons wrote them
        (empty when it has none yet)."""
        found = await self.db.read(lambda connection: vm_logs.tail(connection, vm_id, lines))
        return [line.text() for line in found]

    async def deploy(self, vm_id: int, host_id: int, *, enforce: bool = False) -> int:
        """Deploy a PENDING or HOLD VM on a chosen host."""
        await self._unlocked(vm_id, _ADMIN)
        await self.lifecycle.deploy(vm_id, host_id, enforce=enforce)
        return vm_id

    async def action(self, action: str, vm_id: int) -> int:
        """Perform a ``one.vm.action`` by name (6.x names and their 4.x/5.x aliases).

        Raises:
            IllegalActionError: unknown action, or not legal in the VM's state.
            UnsupportedActionError: the VM's host's driver cannot do it.
            NotFoundError: no such VM.
        """
        event = ACTION_EVENTS.get(action)
        if event is None:
            supported = ", ".join(sorted(ACTION_EVENTS))
            raise IllegalActionError(f'Action "{action}" is not supported (supported: '
                                     f"{supported})")
        await self._unlocked(vm_id, _MANAGE)
        await self.lifecycle.act(vm_id, event)
        return vm_id

    async def reschedule_host(self, host_id: int) -> None:
        """Flag every VM on ``host_id`` for rescheduling (``onehost flush``): the
        scheduler moves each to another host that can take it. A VM that cannot
        be rescheduled now (not RUNNING, locked) stays, with a log line."""
        def read(connection: Connection) -> list[int]:
            return [vm.id for vm in vm_pool.list_vms(connection, host_id=host_id,
                                                     with_history=False, exclude_done=True)]

        for vm_id in await self.db.read(read):
            try:
                await self.action("resched", vm_id)
            except CloudburstError as exc:
                log.info("flush of host %d: VM %d stays: %s", host_id, vm_id, exc.message)

    async def migrate(self, vm_id: int, host_id: int, *, live: bool = False,
                      enforce: bool = False) -> int:
        """Move a RUNNING VM to another host of the same driver."""
        await self._unlocked(vm_id, _ADMIN)
        await self.lifecycle.migrate(vm_id, host_id, live=live, enforce=enforce)
        return vm_id

    async def migration_targets(self, vm_id: int) -> MigrationTargets:
        """The hosts VM ``vm_id`` may migrate to and whether cold and live moves are
        possible now (the same rule :meth:`migrate` applies)."""
        return await self.lifecycle.migration_targets(vm_id)

    async def recover(self, vm_id: int, operation: int) -> int:
        """Settle a failed or stuck VM (``one.vm.recover`` operation numbers)."""
        await self._unlocked(vm_id, _ADMIN)
        await self.lifecycle.recover(vm_id, operation)
        return vm_id

    async def resize(self, vm_id: int, text: str) -> int:
        """Resize to the ``CPU``, ``VCPU`` and ``MEMORY`` of ``text`` (a template)."""
        template = parse_submitted(text)
        try:
            cpu = _optional_number(template, "CPU", float)
            vcpu = _optional_number(template, "VCPU", int)
            memory = _optional_number(template, "MEMORY", int)
        except ValueError as exc:
            raise ValidationError(f"resize: {exc}") from None
        await self._unlocked(vm_id, _MANAGE)
        await self.lifecycle.resize(vm_id, cpu=cpu, vcpu=vcpu, memory=memory)
        return vm_id

    async def snapshot_create(self, vm_id: int, name: str) -> int:
        """Take a system snapshot; returns its id."""
        await self._unlocked(vm_id, _MANAGE)
        return await self.lifecycle.snapshot_create(vm_id, name)

    async def snapshot_revert(self, vm_id: int, snapshot_id: int) -> int:
        await self._unlocked(vm_id, _MANAGE)
        await self.lifecycle.snapshot_revert(vm_id, snapshot_id)
        return vm_id

    async def snapshot_delete(self, vm_id: int, snapshot_id: int) -> int:
        await self._unlocked(vm_id, _MANAGE)
        await self.lifecycle.snapshot_delete(vm_id, snapshot_id)
        return vm_id

    async def attach(self, vm_id: int, section: str, text: str) -> int:
        """Hot-plug the ``DISK`` or ``NIC`` that ``text`` (a template) describes."""
        vector = parse_submitted(text).get_vector(section)
        if vector is None:
            raise ValidationError(f"The template has no {section} = [ ... ] section to attach")
        await self._unlocked(vm_id, _MANAGE)
        await self.lifecycle.attach(vm_id, section, vector)
        return vm_id

    async def detach(self, vm_id: int, section: str, device_id: int) -> int:
        await self._unlocked(vm_id, _MANAGE)
        await self.lifecycle.detach(vm_id, section, device_id)
        return vm_id

    async def lock(self, vm_id: int, level: int, *, owner: int, test: bool = False) -> int:
        """``one.vm.lock``: refuse operations of ``level`` (1 use, 2 manage, 3 admin, 4 all)
        and above until unlocked. With ``test``, an already locked VM is refused.

        Raises:
            ApiArgumentError: an unknown level.
            IllegalActionError: ``test`` and the VM is locked.
        """
        if level not in _LOCK_LEVELS:
            raise ApiArgumentError(f"Unknown lock level {level} (1 use, 2 manage, 3 admin, "
                                   "4 all)")
        stamp = int(time.time())

        def write(connection: Connection) -> None:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            if test and vm.template.get_vector("LOCK") is not None:
                raise IllegalActionError(f"VM {vm_id} is already locked")
            template = vm.template.copy()
            template.set("LOCK", {"LOCKED": str(level), "OWNER": str(owner),
                                  "TIME": str(stamp), "REQ_ID": "-1"})
            vm_pool.update_vm(connection, vm, template=template)

        await self.db.write(write)
        return vm_id

    async def unlock(self, vm_id: int) -> int:
        """``one.vm.unlock``: lift the lock (a no-op when there is none)."""
        def write(connection: Connection) -> None:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            template = vm.template.copy()
            if template.remove("LOCK"):
                vm_pool.update_vm(connection, vm, template=template)

        await self.db.write(write)
        return vm_id

    async def _unlocked(self, vm_id: int, operation_level: int) -> None:
        """Refuse an operation the VM's lock covers (the one place locks are honoured).

        This is also where the authorization hook belongs (h11):
        ``authorize(caller, operation, vm)`` before any VM use case acts.
        """
        vm = await self.db.read(
            lambda connection: vm_pool.get_vm(connection, vm_id, with_history=False))
        lock = vm.template.get_vector("LOCK")
        if lock is None:
            return
        level = int(lock.get("LOCKED", "4") or 4)
        if level == 4 or operation_level >= level:
            raise LockedError(f"VM {vm_id} is locked ({_LOCK_LEVELS.get(level, 'all')} "
                              "operations); unlock it first")

    async def update(self, vm_id: int, text: str, *, merge: bool) -> int:
        """Replace (or merge into) the VM's USER_TEMPLATE."""
        new = parse_submitted(text)
        await self._unlocked(vm_id, _MANAGE)

        def write(connection: Connection) -> None:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            user_template = vm.user_template.copy() if merge else Template()
            user_template.merge(new, replace=True)
            check_template(user_template)
            vm_pool.update_vm(connection, vm, user_template=user_template)

        await self.db.write(write)
        return vm_id

    async def update_conf(self, vm_id: int, text: str, *, merge: bool) -> int:
        """Change the VM's configuration sections (:func:`.vm_template.reconfigured`);
        a new CONTEXT is expanded as at allocation, with the VM as it is now.

        Allowed, as in OpenNebula 6.10, while the VM is on no hypervisor (PENDING,
        HOLD, UNDEPLOYED) or powered off, where the change applies at its next boot,
        and while it is RUNNING, where a new CONTEXT reaches the guest at once (the
        life cycle's reconfigure) and the other sections at its next boot.

        Raises:
            StateRefusedError: any other state.
            ValidationError: a section is not a vector, or a reference is malformed.
        """
        new = parse_submitted(text)
        for context in new.vectors("CONTEXT"):
            for key, value in context.items():
                references(value, f"CONTEXT/{key}")
        check_raw(new, self._vm_mads())
        await self._unlocked(vm_id, _MANAGE)

        def prepare(connection: Connection, vm: VmRecord, moved: Move) -> dict[str, Any]:
            template = reconfigured(vm.template, new, merge=merge)
            given = new.get_vector("CONTEXT")
            if given:
                context = self._expanded(connection, vm, template,
                                         vm.user_template).get_vector("CONTEXT") or {}
                if merge:
                    context = {**(vm.template.get_vector("CONTEXT") or {}),
                               **{key: context[key] for key in given}}
                if context.get("NETWORK", "").upper() == "YES":
                    context.update(devices.network_context(template))
                template.set("CONTEXT", context)
            check_template(template)
            return {"template": template}

        try:
            await self.lifecycle.update_conf(
                vm_id, context=new.get_vector("CONTEXT") is not None, prepare=prepare)
        except StateRefusedError as exc:
            raise StateRefusedError(f"configuration cannot be updated in state {exc.state}",
                                    action="updateconf", state=exc.state) from None
        return vm_id

    async def rename(self, vm_id: int, name: str) -> int:
        """Give the VM a new name."""
        name = check_name("VM", name)
        await self._unlocked(vm_id, _MANAGE)

        def write(connection: Connection) -> None:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            vm_pool.update_vm(connection, vm, name=name)

        await self.db.write(write)
        return vm_id



@dataclass(frozen=True, slots=True)
class _Creation:
    """One VM to create: its quota check (with the batch's pending writes), then its
    record once it has an id."""

    check: Callable[[Connection, Deferred], None]
    build: Callable[[Connection, int], VmRecord]


def _create_all(connection: Connection, asked: Sequence[_Creation]
                ) -> list[VmRecord | Exception]:
    """Create the VMs ``asked``, in order, in one write: their ids are reserved at once
    (those of refused VMs given back: ids stay consecutive) and their rows inserted in
    one statement, flushed before a quota check that reads usage (it counts them)."""
    later = Deferred()
    first = next_ids(connection, "vm", len(asked))
    vm_id = first
    outcomes: list[VmRecord | Exception] = []
    for creation in asked:
        try:
            creation.check(connection, later)
            record = creation.build(connection, vm_id)
        except CloudburstError as exc:  # this VM refused (quota, template): not the others
            outcomes.append(exc)
            continue
        vm_pool.insert_vms(connection, [record], later=later)
        vm_id += 1
        outcomes.append(record)
    later.flush(connection)
    if vm_id < first + len(asked):
        give_back_ids(connection, "vm", first + len(asked) - vm_id)
    return outcomes


def _found(read: Callable[[Connection, int], _T], connection: Connection,
           object_id: int) -> _T | None:
    """``read(connection, object_id)``, ``None`` when there is no such object."""
    try:
        return read(connection, object_id)
    except NotFoundError:
        return None


def _optional_number(template: Template, name: str, kind: type[float] | type[int]
                     ) -> Any:
    value = template.get(name)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
