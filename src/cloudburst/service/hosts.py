"""Host use cases: allocate, read, delete, enable/disable/offline, update, rename."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from sqlalchemy import Connection

from cloudburst.daemon.dispatcher import Dispatcher
from cloudburst.daemon.lifecycle.hosts import (
    HostStepped,
    HostWorkers,
    host_step,
    start_host_work,
)
from cloudburst.errors import (
    ApiArgumentError,
    IllegalActionError,
    NotFoundError,
    PoolNameError,
    ValidationError,
)
from cloudburst.events import EventBus
from cloudburst.model.cost import money, month_start
from cloudburst.model.host_lifecycle import STATUS_EVENTS, HostEvent
from cloudburst.model.records import HostRecord
from cloudburst.model.snapshots import host_snapshot
from cloudburst.model.states import HostState
from cloudburst.store import cooloffs, group_pool, host_pool
from cloudburst.store.database import Database
from cloudburst.store.sequences import next_ids
from cloudburst.store.spending import Spending, spending
from cloudburst.template import Template
from cloudburst.template.limits import check_name, check_template, parse_submitted

#: Attributes that say what a host is, reported by its probes. Replacing the
#: template keeps them until the next monitoring, so a cloud site is never
#: mistaken for a local host in between (and handed VMs with no section for it).
MONITORED_IDENTITY = ("PUBLIC_CLOUD", "HYPERVISOR", "CAPACITY", "DEFAULT_INSTANCE_TYPE",
                      "PRIORITY")


def _host_name(name: str) -> str:
    """``name`` stripped, if it is a valid host name (a name without blanks)."""
    name = check_name("host", name)
    if any(ch.isspace() for ch in name):
        raise ValidationError("Invalid host NAME: it must be non-empty, without blanks")
    return name


def _new_host_template(im_mad: str, vm_mad: str) -> Template:
    """A new host's TEMPLATE as oned starts it: its drivers and empty reservations
    (``RESERVED_CPU``/``RESERVED_MEM``, which an operator fills with ``onehost update``)."""
    return Template([("IM_MAD", im_mad), ("RESERVED_CPU", ""), ("RESERVED_MEM", ""),
                     ("VM_MAD", vm_mad)])


def _monitored_identity(template: Template) -> Template:
    kept = Template()
    for name in MONITORED_IDENTITY:
        for value in template.get_all(name):
            kept.append(name, value)
    return kept


class HostService:
    """What operators can do with hosts."""

    def __init__(self, db: Database, dispatcher: Dispatcher,
                 monitor_now: Callable[[int], None], wake_scheduler: Callable[[], None],
                 events: EventBus | None = None,
                 reschedule: Callable[[int], Awaitable[None]] | None = None) -> None:
        """``reschedule(host_id)`` flags every VM on the host for rescheduling
        (what ``flush`` starts)."""
        self.db = db
        self.events = events if events is not None else EventBus()
        self.dispatcher = dispatcher
        self._workers = HostWorkers(monitor=monitor_now, schedule=wake_scheduler,
                                    reschedule=reschedule)

    async def allocate(self, name: str, im_mad: str, vm_mad: str, *, tm_mad: str = "dummy",
                       vn_mad: str = "dummy", cluster_id: int = -1) -> int:
        """Add a host; it is monitored at once.

        Raises:
            ValidationError: empty or taken name, or a driver not in oned.conf.
            NotFoundError: no cluster ``cluster_id`` (-1 is the default cluster, 0).
        """
        name = _host_name(name)
        for kind, driver in (("IM_MAD", im_mad), ("VM_MAD", vm_mad)):
            if not self.dispatcher.has_driver(kind, driver):
                configured = sorted(s.name for s in self.dispatcher.settings.drivers
                                    if s.kind == kind)
                raise ValidationError(
                    f"{kind} {driver!r} is not defined in oned.conf "
                    f"(defined: {', '.join(configured) or 'none'})")

        def write(connection: Connection) -> HostStepped:
            if host_pool.find_host_id(connection, name) is not None:
                taken = host_pool.find_host_id(connection, name)
                raise PoolNameError(f"NAME is already taken by HOST {taken}.")
            group_pool.get_cluster(connection, max(cluster_id, 0), with_hosts=False)
            host_id = next_ids(connection, "host")
            record = HostRecord(
                id=host_id, name=name, state=HostState.INIT, prev_state=HostState.INIT,
                im_mad=im_mad, vm_mad=vm_mad, tm_mad=tm_mad or "dummy",
                vn_mad=vn_mad or "dummy", cluster_id=max(cluster_id, 0),
                template=_new_host_template(im_mad, vm_mad),
                last_mon_time=0, version=0,
            )
            return host_step(connection, record, HostEvent.CREATE)

        return (await self._published(await self.db.write(write))).id

    async def _published(self, stepped: HostStepped) -> HostRecord:
        """Publish a committed change of a host and start the work it asks for."""
        host = stepped.host
        snapshot = host_snapshot(host)
        if stepped.move.to is None:
            snapshot["removed"] = True
        self.events.publish("host", host.id, snapshot)
        await start_host_work(self._workers, stepped)
        return host

    def _changed(self, host: HostRecord) -> HostRecord:
        """Publish a committed change of ``host`` that leaves its state; returns it."""
        self.events.publish("host", host.id, host_snapshot(host))
        return host

    async def info(self, host_id: int) -> HostRecord:
        """The host, its template showing its current capacity cool-offs as
        ``COOLOFF = [ INSTANCE_TYPE, SECONDS_LEFT, UNTIL, REASON ]`` vectors and,
        once priced VMs ran there, ``SPENDING = [ HOURLY, ACCRUED, THIS_MONTH ]``."""
        now = time.time()

        def read(connection: Connection
                 ) -> tuple[HostRecord, list[cooloffs.Cooloff], Spending, Spending]:
            return (host_pool.get_host(connection, host_id),
                    cooloffs.active(connection, now, host_id),
                    spending(connection, now=now, host_id=host_id),
                    spending(connection, now=now, host_id=host_id, since=month_start(now)))

        host, current, total, month = await self.db.read(read)
        if not current and total == Spending():
            return host
        template = host.template.copy()
        if total != Spending():
            template.set("SPENDING", {"HOURLY": money(total.hourly),
                                      "ACCRUED": money(total.accrued),
                                      "THIS_MONTH": money(month.accrued)})
        for cooloff in current:
            template.append("COOLOFF", {
                "INSTANCE_TYPE": cooloff.instance_type or "*",
                "SECONDS_LEFT": str(max(0, round(cooloff.until - now))),
                "UNTIL": str(int(cooloff.until)), "REASON": cooloff.reason})
        return replace(host, template=template)

    async def cooling(self) -> set[int]:
        """The hosts with a capacity cool-off now (what :meth:`info` lists as ``COOLOFF``)."""
        now = time.time()
        return {cooloff.host_id
                for cooloff in await self.db.read(lambda c: cooloffs.active(c, now))}

    async def pool(self) -> list[HostRecord]:
        return await self.db.read(lambda connection: host_pool.list_hosts(connection))

    async def pool_rows(self) -> list[HostRecord]:
        """Every host's row, by id, without what the VM pool adds (allocation counters at
        0, no VM ids): names, drivers and templates cost a read of the hosts alone, where
        :meth:`pool` also reads every VM placed on them."""
        return await self.db.read(lambda connection: host_pool.list_hosts(
            connection, with_vms=False, with_usage=False))

    async def pool_stamps(self) -> list[host_pool.HostStamp]:
        """Every host's stamp, by id (for callers that cache documents). The list may be
        one returned before: do not change it."""
        return await self.db.read_unchanged("host stamps", host_pool.host_stamps)

    async def records(self, host_ids: list[int]) -> list[HostRecord]:
        """The given hosts' rows, by id, without what :class:`~cloudburst.store.host_pool.
        HostStamp` carries (allocation counters at 0, no VM ids); missing ones left out."""
        return await self.db.read(lambda connection: host_pool.list_hosts(
            connection, host_ids=host_ids, with_vms=False, with_usage=False))

    async def find(self, name: str) -> HostRecord:
        """The host called ``name``.

        Raises:
            NotFoundError: no such host.
        """
        def read(connection: Connection) -> HostRecord:
            host_id = host_pool.find_host_id(connection, name)
            if host_id is None:
                raise NotFoundError(f"HOST named {name} does not exist")
            return host_pool.get_host(connection, host_id)

        return await self.db.read(read)

    async def delete(self, host_id: int) -> int:
        """Remove a host that holds no VM."""
        def write(connection: Connection) -> HostStepped:
            host = host_pool.get_host(connection, host_id)
            if host.running_vms:
                raise IllegalActionError(
                    f"Cannot delete host {host_id} ({host.name}): it still holds "
                    f"{host.running_vms} VM(s) ({', '.join(map(str, host.vm_ids))})")
            return host_step(connection, host, HostEvent.DELETE)

        await self._published(await self.db.write(write))
        return host_id

    async def status(self, host_id: int, status: int) -> int:
        """``one.host.status``: 0 enable, 1 disable, 2 offline.

        As in OpenNebula 6.10, each is legal in every state: enable starts over
        from INIT (monitored at once), also on a monitored host.
        """
        if status not in STATUS_EVENTS:
            raise ApiArgumentError(f"Wrong status {status}: use 0 (enable), 1 (disable) or "
                                   "2 (offline)")
        return (await self._act(host_id, STATUS_EVENTS[status])).id

    async def flush(self, host_id: int) -> int:
        """``onehost flush``: disable the host and reschedule every VM on it
        (the scheduler moves each to another host when one can take it)."""
        return (await self._act(host_id, HostEvent.FLUSH)).id

    async def _act(self, host_id: int, event: HostEvent) -> HostRecord:
        def write(connection: Connection) -> HostStepped:
            return host_step(connection, host_pool.get_host(connection, host_id), event)

        return await self._published(await self.db.write(write))

    async def update(self, host_id: int, text: str, *, merge: bool) -> int:
        """Replace (or merge into) the host's template; re-monitor it.

        ``IM_MAD`` and ``VM_MAD`` stay, naming the drivers the host uses
        (whatever the new text says: ``onehost update`` does not change drivers).
        """
        new = parse_submitted(text)

        def write(connection: Connection) -> HostRecord:
            host = host_pool.get_host(connection, host_id, with_usage=False)
            template = host.template.copy() if merge else _monitored_identity(host.template)
            template.merge(new, replace=True)
            template.set("IM_MAD", host.im_mad)
            template.set("VM_MAD", host.vm_mad)
            check_template(template)
            return host_pool.update_host(connection, host, template=template)

        self._changed(await self.db.write(write))
        self._workers.monitor(host_id)
        return host_id

    async def rename(self, host_id: int, name: str) -> int:
        name = _host_name(name)

        def write(connection: Connection) -> HostRecord:
            host = host_pool.get_host(connection, host_id)
            taken = host_pool.find_host_id(connection, name)
            if taken is not None and taken != host_id:
                raise IllegalActionError(f"host cannot be renamed to {name} because it "
                                         f"collides with host {taken}")
            return host_pool.update_host(connection, host, name=name)

        self._changed(await self.db.write(write))
        return host_id
