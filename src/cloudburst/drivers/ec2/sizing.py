"""Which instance type a VM runs as at a site: at deploy and after a resize.

Both apply the one rule of :mod:`cloudburst.model.offers` (the scheduler's):
the ``INSTANCETYPE`` the VM's section names; else, when the site lists
offers (``INSTANCE_TYPES``), the cheapest one that fits the VM's ``VCPU``
(else its ``CPU`` rounded up) and ``MEMORY``. So the type the driver picks is
the type the scheduler counted against the site's limits.
"""

from __future__ import annotations

from collections.abc import Mapping

from cloudburst.drivers.base import HostRef
from cloudburst.errors import DriverError
from cloudburst.model import offers
from cloudburst.template import Template


def vcpu_of(template: Template) -> int:
    """The template's ``VCPU`` (0 when absent or not a number)."""
    try:
        return int(template.get("VCPU") or 0)
    except ValueError:
        return 0


def deploy_type(vm_id: int, host: HostRef, template: Template, section: Mapping[str, str],
                *, cpu: float, memory_mb: int) -> str | None:
    """The cheapest offered type that fits a VM whose section names none; ``None``:
    the section's (or the defaults') type stands, or the site lists no offers.

    Raises:
        DriverError: the site offers types but none fits the VM.
    """
    offered = offers.offers_of(host.attributes)
    if section.get("INSTANCETYPE", "").strip() or not offered:
        return None
    return _cheapest(vm_id, host, offered, offers.needed_vcpus(cpu, vcpu_of(template)),
                     memory_mb)


def resized_type(vm_id: int, host: HostRef, template: Template, section: Mapping[str, str],
                 *, cpu: float, memory_mb: int) -> str:
    """The type a VM of ``template``'s section must run as with its new capacity.

    A named ``INSTANCETYPE`` stays (as at deploy) when it is big enough, or its
    size is unknown; otherwise the cheapest offer that fits.

    Raises:
        DriverError: the named type is too small, the site lists no offers to
            choose from, or none fits (one line naming the VM and the sizes).
    """
    offered = offers.offers_of(host.attributes)
    need = offers.needed_vcpus(cpu, vcpu_of(template))
    named = section.get("INSTANCETYPE", "").strip().lower()
    if named:
        offer = next((offer for offer in offered if offer.name == named), None)
        if offer is not None and offer.vcpu and offer.memory_mb \
                and not offer.fits(need, memory_mb):
            raise DriverError(
                f"VM {vm_id}: its EC2 section names INSTANCETYPE {named} ({offer.vcpu} VCPU, "
                f"{offer.memory_mb} MB), too small for {need} VCPU and {memory_mb} MB of "
                "MEMORY; a named type is kept, so the resize cannot be done")
        return named
    if not offered:
        raise DriverError(f"VM {vm_id}: {host.name} lists no instance types "
                          f"({offers.ATTRIBUTE}) to choose the new size from")
    return _cheapest(vm_id, host, offered, need, memory_mb)


def _cheapest(vm_id: int, host: HostRef, offered: tuple[offers.Offer, ...], vcpu: int,
              memory_mb: int) -> str:
    chosen = offers.instance_type_for(None, offered, vcpu=vcpu, memory_mb=memory_mb,
                                      default=None)
    if chosen is None:
        raise DriverError(f"VM {vm_id}: no instance type offered at {host.name} "
                          f"fits {vcpu} VCPU and {memory_mb} MB of MEMORY (offered: "
                          f"{', '.join(offer.name for offer in offered)})")
    return chosen
