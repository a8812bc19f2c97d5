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
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from cloudburst.drivers.context import CONTEXT_LABEL
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
    data = make_context_iso(files)
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
