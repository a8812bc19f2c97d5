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
3. **rank**: local hosts before cloud hosts, then the VM's ``RANK`` (or the
   default policy) highest first, then the lowest host id;
4. **pick** the first host that fits and has received fewer than ``MAX_HOST``
   VMs this pass.

VMs with the same demands share one filtered, ranked host heap per pass, so a
pass costs about O(hosts x distinct demands + VMs x log hosts) rather than
O(hosts x VMs): 10,000 identical VMs over 2,500 hosts place in well under a
second.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cloudburst.model.offers import Offer, instance_type_for, price_of
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
class CloudSection:
    """A VM's section for a cloud type (``PUBLIC_CLOUD`` TYPE, or ``ec2``).

    ``cloud`` names the site it is for (``CLOUD=``/``HOST=``; ``None``: any);
    ``instance_type`` is its ``INSTANCETYPE`` (``None``: the site's default).
    """

    type: str
    cloud: str | None = None
    instance_type: str | None = None


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
    """

    id: int
    cpu: int
    memory: int
    requirements: Requirements | None
    rank: Rank | None
    clouds: tuple[CloudSection, ...] = ()
    excluded_hosts: frozenset[int] = frozenset()
    vcpu: int = 1

    def group_key(self) -> tuple[object, ...]:
        return (
            self.cpu, self.memory, self.vcpu,
            self.requirements.source if self.requirements else None,
            self.rank.source if self.rank else None,
            self.clouds, self.excluded_hosts,
        )


@dataclass(frozen=True, slots=True)
class PassResult:
    """Assignments ``(vm_id, host_id)`` in dispatch order, and waiting reasons."""

    assignments: list[tuple[int, int]]
    waiting: dict[int, str]


def matching_section(vm: VmDemand, host: HostCandidate,
                     sites_of_type: Mapping[str, int]) -> CloudSection | None:
    """The VM's section a cloud host would use, or ``None`` if it has none.

    A section naming this host wins, then a section naming no site; when the
    host is the only site of its type and the VM has a single section of that
    type, its ``CLOUD`` is ignored (as the EC2 seed says). Several sections
    naming other sites are ambiguous: the VM waits, as the driver would
    refuse it.
    """
    hypervisor = host.hypervisor.lower()
    of_type = [section for section in vm.clouds if section.type.lower() == hypervisor]
    for section in of_type:
        if section.cloud is not None and section.cloud.lower() == host.name.lower():
            return section
    for section in of_type:
        if section.cloud is None:
            return section
    if len(of_type) == 1 and sites_of_type.get(hypervisor, 0) <= 1:
        return of_type[0]
    return None


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
    """The limited slot ``vm`` would take on ``host`` (``None`` on hosts without limits)."""
    if not host.slot_limits:
        return None
    return instance_type_of(vm, host, sites_of_type)


def hourly_price(vm: VmDemand, host: HostCandidate,
                 sites_of_type: Mapping[str, int]) -> float | None:
    """What ``vm`` would cost per hour (US$, on-demand) on cloud ``host``, from the
    site's offers; ``None`` on local hosts or when the type has no known price."""
    return price_of(host.offers, instance_type_of(vm, host, sites_of_type))


def _cooling_off(vm: VmDemand, host: HostCandidate, sites_of_type: Mapping[str, int]) -> bool:
    """Whether ``host`` is in a capacity cool-off for the type ``vm`` would run as."""
    if not host.cooled_types:
        return False
    return "" in host.cooled_types or instance_type_of(vm, host, sites_of_type) in host.cooled_types


class _Group:
    """The ranked hosts for one kind of demand during a pass."""

    def __init__(self, heap: list[tuple[int, float, int]], rank: Rank | None,
                 default_rank: Rank, dynamic: bool, sites_of_type: Mapping[str, int]) -> None:
        self.heap = heap
        self.rank = rank or default_rank
        self.dynamic = dynamic
        self.sites_of_type = sites_of_type


def _score(rank: Rank, host: HostCandidate) -> float:
    return rank.evaluate(host.lookup)


