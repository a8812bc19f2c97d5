"""``one_vmm_kvm``: VMs as libvirt domains.

* ``deploy`` defines ``one-<vmid>`` from the template's local part and starts
  it; the deploy id is the domain name. The domain UUID is derived from the
  idempotency token and the token is recorded in the domain's metadata, so a
  retried or replayed deploy finds the domain (starting it again if it is
  defined but stopped) instead of creating another. A stopped domain left by
  an earlier deploy of the same VM is replaced; any other domain of that name
  is refused, never touched.
* ``shutdown`` asks the guest to power off (ACPI), waits up to the host's
  shutdown timeout, then destroys it; then undefines it.
* ``cancel`` destroys and undefines; a domain already gone is success.
* ``reboot`` (ACPI) and ``reset`` (hard) keep the domain.
* ``poweroff`` stops the guest as ``shutdown`` does (ACPI, then destroy; at
  once when hard) but keeps the definition, with its snapshots; ``poweron``
  defines it again from the deployment (the template as it is now, hot-plugged
  devices included: ``updateconf`` and ``resize`` apply there) and starts it.
  **undeploy** (``poweroff`` ``leaving``) leaves nothing on the host: the
  snapshots are deleted (OpenNebula drops a VM's snapshots on undeploy; the
  core drops their entries), then the definition; resumed on any host, the
  VM is defined from its deployment.
* ``save`` for **suspend** (the VM stays on its host) is libvirt's *managed
  save* (``virDomainManagedSave``): libvirt keeps the memory image with the
  definition, and ``restore`` is a plain start, which resumes from it. For
  **stop** (the VM leaves the host and may resume on another one) the memory
  goes to a file (``virDomainSave``), ``<CHECKPOINT_DIR>/one-<vmid>.checkpoint``
  when the host sets ``CHECKPOINT_DIR`` (shared by the hosts it may resume
  on), else the core's checkpoint path; the definition is removed, so the host
  holds nothing; ``restore`` restores the file on the host the scheduler
  chose, makes the domain persistent again and deletes the file. The
  context CD-ROM leaves the host too: a copy waits next to the core's
  checkpoint path and is placed for the host it resumes on
  (:func:`.context_iso.unstash_context_cd`).
  Snapshot metadata travels inside the saved image (:func:`.snapshots.stash`).
* ``resize`` (powered off) rewrites the definition's memory, vCPUs and CPU
  shares by the deploy's rules.
* ``reconfigure`` (``updateconf`` of a running VM with a new CONTEXT) makes the
  context CD-ROM again and changes the running domain's media to it.
* snapshots (:mod:`.snapshots`), disk and NIC hot-plug (:mod:`.devices`) and
  migration, cold and live (:mod:`.migration`).
* ``poll`` lists each host's domains once (bulk), whatever the VM count.
* ``sweep`` finds stopped or running domains that carry this installation's
  metadata for this host but belong to no live VM, and removes them after the
  grace period.

Driver ``ARGUMENTS`` may hold ``--shutdown-timeout SECONDS`` (default 90);
the host attribute ``SHUTDOWN_TIMEOUT`` overrides it per host.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import posixpath
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from cloudburst.drivers.base import (
    DeploySpec,
    DeviceSpec,
    DriverContext,
    HostRef,
    PollResult,
    PollState,
    ResizeSpec,
    SweepReport,
    VmDriver,
    VmRef,
)
from cloudburst.drivers.context import check_context, context_files, context_of
from cloudburst.drivers.kvm import devices, migration, snapshots
from cloudburst.drivers.kvm.connection import LibvirtPool, error_details, libvirt_module
from cloudburst.drivers.kvm.context_iso import (
    ContextHome,
    drop_context_cd,
    iso_path,
    remove_context_iso,
    remove_context_volume,
    stash_context_cd,
    swap_context_cd,
    unstash_context_cd,
    upload_context_iso,
    write_context_iso,
)
from cloudburst.drivers.kvm.domain_xml import (
    METADATA_NS,
    DomainRequest,
    DomainXmlError,
    Identity,
    build_domain_xml,
    check_local_part,
    domain_name,
    resized_xml,
)
from cloudburst.drivers.kvm.domains import (
    CpuMeter,
    DomainSample,
    lookup,
    poll_result,
    read_identity,
    sample_domains,
    write_identity,
)
from cloudburst.drivers.kvm.host_caps import CapabilitiesError, choose_platform
from cloudburst.drivers.kvm.migration import make_room, migration_file, persist
from cloudburst.drivers.kvm.settings import HostSettings, shutdown_timeout_argument
from cloudburst.drivers.orphans import OrphanSightings
from cloudburst.errors import (
    DriverError,
    InstanceNotFoundError,
    TransientDriverError,
    ValidationError,
    one_line,
)
from cloudburst.template import Template

T = TypeVar("T")

#: Seconds between checks while a guest shuts down.
SHUTDOWN_CHECK_INTERVAL: Final = 0.25

_UUID_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, METADATA_NS)
_OPERATION_INVALID: Final = 55  # e.g. "domain is not running"
_INVALID_ARG: Final = 8
_NO_SUPPORT_CODES: Final = frozenset({3, 84})


def is_session(uri: str) -> bool:
    """Whether ``uri`` names an unprivileged, per-user libvirt (``qemu:///session``)."""
    return urllib.parse.urlsplit(uri).path.rstrip("/") == "/session"


def domain_uuid(install_id: str, token: str) -> str:
    """The UUID of the domain a deploy with ``token`` creates (the same on every retry)."""
    return str(uuid.uuid5(_UUID_NAMESPACE, f"{install_id}/{token}"))


def _undefine(domain: Any) -> None:
    """Remove a domain's definition with its managed save and snapshots; gone is fine."""
    libvirt = libvirt_module()
    flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
             | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    try:
        domain.undefineFlags(flags)
    except Exception as exc:
        code = error_details(exc)[0]
        if code == 42:  # already gone (a transient domain vanishes when destroyed)
            return
        if code not in _NO_SUPPORT_CODES and code != _INVALID_ARG:
            raise
        domain.undefine()


def _destroy_if_active(domain: Any | None) -> None:
    if domain is not None and domain.isActive():
        _destroy(domain)


def _destroy(domain: Any) -> None:
    """Hard-stop a domain; one that is not running (any more) is fine."""
    try:
        domain.destroy()
    except Exception as exc:
        if error_details(exc)[0] not in (_OPERATION_INVALID, 42):
            raise


def _remove(connection: Any, deploy_id: str) -> bool:
    """Destroy and undefine ``deploy_id``; whether it existed."""
    domain = lookup(connection, deploy_id)
    if domain is None:
        return False
    if domain.isActive():
        _destroy(domain)
    if domain.isPersistent():
        _undefine(domain)
    return True


def _remove_vm(connection: Any, settings: HostSettings, vm: VmRef) -> bool:
    """:func:`_remove` the VM's domain, then its context CD-ROM's volume when the host
    keeps them in a storage pool; whether the domain existed."""
    existed = _remove(connection, vm.deploy_id)
    if settings.context_pool is not None:
        remove_context_volume(connection, settings.context_pool, vm.vm_id)
    return existed


def _forget_context(settings: HostSettings, vm: VmRef) -> None:
    """Remove the VM's context CD-ROM from the host's ``CONTEXT_DIR`` (the copy in the
    VM's directory goes with that directory; a pool's volume with the domain)."""
    if settings.context_dir is not None and settings.context_pool is None:
        remove_context_iso(Path(settings.context_dir), vm.vm_id)


def _cd_stash(checkpoint: Path) -> Path:
    """Where a stop keeps the VM's context CD-ROM on this machine (next to the core's
    checkpoint path) until it resumes."""
    return checkpoint.with_name(checkpoint.name + ".context.iso")


def _require(connection: Any, deploy_id: str) -> Any:
    domain = lookup(connection, deploy_id)
    if domain is None:
        raise InstanceNotFoundError(f"no domain {deploy_id}")
    return domain


class KvmVmDriver(VmDriver):
    """Runs VMs as libvirt domains (see the module docs)."""

    capabilities = frozenset({
        "poweroff", "save", "restore", "migrate", "migrate_live", "resize", "snapshot_create",
        "snapshot_revert", "snapshot_delete", "attach_disk", "detach_disk", "attach_nic",
        "detach_nic"})
    retryable: tuple[type[Exception], ...] = (TransientDriverError,)

    def __init__(self, context: DriverContext) -> None:
        """Read ``--shutdown-timeout`` from the arguments.

        Raises:
            ValueError: a wrong ``--shutdown-timeout``.
        """
        super().__init__(context)
        self.default_shutdown_timeout = shutdown_timeout_argument(context.arguments)
        self.pool = LibvirtPool(context.name, context.options.threads)
        self._cpu = CpuMeter()
        #: (uri, domain name) -> when it was first seen orphaned (monotonic seconds).

    def settings(self, host: HostRef) -> HostSettings:
        return HostSettings.of(host, self.default_shutdown_timeout)

    # -- deploy ------------------------------------------------------------------

    def check_template(self, template: Template) -> None:
        problems = check_context(template)
        if problems:
            raise ValidationError("; ".join(problems))
        try:
            check_local_part(template)
        except DomainXmlError as exc:
            raise ValidationError(f"{exc} (checked for kvm hosts)") from None

    async def deploy(self, spec: DeploySpec) -> str:
        settings = self.settings(spec.host)
        name = domain_name(spec.vm_id)
        identity = Identity(self.context.install_id, spec.vm_id, spec.token, spec.host.id)

        def work(connection: Any) -> str:
            existing = lookup(connection, name)
            if existing is not None and self._adopt(existing, identity, settings.uri):
                return name
            domain = self._define(connection, spec, settings, identity,
                                  domain_uuid(identity.install_id, spec.token))
            try:
                domain.create()
            except Exception:
                with contextlib.suppress(Exception):
                    _undefine(domain)
                raise
            return name

        return await self.pool.call(settings.uri, f"deploy {name} on {spec.host.name}", work)

    def _define(self, connection: Any, spec: DeploySpec, settings: HostSettings,
                identity: Identity, domain_id: str) -> Any:
        """Make the VM's context CD-ROM (if it has a CONTEXT) and define its domain from
        ``spec``'s template, with UUID ``domain_id``; returns the (inactive) domain.

        Blocking (the ISO tool, libvirt); runs on a libvirt pool thread.

        Raises:
            DriverError: the template or the host's platform cannot make a domain.
        """
        template = spec.template
        os_vector = template.get_vector("OS") or {}
        arch = (os_vector.get("ARCH") or "").strip() or None
        context = context_of(template)
        iso = None
        if context is not None and settings.context_pool is not None:
            iso = upload_context_iso(connection, settings.context_pool,
                                     context_files(context), spec.vm_id)
        elif context is not None:
            context_dir = Path(settings.context_dir or spec.deployment_file.parent)
            iso = str(write_context_iso(context_files(context),
                                        iso_path(context_dir, spec.vm_id),
                                        shared=settings.context_dir is not None))
        name = domain_name(spec.vm_id)
        try:
            platform = choose_platform(self.pool.capabilities(settings.uri, connection),
                                       arch=arch, domain_type=settings.domain_type)
            xml = build_domain_xml(template, DomainRequest(
                vm_id=spec.vm_id, identity=identity, platform=platform, uuid=domain_id,
                console_log=settings.console_log(name),
                cpu_shares=not is_session(str(connection.getURI())), context_iso=iso))
        except (DomainXmlError, CapabilitiesError) as exc:
            raise DriverError(f"deploy {name} on {spec.host.name}: {exc}") from None
        return connection.defineXML(xml)

    @staticmethod
    def _adopt(domain: Any, identity: Identity, uri: str) -> bool:
        """Decide about a domain that already has our name (on a pool thread).

        Returns ``True`` when it is this deploy's (started if stopped), ``False``
        when it was a stopped leftover of this VM and has been removed.

        Raises:
            DriverError: it belongs to someone else, or to a running earlier deploy.
        """
        found = read_identity(domain)
        if found is not None and found.install_id == identity.install_id \
                and found.vm_id == identity.vm_id:
            if found.token == identity.token:
                if not domain.isActive():
                    domain.create()
                return True
            if not domain.isActive():
                _undefine(domain)
                return False
        owner = "another deploy" if found is not None else "something other than cloudburst"
        raise DriverError(f"a domain named {domain.name()} already exists at {uri}, created "
                          f"by {owner}; remove it or use another host")

    async def find(self, spec: DeploySpec) -> str | None:
        settings = self.settings(spec.host)
        name = domain_name(spec.vm_id)

        def work(connection: Any) -> str | None:
            domain = lookup(connection, name)
            if domain is None:
                return None
            found = read_identity(domain)
            return name if found is not None and found.token == spec.token else None

        return await self.pool.call(settings.uri, f"find {name}", work)

    # -- stopping ------------------------------------------------------------------

    async def shutdown(self, vm: VmRef) -> None:
        """ACPI power-off, a destroy after the timeout, then undefine."""
        settings = self.settings(vm.host)
        await self._stop_guest(vm, settings)
        await self.pool.call(settings.uri, f"shutdown {vm.deploy_id} on {vm.host.name}",
                             lambda connection: _remove_vm(connection, settings, vm))
        _forget_context(settings, vm)

    async def _stop_guest(self, vm: VmRef, settings: HostSettings) -> None:
        """ACPI power-off, then a destroy after the host's shutdown timeout."""
        uri, deploy_id = settings.uri, vm.deploy_id
        libvirt = libvirt_module()

        def request(connection: Any) -> bool:
            domain = lookup(connection, deploy_id)
            if domain is None or not domain.isActive():
                return False
            if settings.shutdown_timeout <= 0 or \
                    domain.state()[0] in (libvirt.VIR_DOMAIN_PAUSED,
                                          libvirt.VIR_DOMAIN_PMSUSPENDED):
                return True  # it cannot react to ACPI: stop it now
            try:
                domain.shutdown()
            except Exception as exc:
                if error_details(exc)[0] != _OPERATION_INVALID:
                    raise
            return True

        def still_running(connection: Any) -> bool:
            domain = lookup(connection, deploy_id)
            return domain is not None and bool(domain.isActive())

        what = f"shutdown {deploy_id} on {vm.host.name}"
        if await self.pool.call(uri, what, request):
            deadline = time.monotonic() + settings.shutdown_timeout
            while await self.pool.call(uri, what, still_running):
                if time.monotonic() >= deadline:
                    self.context.logger.info(
                        "%s did not power off within %g s; destroying it", deploy_id,
                        settings.shutdown_timeout)
                    break
                await asyncio.sleep(SHUTDOWN_CHECK_INTERVAL)
        await self.pool.call(uri, what, lambda connection: _destroy_if_active(
            lookup(connection, deploy_id)))

    async def cancel(self, vm: VmRef) -> None:
        settings = self.settings(vm.host)
        await self.pool.call(settings.uri, f"cancel {vm.deploy_id} on {vm.host.name}",
                             lambda connection: _remove_vm(connection, settings, vm))
        _forget_context(settings, vm)

    async def reboot(self, vm: VmRef) -> None:
        settings = self.settings(vm.host)
        await self.pool.call(settings.uri, f"reboot {vm.deploy_id} on {vm.host.name}",
                             lambda connection: _require(connection, vm.deploy_id).reboot(0))

    async def reset(self, vm: VmRef) -> None:
        settings = self.settings(vm.host)
        await self.pool.call(settings.uri, f"reset {vm.deploy_id} on {vm.host.name}",
                             lambda connection: _require(connection, vm.deploy_id).reset(0))

    # -- optional actions --------------------------------------------------------------

    async def _on_domain(self, vm: VmRef, action: str, work: Callable[[Any], T]) -> T:
        """Run ``work(domain)`` on the VM's domain (missing: InstanceNotFoundError)."""
        settings = self.settings(vm.host)
        return await self.pool.call(
            settings.uri, f"{action} {vm.deploy_id} on {vm.host.name}",
            lambda connection: work(_require(connection, vm.deploy_id)))

    async def poweroff(self, vm: VmRef, *, hard: bool, leaving: bool) -> None:
        """Stop the guest (ACPI unless ``hard``); the definition stays for ``poweron``.

        ``leaving`` (undeploy): the host keeps nothing. The domain's snapshots
        are deleted first, while QEMU still runs when it does (an inactive
        domain's internal snapshots would need ``qemu-img``; without it only
        their metadata goes), then the definition and the context CD-ROM.
        ``poweron`` defines it again from the deployment, on any host.
        """
        settings = self.settings(vm.host)
        what = f"{'undeploy' if leaving else 'poweroff'} {vm.deploy_id} on {vm.host.name}"
        if leaving:
            await self.pool.call(settings.uri, what, lambda connection: snapshots.drop(
                lookup(connection, vm.deploy_id)))
        if hard:
            await self.pool.call(settings.uri, what, lambda connection: _destroy_if_active(
                lookup(connection, vm.deploy_id)))
        else:
            await self._stop_guest(vm, settings)
        if leaving:
            await self.pool.call(settings.uri, what, lambda connection: _remove_vm(
                connection, settings, vm))
            _forget_context(settings, vm)

    async def poweron(self, vm: VmRef, spec: DeploySpec) -> str:
        """Boot the powered-off domain from ``spec``, the deployment as the VM stands now
        (as OpenNebula boots from a new deployment file): its definition, and its context
        CD-ROM, are made again from the template, which ``updateconf`` or ``resize`` may
        have changed, keeping the domain's UUID, identity and snapshots. A host that does
        not hold the domain (undeploy) defines it anew."""
        settings = self.settings(vm.host)
        install_id = self.context.install_id

        def start(connection: Any) -> bool:
            domain = lookup(connection, vm.deploy_id)
            if domain is None:
                return False
            found = read_identity(domain)
            if found is None or found.install_id != install_id or found.vm_id != vm.vm_id:
                raise DriverError(f"a domain named {domain.name()} at {settings.uri} is not "
                                  "this VM's; remove it or use another host")
            if not domain.isActive():
                if domain.hasManagedSaveImage(0):
                    domain.managedSaveRemove(0)
                domain = self._define(connection, spec, settings,
                                      dataclasses.replace(found, host_id=vm.host.id),
                                      domain.UUIDString())
                domain.create()
            return True

        if await self.pool.call(settings.uri, f"poweron {vm.deploy_id} on {vm.host.name}",
                                start):
            return vm.deploy_id
        return await self.deploy(spec)

    async def reconfigure(self, vm: VmRef, spec: DeploySpec) -> bool:
        """Give the running guest a context CD-ROM made from ``spec``'s CONTEXT: the image
        is made again where the domain reads it, and the CD-ROM's media is ejected and
        inserted (live and in the definition) so QEMU opens the new image
        (:func:`.context_iso.swap_context_cd`); the other sections wait for the next boot
        (``poweron`` defines the domain from the deployment).

        Raises:
            DriverError: no CONTEXT, or a domain deployed without a context CD-ROM
                (a CD-ROM cannot be hot-plugged), or libvirt refused the media change.
            InstanceNotFoundError: the domain is gone.
        """
        context = context_of(spec.template)
        if context is None:
            raise DriverError(f"reconfigure {vm.deploy_id}: the VM has no CONTEXT")
        settings = self.settings(vm.host)
        home = ContextHome(settings.context_pool, settings.context_dir)
        files = context_files(context)
        await self._on_domain(vm, "reconfigure", lambda domain: swap_context_cd(
            domain.connect(), domain, home, files, vm.vm_id))
        return True

    async def save(self, vm: VmRef, checkpoint: Path, *, leaving: bool) -> None:
        """Suspend (managed save) or, when ``leaving``, save to a file and undefine."""
        settings = self.settings(vm.host)
        if not leaving:
            def managed_save(domain: Any) -> None:
                if domain.isActive() or not domain.hasManagedSaveImage(0):
                    domain.managedSave(0)

            await self._on_domain(vm, "save", managed_save)
            return
        path = self._checkpoint(settings, vm, checkpoint)
        home = ContextHome(settings.context_pool, settings.context_dir)

        def save_and_leave(connection: Any) -> None:
            domain = lookup(connection, vm.deploy_id)
            if domain is not None or not os.path.exists(path):  # else saved by an earlier try
                domain = _require(connection, vm.deploy_id)
                if domain.isActive():
                    snapshots.stash(domain, snapshots.export(domain))
                    stash_context_cd(connection, domain.XMLDesc(0), vm.vm_id, home,
                                     _cd_stash(checkpoint))
                    domain.save(path)
                if domain.isPersistent():
                    _undefine(domain)
            drop_context_cd(connection, home, vm.vm_id)  # the host keeps nothing

        await self.pool.call(settings.uri, f"save {vm.deploy_id} on {vm.host.name}",
                             save_and_leave)

    async def restore(self, vm: VmRef, checkpoint: Path) -> str:
        """Start a managed-saved domain, or restore the file a stop wrote (see the module)."""
        settings = self.settings(vm.host)
        path = self._checkpoint(settings, vm, checkpoint)

        def resume(connection: Any) -> None:
            domain = lookup(connection, vm.deploy_id)
            if domain is not None and domain.isActive():
                return
            if domain is not None and domain.hasManagedSaveImage(0):
                domain.create()
                return
            if not os.path.exists(path):
                raise DriverError(f"no saved state of {vm.deploy_id}: neither a managed save "
                                  f"on {vm.host.name} nor {path}")
            if domain is not None:
                make_room(connection, vm.deploy_id, vm.vm_id, self.context.install_id)
            stash = _cd_stash(checkpoint)
            saved = connection.saveImageGetXMLDesc(path, libvirt_module().VIR_DOMAIN_XML_SECURE)
            placed = unstash_context_cd(connection, saved, vm.vm_id, ContextHome(
                settings.context_pool, settings.context_dir), stash)
            if placed is None:
                connection.restore(path)
            else:  # the stopped VM's context CD-ROM, placed for this host
                connection.restoreFlags(path, placed, 0)
                stash.unlink()
            restored = persist(connection, _require(connection, vm.deploy_id))
            identity = read_identity(restored)
            if identity is not None:
                write_identity(restored, dataclasses.replace(identity, host_id=vm.host.id))
            for problem in snapshots.redefine(restored, snapshots.unstash(restored)):
                self.context.logger.warning("%s: %s lost by the stop", vm.deploy_id, problem)
            with contextlib.suppress(OSError):
                os.unlink(path)

        await self.pool.call(settings.uri, f"restore {vm.deploy_id} on {vm.host.name}", resume)
        return vm.deploy_id

    @staticmethod
    def _checkpoint(settings: HostSettings, vm: VmRef, checkpoint: Path) -> str:
        if settings.checkpoint_dir is None:
            return str(checkpoint)
        return posixpath.join(settings.checkpoint_dir, f"one-{vm.vm_id}.checkpoint")

    async def migrate(self, vm: VmRef, destination: HostRef, *, live: bool) -> str:
        """Cold (save and restore) or live (``virDomainMigrate``); see :mod:`.migration`."""
        source, target = self.settings(vm.host), self.settings(destination)
        name, install_id, log = vm.deploy_id, self.context.install_id, self.context.logger
        what = (f"{'live ' if live else ''}migrate {name} from {vm.host.name} "
                f"to {destination.name}")
        if source.uri == target.uri:  # one hypervisor, two hosts: only the metadata moves
            def relabel(connection: Any) -> None:
                domain = _require(connection, name)
                identity = read_identity(domain)
                if identity is not None:
                    write_identity(domain, dataclasses.replace(identity,
                                                               host_id=destination.id))

            await self.pool.call(source.uri, what, relabel)
            return name
        uris = (source.uri, target.uri)
        homes = (ContextHome(source.context_pool, source.context_dir),
                 ContextHome(target.context_pool, target.context_dir))
        if live:
            await self.pool.call_pair(uris, what, lambda first, second: migration.live(
                first, second, name, destination.id, install_id, log, homes))
        else:
            path = migration_file(source, vm.vm_id)
            await self.pool.call_pair(uris, what, lambda first, second: migration.cold(
                first, second, name, path, destination.id, install_id, log, homes))
        return name

    async def resize(self, vm: VmRef, spec: ResizeSpec) -> None:
        """Rewrite the powered-off domain's definition with the new capacity.

        A host that does not hold the domain (undeployed) has nothing to change:
        the next deploy builds it from the resized template.
        """
        settings = self.settings(vm.host)
        libvirt = libvirt_module()

        def redefine(connection: Any) -> None:
            domain = lookup(connection, vm.deploy_id)
            if domain is None:
                return
            if domain.isActive():
                raise DriverError(f"{vm.deploy_id} is running; power it off to resize it")
            try:
                xml = resized_xml(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE
                                                 | libvirt.VIR_DOMAIN_XML_SECURE),
                                  memory_mb=spec.memory_mb, vcpu=spec.vcpu, cpu=spec.cpu)
            except DomainXmlError as exc:
                raise DriverError(f"resize {vm.deploy_id}: {exc}") from None
            connection.defineXML(xml)

        await self.pool.call(settings.uri, f"resize {vm.deploy_id} on {vm.host.name}", redefine)

    async def snapshot_create(self, vm: VmRef, snapshot_id: int, name: str) -> str:
        return await self._on_domain(vm, "snapshot_create", lambda domain: snapshots.create(
            domain, snapshot_id, name))

    async def snapshot_revert(self, vm: VmRef, provider_name: str) -> None:
        await self._on_domain(vm, "snapshot_revert",
                              lambda domain: snapshots.revert(domain, provider_name))

    async def snapshot_delete(self, vm: VmRef, provider_name: str) -> None:
        await self._on_domain(vm, "snapshot_delete",
                              lambda domain: snapshots.delete(domain, provider_name))

    async def attach_disk(self, vm: VmRef, disk: DeviceSpec) -> None:
        await self._on_domain(vm, "attach_disk", lambda domain: devices.attach_disk(domain, disk))

    async def detach_disk(self, vm: VmRef, disk: DeviceSpec) -> None:
        await self._on_domain(vm, "detach_disk", lambda domain: devices.detach_disk(domain, disk))

    async def attach_nic(self, vm: VmRef, nic: DeviceSpec) -> None:
        await self._on_domain(vm, "attach_nic",
                              lambda domain: devices.attach_nic(domain, vm.vm_id, nic))

    async def detach_nic(self, vm: VmRef, nic: DeviceSpec) -> None:
        await self._on_domain(vm, "detach_nic",
                              lambda domain: devices.detach_nic(domain, vm.vm_id, nic))

    # -- observing -----------------------------------------------------------------------

    async def poll(self, vms: Sequence[VmRef]) -> dict[int, PollResult]:
        """One listing per host URI; a VM whose domain is missing is ``d``.

        When every URI fails the error is raised (nothing is learnt); when
        only some do, their VMs are reported ``-`` with ``ERROR`` set.
        """
        groups: dict[str, list[VmRef]] = {}
        for vm in vms:
            groups.setdefault(self.settings(vm.host).uri, []).append(vm)
        uris = list(groups)
        outcomes = await asyncio.gather(
            *(self.pool.call(uri, f"poll VMs of {groups[uri][0].host.name}", sample_domains)
              for uri in uris), return_exceptions=True)
        results: dict[int, PollResult] = {}
        failures: list[BaseException] = []
        for uri, outcome in zip(uris, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, DriverError):
                    raise outcome
                failures.append(outcome)
                error = PollResult(PollState.UNKNOWN, {"ERROR": one_line(outcome.message)})
                results.update({vm.vm_id: error for vm in groups[uri]})
                continue
            results.update(self._match(uri, groups[uri], outcome))
        if failures and len(failures) == len(uris):
            raise failures[0]
        return results

    def _match(self, uri: str, vms: Sequence[VmRef], samples: Sequence[DomainSample]
               ) -> dict[int, PollResult]:
        cpu = self._cpu.measure(uri, samples)
        by_id = {sample.name: sample for sample in samples}
        by_id.update({sample.uuid: sample for sample in samples})
        results: dict[int, PollResult] = {}
        for vm in vms:
            sample = by_id.get(vm.deploy_id) or by_id.get(vm.deploy_id.lower())
            results[vm.vm_id] = (PollResult(PollState.GONE) if sample is None
                                 else poll_result(sample, cpu.get(sample.uuid)))
        return results

    async def sweep(self, host: HostRef, live_vm_ids: frozenset[int],
                    grace_period: float, sightings: OrphanSightings) -> SweepReport | None:
        settings = self.settings(host)
        install_id = self.context.install_id

        def ours(connection: Any) -> list[str]:
            names: list[str] = []
            for sample in sample_domains(connection):
                found = read_identity(sample.handle)
                if found is not None and found.install_id == install_id \
                        and found.host_id == host.id and found.vm_id not in live_vm_ids:
                    names.append(sample.name)
            return names

        orphans = await self.pool.call(settings.uri, f"sweep {host.name}", ours)
        ages = sightings.observe(orphans, time.time())
        terminated: list[str] = []
        for name in sightings.due(ages, grace_period):
            await self.pool.call(settings.uri, f"remove orphan {name}",
                                 functools.partial(_remove, deploy_id=name))
            sightings.forget(name)
            terminated.append(name)
        return SweepReport(orphans=ages, terminated=terminated)

    async def close(self) -> None:
        await self.pool.close()
