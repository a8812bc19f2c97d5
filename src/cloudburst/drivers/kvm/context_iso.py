"""The context CD-ROM of a kvm VM: an ISO 9660 image made with Debian's ``genisoimage``.

The image (volume label ``CONTEXT``, Rock Ridge and Joliet names) holds the
files of :func:`cloudburst.drivers.context.context_files`. It is written as
``one-<vmid>.context.iso`` in the host's ``CONTEXT_DIR`` (a directory the
hypervisor's user can read, e.g. next to the guest images) or, without one,
in the VM's directory next to its deployment file, and removed when the
domain is. A system libvirtd hands the file to QEMU's user itself (dynamic
ownership), so it stays private to the daemon's user there; in a
``CONTEXT_DIR`` it is readable by all who may enter that directory, whose own
mode decides who that is. ``xorriso -as mkisofs`` is used when
``genisoimage`` is missing.

A hypervisor on another machine (a ``LIBVIRT_URI`` naming a host, e.g.
``qemu+ssh://node1/system``, or a host with ``CONTEXT_POOL``) cannot read a
file of the daemon's machine: the image is then made here and uploaded into a
libvirt storage pool of that hypervisor (``CONTEXT_POOL``, default the pool
named ``default``) as volume ``one-<vmid>.context.iso`` through a libvirt
stream (``virStorageVolUpload``); the domain's CD-ROM is the volume's path
there, and the volume is deleted when the domain is.

A migration to another hypervisor takes the CD-ROM along
(:func:`carry_context_cd`): the image is read from the source (its pool's
volume through a libvirt stream, or the file here), placed where the
destination keeps them (its pool, or its ``CONTEXT_DIR``), the domain
arrives reading that copy, and the source's copy is removed.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from xml.etree import ElementTree
from xml.sax.saxutils import escape as xml_escape

from cloudburst.drivers.context import CONTEXT_LABEL
from cloudburst.drivers.kvm.connection import libvirt_module
from cloudburst.errors import DriverError, one_line

#: Debian packages providing the ISO builder (scripts/lib/setup.sh installs the first).
ISO_TOOLS: Final = (("genisoimage",), ("xorriso", "-as", "mkisofs"))


def iso_path(directory: Path, vm_id: int) -> Path:
    """Where the context ISO of VM ``vm_id`` goes in ``directory``."""
    return directory / f"one-{vm_id}.context.iso"


def _builder() -> list[str]:
    for tool in ISO_TOOLS:
        found = shutil.which(tool[0])
        if found is not None:
            return [found, *tool[1:]]
    raise DriverError("cannot make the context CD-ROM: genisoimage is missing "
                      "(apt-get install genisoimage)")


def write_context_iso(files: Mapping[str, bytes], target: Path, *, shared: bool) -> Path:
    """Make the ISO of ``files`` at ``target`` (replaced atomically); ``shared``: mode 0644.

    Blocking (runs the tool); call it from a worker thread.

    Raises:
        DriverError: the tool is missing or failed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="context-", dir=target.parent) as scratch:
        content = Path(scratch) / "content"
        content.mkdir()
        for name, data in files.items():
            path = content / name
            path.write_bytes(data)
            path.chmod(0o700 if name == "start_script" else 0o600)
        partial = Path(scratch) / "context.iso"
        completed = subprocess.run(
            [*_builder(), "-quiet", "-o", str(partial), "-V", CONTEXT_LABEL, "-J", "-R",
             str(content)], capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "LC_ALL": "C"})
        if completed.returncode != 0:
            raise DriverError("cannot make the context CD-ROM: "
                              + one_line(completed.stderr.strip() or "the ISO tool failed", 300))
        partial.chmod(0o644 if shared else 0o600)
        os.replace(partial, target)
    return target


def remove_context_iso(directory: Path, vm_id: int) -> None:
    """Remove VM ``vm_id``'s context ISO from ``directory`` (nothing when there is none)."""
    with contextlib.suppress(FileNotFoundError):
        iso_path(directory, vm_id).unlink()


