"""Host monitoring and bulk VM polling.

Every host that is not offline (:data:`~cloudburst.model.host_lifecycle.MONITORED`;
a disabled host too, as in OpenNebula) is monitored through its information
driver every ``MONITORING_INTERVAL`` seconds, and at once when it is created or
re-enabled. The report (``KEY=VALUE``) replaces same-named host attributes;
``TOTALCPU``/``TOTALMEMORY``/``FREE*``/``USED*`` become the host share. A failed
probe records the message and puts the host in ``ERROR``, and so does one that
takes longer than the driver's ``-w`` (without it, at most :data:`MONITOR_TIMEOUT`);
the host table (:mod:`cloudburst.model.host_lifecycle`) says which state each
outcome leads to (a disabled host stays disabled). The daemon goes on.

VMs are polled per host, all VMs of a host in **one** driver call (a driver that
polls across hosts and sweeps for no orphans, like the dummy one, gets the due
hosts of a tick in calls of at most :data:`MAX_POLLED_TOGETHER` VMs), every
``VM_POLLING_INTERVAL`` seconds, and right after one of them enters RUNNING
(:mod:`.fresh_polls`: its IP shows within seconds). VMs a host's monitoring
reported (``VM=[...]`` vectors) are updated from that report instead.

Only a host whose last monitoring succeeded is polled and swept for orphans.
One whose monitoring failed (``ERROR``, or a disabled host showing the error)
is monitored again every interval, but a site that cannot be monitored cannot
be trusted to say what is missing or extra either, and asking it every
interval is wasted calls and log lines: its RUNNING VMs become UNKNOWN (the
host table's ``UNOBSERVED`` work), and the first monitoring that succeeds has
them polled at once. A host in ``INIT`` waits for its first monitoring (made
at once) in the same way.

Each host's monitorings and polls keep their own place in their interval
(:mod:`.timers`): hosts created together are not all polled in the same tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection

from cloudburst.daemon.dispatcher import Dispatcher
from cloudburst.daemon.fresh_polls import FRESH_POLL_DELAYS, MERGE_WITHIN, FreshPolls
from cloudburst.daemon.lifecycle import LifecycleManager, poll_refs
from cloudburst.daemon.lifecycle.hosts import (
    HostStepped,
    HostWorkers,
    host_step,
    start_host_work,
)
from cloudburst.daemon.store_backoff import StoreBackoff
from cloudburst.daemon.timers import Deadlines, first_on_grid, next_on_grid
from cloudburst.drivers.base import HostInfo, HostRef, PollResult, PollState, VmDriver
from cloudburst.drivers.orphans import OrphanSightings
from cloudburst.errors import (
    CloudburstError,
    ConflictError,
    DriverTimeoutError,
    LeaseLostError,
    NotFoundError,
    StoreUnavailableError,
    one_line,
)
from cloudburst.model import lifecycle
from cloudburst.model.capacity import set_limits
from cloudburst.model.host_lifecycle import MONITORED, HostEvent, host_move, is_legal
from cloudburst.model.records import HostRecord
from cloudburst.model.snapshots import host_snapshot
from cloudburst.model.states import HostState
from cloudburst.store import host_pool, orphans, vm_pool
from cloudburst.store.database import Database
from cloudburst.store.host_cache import HostCache
from cloudburst.store.vm_pool import PolledVm
from cloudburst.template import Template

log = logging.getLogger(__name__)

#: Seconds a VM driver gets to complete a host's monitoring report.
SITE_REPORT_TIMEOUT = 60.0

#: Longest a host's monitoring may take when its IM driver has no ``-w``
#: (``DEFAULT_ACTION_TIMEOUT`` when lower). Past it the host is in ERROR with
#: "Timeout executing monitor after N s": a new host must not sit in INIT, nor a
#: monitored one keep stale figures, for minutes without a word (a libvirtd
#: probing QEMU slowly, a provider API that never answers).
MONITOR_TIMEOUT = 60.0

#: Reported keys that feed the host share instead of the template.
SHARE_KEYS: Mapping[str, str] = {
    "TOTALCPU": "max_cpu",
    "TOTALMEMORY": "max_mem",
    "FREECPU": "free_cpu",
    "FREEMEMORY": "free_mem",
    "USEDCPU": "used_cpu",
    "USEDMEMORY": "used_mem",
}

#: Most VMs asked about in one call of a driver that polls across hosts: the due
#: hosts of a tick are split into calls of at most this many (a host's VMs are
#: never split), so no one call's results hold the loop for long.
MAX_POLLED_TOGETHER = 1_000

#: VM positions whose instance exists at the provider and is worth polling.
POLLED_POSITIONS = frozenset({
    lifecycle.RUNNING, lifecycle.UNKNOWN, lifecycle.POWEROFF, lifecycle.SUSPENDED,
})


def _number(value: str | None) -> int:
    try:
        return int(float(value)) if value is not None else 0
    except ValueError:
        return 0


def _reported(host: HostRecord, info: HostInfo) -> tuple[Template, dict[str, int]]:
    """The template and share figures ``host`` gets from report ``info``."""
    template = host.template.copy()
    wilds = [vm.deploy_id for vm in info.vms if vm.vm_id < 0]
    # Everything reported is merged at once, so the same report again leaves the
    # attributes in the same order (a template equal to the stored one).
    reported = Template([(name, value) for name, value in info.attributes.items()
                         if name not in SHARE_KEYS]
                        + [("TOTAL_WILDS", str(len(wilds)))]
                        + ([("WILDS", ",".join(wilds))] if wilds else []))
    if not wilds:
        template.remove("WILDS")
    template.merge(reported, replace=True)
    template.remove("ERROR")
    set_limits(template, info.capacity)
    share = {column: _number(info.attributes.get(key)) for key, column in SHARE_KEYS.items()}
    if "FREECPU" not in info.attributes:
        share["free_cpu"] = share["max_cpu"] - share["used_cpu"]
    if "FREEMEMORY" not in info.attributes:
        share["free_mem"] = share["max_mem"] - share["used_mem"]
    return template, share


def _stays(host: HostRecord) -> bool:
    """Whether a successful monitoring leaves ``host`` in its state with no work to start."""
    if not is_legal(host.state, HostEvent.MONITOR_SUCCESS):
        return False
    move = host_move(host.state, HostEvent.MONITOR_SUCCESS)
    return move.to == host.state and not move.work


def _same_share(host: HostRecord, share: Mapping[str, int]) -> bool:
    return all(getattr(host, column) == value for column, value in share.items())


#: The busy key of the write of monitoring times (see Monitor._stamp).
_STAMPS = ("stamps", -1)


def _parts(group: list[tuple[HostRecord, list[PolledVm]]], most: int
           ) -> list[list[tuple[HostRecord, list[PolledVm]]]]:
    """``group`` (hosts with their VMs) cut into runs of hosts with at most ``most``
    VMs to poll each, but at least one host."""
    parts: list[list[tuple[HostRecord, list[PolledVm]]]] = [[]]
    size = 0
    for host, vms in group:
        polled = sum(1 for vm in vms if vm.position in POLLED_POSITIONS)
        if parts[-1] and size + polled > most:
            parts.append([])
            size = 0
        parts[-1].append((host, vms))
        size += polled
    return parts


class Monitor:
    """Keeps hosts monitored and VMs polled."""

    def __init__(self, db: Database, dispatcher: Dispatcher, lifecycle_manager: LifecycleManager,
                 *, monitoring_interval: float, polling_interval: float,
                 on_host_changed: Callable[[], None], orphan_grace_period: float = 600.0) -> None:
        self.db = db
        self.dispatcher = dispatcher
        self.lifecycle = lifecycle_manager
        self.monitoring_interval = monitoring_interval
        self.polling_interval = polling_interval
        self._on_host_changed = on_host_changed
        self._workers = HostWorkers(monitor=self.monitor_now, schedule=on_host_changed,
                                    unobserved=self._unobserved)
        self.orphan_grace_period = orphan_grace_period
        #: When each monitored host is next monitored, and its VMs polled.
        self._monitor_timers = Deadlines()
        self._poll_timers = Deadlines()
        #: Hosts whose regular poll came while their last poll still ran.
        self._waiting_polls: set[int] = set()
        #: Most VMs in one call of a driver that polls across hosts (see the constant).
        self.max_polled_together = MAX_POLLED_TOGETHER
        #: Hosts to monitor at the next tick whatever their timer says. Taken
        #: before that tick reads the hosts, so a request made while a tick is
        #: reading is served by the next one, with the host as it is now.
        self._requested: set[int] = set()
        #: LAST_MON_TIME of hosts whose report changed nothing, written by the next tick.
        self._monitored_at: dict[int, int] = {}
        #: Per host, the last report that changed nothing, with the record version it
        #: was compared with: the same again changes nothing either (see _host_monitored).
        self._quiet_reports: dict[int, tuple[object, ...]] = {}
        self._fresh_polls = FreshPolls(delays_of=self._fresh_poll_delays)
        #: The last failure logged per (what, host): the same one is not logged again.
        self._failures: dict[tuple[str, int], str] = {}
        self._busy: set[tuple[str, int]] = set()
        self._wake = asyncio.Event()
        self._hosts = HostCache()
        self._stopped = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def monitor_now(self, host_id: int) -> None:
        """Monitor ``host_id`` at the next tick (new, re-enabled or updated host)."""
        self._requested.add(host_id)
        self._wake.set()

    def next_monitoring(self, host_id: int) -> float | None:
        """When (``time.monotonic()``) ``host_id`` is next monitored; None while it
        has no timer (not monitored, or its monitoring waits for the last one)."""
        return self._monitor_timers.get(host_id)

    def next_poll(self, host_id: int) -> float | None:
        """When (``time.monotonic()``) the next regular poll of ``host_id`` is due;
        None while it has none (not monitored, or its poll waits for the last one)."""
        return self._poll_timers.get(host_id)

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def _fresh_poll_delays(self, host_id: int) -> tuple[float, ...]:
        """When to poll ``host_id`` after one of its VMs starts: as its VM driver says."""
        host = self._hosts.get(host_id)
        try:
            driver = self.dispatcher.vm_driver(host.vm_mad) if host is not None else None
        except CloudburstError:
            driver = None
        return FRESH_POLL_DELAYS if driver is None else driver.fresh_poll_delays

    async def close(self) -> None:
        self.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)

    def start(self) -> asyncio.Task[None]:
        """Monitor and poll in a new task until :meth:`stop` (may start again after it);
        a :meth:`stop` before the task first runs ends it (the flag is cleared here)."""
        self._stopped = False
        return asyncio.get_running_loop().create_task(self._run(), name="monitor")

    async def _run(self) -> None:
        tick = min(1.0, self.monitoring_interval, self.polling_interval)
        watcher = asyncio.get_running_loop().create_task(
            self._fresh_polls.watch(self.lifecycle.events, time.monotonic, self._wake.set),
            name="fresh-polls")
        backoff = StoreBackoff("monitoring", log)
        try:
            while not self._stopped:
                began = time.monotonic()
                try:
                    await self.tick()
                    backoff.succeeded()
                except StoreUnavailableError as exc:
                    await backoff.wait(exc)
                except Exception:
                    log.exception("monitor tick failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=tick)
                # At most one tick per MERGE_WITHIN: a burst of VMs starting wakes the
                # monitor once per VM, and each tick reads the host pool's stamp; a fresh poll
                # served up to MERGE_WITHIN late is served as asked (see FreshPolls).
                if not self._stopped and (rest := began + MERGE_WITHIN - time.monotonic()) > 0:
                    await asyncio.sleep(rest)
                self._wake.clear()
        finally:
            watcher.cancel()

    async def tick(self) -> None:
        """Start the monitorings and polls that are due.

        A tick costs what is due, not a look at every host: the hosts' timers are
        a deadline queue (:mod:`.timers`), and only the hosts added, written or
        removed since the last tick are looked at to start or end their timers.
        What the due work needs from the store (the VMs of the hosts to poll,
        their orphan sightings, the polled VMs' versions of the hosts to monitor)
        is read for all of it in one read, not one per host.
        """
        requested, self._requested = self._requested, set()
        if self._monitored_at and _STAMPS not in self._busy:
            stamps, self._monitored_at = self._monitored_at, {}
            self._start([_STAMPS], self._stamp(stamps))
        changed = await self.db.read(self._hosts.update)
        now = time.monotonic()
        for host_id in changed:
            self._track(host_id, now)
        to_monitor = self._due_monitorings(requested, now)
        to_poll = self._due_polls(now)
        if not to_monitor and not to_poll:
            return
        polled = [host.id for host, _ in to_poll]
        monitored = [host.id for host in to_monitor]

        def read(connection: Connection) -> tuple[dict[int, list[PolledVm]],
                                                  dict[int, dict[str, tuple[float, int]]],
                                                  dict[int, dict[int, int]]]:
            return (vm_pool.on_hosts(connection, polled),
                    orphans.sightings_of(connection, polled),
                    vm_pool.in_flight_on_hosts(connection, POLLED_POSITIONS, monitored))

        on_hosts, seen, versions = await self.db.read(read)
        for host in to_monitor:
            self._start([("monitor", host.id)],
                        self.monitor_host(host, versions.get(host.id, {})))
        together: dict[str, list[tuple[HostRecord, list[PolledVm]]]] = {}
        for host, only in to_poll:
            vms = on_hosts.get(host.id, [])
            if only is not None:
                vms = [vm for vm in vms if vm.id in only]
            asked = any(vm.position in POLLED_POSITIONS for vm in vms)
            if self._polls_together(host):
                if asked:
                    together.setdefault(host.vm_mad, []).append((host, vms))
            elif (only is None and self._sweeps(host)) or asked:
                self._start([("poll", host.id)], self.poll_host(
                    host, vms, seen.get(host.id, {}), sweep=only is None))
        for group in together.values():
            for part in _parts(group, self.max_polled_together):
                self._start([("poll", host.id) for host, _ in part], self.poll_hosts(part))

    async def _stamp(self, stamps: dict[int, int]) -> None:
        """Write the ``LAST_MON_TIME`` of hosts whose reports changed nothing.

        Not awaited by the tick: while a burst keeps the store's writer busy,
        this write waits its turn, and the monitorings and polls due meanwhile
        must not wait with it (the next stamps gather until it is done).
        """
        try:
            await self.db.write(lambda connection: host_pool.mark_monitored(connection, stamps))
        except StoreUnavailableError as exc:  # the next monitorings stamp them again
            log.warning("monitoring times of %d hosts not recorded: %s", len(stamps),
                        exc.message)

    def _track(self, host_id: int, now: float) -> None:
        """Start or end the timers of a host added, written or removed.

        A host this monitor sees for the first time is monitored at once (it may be
        new), unless it was monitored lately (see :meth:`_first_monitoring`); its
        first regular poll comes at its place in the interval (see :mod:`.timers`).
        A host that is no longer monitored keeps its timers until they are due, then
        loses them; being written again starts them again.
        """
        host = self._hosts.get(host_id)
        if host is None:
            self._monitor_timers.drop(host_id)
            self._poll_timers.drop(host_id)
            self._waiting_polls.discard(host_id)
            self._fresh_polls.forget_host(host_id)
            self._quiet_reports.pop(host_id, None)
            return
        if host.state not in MONITORED:
            return
        if host_id not in self._monitor_timers:
            self._monitor_timers.set(host_id, self._first_monitoring(host, now))
        if host_id not in self._poll_timers:
            self._poll_timers.set(host_id, next_on_grid(host_id, now, self.polling_interval))

    def _first_monitoring(self, host: HostRecord, now: float) -> float:
        """When to monitor ``host`` first: at once, unless it is MONITORED with a
        report (a daemon starting, a new leader taking over 10,000 hosts): then at its
        place in the interval, and at most one interval after that report."""
        if host.state is not HostState.MONITORED or not host.last_mon_time:
            return now
        return first_on_grid(host.id, now, self.monitoring_interval,
                             time.time() - host.last_mon_time)

    def _monitored(self, host_id: int) -> HostRecord | None:
        host = self._hosts.get(host_id)
        return host if host is not None and host.state in MONITORED else None

    def _due_monitorings(self, requested: set[int], now: float) -> list[HostRecord]:
        """The hosts to monitor now: asked for or due, and not being monitored (those
        are monitored again as soon as the running monitoring ends)."""
        due = requested.union(self._monitor_timers.pop_due(now))
        hosts: list[HostRecord] = []
        for host_id in sorted(due):
            host = self._monitored(host_id)
            if host is None:
                continue  # its timer is gone; written again, the host gets one (_track)
            if ("monitor", host_id) in self._busy:
                self._requested.add(host_id)  # after the running one ends
                continue
            self._monitor_timers.set(host_id, next_on_grid(host_id, now,
                                                           self.monitoring_interval))
            hosts.append(host)
        return hosts

    def _due_polls(self, now: float) -> list[tuple[HostRecord, frozenset[int] | None]]:
        """The hosts to poll now, with the VMs to ask about (None: all, and sweep for
        orphans): a regular poll due (also one that had to wait for the host's poll
        running), or a fresh poll (:mod:`.fresh_polls`), on a host not being polled."""
        regular = self._waiting_polls.union(self._poll_timers.pop_due(now))
        self._waiting_polls = set()
        to_poll: list[tuple[HostRecord, frozenset[int] | None]] = []
        for host_id in sorted(regular | self._fresh_polls.due_hosts(now)):
            host = self._monitored(host_id)
            if host is None:
                continue
            if ("poll", host_id) in self._busy:
                if host_id in regular:
                    self._waiting_polls.add(host_id)
                continue
            if host_id in regular:
                self._poll_timers.set(host_id, next_on_grid(host_id, now,
                                                            self.polling_interval))
            started = self._fresh_polls.taken(host_id, now)
            if host.error or host.state is HostState.INIT:
                continue  # not known to answer: not asked (see the module docstring)
            to_poll.append((host, None if host_id in regular else started))
        return to_poll

    def _poll_soon(self, host_id: int) -> None:
        """Poll ``host_id`` at the next tick (its VMs were not observed for a while)."""
        self._poll_timers.set(host_id, time.monotonic())
        self._wake.set()

    def _sweeps(self, host: HostRecord) -> bool:
        """Whether ``host``'s VM driver looks for orphans (the base finds none); an
        unknown driver counts as one, so that its poll says what is wrong."""
        try:
            driver = self.dispatcher.vm_driver(host.vm_mad)
        except CloudburstError:
            return True
        return type(driver).sweep is not VmDriver.sweep

    def _polls_together(self, host: HostRecord) -> bool:
        """Whether ``host``'s VMs are polled in one call with other hosts' of its driver
        (:attr:`VmDriver.polls_across_hosts`, and no orphan sweep after the poll)."""
        try:
            driver = self.dispatcher.vm_driver(host.vm_mad)
        except CloudburstError:
            return False
        return driver.polls_across_hosts and type(driver).sweep is VmDriver.sweep

    def _start(self, keys: list[tuple[str, int]], coroutine: Any) -> None:
        """Run ``coroutine`` in a task; ``keys`` (what, host) are busy until it ends."""
        self._busy.update(keys)
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)

        def done(finished: asyncio.Task[Any]) -> None:
            self._busy.difference_update(keys)
            self._tasks.discard(finished)
            if any(what == "monitor" and host_id in self._requested for what, host_id in keys):
                self._wake.set()  # asked for while this one ran: now, not at the next tick
            if finished.cancelled() or finished.exception() is None:
                return
            error = finished.exception()
            hosts = ", ".join(str(host_id) for _, host_id in keys)
            if isinstance(error, StoreUnavailableError):  # retried at the next interval
                log.warning("%s of host %s not recorded: %s", keys[0][0], hosts, error.message)
            else:
                log.error("%s of host %s failed", keys[0][0], hosts, exc_info=error)

        task.add_done_callback(done)

    # -- hosts -------------------------------------------------------------------------

    async def monitor_host(self, host: HostRecord, versions: dict[int, int]) -> None:
        """Monitor one host now and store the outcome; ``versions``: the record
        versions of its VMs in polled states, read before asking."""
        try:
            driver = self.dispatcher.information_driver(host.im_mad)
            ref = LifecycleManager.host_ref(host)
            info = await self.dispatcher.run("IM_MAD", host.im_mad, "monitor",
                                             lambda: driver.monitor(ref),
                                             longest_default=MONITOR_TIMEOUT)
        except LeaseLostError:
            return  # not asked at all: nothing to say about the host
        except CloudburstError as exc:
            event = (HostEvent.MONITOR_TIMEOUT if isinstance(exc, DriverTimeoutError)
                     else HostEvent.MONITOR_FAILURE)
            await self._host_failed(host.id, one_line(exc.message), event)
            return
        info = await self._site_report(host, ref, info)
        await self._host_monitored(host, info)
        if info.vms:
            await self._apply_reported_vms(info, versions)

    async def _site_report(self, host: HostRecord, ref: HostRef, info: HostInfo) -> HostInfo:
        """``info`` completed by the host's VM driver (:meth:`VmDriver.site_report`);
        unchanged when that driver cannot (the IM driver's report still counts)."""
        # Not through the driver's -t slots: a monitor must not wait behind busy deploys.
        try:
            vm_driver = self.dispatcher.vm_driver(host.vm_mad)
            if type(vm_driver).site_report is VmDriver.site_report:
                return info  # the base adds nothing (and a wait_for is a task per host)
            return await asyncio.wait_for(vm_driver.site_report(ref, info),
                                          timeout=SITE_REPORT_TIMEOUT)
        except (CloudburstError, TimeoutError) as exc:
            problem = exc.message if isinstance(exc, CloudburstError) else "timed out"
            log.info("host %d: %s could not complete the report: %s", host.id, host.vm_mad,
                     one_line(problem))
            return info

    async def _host_monitored(self, known: HostRecord, info: HostInfo) -> None:
        """Store a successful report of host ``known`` (as this tick read it).

        A report that leaves the host as it was (same attributes and figures, a
        monitored host staying so, no error to clear) only moves its
        ``LAST_MON_TIME``, which the next tick writes for all such hosts in one
        statement, without a new record version: caches of the host stay valid
        and nobody is told of a change that did not happen.
        """
        now = int(time.time())
        host_id = known.id
        # What the outcome depends on: the record (by version) and the report. The same
        # pair as last time needs no new template built and compared (10,000 hosts a
        # minute report the same figures again and again).
        report = (known.version, dict(info.attributes),
                  tuple(vm.deploy_id for vm in info.vms if vm.vm_id < 0), dict(info.capacity))
        if self._quiet_reports.get(host_id) == report:
            self._monitored_at[host_id] = now
            return
        template, share = _reported(known, info)
        if (_stays(known) and not known.error and template == known.template
                and _same_share(known, share)):
            self._quiet_reports[host_id] = report
            self._monitored_at[host_id] = now
            return
        self._quiet_reports.pop(host_id, None)

        def write(connection: Connection) -> tuple[HostStepped, bool] | None:
            host = host_pool.get_host(connection, host_id, with_usage=False)
            if not is_legal(host.state, HostEvent.MONITOR_SUCCESS):
                return None  # taken offline while it was being monitored
            template, share = _reported(host, info)
            offers_changed = template != host.template or not _same_share(host, share)
            return host_step(connection, host, HostEvent.MONITOR_SUCCESS, template=template,
                             last_mon_time=now, error="", **share), offers_changed

        try:
            written = await self.db.write(write)
        except (ConflictError, NotFoundError):
            return
        if written is None:
            return
        stepped, offers_changed = written
        self.lifecycle.events.publish("host", host_id, host_snapshot(stepped.host))
        if known.error:
            self._poll_soon(host_id)  # its VMs were not polled while it failed
        await start_host_work(self._workers, stepped)
        # New figures or attributes may place a waiting VM; the same report again
        # cannot (10,000 hosts reporting every minute would keep the scheduler in
        # full passes for nothing).
        if stepped.host.max_cpu and offers_changed:
            self._on_host_changed()

    async def _host_failed(self, host_id: int, message: str, event: HostEvent) -> None:
        """Record the failed monitoring (``event``) with ``message``: a host that
        takes VMs goes to ERROR, a disabled one keeps its state; logged once per
        new message."""
        now = int(time.time())

        def write(connection: Connection) -> tuple[HostStepped, bool] | None:
            host = host_pool.get_host(connection, host_id, with_usage=False)
            if not is_legal(host.state, event):
                return None  # taken offline while it was being monitored
            template = host.template.copy()
            template.set("ERROR", f"Error monitoring host {host_id} : {message}")
            stepped = host_step(connection, host, event, template=template, error=message,
                                last_mon_time=now)
            return stepped, host.error != message

        try:
            failed = await self.db.write(write)
        except (ConflictError, NotFoundError):
            return
        if failed is not None:
            stepped, new_error = failed
            if new_error:
                log.warning("monitoring host %d failed: %s", host_id, message)
            self.lifecycle.events.publish("host", host_id, host_snapshot(stepped.host))
            await start_host_work(self._workers, stepped)

    async def _unobserved(self, host: HostRecord) -> None:
        """``host``'s monitoring failed (its error written): its RUNNING VMs become
        UNKNOWN, through the same table entry as a poll that reports an error."""
        vms = (await self.db.read(
            lambda connection: vm_pool.on_hosts(connection, [host.id]))).get(host.id, [])
        running = {vm.id: vm for vm in vms if vm.position == lifecycle.RUNNING}
        if not running:
            return
        result = PollResult(PollState.ERROR, {
            "ERROR": f"host {host.name} cannot be monitored ({host.error}); "
                     "the VM is not polled until it can"})
        await self.lifecycle.apply_poll({vm_id: result for vm_id in running},
                                        {vm_id: vm.version for vm_id, vm in running.items()},
                                        running)

    async def _apply_reported_vms(self, info: HostInfo, versions: dict[int, int]) -> None:
        await self.lifecycle.apply_poll(
            {vm.vm_id: vm.poll for vm in info.vms
             if vm.vm_id in versions and vm.poll is not None}, versions)

    # -- VMs ---------------------------------------------------------------------------

    async def poll_host(self, host: HostRecord, vms: list[PolledVm],
                        seen: orphans.Sightings, *, sweep: bool = True) -> None:
        """Poll ``vms`` on ``host`` in one driver call, then (``sweep``) sweep for orphans.

        ``vms``: the host's VMs (not DONE; with ``sweep``, all of them) and ``seen``
        its orphan sightings, read before asking.
        """
        refs = poll_refs([vm for vm in vms if vm.position in POLLED_POSITIONS], host)
        try:
            driver = self.dispatcher.vm_driver(host.vm_mad)
        except CloudburstError as exc:
            log.warning("host %s: %s", host.name, exc)
            return
        if refs:
            try:
                results: dict[int, PollResult] = await self.dispatcher.run(
                    "VM_MAD", host.vm_mad, "poll", lambda: driver.poll(refs))
            except CloudburstError as exc:
                self._failed("polling VMs", host, exc)
            else:
                self._failures.pop(("polling VMs", host.id), None)
                await self.lifecycle.apply_poll(results, {vm.id: vm.version for vm in vms},
                                                {vm.id: vm for vm in vms})
        if sweep and type(driver).sweep is not VmDriver.sweep:  # the base finds nothing
            await self._sweep(host, driver, frozenset(vm.id for vm in vms), seen)

    async def poll_hosts(self, group: list[tuple[HostRecord, list[PolledVm]]]) -> None:
        """Poll the VMs of several hosts of one driver in one call (no sweep).

        ``group``: each host with its VMs to poll, read before asking. When that call
        fails, each host is polled on its own: a failure is then the failing host's,
        logged as such, and the other hosts' VMs are polled all the same.
        """
        if len(group) == 1:
            await self.poll_host(*group[0], {}, sweep=False)
            return
        vm_mad = group[0][0].vm_mad
        try:
            driver = self.dispatcher.vm_driver(vm_mad)
        except CloudburstError as exc:
            log.warning("hosts %s: %s", ", ".join(host.name for host, _ in group), exc)
            return
        refs = [ref for host, vms in group
                for ref in poll_refs([vm for vm in vms if vm.position in POLLED_POSITIONS],
                                     host)]
        try:
            results: dict[int, PollResult] = await self.dispatcher.run(
                "VM_MAD", vm_mad, "poll", lambda: driver.poll(refs))
        except CloudburstError:
            await asyncio.gather(*(self.poll_host(host, vms, {}, sweep=False)
                                   for host, vms in group))
            return
        for host, _ in group:
            self._failures.pop(("polling VMs", host.id), None)
        every = [vm for _, vms in group for vm in vms]
        await self.lifecycle.apply_poll(results, {vm.id: vm.version for vm in every},
                                        {vm.id: vm for vm in every})

    def _failed(self, what: str, host: HostRecord, exc: CloudburstError) -> None:
        """Log a failed poll or sweep once per new message, not every interval."""
        if self._failures.get((what, host.id)) != exc.message:
            self._failures[(what, host.id)] = exc.message
            log.warning("%s of host %s failed: %s", what, host.name, exc)

    async def _sweep(self, host: HostRecord, driver: VmDriver, live_vm_ids: frozenset[int],
                     seen: orphans.Sightings) -> None:
        """Let the driver find orphaned instances and record them on the host.

        ``seen`` are the host's sightings from the store; the sweep's are
        written back with the host, so a new leader continues the grace periods.
        """
        ref = LifecycleManager.host_ref(host)
        sightings = OrphanSightings(seen)
        try:
            report = await self.dispatcher.run(
                "VM_MAD", host.vm_mad, "sweep",
                lambda: driver.sweep(ref, live_vm_ids, self.orphan_grace_period, sightings))
        except CloudburstError as exc:
            self._failed("orphan sweep", host, exc)
            return
        self._failures.pop(("orphan sweep", host.id), None)
        if report is None:
            return
        for deploy_id in report.terminated:
            log.warning("host %s: terminated orphaned instance %s (no VM owned it for %.0f s)",
                        host.name, deploy_id, self.orphan_grace_period)
        for deploy_id, age in report.orphans.items():
            if deploy_id not in report.terminated:
                log.warning("host %s: instance %s carries our tags but no VM owns it "
                            "(seen for %.0f s)", host.name, deploy_id, age)
        remaining = sorted(set(report.orphans) - set(report.terminated))
        kept = sightings.seen

        def write(connection: Connection) -> None:
            if kept != seen:
                orphans.keep(connection, host.id, kept)
            current = host_pool.get_host(connection, host.id, with_usage=False)
            template = current.template.copy()
            template.set("TOTAL_ORPHANS", str(len(remaining)))
            if remaining:
                template.set("ORPHANS", ",".join(remaining))
            else:
                template.remove("ORPHANS")
            if template != current.template:
                host_pool.update_host(connection, current, template=template)

        try:
            await self.db.write(write)
        except (ConflictError, NotFoundError):
            return
