"""Moving a guest between two libvirt hypervisors (runs on a pool thread).

* **Cold** (``onevm migrate``): the guest's memory is saved to
  ``<CHECKPOINT_DIR>/one-<vmid>.migrate`` on the source (``virDomainSave``;
  the guest stops), restored on the destination (``virDomainRestore``), made
  persistent there (``virDomainDefineXML``), then its definition is removed
  from the source and the file deleted. The file must be reachable at that
  path from both hypervisors (shared storage, like the guest's disks; any
  two hypervisors of one machine qualify). When the destination cannot
  restore it, the guest is restored on the source again.
* **Live** (``onevm migrate --live``): ``virDomainMigrate`` with the
  connections to both hypervisors (``LIVE | PERSIST_DEST | UNDEFINE_SOURCE``):
  the guest keeps running; the disks must be shared. A hypervisor pair that
  cannot migrate (libvirt's ``test:///`` driver, for one) fails with
  libvirt's "not supported" message and the guest stays on the source.

Both ways carry the domain's snapshot metadata (:mod:`.snapshots`) and the
context CD-ROM (:func:`.context_iso.carry_context_cd`: copied where the
destination keeps them before the guest moves, the source's copy removed
after, the copy removed again when the move fails), and record the
destination host in the domain's metadata. When both hosts use
the same libvirt URI there is nothing to move: only the metadata changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import posixpath
from typing import Any

from cloudburst.drivers.kvm import snapshots
from cloudburst.drivers.kvm.connection import libvirt_module
from cloudburst.drivers.kvm.context_iso import ContextHome, carry_context_cd
from cloudburst.drivers.kvm.domains import lookup, read_identity, write_identity
from cloudburst.drivers.kvm.settings import MIGRATE_DIR, HostSettings
from cloudburst.errors import DriverError, InstanceNotFoundError


def migration_file(source: HostSettings, vm_id: int) -> str:
    """Where a cold migration of VM ``vm_id`` from ``source`` writes the guest's memory."""
    return posixpath.join(source.checkpoint_dir or MIGRATE_DIR, f"one-{vm_id}.migrate")


def _require(connection: Any, name: str) -> Any:
    domain = lookup(connection, name)
    if domain is None:
        raise InstanceNotFoundError(f"no domain {name}")
    return domain


def make_room(connection: Any, name: str, vm_id: int, install_id: str) -> None:
    """Remove a stopped definition of this VM left on the destination (an earlier stay).

    Raises:
        DriverError: a domain of that name runs there, or is not this VM's.
    """
    domain = lookup(connection, name)
    if domain is None:
        return
    found = read_identity(domain)
    if domain.isActive() or found is None or found.install_id != install_id \
            or found.vm_id != vm_id:
        raise DriverError(f"a domain named {name} already exists on the destination; "
                          "remove it or choose another host")
    undefine_all(domain)


def undefine_all(domain: Any) -> None:
    """Remove a stopped domain's definition with its managed save and snapshot metadata."""
    libvirt = libvirt_module()
    domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                         | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


def persist(connection: Any, domain: Any) -> Any:
    """Make a restored (transient) domain persistent; returns the persistent domain."""
    libvirt = libvirt_module()
    if domain.isPersistent():
        return domain
    return connection.defineXML(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE
                                               | libvirt.VIR_DOMAIN_XML_SECURE))


def _arrived(domain: Any, host_id: int, carried: list[str], log: logging.Logger) -> None:
    """Record the new host in the metadata and the snapshots on the destination."""
    identity = read_identity(domain)
    if identity is not None:
        write_identity(domain, dataclasses.replace(identity, host_id=host_id))
    for problem in snapshots.redefine(domain, carried):
        log.warning("%s: %s not carried over by the migration", domain.name(), problem)


def cold(source: Any, destination: Any, name: str, path: str, host_id: int,
         install_id: str, log: logging.Logger, homes: tuple[ContextHome, ContextHome]
         ) -> None:
    """Save on ``source``, restore on ``destination`` (see the module docs); ``homes``:
    where each side keeps context CD-ROMs."""
    libvirt = libvirt_module()
    domain = _require(source, name)
    identity = read_identity(domain)
    vm_id = -1 if identity is None else identity.vm_id
    make_room(destination, name, vm_id, install_id)
    cd = carry_context_cd(source, destination, _xml(domain), vm_id, homes)
    carried = snapshots.export(domain)
    try:
        domain.save(path)
    except Exception:
        if cd is not None:
            cd.undo(destination)
        raise
    try:
        if cd is None:
            destination.restore(path)
        else:
            destination.restoreFlags(path, cd.domain_xml(source.saveImageGetXMLDesc(
                path, libvirt.VIR_DOMAIN_XML_SECURE)), 0)
        moved = persist(destination, _require(destination, name))
    except Exception:
        with contextlib.suppress(Exception):
            destination_domain = lookup(destination, name)
            if destination_domain is not None and destination_domain.isActive():
                destination_domain.destroy()
        source.restore(path)
        with contextlib.suppress(OSError):
            os.unlink(path)
        if cd is not None:
            cd.undo(destination)
        raise
    _arrived(moved, host_id, carried, log)
    undefine_all(domain)
    with contextlib.suppress(OSError):
        os.unlink(path)
    if cd is not None:
        cd.leave(source)


def live(source: Any, destination: Any, name: str, host_id: int, install_id: str,
         log: logging.Logger, homes: tuple[ContextHome, ContextHome]) -> None:
    """``virDomainMigrate`` from ``source`` to ``destination`` (see the module docs);
    ``homes``: where each side keeps context CD-ROMs."""
    libvirt = libvirt_module()
    domain = _require(source, name)
    identity = read_identity(domain)
    vm_id = -1 if identity is None else identity.vm_id
    make_room(destination, name, vm_id, install_id)
    cd = carry_context_cd(source, destination, _xml(domain), vm_id, homes)
    carried = snapshots.export(domain)
    snapshots.forget(domain)
    # UNSAFE: the disks are shared by contract (see the module docs); libvirt's own
    # guess (disk cache mode, known cluster file systems) refuses plain directories.
    flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST
             | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_UNSAFE)
    try:
        if cd is None:
            moved = domain.migrate(destination, flags, None, None, 0)
        else:  # the running guest and its persistent definition read the new copy
            moved = domain.migrate3(destination, {
                libvirt.VIR_MIGRATE_PARAM_DEST_XML: cd.domain_xml(_xml(domain)),
                libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: cd.domain_xml(
                    _xml(domain, libvirt.VIR_DOMAIN_XML_INACTIVE))}, flags)
    except Exception:
        snapshots.redefine(domain, carried)
        if cd is not None:
            cd.undo(destination)
        raise
    _arrived(moved, host_id, carried, log)
    if cd is not None:
        cd.leave(source)


def _xml(domain: Any, flags: int = 0) -> str:
    """The domain's definition as a migration sends it (secrets included)."""
    libvirt = libvirt_module()
    return str(domain.XMLDesc(flags | libvirt.VIR_DOMAIN_XML_SECURE
                              | libvirt.VIR_DOMAIN_XML_MIGRATABLE))
