"""Which of a VM's cloud sections applies on a cloud site: the one rule.

The scheduler (which sites can take a VM), the deploy check (``onevm
deploy`` to a chosen site) and the deploy itself all ask :func:`section_for`;
the section it chooses is handed to the driver in the deploy spec
(:attr:`cloudburst.drivers.base.DeploySpec.section`), so no driver decides
again.

**A VM's cloud sections** (:func:`cloud_sections`), in template order: every
``PUBLIC_CLOUD = [ TYPE = t, ... ]`` vector (OpenNebula 5.x) and every legacy
``EC2 = [ ... ]`` vector (the EC2 seed's 3.x form, of type ``ec2``). A
``PUBLIC_CLOUD`` without ``TYPE`` is for no site. Types compare without case.
A section names the site (host) it is for with ``HOST`` (5.x) or ``CLOUD``
(3.x, deprecated).

**The rule** on a cloud site named ``S`` whose ``HYPERVISOR`` is ``T``, among
the VM's sections of type ``T``, names compared without case:

1. the first section whose ``HOST`` is ``S``;
2. else the first whose ``CLOUD`` is ``S``;
3. else the first section that names no site (it is for any site of ``T``);
4. else, when the VM has exactly one section of type ``T`` and ``S`` is the
   only site of type ``T``, that section whatever site it names (the EC2
   seed: "If only one EC2 site is defined, the EC2 driver will deploy all EC2
   templates onto it, not paying attention to the CLOUD attribute");
5. else none applies: the scheduler does not place the VM there, and a deploy
   there is refused with :func:`no_section_reason`.

Steps 1, 2 and 4 are OpenNebula's (4.4+ drivers: ``HOST`` first, then the
deprecated ``CLOUD``, then a lone section). Two points are ours, where
OpenNebula only failed later in its driver: step 3 (OpenNebula fails a VM
whose sections name other sites even when one names none), and step 4 asks
for a single *site* as well as a single section, as the seed's sentence says,
so a section written for one region's image is never sent to another region.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cloudburst.model.records import HostRecord
from cloudburst.template import Template, Vector

__all__ = ["CloudSection", "cloud_sections", "cloud_types", "no_section_reason",
           "section_for", "sites_by_type"]


@dataclass(frozen=True, slots=True)
class CloudSection:
    """One cloud section of a VM template.

    Attributes:
        type: the cloud type (``PUBLIC_CLOUD``'s ``TYPE``; ``ec2`` for ``EC2``), lower case.
        host: the ``HOST`` it is for (``None``: not set).
        cloud: the ``CLOUD`` it is for (``None``: not set).
        instance_type: its ``INSTANCETYPE`` (or ``INSTANCE_TYPE``), lower case,
            ``None`` when it names none.
        attributes: the section as written (compared and hashed by the fields
            above only, so equal demands group together in the scheduler).
    """

    type: str
    host: str | None = None
    cloud: str | None = None
    instance_type: str | None = None
    attributes: Vector = field(default_factory=dict, compare=False, repr=False)

    @property
    def site(self) -> str | None:
        """The site it names (``HOST``, else ``CLOUD``); ``None``: any site of its type."""
        return self.host or self.cloud


def _text(vector: Vector, *keys: str) -> str | None:
    for key in keys:
        value = (vector.get(key) or "").strip()
        if value:
            return value
    return None


def _section(kind: str, vector: Vector) -> CloudSection:
    named = _text(vector, "INSTANCETYPE", "INSTANCE_TYPE")
    return CloudSection(kind.lower(), _text(vector, "HOST"), _text(vector, "CLOUD"),
                        named.lower() if named else None, dict(vector))


def cloud_sections(template: Template) -> tuple[CloudSection, ...]:
    """The cloud sections of a VM template, in template order (see the module doc)."""
    found: list[CloudSection] = []
    for name, value in template:
        if not isinstance(value, dict):
            continue
        if name == "PUBLIC_CLOUD":
            kind = (value.get("TYPE") or "").strip()
            if kind:
                found.append(_section(kind, value))
        elif name == "EC2":
            found.append(_section("ec2", value))
    return tuple(found)


def cloud_types(sections: Sequence[CloudSection]) -> frozenset[str]:
    """The cloud types the sections are for."""
    return frozenset(section.type for section in sections)


def section_for(sections: Sequence[CloudSection], site: str, site_type: str,
                sites_of_type: int | Callable[[], int]) -> CloudSection | None:
    """The section that applies on cloud site ``site`` of type ``site_type`` (its
    ``HYPERVISOR``), by the rule of the module doc; ``None`` when none does.

    ``sites_of_type`` is how many cloud sites of that type exist, or a function
    giving it (asked only when step 4 needs it).
    """
    kind = site_type.strip().lower()
    name = site.strip().lower()
    of_type = [section for section in sections if section.type == kind]
    for chosen in ([s for s in of_type if (s.host or "").lower() == name]
                   + [s for s in of_type if (s.cloud or "").lower() == name]
                   + [s for s in of_type if s.site is None]):
        return chosen
    if len(of_type) == 1:
        count = sites_of_type() if callable(sites_of_type) else sites_of_type
        if count <= 1:
            return of_type[0]
    return None


def no_section_reason(sections: Sequence[CloudSection], site: str, site_type: str) -> str:
    """Why no section applies on ``site`` (one line, for when :func:`section_for` gave none)."""
    of_type = [section for section in sections if section.type == site_type.strip().lower()]
    if not of_type:
        return (f"it has no PUBLIC_CLOUD (or EC2) section of TYPE {site_type} "
                f"for cloud site {site}")
    named = ", ".join(sorted({section.site or "" for section in of_type}))
    return (f"its sections of TYPE {site_type} are for site(s) {named}, not {site}: "
            f'add one with HOST="{site}" or one naming no site')


def sites_by_type(hosts: Sequence[HostRecord]) -> dict[str, int]:
    """How many cloud sites of each type (``HYPERVISOR``, lower case) ``hosts`` hold."""
    counts: dict[str, int] = {}
    for host in hosts:
        if host.is_public_cloud:
            kind = host.hypervisor.strip().lower()
            counts[kind] = counts.get(kind, 0) + 1
    return counts
