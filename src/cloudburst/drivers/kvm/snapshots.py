"""System snapshots as libvirt domain snapshots (runs on a pool thread).

Snapshot ``SNAPSHOT_ID`` n of a VM is the domain snapshot named ``snap-<n>``
(OpenNebula's kvm naming); that name is what the core records as the
snapshot's ``HYPERVISOR_ID``, and the user's ``NAME`` is its description.
On QEMU a snapshot of a running guest is an internal one (memory and disks,
so every writable disk must be qcow2); reverting brings the guest back
running.

libvirt keeps snapshot *metadata* per host, so a migration carries it:
:func:`export` reads every snapshot's XML (parents first), :func:`forget`
drops the metadata on the source before a live migration (QEMU refuses to
migrate a domain that has snapshots) and :func:`redefine` records it again
where the guest now runs. A stop (save to a file, then undefine) carries
them inside the saved image: :func:`stash` writes them into the running
domain's metadata before the save, :func:`unstash` takes them out after the
restore.
"""

from __future__ import annotations

from typing import Any, Final
from xml.etree import ElementTree

from cloudburst.drivers.kvm.connection import error_details, is_libvirt_error, libvirt_module
from cloudburst.drivers.kvm.domain_xml import METADATA_NS
from cloudburst.errors import DriverError

_NO_DOMAIN_SNAPSHOT: Final = 72
_NO_DOMAIN_METADATA: Final = 80
#: Namespace of the metadata element that carries snapshots through a saved image.
STASH_NS: Final = f"{METADATA_NS}/snapshots"
_STASH_PREFIX: Final = "cloudburst-snapshots"


def snapshot_name(snapshot_id: int) -> str:
    """The domain snapshot name of ``SNAPSHOT_ID`` ``snapshot_id``."""
    return f"snap-{snapshot_id}"


def _lookup(domain: Any, name: str) -> Any | None:
    try:
        return domain.snapshotLookupByName(name, 0)
    except Exception as exc:
        if error_details(exc)[0] == _NO_DOMAIN_SNAPSHOT:
            return None
        raise


def _description(name: str) -> str:
    element = ElementTree.Element("domainsnapshot")
    ElementTree.SubElement(element, "name").text = name
    return ElementTree.tostring(element, encoding="unicode")


def create(domain: Any, snapshot_id: int, description: str) -> str:
    """Take snapshot ``snap-<snapshot_id>``; one that exists already is kept. Returns its name."""
    name = snapshot_name(snapshot_id)
    if _lookup(domain, name) is None:
        element = ElementTree.fromstring(_description(name))
        ElementTree.SubElement(element, "description").text = description
        domain.snapshotCreateXML(ElementTree.tostring(element, encoding="unicode"), 0)
    return name


def revert(domain: Any, name: str) -> None:
    """Return the guest to snapshot ``name``, running.

    Raises:
        DriverError: the domain has no such snapshot.
    """
    snapshot = _lookup(domain, name)
    if snapshot is None:
        raise DriverError(f"domain {domain.name()} has no snapshot {name}")
    libvirt = libvirt_module()
    domain.revertToSnapshot(snapshot, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING)


def delete(domain: Any, name: str) -> None:
    """Delete snapshot ``name``; one that is gone is success."""
    snapshot = _lookup(domain, name)
    if snapshot is not None:
        snapshot.delete(0)


def export(domain: Any) -> list[str]:
    """The XML of every snapshot of ``domain``, parents first, for :func:`redefine`."""
    libvirt = libvirt_module()
    snapshots = domain.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
    current = domain.hasCurrentSnapshot(0) and domain.snapshotCurrent(0).getName()
    return [_mark_current(str(snapshot.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE)),
                          current or "") for snapshot in snapshots]


def forget(domain: Any) -> None:
    """Drop the snapshot metadata of ``domain`` (the snapshots' data stays in the disks)."""
    libvirt = libvirt_module()
    snapshots = domain.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
    for snapshot in reversed(snapshots):
        snapshot.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)


def drop(domain: Any | None) -> None:
    """Delete every snapshot of ``domain`` (``None``: nothing to do), children first.

    A running domain's snapshots go for good (QEMU removes them from the
    disks). Where libvirt cannot delete one (an inactive domain's internal
    snapshot needs ``qemu-img``), only its metadata goes; its data stays in
    the disk and a later snapshot of the same name replaces it.
    """
    if domain is None:
        return
    libvirt = libvirt_module()
    snapshots = domain.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
    for snapshot in reversed(snapshots):
        try:
            snapshot.delete(0)
        except Exception as exc:
            if not is_libvirt_error(exc) or domain.isActive():
                raise
            snapshot.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)


def _mark_current(xml: str, current: str) -> str:
    """Remember in the XML whether the snapshot was the current one (redefine reads it)."""
    root = ElementTree.fromstring(xml)
    name = root.findtext("name") or ""
    root.set("cloudburst-current", "1" if name == current else "0")
    return ElementTree.tostring(root, encoding="unicode")


def redefine(domain: Any, xmls: list[str]) -> list[str]:
    """Record the snapshots :func:`export` read on ``domain`` (known ones are skipped).

    Returns one line per snapshot that could not be recorded (the guest runs
    on; only that snapshot's metadata is lost).
    """
    libvirt = libvirt_module()
    problems: list[str] = []
    for xml in xmls:
        root = ElementTree.fromstring(xml)
        current = root.attrib.pop("cloudburst-current", "0") == "1"
        name = root.findtext("name") or ""
        if _lookup(domain, name) is not None:
            continue
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
        if current:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
        try:
            domain.snapshotCreateXML(ElementTree.tostring(root, encoding="unicode"), flags)
        except Exception as exc:
            if not is_libvirt_error(exc):
                raise
            problems.append(f"snapshot {name}: {error_details(exc)[2]}")
    return problems


def stash(domain: Any, xmls: list[str]) -> None:
    """Keep ``xmls`` (from :func:`export`) in the running domain's metadata."""
    if not xmls:
        return
    element = ElementTree.Element("snapshots")
    for xml in xmls:
        ElementTree.SubElement(element, "snapshot").text = xml
    libvirt = libvirt_module()
    domain.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                       ElementTree.tostring(element, encoding="unicode"), _STASH_PREFIX,
                       STASH_NS, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def unstash(domain: Any) -> list[str]:
    """Take the snapshots :func:`stash` kept out of ``domain``'s metadata (none: ``[]``)."""
    libvirt = libvirt_module()
    try:
        text = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, STASH_NS,
                               libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except Exception as exc:
        if error_details(exc)[0] == _NO_DOMAIN_METADATA:
            return []
        raise
    flags = libvirt.VIR_DOMAIN_AFFECT_LIVE
    if domain.isPersistent():
        flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
    domain.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, None, None, STASH_NS, flags)
    return [child.text or "" for child in ElementTree.fromstring(str(text))
            if child.tag.rpartition("}")[2] == "snapshot"]
