"""Turn stored records into what :mod:`cloudburst.scheduler.placement` works on.

* A VM's cloud sections: :func:`cloudburst.model.cloud_sections.cloud_sections`.
* Requirements: ``SCHED_REQUIREMENTS`` or ``REQUIREMENTS``; rank:
  ``SCHED_RANK`` or ``RANK``.
* Host variables for expressions: the host template (monitoring and operator
  attributes), the share values under both OpenNebula spellings
  (``FREE_CPU`` and ``FREECPU``, ...), ``NAME``, ``ID``, ``CLUSTER_ID``,
  ``RUNNING_VMS`` and ``CURRENT_VMS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cloudburst.errors import ExpressionError
from cloudburst.model.capacity import capacity_key, limits_of
from cloudburst.model.cloud_sections import cloud_sections
from cloudburst.model.cost import site_price
from cloudburst.model.offers import needed_vcpus, offers_of
from cloudburst.model.records import HostRecord, VmRecord, cpu_share
from cloudburst.scheduler.placement import HostCandidate, VmDemand, slot_of
from cloudburst.template import Template
from cloudburst.template.expr import Rank, Requirements, parse_rank, parse_requirements


def requirements_of(template: Template) -> Requirements | None:
    """The VM's compiled requirements, or ``None`` when it has none.

    Raises:
        ExpressionError: the expression does not parse.
    """
    text = template.get("SCHED_REQUIREMENTS") or template.get("REQUIREMENTS") or ""
    return parse_requirements(text) if text.strip() else None


def rank_of(template: Template) -> Rank | None:
    """The VM's compiled rank, or ``None`` for the default policy."""
    text = template.get("SCHED_RANK") or template.get("RANK") or ""
    return parse_rank(text) if text.strip() else None


def check_expressions(template: Template) -> None:
    """Raise :class:`ExpressionError` naming the attribute if one does not parse."""
    for name in ("SCHED_REQUIREMENTS", "REQUIREMENTS"):
        text = template.get(name)
        if text and text.strip():
            try:
                parse_requirements(text)
            except ExpressionError as exc:
                raise ExpressionError(f"{name}: {exc.message}") from None
    for name in ("SCHED_RANK", "RANK"):
        text = template.get(name)
        if text and text.strip():
            try:
                parse_rank(text)
            except ExpressionError as exc:
                raise ExpressionError(f"{name}: {exc.message}") from None


def vm_demand(vm: VmRecord, excluded: frozenset[int] = frozenset()) -> VmDemand:
    """What ``vm`` needs from a host (expressions were validated at creation)."""
    template = vm.user_template
    return VmDemand(
        id=vm.id,
        cpu=cpu_share(vm.cpu),
        memory=vm.memory * 1024,
        requirements=requirements_of(template),
        rank=rank_of(template),
        clouds=cloud_sections(template),
        excluded_hosts=excluded,
        vcpu=needed_vcpus(vm.cpu, _whole(template.get("VCPU"))),
    )


def _whole(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


#: Host variables read from the record's fields, under both spellings
#: OpenNebula uses (``FREE_CPU`` from the share, ``FREECPU`` from monitoring).
_FIELD_VARIABLES: dict[str, str] = {
    "MAX_CPU": "max_cpu", "MAX_MEM": "max_mem", "FREE_CPU": "free_cpu",
    "FREE_MEM": "free_mem", "USED_CPU": "used_cpu", "USED_MEM": "used_mem",
    "TOTALCPU": "max_cpu", "TOTALMEMORY": "max_mem", "FREECPU": "free_cpu",
    "FREEMEMORY": "free_mem", "USEDCPU": "used_cpu", "USEDMEMORY": "used_mem",
    "ID": "id", "CLUSTER_ID": "cluster_id", "NAME": "name",
}
_USAGE_VARIABLES = ("CPU_USAGE", "MEM_USAGE", "RUNNING_VMS")


def host_lookup(host: HostRecord,
                usage: tuple[int, int, int] | None = None) -> Callable[[str], Sequence[str]]:
    """Host variables for expressions, computed only when asked.

    ``usage`` is ``(cpu_usage, mem_usage, running_vms)`` when the record's own
    counters were not read.
    """
    counters = usage or (host.cpu_usage, host.mem_usage, host.running_vms)

    def lookup(name: str) -> Sequence[str]:
        field_name = _FIELD_VARIABLES.get(name)
        if field_name is not None:
            return (str(getattr(host, field_name)),)
        if name in _USAGE_VARIABLES:
            return (str(counters[_USAGE_VARIABLES.index(name)]),)
        if name == "STATE":
            return (str(int(host.state)),)
        if name == "CURRENT_VMS":
            return [str(vm_id) for vm_id in host.vm_ids]
        values = [value for value in host.template.get_all(name) if isinstance(value, str)]
        if not values and name == "HOSTNAME":
            return (host.name,)
        return values

    return lookup


def host_candidate(host: HostRecord, slot_usage: dict[str, int] | None = None,
                   usage: tuple[int, int, int] | None = None,
                   cooled_types: frozenset[str] = frozenset()) -> HostCandidate:
    """A host as the placement pass sees it.

    ``slot_usage`` counts the VMs already on the host by slot (the
    :func:`~cloudburst.model.capacity.capacity_key` of their instance type), for
    sites that report ``CAPACITY`` limits; ``usage`` overrides the record's
    allocation counters (see :func:`host_lookup`); ``cooled_types`` are the
    instance types of its current capacity cool-offs.
    """
    cpu_usage, mem_usage, running_vms = usage or (host.cpu_usage, host.mem_usage,
                                                  host.running_vms)
    slot_limits: dict[str, int] = {}
    default_slot = None
    price_of: Callable[[str | None], float | None] = _unknown_price
    cloud = host.is_public_cloud  # a template lookup: once per host and pass
    if cloud:
        price_of = _price_table(host.template)
        for kind, count in limits_of(host.template).items():
            slot = capacity_key(kind)
            slot_limits[slot] = slot_limits.get(slot, 0) + count
        default_slot = (host.template.get("DEFAULT_INSTANCE_TYPE") or "").strip().lower() or None
    offered = offers_of(host.template) if cloud else ()
    return HostCandidate(
        id=host.id, name=host.name, is_cloud=cloud, hypervisor=host.hypervisor,
        max_cpu=host.max_cpu, max_mem=host.max_mem, cpu_usage=cpu_usage,
        mem_usage=mem_usage, running_vms=running_vms, base_lookup=host_lookup(host, usage),
        slot_limits=slot_limits, slot_usage=dict(slot_usage or {}), default_slot=default_slot,
        cooled_types=cooled_types, offers=offered, price_of=price_of,
    )


def _price_table(template: Template) -> Callable[[str | None], float | None]:
    """The site's :func:`~cloudburst.model.cost.site_price`, remembered per instance type
    for the pass (every group of VMs asks it again)."""
    known: dict[str | None, float | None] = {}

    def price_of(instance_type: str | None) -> float | None:
        if instance_type not in known:
            known[instance_type] = site_price(template, instance_type)
        return known[instance_type]

    return price_of


def _unknown_price(_instance_type: str | None) -> float | None:
    return None


def count_slots(host: HostRecord, vms: list[VmRecord],
                sites_of_type: dict[str, int]) -> dict[str, int]:
    """Instance types used by ``vms`` (placed on ``host``), as the scheduler counts them."""
    candidate = host_candidate(host)
    usage: dict[str, int] = {}
    for vm in vms:
        slot = slot_of(vm_demand(vm), candidate, sites_of_type)
        if slot is not None:
            usage[slot] = usage.get(slot, 0) + 1
    return usage