def make_context_iso(files: Mapping[str, bytes]) -> bytes:
    """The ISO of ``files`` as bytes (made in a private temporary directory).

    Raises:
        DriverError: the tool is missing or failed.
    """
    with tempfile.TemporaryDirectory(prefix="cloudburst-context-") as scratch:
        return write_context_iso(files, Path(scratch) / "context.iso", shared=False).read_bytes()


def volume_name(vm_id: int) -> str:
    """The storage volume holding VM ``vm_id``'s context CD-ROM."""
    return iso_path(Path(), vm_id).name


def _pool(connection: Any, pool_name: str) -> Any:
    try:
        pool = connection.storagePoolLookupByName(pool_name)
    except Exception:
        raise DriverError(f"no storage pool {pool_name!r} at {connection.getURI()} for the "
                          "context CD-ROM (set the host's CONTEXT_POOL to a directory pool "
                          "there)") from None
    if not pool.isActive():
        raise DriverError(f"storage pool {pool_name!r} at {connection.getURI()} is not "
                          "active (virsh pool-start)")
    return pool


def upload_context_iso(connection: Any, pool_name: str, files: Mapping[str, bytes],
                       vm_id: int) -> str:
    """Make the ISO of ``files`` and upload it as VM ``vm_id``'s volume into pool
    ``pool_name`` of ``connection`` (replacing an earlier one); its path there.

    Blocking (the tool and libvirt); call it on a libvirt pool thread.

    Raises:
        DriverError: the tool failed, or the pool is missing or refused the volume.
    """
    return _upload(connection, pool_name, make_context_iso(files), vm_id)


def _upload(connection: Any, pool_name: str, data: bytes, vm_id: int) -> str:
    """Upload ``data`` as VM ``vm_id``'s context volume (see :func:`upload_context_iso`)."""
    pool = _pool(connection, pool_name)
    name = volume_name(vm_id)
    with contextlib.suppress(Exception):
        pool.storageVolLookupByName(name).delete(0)
    xml = (f"<volume><name>{name}</name><capacity unit='bytes'>{len(data)}</capacity>"
           "<target><format type='raw'/><permissions><mode>0600</mode></permissions>"
           "</target></volume>")
    try:
        volume = pool.createXML(xml, 0)
    except Exception as exc:
        raise DriverError(f"cannot create the context volume {name} in pool {pool_name!r}: "
                          + one_line(str(exc), 300)) from None
    stream = connection.newStream(0)
    try:
        volume.upload(stream, 0, len(data), 0)
        sent = 0
        while sent < len(data):
            sent += stream.send(data[sent:sent + 262144])
        stream.finish()
    except Exception as exc:
        with contextlib.suppress(Exception):
            stream.abort()
        with contextlib.suppress(Exception):
            volume.delete(0)
        raise DriverError(f"cannot upload the context CD-ROM into pool {pool_name!r}: "
                          + one_line(str(exc), 300)) from None
    return str(volume.path())


def remove_context_volume(connection: Any, pool_name: str, vm_id: int) -> None:
    """Delete VM ``vm_id``'s context volume from pool ``pool_name`` (nothing when gone)."""
    with contextlib.suppress(Exception):
        pool = connection.storagePoolLookupByName(pool_name)
        pool.storageVolLookupByName(volume_name(vm_id)).delete(0)


def _download(connection: Any, pool_name: str, vm_id: int) -> bytes:
    """The bytes of VM ``vm_id``'s context volume in pool ``pool_name``."""
    name = volume_name(vm_id)
    try:
        volume = _pool(connection, pool_name).storageVolLookupByName(name)
        size = int(volume.info()[1])
        stream = connection.newStream(0)
        volume.download(stream, 0, size, 0)
        chunks: list[bytes] = []
        while True:
            chunk = stream.recv(262144)
            if not chunk or not isinstance(chunk, bytes):
                break
            chunks.append(chunk)
        stream.finish()
    except DriverError:
        raise
    except Exception as exc:
        raise DriverError(f"cannot read the context volume {name} of pool {pool_name!r} at "
                          f"{connection.getURI()}: " + one_line(str(exc), 300)) from None
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class ContextHome:
    """Where a host keeps context CD-ROMs: a storage pool of its hypervisor (``pool``),
    else a directory of this machine (``directory``; ``None``: each VM's own)."""

    pool: str | None
    directory: str | None


