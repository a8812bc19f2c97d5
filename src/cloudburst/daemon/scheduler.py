"""The scheduler loop: event-driven placement passes.

A pass runs as soon as something may have changed the answer -- a VM was
created or released, capacity was freed, a host was (re)monitored -- and
otherwise every ``SCHED_INTERVAL`` seconds. Wake-ups that arrive during a pass
coalesce into one follow-up pass. A pass reads a snapshot, places VMs with the
pure :class:`~cloudburst.scheduler.placement.Placer`, then writes each placement
as a compare-and-swap (a VM a user held or deleted meanwhile is skipped).

Passes keep the placer of the pass before: the hosts' usage as this scheduler
left it and each kind of demand's ranked hosts, so a pass over newly created VMs
costs O(new VMs x log hosts), not a read of every host and of every VM holding
capacity. The placer is built again from the store when it could be wrong:

* on a pass woken by an event (capacity freed, a host changed, a VM pending
  again) and the first pass after start or election;
* when any host's record version changed, or the active cool-offs did;
* when the event bus shows a VM holding capacity other than the placer counts
  it (a user's deploy, a migration, a resize, another daemon's change: the
  scheduler keeps what each VM holds, read with the usage and updated by its
  own placements); or a deploy it asked for failed;
* when the store's usage of some host differs from the placer's count of it,
  which the periodic pass, the first pass after the bus lost changes
  (``RESYNC``: a batch of 5,000 placements publishes more changes than a
  subscriber's queue holds), and any pass at least every
  :data:`RECONCILE_SECONDS` (a change nobody published) check: one aggregate
  per host (:func:`~cloudburst.store.vm_pool.host_usage`), not a read of every
  VM holding capacity (100,000 of them each time).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection

from cloudburst import metrics
from cloudburst.config.settings import SchedulerSettings
from cloudburst.daemon.leases import Reaper
from cloudburst.daemon.lifecycle import LifecycleManager
from cloudburst.daemon.lifecycle.deploying import parked_driver
from cloudburst.daemon.recall import Recaller
from cloudburst.daemon.store_backoff import StoreBackoff
from cloudburst.errors import CloudburstError, QuotaError, StoreUnavailableError
from cloudburst.events import RESYNC, Change, EventBus, Subscription, SubscriptionClosed
from cloudburst.model import capacity, lifecycle, reasons
from cloudburst.model.cloud_sections import sites_by_type
from cloudburst.model.reasons import PlacementReason
from cloudburst.model.records import HostRecord, VmRecord, cpu_share
from cloudburst.model.states import (
    CAPACITY_HOLDING_STATES,
    SCHEDULABLE_HOST_STATES,
    VmState,
)
from cloudburst.scheduler.demand import (
    count_slots,
    host_candidate,
    requirements_of,
    vm_demand,
)
from cloudburst.scheduler.placement import HostCandidate, Placer, VmDemand, place
from cloudburst.store import backoffs, cooloffs, host_pool, vm_pool
from cloudburst.store.database import Database
from cloudburst.store.host_cache import HostCache
from cloudburst.template.expr import parse_rank

log = logging.getLogger(__name__)


#: Seconds a host whose cluster quota refused a VM is left out of its placement.
QUOTA_RETRY_SECONDS = 60.0

#: VM states holding capacity, as the bus carries them.
_HOLDING = frozenset(int(state) for state in CAPACITY_HOLDING_STATES)

#: Longest a placer is kept between passes before its counts are checked against
#: the store's (and it is built again if they differ).
RECONCILE_SECONDS = 30.0



@dataclass(slots=True)
class _Snapshot:
    """What a pass reads: candidate hosts, pending and rescheduled VMs, driver bindings.

    ``drivers`` maps the VMs bound to one driver (parked by stop/undeploy with
    their instance, or moving) to its name; ``host_drivers`` each host to its driver.
    """

    hosts: list[HostCandidate] = field(default_factory=list)
    pending: list[VmRecord] = field(default_factory=list)
    moving: list[VmRecord] = field(default_factory=list)
    drivers: dict[int, str] = field(default_factory=dict)
    host_drivers: dict[int, str] = field(default_factory=dict)
    #: Cloud sites (schedulable or not), for the lease and idle rules.
    cloud_hosts: list[int] = field(default_factory=list)
    #: Hosts each VM is kept off after a failed deploy (:mod:`cloudburst.store.backoffs`).
    skipped: dict[int, dict[int, float]] = field(default_factory=dict)
    #: The kept placer when it still holds (``hosts`` are then its candidates).
    placer: Placer | None = None
    #: What the candidates were built from (see SchedulerLoop._basis).
    basis: tuple[object, ...] = ()
    #: What each VM holding capacity holds, when the candidates were built from it.
    held: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    #: Whether to look for cloud VMs to recall after placing.
    recall: bool = False
    #: Whether the kept placer was checked against the store's usage (and held).
    checked: bool = False


@dataclass(frozen=True, slots=True)
class _HostViews:
    """The hosts as a pass looks at them (treat as read-only): those that take VMs,
    the cloud sites, the driver of each that takes VMs, and whether both cloud sites
    and local hosts take VMs (else no cloud VM can be recalled home)."""

    schedulable: list[HostRecord]
    cloud: list[HostRecord]
    drivers: dict[int, str]
    mixed: bool

    @classmethod
    def of(cls, every_host: list[HostRecord]) -> _HostViews:
        schedulable = [host for host in every_host if host.state in SCHEDULABLE_HOST_STATES]
        clouds = sum(1 for host in schedulable if host.is_public_cloud)
        return cls(schedulable, [host for host in every_host if host.is_public_cloud],
                   {host.id: host.vm_mad for host in schedulable},
                   0 < clouds < len(schedulable))


def _shape(vm: VmRecord, demand: VmDemand) -> tuple[object, ...]:
    """What a site's price and an owner's budgets depend on: owner, size, cloud sections."""
    return (vm.uid, vm.gid, demand.cpu, demand.memory, demand.vcpu, demand.clouds)


class SchedulerLoop:
    """Runs placement passes on events and on a timer."""

    def __init__(self, db: Database, lifecycle: LifecycleManager,
                 settings: SchedulerSettings, events: EventBus | None = None) -> None:
        self.db = db
        #: Committed VM changes, to see capacity taken by others (None: no placer is kept).
        self.events = events
        self.lifecycle = lifecycle
        self.settings = settings
        self._wake = asyncio.Event()
        #: Whether the next pass must consider every pending VM (see new_vms).
        self._full = True
        #: Highest VM id any pass has seen pending.
        self._seen_up_to = -1
        #: The last VM a pass read when ``MAX_VM`` stopped it (the next pass goes on
        #: from there), else None.
        self._read_up_to: int | None = None
        self._hosts = HostCache()
        #: The host cache's views, and the cache generation they were made at.
        self._views: tuple[int, _HostViews] | None = None
        self._stopped = False
        self.passes = 0
        #: Why a quota refused each VM's last placement: its waiting reason while it waits.
        self._quota_refusals: dict[int, str] = {}
        #: The refusal kind (quota or budget) of each host a quota refused a VM on.
        self._refusal_kinds: dict[int, dict[int, str]] = {}
        #: Sites a budget refused, by owner and VM shape (see _remember_budget).
        self._budget_refused: dict[tuple[object, ...], dict[int, tuple[float, str]]] = {}
        #: Brings RECALL=YES cloud VMs home after full passes.
        self.recaller = Recaller(db, lifecycle, settings.recall)
        #: Ends cloud VMs whose LEASE or idle time is up, after full passes.
        self.reaper = Reaper(db, lifecycle)
        #: The placer kept between passes (see the module doc), what it was built
        #: from, and when it was last built or found to count as the store does.
        self._placer: Placer | None = None
        self._basis: tuple[object, ...] = ()
        self._checked = 0.0
        #: Whether the kept placer may be wrong (see the module doc).
        self._stale = True
        #: Whether changes were lost since the last check (the next pass checks).
        self._unsure = False
        #: What each VM holding capacity holds, ``{vm: (host, cpu, memory KB)}``, as
        #: the kept placer counts it.
        self._held: dict[int, tuple[int, int, int]] = {}
        self.rebuilds = 0
        #: Checks of a kept placer's counts against the store's usage.
        self.checks = 0

    def wake(self) -> None:
        """Ask for a full pass as soon as possible: capacity or hosts changed,
        or a VM became pending again (cheap; safe to call often)."""
        self._full = True
        self._wake.set()

    def new_vms(self) -> None:
        """Ask for a pass over VMs created since the last pass only.

        Nothing else changed, so VMs that were already waiting still cannot
        be placed; re-reading them on every creation would make a burst of
        creations against a full cloud cost O(pending) each.
        """
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def start(self) -> asyncio.Task[None]:
        """Run passes in a new task until :meth:`stop` (may start again after it).

        The stop flag is cleared here, not when the task first runs: a :meth:`stop`
        that comes before then (a leader deposed right after its election) ends it.
        """
        self._stopped = False
        return asyncio.get_running_loop().create_task(self._run(), name="scheduler")

    async def _run(self) -> None:
        self._full = True
        self._forget_placer()
        watcher: asyncio.Task[None] | None = None
        if self.events is not None:
            watcher = asyncio.get_running_loop().create_task(
                self._watch(self.events.subscribe(("vm",))), name="scheduler-events")
        try:
            await self._run_passes()
        finally:
            if watcher is not None:
                watcher.cancel()
            self._forget_placer()

    def _forget_placer(self) -> None:
        self._placer = None
        self._stale = True
        self._held = {}

    async def _watch(self, subscription: Subscription) -> None:
        """Follow committed VM changes: one holding other capacity than the kept
        placer counts makes it stale (see the module doc)."""
        try:
            while True:
                change = await subscription.get()
                if change is RESYNC:
                    self._unsure = True
                else:
                    assert isinstance(change, Change)
                    self._observe(change)
        except SubscriptionClosed:
            self._stale = True
        finally:
            subscription.close()

    def _observe(self, change: Change) -> None:
        data = change.data
        if data.get("state") not in _HOLDING:
            # Capacity freed: the life-cycle manager wakes a full pass for it.
            self._held.pop(change.object_id, None)
            return
        cpu, memory, host_id = data.get("cpu"), data.get("memory"), data.get("host_id")
        holds = (host_id if isinstance(host_id, int) else -1,
                 cpu_share(cpu) if isinstance(cpu, (int, float)) else -1,
                 memory * 1024 if isinstance(memory, int) else -1)
        if self._held.get(change.object_id) != holds:
            self._held[change.object_id] = holds
            self._stale = True

    async def _run_passes(self) -> None:
        backoff = StoreBackoff("scheduling", log)
        while not self._stopped:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.interval)
                periodic = False
            except TimeoutError:
                periodic = True
            if self._stopped:
                return
            self._wake.clear()
            try:
                with metrics.SCHEDULER_PASS_SECONDS.time():
                    await self.pass_once(full=self._full or periodic)
                backoff.succeeded()
            except StoreUnavailableError as exc:
                self._full = True
                await backoff.wait(exc)
                self._wake.set()
            except Exception:
                log.exception("scheduler pass failed")
                await asyncio.sleep(0.5)

    async def pass_once(self, *, full: bool = True) -> int:
        """Place what can be placed now; returns how many VMs were dispatched.

        A full pass considers every pending VM; otherwise only those created
        since the last pass. Either reads at most ``MAX_VM`` of them; a pass that
        read that many is followed at once by one that goes on after the last it read.
        """
        self.passes += 1
        limit = self.settings.max_vm or None
        first_id = None if full else self._seen_up_to + 1
        woken = self._full
        if not full and self._read_up_to is not None:
            first_id = min(self._seen_up_to, self._read_up_to) + 1
        if full:
            self._full = False
        recall = full and self.recaller.due(time.time())

        def read(connection: Connection) -> _Snapshot:
            pending = vm_pool.list_vms(connection, states=[VmState.PENDING], limit=limit,
                                       with_history=False, first_id=first_id)
            moving = ([vm for vm in vm_pool.list_rescheduled(connection)
                       if vm.position == lifecycle.RUNNING] if full else [])
            # A recall needs every host's room (a placer built from the store): only
            # worth it when a cloud VM could come home (at 10,000 local hosts the
            # recall's look every few seconds was most of an idle daemon's work).
            recalling = recall and self._host_views(connection, False).mixed
            if not pending and not moving and not recalling:
                if not full:
                    return _Snapshot()
                cloud = [host.id for host in self._host_views(connection, False).cloud]
                return _Snapshot(cloud_hosts=cloud)
            skipped = backoffs.skipped_hosts(connection, time.time())
            parked = {vm.id: driver for vm in pending
                      if (driver := parked_driver(connection, vm)) is not None}
            # Listing every VM of every host costs a scan of the pool: only
            # pay for it when some REQUIREMENTS mention CURRENT_VMS.
            with_vms = any(
                (requirements := requirements_of(vm.user_template)) is not None
                and "CURRENT_VMS" in requirements.variables for vm in [*pending, *moving])
            views = self._host_views(connection, with_vms)
            hosts, cloud_hosts = views.schedulable, views.cloud
            active = cooloffs.active(connection, time.time())
            basis = (self._hosts.generation,
                     tuple((cooloff.host_id, cooloff.instance_type) for cooloff in active))
            kept = self._placer
            if not with_vms and not stale and kept is not None and basis == self._basis and (
                    not check or not _drifted(kept, vm_pool.host_usage(connection))):
                snapshot = self._snapshot(connection, kept.hosts, views, pending, moving,
                                          parked, skipped, kept, basis)
                snapshot.recall, snapshot.checked = recalling, check
                return snapshot
            held = vm_pool.held_capacity(connection)
            usage = vm_pool.usage_of(held)
            cloud_ids = {host.id for host in cloud_hosts}
            sites = sites_by_type(cloud_hosts)
            cooled: dict[int, set[str]] = {}
            for cooloff in active:
                cooled.setdefault(cooloff.host_id, set()).add(cooloff.instance_type)
            candidates = []
            for host in hosts:
                slots = None
                if host.id in cloud_ids and capacity.ATTRIBUTE in host.template:
                    placed = vm_pool.list_vms(connection, host_id=host.id, with_history=False,
                                              states=CAPACITY_HOLDING_STATES)
                    slots = count_slots(host, placed, sites)
                candidates.append(host_candidate(host, slots, usage.get(host.id, (0, 0, 0)),
                                                 frozenset(cooled.get(host.id, ()))))
            snapshot = self._snapshot(connection, candidates, views, pending, moving, parked,
                                      skipped, None, () if with_vms else basis)
            snapshot.held, snapshot.recall = held, recalling
            return snapshot

        # Changes seen from now on are after what the read below may build from.
        began = time.monotonic()
        stale = woken or self._stale
        check = full or self._unsure or began - self._checked > RECONCILE_SECONDS
        unsure = self._unsure
        self._stale = self._unsure = False
        snapshot = await self.db.read(read)
        if snapshot.checked:
            self.checks += 1
            self._checked = began
        if snapshot.pending:
            self._seen_up_to = max(self._seen_up_to, snapshot.pending[-1].id)
        if limit is not None and len(snapshot.pending) >= limit:
            # MAX_VM left pending VMs unread: the next pass reads those after these at
            # once (their creations' wake-ups may all have come before this pass).
            self._read_up_to = snapshot.pending[-1].id
            self._wake.set()
        else:
            self._read_up_to = None

        def excluded(vm: VmRecord) -> frozenset[int]:
            """Backed-off hosts; for parked and moving VMs also hosts of another driver,
            and a moving VM's own host."""
            skip = set(snapshot.skipped.get(vm.id, ()))
            driver = snapshot.drivers.get(vm.id)
            if driver is not None:
                skip.update(host_id for host_id, name in snapshot.host_drivers.items()
                            if name != driver)
            if vm.state is VmState.ACTIVE and vm.host_id is not None:
                skip.add(vm.host_id)
            return frozenset(skip)

        placer = snapshot.placer
        if placer is None and snapshot.pending:
            placer = Placer(snapshot.hosts, default_rank=parse_rank(self.settings.default_rank),
                            cost_order=self.settings.cost_order)
            # Kept when built from every capacity-holding VM and someone tells us of others'.
            keep = bool(snapshot.basis) and self.events is not None
            self._placer, self._basis = (placer, snapshot.basis) if keep else (None, ())
            self._held = snapshot.held if keep else {}
            self._checked = began
            self.rebuilds += 1
        elif placer is None:
            # Nothing was built or checked: what was stale or unsure still is.
            self._stale = self._stale or stale
            self._unsure = self._unsure or unsure
        placed = await self._place(placer, snapshot.pending, excluded, full=full)
        if snapshot.moving:
            self._stale = True  # moves take capacity outside the placer's passes
            await self._move(snapshot.hosts, snapshot.moving, excluded)
        if full:
            await self.reaper.run(snapshot.cloud_hosts)
            await self.recaller.settle()
            if snapshot.recall and snapshot.hosts:
                self._stale = True
                await self.recaller.recall(snapshot.hosts, parse_rank(self.settings.default_rank))
        return placed

    def _snapshot(self, connection: Connection, candidates: list[HostCandidate],
                  views: _HostViews, pending: list[VmRecord], moving: list[VmRecord],
                  parked: dict[int, str], skipped: dict[int, dict[int, float]],
                  placer: Placer | None, basis: tuple[object, ...]) -> _Snapshot:
        host_drivers = views.drivers
        for vm in moving:
            if vm.host_id is not None and vm.host_id in host_drivers:
                parked[vm.id] = host_drivers[vm.host_id]
            elif vm.host_id is not None:  # its host is disabled: not in the candidates
                parked[vm.id] = host_pool.get_host(connection, vm.host_id).vm_mad
        return _Snapshot(candidates, pending, moving, parked, host_drivers,
                         [host.id for host in views.cloud], skipped, placer, basis)

    async def _place(self, placer: Placer | None, pending: list[VmRecord],
                     excluded: Callable[[VmRecord], frozenset[int]], *, full: bool) -> int:
        if not pending or placer is None:
            return 0
        now = time.monotonic()
        demands = [self._demand(vm, excluded(vm), now) for vm in pending]
        shapes = {demand.id: _shape(vm, demand) for vm, demand in zip(pending, demands,
                                                                       strict=True)}
        result = placer.place(demands, max_dispatch=self.settings.max_dispatch,
                              max_host=self.settings.max_host)
        metrics.scheduler_pass(result.assignments, result.waiting, full=full)
        sizes = {demand.id: (demand.cpu, demand.memory) for demand in demands}
        for vm_id, host_id in result.assignments:  # before their changes are published
            self._held[vm_id] = (host_id, *sizes[vm_id])
        outcomes = await asyncio.gather(
            *(self.lifecycle.deploy(vm_id, host_id, scheduled=True,
                                    reason=result.reasons.get(vm_id))
              for vm_id, host_id in result.assignments),
            return_exceptions=True,
        )
        refused: list[tuple[int, int]] = []
        for (vm_id, host_id), outcome in zip(result.assignments, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                # The placer counted capacity the VM does not hold: build it again.
                self._held.pop(vm_id, None)
                self._stale = True
            if isinstance(outcome, QuotaError):
                # The owner's quota (or budget) for that host is used up: try other sites.
                refused.append((vm_id, host_id))
                if len(self._quota_refusals) > 10_000:  # VMs terminated while waiting
                    self._quota_refusals.clear()
                    self._refusal_kinds.clear()
                self._quota_refusals[vm_id] = outcome.message
                self._refusal_kinds.setdefault(vm_id, {})[host_id] = (
                    reasons.BUDGET if outcome.budget else reasons.QUOTA)
                if outcome.budget:
                    self._remember_budget(shapes[vm_id], host_id, outcome.message)
                self.wake()
                continue
            self._quota_refusals.pop(vm_id, None)
            self._refusal_kinds.pop(vm_id, None)
            if isinstance(outcome, CloudburstError):
                log.info("placing VM %d on host %d skipped: %s", vm_id, host_id, outcome)
            elif isinstance(outcome, BaseException):
                log.error("placing VM %d on host %d failed", vm_id, host_id, exc_info=outcome)
        if refused:
            await self.db.write(lambda connection: _skip_refused(connection, refused))
        waiting = result.waiting | {vm.id: self._quota_refusals[vm.id] for vm in pending
                                    if vm.id in self._quota_refusals}
        messages = {vm.id: waiting[vm.id] for vm in pending
                    if vm.id in waiting and vm.sched_message != waiting[vm.id]}
        placements = self._waiting_reasons(pending, waiting, result.reasons)
        if messages or placements:
            await self.db.write(lambda connection: vm_pool.set_sched_messages(
                connection, messages, placements))
        return len(result.assignments)

    def _demand(self, vm: VmRecord, excluded: frozenset[int], now: float) -> VmDemand:
        """The VM's demand; hosts a quota or budget refused it on are named as such, and
        sites a budget refused for another VM of the same owner and shape are skipped."""
        demand = vm_demand(vm, excluded)
        kinds = dict(self._refusal_kinds.get(vm.id, {}))
        budget = self._budget_refused_hosts(_shape(vm, demand), now)
        if budget:
            excluded = excluded | frozenset(budget)
            kinds.update(dict.fromkeys(budget, reasons.BUDGET))
            self._quota_refusals.setdefault(vm.id, next(iter(budget.values())))
        if not kinds or not excluded:
            return demand
        named = tuple(sorted((host, kind) for host, kind in kinds.items() if host in excluded))
        return dataclasses.replace(demand, excluded_hosts=excluded, excluded_kinds=named)

    def _remember_budget(self, shape: tuple[object, ...], host_id: int, message: str) -> None:
        """A budget refused a VM of ``shape`` on ``host_id``: the owner's other VMs of
        that shape (same price there) skip it for a while, so an owner over budget
        costs one refused deploy per site and shape a minute, not one per VM."""
        if len(self._budget_refused) > 10_000:
            self._budget_refused.clear()
        self._budget_refused.setdefault(shape, {})[host_id] = (
            time.monotonic() + QUOTA_RETRY_SECONDS, message)

    def _budget_refused_hosts(self, shape: tuple[object, ...], now: float) -> dict[int, str]:
        refused = self._budget_refused.get(shape)
        if not refused:
            return {}
        active = {host: entry for host, entry in refused.items() if entry[0] > now}
        if len(active) != len(refused):
            self._budget_refused[shape] = active
        return {host: message for host, (_, message) in active.items()}

    @staticmethod
    def _waiting_reasons(pending: list[VmRecord], waiting: dict[int, str],
                         found: dict[int, PlacementReason]) -> dict[int, str]:
        """The placement reasons (JSON) of waiting VMs whose stored one changed.

        VMs of one group share one reason object, so each is serialised once.
        """
        texts: dict[int, str] = {}
        changed: dict[int, str] = {}
        for vm in pending:
            reason = found.get(vm.id)
            if reason is None or vm.id not in waiting:
                continue
            if reason.message != waiting[vm.id]:  # a quota refused the host it chose
                reason = dataclasses.replace(reason, message=waiting[vm.id], host_id=None)
            text = texts.get(id(reason))
            if text is None:
                text = texts[id(reason)] = reason.to_json()
            if vm.placement != text:
                changed[vm.id] = text
        return changed

    async def _move(self, hosts: list[HostCandidate], moving: list[VmRecord],
                    excluded: Callable[[VmRecord], frozenset[int]]) -> None:
        """Migrate rescheduled VMs to the best other host of their driver, if there is one.

        Live when the driver can, else cold; a driver that can do neither
        leaves the VM where it is, saying why in its scheduler message.
        """
        result = place([vm_demand(vm, excluded(vm)) for vm in moving], hosts,
                       default_rank=parse_rank(self.settings.default_rank))
        messages: dict[int, str] = {}
        for vm_id, host_id in result.assignments:
            try:
                await self.lifecycle.migrate_rescheduled(vm_id, host_id)
            except CloudburstError as exc:
                log.info("rescheduling VM %d to host %d skipped: %s", vm_id, host_id, exc)
                messages[vm_id] = f"Cannot reschedule: {exc}"
        if messages:
            await self.db.write(lambda connection: vm_pool.set_sched_messages(connection,
                                                                                messages))

    def _host_views(self, connection: Connection, with_vms: bool) -> _HostViews:
        """The hosts as this pass looks at them; with ``with_vms`` each with the ids of
        the VMs it holds. Otherwise kept while no host changed: made from every host,
        they cost O(hosts) per pass, more than a pass over a kept placer."""
        if with_vms:
            return _HostViews.of(host_pool.list_hosts(connection, with_vms=True))
        every_host = self._hosts.refresh(connection)
        if self._views is None or self._views[0] != self._hosts.generation:
            self._views = (self._hosts.generation, _HostViews.of(every_host))
        return self._views[1]


def _drifted(placer: Placer, usage: dict[int, tuple[int, int, int]]) -> bool:
    """Whether the store's ``usage`` (:func:`~cloudburst.store.vm_pool.host_usage`) of
    any of ``placer``'s hosts differs from what the placer counts there.

    Counts equal to the store's are all a placement needs: the placer can then
    overcommit no host, and finds the room the store shows.
    """
    for host in placer.hosts:
        if usage.get(host.id, (0, 0, 0)) != (host.cpu_usage, host.mem_usage, host.running_vms):
            return True
    return False


def _skip_refused(connection: Connection, refused: list[tuple[int, int]]) -> None:
    """Keep each (VM, host) a quota refused apart for :data:`QUOTA_RETRY_SECONDS`."""
    now = time.time()
    for vm_id, host_id in refused:
        backoffs.record(connection, vm_id, backoffs.DEPLOY, host_id,
                        tries=backoffs.tries(connection, vm_id, backoffs.DEPLOY),
                        until=now + QUOTA_RETRY_SECONDS)
    backoffs.purge(connection, now)