def place(
    vms: Sequence[VmDemand],
    hosts: Sequence[HostCandidate],
    *,
    default_rank: Rank,
    max_dispatch: int = 0,
    max_host: int = 0,
) -> PassResult:
    """Assign pending VMs (in the given order) to hosts; see the module doc."""
    by_id = {host.id: host for host in hosts}
    sites_of_type: dict[str, int] = {}
    for host in hosts:
        if host.is_cloud:
            sites_of_type[host.hypervisor.lower()] = sites_of_type.get(host.hypervisor.lower(),
                                                                       0) + 1
    groups: dict[tuple[object, ...], _Group | str] = {}
    assignments: list[tuple[int, int]] = []
    waiting: dict[int, str] = {}
    for vm in vms:
        if max_dispatch and len(assignments) >= max_dispatch:
            waiting[vm.id] = "Waiting: dispatch limit of this pass (MAX_DISPATCH) reached"
            continue
        key = vm.group_key()
        group = groups.get(key)
        if group is None:
            group = _build_group(vm, hosts, sites_of_type, default_rank)
            groups[key] = group
        if isinstance(group, str):
            waiting[vm.id] = group
            continue
        host_id, held_back = _pick(vm, group, by_id, max_host)
        if host_id is None:
            waiting[vm.id] = (
                "Waiting: hosts with room already received MAX_HOST VMs in this pass"
                if held_back else "No host with enough capacity to deploy the VM")
            continue
        assignments.append((vm.id, host_id))
    return PassResult(assignments, waiting)


def _build_group(vm: VmDemand, hosts: Sequence[HostCandidate],
                 sites_of_type: Mapping[str, int], default_rank: Rank) -> _Group | str:
    candidates = [host for host in hosts if host.id not in vm.excluded_hosts
                  and not _cooling_off(vm, host, sites_of_type)]
    if not candidates:
        return "No hosts enabled to run VMs" if not hosts else \
            "Waiting: every usable host recently refused the VM"
    clouds = [host for host in candidates if cloud_accepts(vm, host, sites_of_type)]
    if not clouds:
        if vm.clouds:
            types = ", ".join(sorted({section.type for section in vm.clouds}))
            return (f"No host accepts the VM: it has no section for any available cloud "
                    f"site of type {types}, and no local host is available")
        return "No local host is available and the VM has no cloud section"
    matching = clouds
    if vm.requirements is not None:
        requirements = vm.requirements
        matching = [host for host in clouds if requirements.evaluate(host.lookup)]
        if not matching:
            return f"No host meets REQUIREMENTS: {requirements.source}"
    rank = vm.rank or default_rank
    heap = [(1 if host.is_cloud else 0, -_score(rank, host), host.id) for host in matching]
    heapq.heapify(heap)
    dynamic = bool(rank.variables & DYNAMIC_VARIABLES)
    return _Group(heap, vm.rank, default_rank, dynamic, sites_of_type)


def _pick(vm: VmDemand, group: _Group, by_id: Mapping[int, HostCandidate],
          max_host: int) -> tuple[int | None, bool]:
    """The host for ``vm`` (or ``None``), and whether ``MAX_HOST`` held it back."""
    skipped: list[tuple[int, float, int]] = []
    chosen: HostCandidate | None = None
    while group.heap:
        entry = heapq.heappop(group.heap)
        host = by_id[entry[2]]
        slot = slot_of(vm, host, group.sites_of_type)
        if not host.fits(vm.cpu, vm.memory, slot):
            continue  # capacity only shrinks during a pass: drop it for this group
        if max_host and host.assigned_this_pass >= max_host:
            skipped.append(entry)
            continue
        chosen = host
        host.take(vm.id, vm.cpu, vm.memory, slot)
        tier = entry[0]
        score = -_score(group.rank, host) if group.dynamic else entry[1]
        heapq.heappush(group.heap, (tier, score, host.id))
        break
    for entry in skipped:
        heapq.heappush(group.heap, entry)
    return (None if chosen is None else chosen.id), bool(skipped)
