"""Pure placement: which pending VM goes to which host, with no I/O.

One pass takes a snapshot of schedulable hosts and pending VMs and returns
assignments plus, for every VM left waiting, the reason why. For each VM:

1. **filter** hosts: the automatic public-cloud rule (a cloud host only takes a
   VM with a section of its ``HYPERVISOR`` type, and, when several sites share a
   type, a section whose ``CLOUD`` names it or that names no site), then the
   VM's ``REQUIREMENTS``;
2. **capacity**: ``MAX_CPU - CPU_USAGE >= cpu`` and ``MAX_MEM - MEM_USAGE >= mem``,
   counting what this pass already assigned, plus per-host slot limits
   (e.g. at most 4 ``m1.small`` instances on an EC2 site: a site that lists
   such limits is sized by them alone);
3. **rank**: local hosts (already paid for) before cloud hosts, then, under
   the default policy, cloud sites by the hourly price of the instance the VM
   would get there (unknown prices last), then ``RANK`` highest first, then the
   lowest host id; a VM's own ``RANK`` (or ``cost_order=False``) puts ``RANK``
   before price;
4. **pick** the first host that fits and has received fewer than ``MAX_HOST``
   VMs this pass.

VMs with the same demands share one filtered, ranked host heap per pass, so a
pass costs about O(hosts x distinct demands + VMs x log hosts) rather than
O(hosts x VMs): 10,000 identical VMs over 2,500 hosts place in well under a
second.

Every VM gets a :class:`~cloudburst.model.reasons.PlacementReason`: the hosts
considered, refusals counted per kind (filters when its group is built,
capacity as hosts fill up) with a few names each, and the winner's tier,
price and score. Reasons are shared by the VMs of a group until its refusals
change, so explaining costs O(groups + hosts), not O(hosts x VMs).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cloudburst.model import reasons
from cloudburst.model.capacity import capacity_key
from cloudburst.model.cloud_sections import CloudSection, section_for
from cloudburst.model.offers import Offer, instance_type_for
from cloudburst.model.reasons import PlacementReason
from cloudburst.template.expr import Rank, Requirements

#: Host variables whose value changes as this pass assigns VMs.
DYNAMIC_VARIABLES = frozenset({"RUNNING_VMS", "CPU_USAGE", "MEM_USAGE", "CURRENT_VMS"})


@dataclass(slots=True)
class HostCandidate:
    """A schedulable host as the pass sees it (mutated as VMs are assigned)."""

    id: int
    name: str
    is_cloud: bool
    hypervisor: str
    max_cpu: int
    max_mem: int
    cpu_usage: int
    mem_usage: int
    running_vms: int
    #: Reads any host variable REQUIREMENTS/RANK may use (all its values;
    #: empty when missing). Consulted lazily: most expressions read few names.
    base_lookup: Callable[[str], Sequence[str]]
    #: Per-instance-type limits of a cloud site (``{"m1.small": 4}``) and current
    #: use. A site with limits is sized by them alone, not by CPU and memory.
    slot_limits: dict[str, int] = field(default_factory=dict)
    slot_usage: dict[str, int] = field(default_factory=dict)
    #: The instance type of a VM whose section names none (and the site lists no offers).
    default_slot: str | None = None
    #: What the site offers (``INSTANCE_TYPES``): a VM whose section names no
    #: type runs as the cheapest offer that fits it (:mod:`cloudburst.model.offers`).
    offers: tuple[Offer, ...] = ()
    #: Instance types the site is cooling off for after refusing them for
    #: capacity (``""``: every VM); see :mod:`cloudburst.store.cooloffs`.
    cooled_types: frozenset[str] = frozenset()
    #: The site's hourly price for an instance type (``None``: unknown); local
    #: hosts rank as free whatever it says.
    price_of: Callable[[str | None], float | None] = lambda _instance_type: None
    assigned_this_pass: int = 0
    #: Variables changed by this pass's assignments; they shadow ``base_lookup``.
    overrides: dict[str, list[str]] = field(default_factory=dict)

    def lookup(self, name: str) -> Sequence[str]:
        key = name.upper()
        found = self.overrides.get(key)
        return found if found is not None else self.base_lookup(key)

    def fits(self, cpu: int, memory: int, slot: str | None) -> bool:
        if self.slot_limits:
            # Unknown types get no room: the site only runs the types it lists.
            return slot is not None and self.slot_usage.get(slot, 0) < self.slot_limits.get(
                slot, 0)
        return self.max_cpu - self.cpu_usage >= cpu and self.max_mem - self.mem_usage >= memory

    def take(self, vm_id: int, cpu: int, memory: int, slot: str | None) -> None:
        self.cpu_usage += cpu
        self.mem_usage += memory
        self.running_vms += 1
        self.assigned_this_pass += 1
        if slot is not None:
            self.slot_usage[slot] = self.slot_usage.get(slot, 0) + 1
        self.overrides["CPU_USAGE"] = [str(self.cpu_usage)]
        self.overrides["MEM_USAGE"] = [str(self.mem_usage)]
        self.overrides["RUNNING_VMS"] = [str(self.running_vms)]
        current = self.overrides.get("CURRENT_VMS")
        if current is None:
            current = self.overrides["CURRENT_VMS"] = list(self.base_lookup("CURRENT_VMS"))
        current.append(str(vm_id))


@dataclass(frozen=True, slots=True)
class VmDemand:
    """What a pending VM needs.

    Attributes:
        id: the VM id.
        cpu: percent of a core (``CPU=0.5`` is 50).
        memory: KB.
        vcpu: virtual CPUs (``VCPU``, else ``CPU`` rounded up), for choosing an instance type.
        requirements: compiled ``REQUIREMENTS`` (``None``: any host).
        rank: compiled ``RANK`` (``None``: the default policy).
        clouds: the VM's cloud sections; empty means local hosts only.
        excluded_hosts: hosts not to use (e.g. a site that just reported no capacity).
        excluded_kinds: why some excluded hosts are (``(host id, refusal kind)``,
            e.g. :data:`~cloudburst.model.reasons.BUDGET`); others count as
            :data:`~cloudburst.model.reasons.EXCLUDED`.
    """

    id: int
    cpu: int
    memory: int
    requirements: Requirements | None
    rank: Rank | None
    clouds: tuple[CloudSection, ...] = ()
    excluded_hosts: frozenset[int] = frozenset()
    vcpu: int = 1
    excluded_kinds: tuple[tuple[int, str], ...] = ()

    def group_key(self) -> tuple[object, ...]:
        return (
            self.cpu, self.memory, self.vcpu,
            self.requirements.source if self.requirements else None,
            self.rank.source if self.rank else None,
            self.clouds, self.excluded_hosts, self.excluded_kinds,
        )

    def exclusion_kind(self, host_id: int) -> str:
        for excluded, kind in self.excluded_kinds:
            if excluded == host_id:
                return kind
        return reasons.EXCLUDED


@dataclass(frozen=True, slots=True)
class PassResult:
    """Assignments ``(vm_id, host_id)`` in dispatch order, waiting messages
    (``SCHED_MESSAGE``), and the reason of every VM, placed or waiting."""

    assignments: list[tuple[int, int]]
    waiting: dict[int, str]
    reasons: dict[int, PlacementReason] = field(default_factory=dict)


def matching_section(vm: VmDemand, host: HostCandidate,
                     sites_of_type: Mapping[str, int]) -> CloudSection | None:
    """The VM's section cloud ``host`` would use (:func:`cloudburst.model.cloud_sections.
    section_for`, the rule the deploy follows too), or ``None`` if none applies there."""
    return section_for(vm.clouds, host.name, host.hypervisor,
                       sites_of_type.get(host.hypervisor.lower(), 0))


def cloud_accepts(vm: VmDemand, host: HostCandidate, sites_of_type: Mapping[str, int]) -> bool:
    """The automatic public-cloud rule.

    A local host takes any VM (a template may carry a local part and cloud
    sections); a cloud host only a VM with a section for it.
    """
    return not host.is_cloud or matching_section(vm, host, sites_of_type) is not None


def instance_type_of(vm: VmDemand, host: HostCandidate,
                     sites_of_type: Mapping[str, int]) -> str | None:
    """The instance type ``vm`` would run as on cloud ``host``: its section's
    ``INSTANCETYPE``, else the cheapest offer of the site that fits it, else the
    site's default (:func:`cloudburst.model.offers.instance_type_for`, the rule
    the drivers follow too). ``None``: a local host, no section, or nothing fits.
    """
    if not host.is_cloud:
        return None
    section = matching_section(vm, host, sites_of_type)
    if section is None:
        return None
    return instance_type_for(section.instance_type, host.offers, vcpu=vm.vcpu,
                             memory_mb=vm.memory // 1024, default=host.default_slot)


def slot_of(vm: VmDemand, host: HostCandidate, sites_of_type: Mapping[str, int]) -> str | None:
    """The limited slot ``vm`` would take on ``host``: the :func:`~cloudburst.model.capacity.
    capacity_key` of the instance type it would run as (``None`` on hosts without limits)."""
    if not host.slot_limits:
        return None
    kind = instance_type_of(vm, host, sites_of_type)
    return None if kind is None else capacity_key(kind)


def hourly_price(vm: VmDemand, host: HostCandidate,
                 sites_of_type: Mapping[str, int]) -> float | None:
    """What ``vm`` would cost per hour on cloud ``host`` (:func:`cloudburst.model.cost.
    site_price`: the site's offers, else its ``PRICE_PER_HOUR``); ``None`` on local
    hosts or when the type has no known price."""
    if not host.is_cloud:
        return None
    return host.price_of(instance_type_of(vm, host, sites_of_type))


def _cooling_off(vm: VmDemand, host: HostCandidate, sites_of_type: Mapping[str, int]) -> bool:
    """Whether ``host`` is in a capacity cool-off for the type ``vm`` would run as."""
    if not host.cooled_types:
        return False
    return "" in host.cooled_types or instance_type_of(vm, host, sites_of_type) in host.cooled_types


class _Tally:
    """Refusals of one group: counts per kind and the first few host names."""

    __slots__ = ("_frozen", "counts", "examples")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}
        self._frozen: tuple[reasons.Refused, ...] | None = ()

    def add(self, kind: str, host: HostCandidate) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        named = self.examples.setdefault(kind, [])
        if len(named) < reasons.EXAMPLES:
            named.append(host.name)
        self._frozen = None

    def frozen(self) -> tuple[reasons.Refused, ...]:
        """The refusals so far, shared by every reason built until the next one."""
        if self._frozen is None:
            self._frozen = tuple(
                reasons.Refused(kind, self.counts[kind], tuple(self.examples[kind]))
                for kind in reasons.KINDS if kind in self.counts)
        return self._frozen


#: A heap entry: (tier, first key, second key, host id); the keys are price and
#: negated score, in the order the VM's policy gives them.
_Entry = tuple[int, float, float, int]


class _Group:
    """The ranked hosts for one kind of demand during a pass, and its refusals."""

    def __init__(self, heap: list[_Entry], rank: Rank, dynamic: bool, price_first: bool,
                 sites_of_type: Mapping[str, int], tally: _Tally, considered: int) -> None:
        self.heap = heap
        self.rank = rank
        self.dynamic = dynamic
        self.price_first = price_first
        self.sites_of_type = sites_of_type
        self.tally = tally
        self.considered = considered
        self.order = "tier, price, RANK" if price_first else "tier, RANK, price"
        self._waiting: dict[str, PlacementReason] = {}

    def waiting_reason(self, message: str) -> PlacementReason:
        """The reason of a VM of this group left waiting: one object for all of them
        while the refusals do not change (the scheduler serialises each once)."""
        refused = self.tally.frozen()
        reason = self._waiting.get(message)
        if reason is None or reason.refused is not refused:
            reason = self._waiting[message] = PlacementReason(message, self.considered, refused)
        return reason


def _score(rank: Rank, host: HostCandidate) -> float:
    return rank.evaluate(host.lookup)


def place(
    vms: Sequence[VmDemand],
    hosts: Sequence[HostCandidate],
    *,
    default_rank: Rank,
    max_dispatch: int = 0,
    max_host: int = 0,
    cost_order: bool = True,
) -> PassResult:
    """Assign pending VMs (in the given order) to hosts; see the module doc.

    ``cost_order`` (the default policy) orders cloud sites by the price of the
    instance the VM would get there before ``RANK``; a VM with its own ``RANK``,
    or ``cost_order=False``, orders by ``RANK`` first and price among equals.
    """
    return Placer(hosts, default_rank=default_rank, cost_order=cost_order).place(
        vms, max_dispatch=max_dispatch, max_host=max_host)


class Placer:
    """Placement passes over one set of host candidates, keeping what a pass
    learnt (the hosts' usage, each group's filtered and ranked heap, refusals)
    for the next one.

    A pass then costs O(VMs x log hosts) plus O(hosts) per new kind of demand,
    instead of O(hosts) to build every candidate and heap again. It stays exact
    only while capacity can only shrink: usage grows through :meth:`place` (and
    :meth:`HostCandidate.take`), a host dropped from a heap because the VM did
    not fit is never offered to that group again. Whoever frees capacity, or
    changes a host, must make a new one (:mod:`cloudburst.daemon.scheduler`
    does, from the store).
    """

    def __init__(self, hosts: Sequence[HostCandidate], *, default_rank: Rank,
                 cost_order: bool = True) -> None:
        self.hosts = list(hosts)
        self.by_id = {host.id: host for host in self.hosts}
        self.default_rank = default_rank
        self.cost_order = cost_order
        self.sites_of_type: dict[str, int] = {}
        for host in self.hosts:
            if host.is_cloud:
                kind = host.hypervisor.lower()
                self.sites_of_type[kind] = self.sites_of_type.get(kind, 0) + 1
        self._groups: dict[tuple[object, ...], _Group | PlacementReason] = {}

    def place(self, vms: Sequence[VmDemand], *, max_dispatch: int = 0,
              max_host: int = 0) -> PassResult:
        """One pass: assign ``vms`` (in this order) to the hosts; see :func:`place`."""
        for host in self.hosts:
            host.assigned_this_pass = 0
        assignments: list[tuple[int, int]] = []
        waiting: dict[int, str] = {}
        why: dict[int, PlacementReason] = {}
        held: PlacementReason | None = None
        for vm in vms:
            if max_dispatch and len(assignments) >= max_dispatch:
                if held is None:
                    held = PlacementReason(
                        "Waiting: dispatch limit of this pass (MAX_DISPATCH) reached",
                        considered=len(self.hosts))
                waiting[vm.id] = held.message
                why[vm.id] = held
                continue
            key = vm.group_key()
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _build_group(
                    vm, self.hosts, self.sites_of_type, self.default_rank, self.cost_order)
            if isinstance(group, PlacementReason):
                waiting[vm.id] = group.message
                why[vm.id] = group
                continue
            picked, held_back = _pick(vm, group, self.by_id, max_host)
            if picked is None:
                message = ("Waiting: hosts with room already received MAX_HOST VMs in this "
                           "pass" if held_back else "No host with enough capacity to deploy "
                           "the VM")
                waiting[vm.id] = message
                why[vm.id] = group.waiting_reason(message)
                continue
            host, price, score = picked
            assignments.append((vm.id, host.id))
            why[vm.id] = PlacementReason(
                "", group.considered, group.tally.frozen(), host_id=host.id, host=host.name,
                tier=reasons.CLOUD_TIER if host.is_cloud else reasons.LOCAL_TIER,
                price=price, rank=score, order=group.order)
        return PassResult(assignments, waiting, why)


def _refusal(vm: VmDemand, host: HostCandidate, sites_of_type: Mapping[str, int]) -> str | None:
    """Why the filter stage refuses ``host`` for ``vm`` (``None``: it passes)."""
    if host.id in vm.excluded_hosts:
        return vm.exclusion_kind(host.id)
    if _cooling_off(vm, host, sites_of_type):
        return reasons.COOLOFF
    if not cloud_accepts(vm, host, sites_of_type):
        return reasons.CLOUD_RULE
    if vm.requirements is not None and not vm.requirements.evaluate(host.lookup):
        return reasons.REQUIREMENTS
    return None


def _empty_message(vm: VmDemand, hosts: Sequence[HostCandidate], tally: _Tally) -> str:
    """SCHED_MESSAGE of a VM no host passes the filters for."""
    if not hosts:
        return "No hosts enabled to run VMs"
    counts = tally.counts
    if not counts.get(reasons.CLOUD_RULE) and not counts.get(reasons.REQUIREMENTS):
        return "Waiting: every usable host recently refused the VM"
    if not counts.get(reasons.REQUIREMENTS):
        if vm.clouds:
            types = ", ".join(sorted({section.type for section in vm.clouds}))
            return (f"No host accepts the VM: it has no section for any available cloud "
                    f"site of type {types}, and no local host is available")
        return "No local host is available and the VM has no cloud section"
    assert vm.requirements is not None
    return f"No host meets REQUIREMENTS: {vm.requirements.source}"


def _price_key(vm: VmDemand, host: HostCandidate, sites_of_type: Mapping[str, int]) -> float:
    """Local hosts are already paid for (0); a cloud site of unknown price goes last."""
    if not host.is_cloud:
        return 0.0
    price = hourly_price(vm, host, sites_of_type)
    return math.inf if price is None else price


def _build_group(vm: VmDemand, hosts: Sequence[HostCandidate], sites_of_type: Mapping[str, int],
                 default_rank: Rank, cost_order: bool) -> _Group | PlacementReason:
    tally = _Tally()
    matching: list[HostCandidate] = []
    for host in hosts:
        refusal = _refusal(vm, host, sites_of_type)
        if refusal is None:
            matching.append(host)
        else:
            tally.add(refusal, host)
    if not matching:
        return PlacementReason(_empty_message(vm, hosts, tally), len(hosts), tally.frozen())
    rank = vm.rank or default_rank
    price_first = cost_order and vm.rank is None
    heap: list[_Entry] = []
    for host in matching:
        price = _price_key(vm, host, sites_of_type)
        score = -_score(rank, host)
        heap.append((1 if host.is_cloud else 0, price, score, host.id) if price_first
                    else (1 if host.is_cloud else 0, score, price, host.id))
    heapq.heapify(heap)
    dynamic = bool(rank.variables & DYNAMIC_VARIABLES)
    return _Group(heap, rank, dynamic, price_first, sites_of_type, tally, len(hosts))


def _pick(vm: VmDemand, group: _Group, by_id: Mapping[int, HostCandidate], max_host: int
          ) -> tuple[tuple[HostCandidate, float | None, float] | None, bool]:
    """The host for ``vm`` with its price and score (or ``None``), and whether
    ``MAX_HOST`` held one back."""
    skipped: list[_Entry] = []
    chosen: tuple[HostCandidate, float | None, float] | None = None
    while group.heap:
        entry = heapq.heappop(group.heap)
        host = by_id[entry[3]]
        slot = slot_of(vm, host, group.sites_of_type)
        if not host.fits(vm.cpu, vm.memory, slot):
            # Capacity only shrinks while a Placer lives: drop it for this group.
            group.tally.add(reasons.INSTANCE_TYPE if host.slot_limits else reasons.CAPACITY,
                            host)
            continue
        if max_host and host.assigned_this_pass >= max_host:
            skipped.append(entry)
            continue
        tier, first, second, _ = entry
        price, score = (first, second) if group.price_first else (second, first)
        chosen = (host, price if host.is_cloud and math.isfinite(price) else None, -score)
        host.take(vm.id, vm.cpu, vm.memory, slot)
        if group.dynamic:
            score = -_score(group.rank, host)
        heapq.heappush(group.heap, (tier, price, score, host.id) if group.price_first
                       else (tier, score, price, host.id))
        break
    for entry in skipped:
        heapq.heappush(group.heap, entry)
    return chosen, bool(skipped)
