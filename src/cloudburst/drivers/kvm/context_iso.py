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
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

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
