"""Hot-plugging disks and NICs into a libvirt domain (runs on a pool thread).

A device is attached with ``virDomainAttachDeviceFlags`` to the running guest
*and* to the persistent definition (``AFFECT_LIVE | AFFECT_CONFIG``), so it is
still there after a poweroff/resume; the XML comes from the same builders as
the deploy's (:func:`~.domain_xml.disk_device_xml`,
:func:`~.domain_xml.nic_device_xml`).

How a device is found again for detach, since the core stores the section as
the user wrote it:

* a disk by its ``TARGET`` when the section names one, else by its
  ``SOURCE``; a disk without ``TARGET`` is attached on the first free
  ``<DEV_PREFIX><letter>`` of the domain (prefix default ``vd``: virtio, which
  QEMU can hot-plug, unlike IDE);
* a NIC by its ``MAC``; a NIC section without one gets
  :func:`default_mac` (derived from the VM and NIC ids), so detach finds it.

Detach asks the guest to release the device (PCI hot-unplug needs the
guest's cooperation) and waits up to :data:`DETACH_TIMEOUT` seconds for it
to leave the running domain; a device that is not attached is success.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from xml.etree import ElementTree

from cloudburst.drivers.base import DeviceSpec
from cloudburst.drivers.kvm.connection import libvirt_module
from cloudburst.drivers.kvm.domain_xml import (
    DomainXmlError,
    disk_device_xml,
    free_target,
    nic_device_xml,
)
from cloudburst.errors import DriverError

#: Seconds a guest gets to release a detached device.
DETACH_TIMEOUT: Final = 60.0
#: Prefix of hot-plugged disks without ``TARGET`` or ``DEV_PREFIX``.
HOTPLUG_PREFIX: Final = "vd"
_CHECK_INTERVAL: Final = 0.2
#: Seconds after which an unanswered unplug request is sent again.
_ASK_AGAIN: Final = 5.0


def default_mac(vm_id: int, nic_id: int) -> str:
    """The MAC of hot-plugged NIC ``nic_id`` of VM ``vm_id`` when its section has none.

    Locally administered (``02:``), ``cb``, then the VM id (3 bytes) and the NIC id.
    """
    octets = [0x02, 0xCB, (vm_id >> 16) & 0xFF, (vm_id >> 8) & 0xFF, vm_id & 0xFF,
              nic_id & 0xFF]
    return ":".join(f"{octet:02x}" for octet in octets)


def _flags(domain: Any) -> int:
    libvirt = libvirt_module()
    flags = int(libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    if domain.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    return flags


def _devices(domain: Any, tag: str) -> list[ElementTree.Element]:
    root = ElementTree.fromstring(domain.XMLDesc(0))
    return root.findall(f"./devices/{tag}")


def _disk_source(element: ElementTree.Element) -> str:
    source = element.find("source")
    if source is None:
        return ""
    return source.get("file") or source.get("dev") or ""


def _disk_matches(element: ElementTree.Element, disk: DeviceSpec) -> bool:
    target = element.find("target")
    dev = "" if target is None else target.get("dev", "")
    if disk.target:
        return dev == disk.target
    source = (disk.attributes.get("SOURCE") or "").strip()
    return bool(source) and _disk_source(element) == source


def _nic_mac(vm_id: int, nic: DeviceSpec) -> str:
    return ((nic.attributes.get("MAC") or "").strip() or default_mac(vm_id, nic.id)).lower()


def _nic_matches(element: ElementTree.Element, mac: str) -> bool:
    found = element.find("mac")
    return found is not None and found.get("address", "").lower() == mac


def _invalid(exc: DomainXmlError) -> DriverError:
    return DriverError(f"{exc} (nothing attached)")


def attach_disk(domain: Any, disk: DeviceSpec) -> None:
    """Attach ``disk`` (live and persistent); already attached is success."""
    present = _devices(domain, "disk")
    if any(_disk_matches(element, disk) for element in present):
        return
    attributes: Mapping[str, str] = disk.attributes
    taken = [found.get("dev", "") for element in present
             if (found := element.find("target")) is not None]
    try:
        target = disk.target or free_target(
            taken, (attributes.get("DEV_PREFIX") or "").strip() or HOTPLUG_PREFIX)
        xml = disk_device_xml(dict(attributes), target, f"DISK {disk.id}")
    except DomainXmlError as exc:
        raise _invalid(exc) from None
    domain.attachDeviceFlags(xml, _flags(domain))


def detach_disk(domain: Any, disk: DeviceSpec) -> None:
    """Detach ``disk`` and wait for the guest to release it; not attached is success."""
    _detach(domain, "disk", lambda element: _disk_matches(element, disk), f"DISK {disk.id}")


def attach_nic(domain: Any, vm_id: int, nic: DeviceSpec) -> None:
    """Attach ``nic`` (live and persistent); already attached is success."""
    mac = _nic_mac(vm_id, nic)
    if any(_nic_matches(element, mac) for element in _devices(domain, "interface")):
        return
    try:
        xml = nic_device_xml({**nic.attributes, "MAC": mac}, f"NIC {nic.id}")
    except DomainXmlError as exc:
        raise _invalid(exc) from None
    domain.attachDeviceFlags(xml, _flags(domain))


def detach_nic(domain: Any, vm_id: int, nic: DeviceSpec) -> None:
    """Detach ``nic`` and wait for the guest to release it; not attached is success."""
    mac = _nic_mac(vm_id, nic)
    _detach(domain, "interface", lambda element: _nic_matches(element, mac), f"NIC {nic.id}")


def _detach(domain: Any, tag: str, matches: Callable[[ElementTree.Element], bool],
            what: str) -> None:
    found = next((element for element in _devices(domain, tag) if matches(element)), None)
    if found is None:
        _detach_config(domain, tag, matches)
        return
    xml = ElementTree.tostring(found, encoding="unicode")
    domain.detachDeviceFlags(xml, _flags(domain))
    start = time.monotonic()
    asked = start
    while any(matches(element) for element in _devices(domain, tag)):
        now = time.monotonic()
        if now - start >= DETACH_TIMEOUT:
            raise DriverError(f"the guest did not release {what} within {DETACH_TIMEOUT:g} s "
                              "(the unplug request stays pending in the guest)")
        if now - asked >= _ASK_AGAIN:
            # A guest busy with an earlier hot-plug event may miss the request.
            asked = now
            with contextlib.suppress(Exception):
                domain.detachDeviceFlags(xml, libvirt_module().VIR_DOMAIN_AFFECT_LIVE)
        time.sleep(_CHECK_INTERVAL)


def _detach_config(domain: Any, tag: str,
                   matches: Callable[[ElementTree.Element], bool]) -> None:
    """Remove the device from the persistent definition only, when it is still there."""
    libvirt = libvirt_module()
    if not domain.isPersistent():
        return
    root = ElementTree.fromstring(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    for element in root.findall(f"./devices/{tag}"):
        if matches(element):
            domain.detachDeviceFlags(ElementTree.tostring(element, encoding="unicode"),
                                     libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            return