@dataclass(frozen=True, slots=True)
class CdMove:
    """A VM's context CD-ROM copied for a migration: the path the domain used on the
    source, the copy's path on the destination, and both homes (to finish or undo)."""

    vm_id: int
    old: str
    new: str
    source: ContextHome
    destination: ContextHome

    def domain_xml(self, xml: str) -> str:
        """``xml`` (the domain's) with the CD-ROM reading the destination's copy."""
        return _repointed(xml, self.old, self.new)

    def leave(self, source: Any) -> None:
        """The migration is done: remove the source's copy."""
        drop_context_cd(source, self.source, self.vm_id)

    def undo(self, destination: Any) -> None:
        """The migration failed: remove the destination's copy."""
        drop_context_cd(destination, self.destination, self.vm_id)


def drop_context_cd(connection: Any, home: ContextHome, vm_id: int) -> None:
    """Remove VM ``vm_id``'s CD-ROM from ``home`` (a VM's own directory keeps its
    copy: it goes with that directory)."""
    if home.pool is not None:
        remove_context_volume(connection, home.pool, vm_id)
    elif home.directory is not None:
        remove_context_iso(Path(home.directory), vm_id)


def _repointed(xml: str, old: str, new: str) -> str:
    quoted = f"file='{xml_escape(old, {chr(39): '&apos;'})}'"
    if quoted not in xml:
        raise DriverError(f"the context CD-ROM {old} is not in the domain's definition")
    return xml.replace(quoted, f"file='{xml_escape(new, {chr(39): '&apos;'})}'")


def _read_cd(connection: Any, home: ContextHome, path: str, vm_id: int) -> bytes:
    """The CD-ROM's image: downloaded from ``home``'s pool, else read at ``path`` here."""
    if home.pool is not None:
        return _download(connection, home.pool, vm_id)
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DriverError(f"cannot read the context CD-ROM {path}: {exc.strerror}") from None


def _place_cd(connection: Any, home: ContextHome, data: bytes, vm_id: int,
              own_directory: Path | None) -> str:
    """Put ``data`` where ``home`` keeps CD-ROMs (``own_directory``: the VM's directory,
    for a home that has neither pool nor directory); the copy's path there."""
    if home.pool is not None:
        return _upload(connection, home.pool, data, vm_id)
    directory = home.directory or own_directory
    if directory is None:
        raise DriverError("the destination host has neither CONTEXT_POOL nor CONTEXT_DIR: "
                          "set one so the context CD-ROM can follow the VM")
    target = iso_path(Path(directory), vm_id)
    _write(target, data, 0o644 if home.directory else 0o600)
    return str(target)


