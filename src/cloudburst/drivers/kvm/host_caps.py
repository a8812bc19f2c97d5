"""What a hypervisor host can run, read from libvirt's capabilities XML.

The domain type is chosen per host, never from this machine: a remote host
has its own ``/dev/kvm``. libvirt lists ``<domain type='kvm'/>`` for a guest
architecture only when KVM is usable there, so "``kvm`` when offered, else
``qemu`` (TCG), else the first type offered" is "KVM when ``/dev/kvm`` is
usable" wherever the host is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from xml.etree import ElementTree

#: Preferred domain types, best first; anything else offered comes after.
PREFERRED_TYPES: Final = ("kvm", "qemu")


@dataclass(frozen=True, slots=True)
class Platform:
    """How a guest runs on a host: libvirt domain type and guest architecture."""

    domain_type: str
    arch: str


class CapabilitiesError(ValueError):
    """The host offers no way to run the requested guest."""


def _guests(root: ElementTree.Element) -> dict[str, list[str]]:
    """Architectures of ``hvm`` guests and the domain types offered for each."""
    offered: dict[str, list[str]] = {}
    for guest in root.findall("guest"):
        if (guest.findtext("os_type") or "").strip() != "hvm":
            continue
        for arch in guest.findall("arch"):
            name = arch.get("name", "")
            types = offered.setdefault(name, [])
            for domain in arch.findall("domain"):
                kind = domain.get("type", "")
                if kind and kind not in types:
                    types.append(kind)
    return offered


def choose_platform(capabilities: str, *, arch: str | None = None,
                    domain_type: str | None = None) -> Platform:
    """Pick the domain type and architecture for a guest on this host.

    Args:
        capabilities: the host's ``virConnectGetCapabilities`` XML.
        arch: the template's ``OS/ARCH``; default the host's own architecture
            when it runs ``hvm`` guests, else the first one offered.
        domain_type: a forced type (host attribute ``LIBVIRT_DOMAIN_TYPE``).

    Raises:
        CapabilitiesError: the XML is unreadable, or the host offers no ``hvm``
            guest of that architecture or type.
    """
    try:
        root = ElementTree.fromstring(capabilities)
    except ElementTree.ParseError as exc:
        raise CapabilitiesError(f"unreadable capabilities XML: {exc}") from None
    offered = _guests(root)
    if not offered:
        raise CapabilitiesError("the host offers no hvm guests")
    if arch is None:
        host_arch = (root.findtext("host/cpu/arch") or "").strip()
        arch = host_arch if host_arch in offered else next(iter(offered))
    types = offered.get(arch)
    if not types:
        raise CapabilitiesError(
            f"the host runs no {arch} guests (it offers {', '.join(sorted(offered))})")
    if domain_type is not None:
        if domain_type not in types:
            raise CapabilitiesError(
                f"the host offers no domain type {domain_type!r} for {arch} guests "
                f"(it offers {', '.join(types)})")
        return Platform(domain_type, arch)
    for preferred in PREFERRED_TYPES:
        if preferred in types:
            return Platform(preferred, arch)
    return Platform(types[0], arch)


def cpu_model(capabilities: str) -> str:
    """The host CPU as ``"<vendor> <model>"`` (``""`` when libvirt does not say)."""
    try:
        root = ElementTree.fromstring(capabilities)
    except ElementTree.ParseError:
        return ""
    parts = [(root.findtext(f"host/cpu/{tag}") or "").strip() for tag in ("vendor", "model")]
    return " ".join(part for part in parts if part)
