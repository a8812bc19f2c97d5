"""What a cloud site offers and what it costs: instance types with sizes and prices.

A cloud site's monitoring carries one attribute, :data:`ATTRIBUTE`
(``INSTANCE_TYPES``): the instance types the site may run, each written
``name:vcpus:memory_mb:usd_per_hour`` and separated by spaces::

    INSTANCE_TYPES = "t3.micro:2:1024:0.0104 m5.large:2:8192:0.096"

A size of 0 means unknown (the type is priced but its size was never read);
such a type is never chosen to fit a VM. The EC2 information driver writes it
from its price table and the site's catalogue (``DescribeInstanceTypes``).

**The rule** (:func:`instance_type_for`), shared by the scheduler and the
drivers so both agree on what a VM runs as: the ``INSTANCETYPE`` its cloud
section names; else, when the site lists offers, the cheapest offer that
fits the VM's ``VCPU`` (or its ``CPU`` rounded up) and ``MEMORY``, ``None``
when none fits; else the site's default type. Prices are US$ per hour,
on-demand; ties go to the smaller type, then to the name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from cloudburst.template import Template

__all__ = ["ATTRIBUTE", "Offer", "cheapest_fit", "format_offers", "instance_type_for",
           "needed_vcpus", "offers_of", "parse_offers", "price_of"]

#: The monitoring attribute holding a site's offers.
ATTRIBUTE: Final = "INSTANCE_TYPES"


@dataclass(frozen=True, slots=True)
class Offer:
    """An instance type a site runs: its size (0: unknown) and hourly price (US$)."""

    name: str
    vcpu: int
    memory_mb: int
    price: float

    def fits(self, vcpu: int, memory_mb: int) -> bool:
        """Whether a VM of ``vcpu`` and ``memory_mb`` fits (a type of unknown size never does)."""
        return (self.vcpu > 0 and self.memory_mb > 0
                and self.vcpu >= vcpu and self.memory_mb >= memory_mb)

    @property
    def text(self) -> str:
        return f"{self.name}:{self.vcpu}:{self.memory_mb}:{self.price:g}"


def parse_offers(text: str) -> tuple[Offer, ...]:
    """Offers from an ``INSTANCE_TYPES`` value; malformed entries are skipped."""
    found: list[Offer] = []
    for entry in text.split():
        parts = entry.split(":")
        if len(parts) != 4 or not parts[0]:
            continue
        try:
            vcpu, memory, price = int(parts[1]), int(parts[2]), float(parts[3])
        except ValueError:
            continue
        if vcpu >= 0 and memory >= 0 and math.isfinite(price) and price >= 0:
            found.append(Offer(parts[0].lower(), vcpu, memory, price))
    return tuple(found)


def format_offers(offers: Iterable[Offer]) -> str:
    """The ``INSTANCE_TYPES`` value for ``offers``, cheapest first."""
    return " ".join(offer.text for offer in sorted(offers, key=_order))


def offers_of(host: Template | Mapping[str, str]) -> tuple[Offer, ...]:
    """The offers in a host's template (or flat attributes); empty when it lists none."""
    text = host.get(ATTRIBUTE)
    return parse_offers(text) if isinstance(text, str) else ()


def price_of(offers: Iterable[Offer], instance_type: str | None) -> float | None:
    """The hourly price of ``instance_type`` among ``offers``; ``None`` when unknown."""
    if not instance_type:
        return None
    wanted = instance_type.strip().lower()
    return next((offer.price for offer in offers if offer.name == wanted), None)


def needed_vcpus(cpu: float, vcpu: int = 0) -> int:
    """The virtual CPUs a VM needs: its ``VCPU``, else its ``CPU`` rounded up (at least 1)."""
    if vcpu > 0:
        return vcpu
    return max(1, math.ceil(cpu - 1e-9))


def _order(offer: Offer) -> tuple[float, int, int, str]:
    return (offer.price, offer.vcpu, offer.memory_mb, offer.name)


def cheapest_fit(offers: Iterable[Offer], vcpu: int, memory_mb: int) -> Offer | None:
    """The cheapest offer with at least ``vcpu`` and ``memory_mb``; ``None`` when none fits."""
    return min((offer for offer in offers if offer.fits(vcpu, memory_mb)), key=_order,
               default=None)


def instance_type_for(named: str | None, offers: Iterable[Offer], *, vcpu: int,
                      memory_mb: int, default: str | None) -> str | None:
    """The type a VM runs as on a site (see the module doc); ``None``: nothing fits.

    ``named`` is the ``INSTANCETYPE`` of the VM's section for the site,
    ``vcpu`` what :func:`needed_vcpus` gives, ``default`` the site's type for
    VMs that name none.
    """
    if named:
        return named.strip().lower()
    listed = tuple(offers)
    if listed:
        chosen = cheapest_fit(listed, vcpu, memory_mb)
        return chosen.name if chosen is not None else None
    return default.strip().lower() if default else None