def _write(target: Path, data: bytes, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(data)
    partial.chmod(mode)
    os.replace(partial, target)


def carry_context_cd(source: Any, destination: Any, xml: str, vm_id: int,
                     homes: tuple[ContextHome, ContextHome]) -> CdMove | None:
    """Copy VM ``vm_id``'s context CD-ROM (found in the domain's ``xml``) to where the
    destination hypervisor keeps them; ``None`` when there is none, or when the
    destination reads the same file (two hypervisors of this machine, one directory).

    Blocking (libvirt streams, files); call it on a libvirt pool thread.

    Raises:
        DriverError: the copy cannot be read or placed, or the destination has neither
            a CONTEXT_POOL nor a CONTEXT_DIR for a CD-ROM that came from a pool.
    """
    old = _cd_source(xml, vm_id)
    if old is None:
        return None
    home, away = homes
    if away.pool is None and home.pool is None and away.directory in (None, home.directory):
        return None
    data = _read_cd(source, home, old, vm_id)
    return CdMove(vm_id, old, _place_cd(destination, away, data, vm_id, None), home, away)


def stash_context_cd(connection: Any, xml: str, vm_id: int, home: ContextHome,
                     stash: Path) -> None:
    """Before a stop (the VM leaves its host, to resume on any): keep a copy of the
    CD-ROM at ``stash`` on this machine (0600) when ``home`` is a pool or a
    CONTEXT_DIR; :func:`unstash_context_cd` places it for the host it resumes on."""
    old = _cd_source(xml, vm_id)
    if old is None or (home.pool is None and home.directory is None):
        return
    _write(stash, _read_cd(connection, home, old, vm_id), 0o600)


def unstash_context_cd(connection: Any, xml: str, vm_id: int, home: ContextHome,
                       stash: Path) -> str | None:
    """The saved domain's ``xml`` with its CD-ROM placed for this host from ``stash``
    (its pool, its CONTEXT_DIR or the VM's directory, next to ``stash``); ``None``
    when nothing was stashed. The stash stays until :meth:`Path.unlink` by the caller."""
    old = _cd_source(xml, vm_id)
    if old is None or not stash.exists():
        return None
    new = _place_cd(connection, home, stash.read_bytes(), vm_id, stash.parent)
    return _repointed(xml, old, new)


def _cd_source(xml: str, vm_id: int) -> str | None:
    """The file of the domain's context CD-ROM (``one-<vmid>.context.iso``), if it has one."""
    found = _cd_disk(xml, vm_id)
    return None if found is None else found[1]


def _cd_disk(xml: str, vm_id: int) -> tuple[ElementTree.Element, str] | None:
    """The domain's context CD-ROM ``<disk>`` element and its file, if it has one."""
    devices = ElementTree.fromstring(xml).find("devices")
    for disk in [] if devices is None else devices.findall("disk"):
        source = disk.find("source")
        path = None if source is None else source.get("file")
        if disk.get("device") == "cdrom" and path and \
                posixpath.basename(path) == volume_name(vm_id):
            return disk, path
    return None


def swap_context_cd(connection: Any, domain: Any, home: ContextHome,
                    files: Mapping[str, bytes], vm_id: int) -> str:
    """Give running ``domain`` (VM ``vm_id``) a context CD-ROM holding ``files``; the
    image's path.

    The image is made again where the domain reads it (the volume of ``home``'s pool
    is replaced, or the file rewritten atomically). QEMU keeps the image it opened,
    so the CD-ROM is then ejected (forced: a guest may have locked the tray) and the
    new image inserted, each live and, for a persistent domain, in its definition.
    The guest sees a media change; it reads the new files when it mounts it again.

    Blocking (the ISO tool, libvirt); call it on a libvirt pool thread.

    Raises:
        DriverError: the domain has no context CD-ROM (a CD-ROM cannot be hot-plugged:
            the new CONTEXT then waits for the next boot), the image cannot be made,
            or libvirt refused the media change.
    """
    found = _cd_disk(domain.XMLDesc(0), vm_id)
    if found is None:
        raise DriverError(f"{domain.name()} has no context CD-ROM to change (it was deployed "
                          "without CONTEXT); the new CONTEXT applies at its next boot")
    disk, path = found
    if home.pool is not None:
        path = upload_context_iso(connection, home.pool, files, vm_id)
    else:
        write_context_iso(files, Path(path), shared=home.directory is not None)
    libvirt = libvirt_module()
    flags = libvirt.VIR_DOMAIN_AFFECT_LIVE
    if domain.isPersistent():
        flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
    for tag in ("alias", "address", "backingStore"):
        for child in disk.findall(tag):
            disk.remove(child)
    source = disk.find("source")
    try:
        if source is not None:
            disk.remove(source)
        domain.updateDeviceFlags(ElementTree.tostring(disk, encoding="unicode"),
                                 flags | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE)
        inserted = ElementTree.SubElement(disk, "source")
        inserted.set("file", path)
        domain.updateDeviceFlags(ElementTree.tostring(disk, encoding="unicode"), flags)
    except libvirt.libvirtError as exc:
        raise DriverError(f"cannot change the context CD-ROM of {domain.name()}: "
                          + one_line(str(exc), 300)) from None
    return path
