"""A tiny bootable guest built from Debian packages: ``cloudburst guest build``.

Something real for a local kvm host to boot, with nothing binary shipped:
:func:`build_guest` takes a Debian kernel (from ``/boot`` when one is readable,
else ``apt-get download`` of ``linux-image-cloud-amd64``'s kernel, falling
back to ``linux-image-amd64``, unpacked with ``dpkg-deb -x``) and builds a
gzip'd ``newc`` initramfs with ``cpio`` around Debian's ``busybox-static``.
Its ``/init`` prints :data:`GUEST_UP` on the serial console
(``console=ttyS0``), then waits for the ACPI power button (``button.ko`` and
``evdev.ko`` from the same kernel, so ``onevm terminate`` shuts it down
gracefully), prints :data:`GUEST_POWEROFF` and powers off. It needs no disk
and boots in a few seconds even under QEMU's TCG.

When the VM has an OpenNebula context CD-ROM (``CONTEXT = [ ... ]`` on a kvm
host; IDE CD-ROM drivers and ISO 9660 are loaded from the same kernel), the
guest mounts it and prints each variable of its ``context.sh`` on the console
as ``CLOUDBURST-CONTEXT KEY='value'`` (:data:`GUEST_CONTEXT`), which is how
tests see that the context reached the VM.

A VM template boots it with::

    OS = [ KERNEL = "<dir>/vmlinuz", INITRD = "<dir>/initrd.gz",
           KERNEL_CMD = "console=ttyS0 quiet" ]
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cloudburst.errors import CloudburstError

__all__ = ["DEBIAN_PACKAGES", "GUEST_CONTEXT", "GUEST_POWEROFF", "GUEST_UP", "Guest",
           "GuestBuildError", "build_guest"]


class GuestBuildError(CloudburstError):
    """The guest could not be built (the message says what is missing)."""


#: What the guest prints on its serial console once up, and before powering off.
GUEST_UP: Final = "CLOUDBURST-GUEST-UP"
GUEST_POWEROFF: Final = "CLOUDBURST-GUEST-POWEROFF"
#: What starts each context variable the guest prints (``CLOUDBURST-CONTEXT KEY='value'``).
GUEST_CONTEXT: Final = "CLOUDBURST-CONTEXT"

#: Kernel modules the guest loads (with what they depend on): the power button,
#: and an IDE CD-ROM with ISO 9660 for the context CD.
GUEST_MODULES: Final = ("evdev", "button", "ata_piix", "sr_mod", "isofs")

#: Debian packages the build needs (scripts/run installs them: GUEST_PACKAGES).
DEBIAN_PACKAGES: Final = ("busybox-static", "cpio")
KERNEL_PACKAGES: Final = ("linux-image-cloud-amd64", "linux-image-amd64")

INIT: Final = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for module in /lib/modules/*.ko; do insmod "$module" 2>/dev/null; done
echo "{GUEST_UP}"
for event in /sys/class/input/event*; do
  if grep -q "Power Button" "$event/device/name" 2>/dev/null; then
    (head -c 1 "/dev/input/${{event##*/}}" >/dev/null; touch /tmp/power) &
  fi
done
mkdir -p /mnt/context
tries=0
while [ "$tries" -lt 20 ]; do
  for device in /dev/sr0 /dev/sr1 /dev/hdc /dev/hdd; do
    if [ -b "$device" ] && mount -t iso9660 -o ro "$device" /mnt/context 2>/dev/null; then
      tries=done; break 2
    fi
  done
  tries=$((tries + 1)); sleep 0.25
done
if [ -f /mnt/context/context.sh ]; then
  grep -v "^#" /mnt/context/context.sh | while IFS= read -r line; do
    echo "{GUEST_CONTEXT} $line"
  done
fi
while [ ! -e /tmp/power ]; do sleep 0.2; done
echo "{GUEST_POWEROFF}"
poweroff -f
"""


@dataclass(frozen=True)
class Guest:
    """A built guest: its kernel and initramfs, and where the kernel came from."""

    kernel: Path
    initrd: Path
    source: str


def _run(*argv: str, cwd: Path | None = None) -> str:
    """``argv``'s stdout; raises :class:`GuestBuildError` with its stderr when it fails."""
    completed = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300,
                               check=False, env={**os.environ, "LC_ALL": "C"})
    if completed.returncode != 0:
        raise GuestBuildError(f"{' '.join(argv)} failed ({completed.returncode}): "
                           f"{completed.stderr.strip()[-2000:]}")
    return completed.stdout


def _installed_kernel() -> tuple[Path, Path] | None:
    """``(vmlinuz, modules dir)`` of a readable kernel in /boot, if any."""
    for kernel in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        modules = Path("/lib/modules") / kernel.name.removeprefix("vmlinuz-")
        if os.access(kernel, os.R_OK) and modules.is_dir():
            return kernel, modules
    return None


def _downloaded_kernel(directory: Path) -> tuple[Path, Path, str]:
    """Download and unpack a Debian kernel package; ``(vmlinuz, modules dir, package)``.

    When the package lists are stale (the mirror moved on to a newer kernel),
    they are refreshed once with ``apt-get update`` (as root) and the download
    is tried again.
    """
    try:
        return _download_kernel_once(directory)
    except GuestBuildError:
        if os.geteuid() != 0:
            raise
        _run("apt-get", "update", "-qq")
        return _download_kernel_once(directory)


def _download_kernel_once(directory: Path) -> tuple[Path, Path, str]:
    errors: list[str] = []
    for meta in KERNEL_PACKAGES:
        try:
            depends = _run("apt-cache", "depends", "--no-recommends", "--no-suggests", meta)
            found = re.search(r"Depends: (linux-image-\S+)", depends)
            package = found.group(1) if found else meta
            _run("apt-get", "download", "-q", package, cwd=directory)
        except GuestBuildError as exc:
            errors.append(str(exc))
            continue
        [deb] = directory.glob(f"{package}_*.deb")
        unpacked = directory / "kernel"
        _run("dpkg-deb", "-x", str(deb), str(unpacked))
        deb.unlink()
        [kernel] = sorted((unpacked / "boot").glob("vmlinuz-*"))
        [modules] = sorted((unpacked / "lib" / "modules").iterdir())
        return kernel, modules, package
    raise GuestBuildError("cannot download a Debian kernel: " + " | ".join(errors))


def _static_busybox() -> Path:
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise GuestBuildError("busybox is missing: apt-get install busybox-static")
    ldd = subprocess.run(["ldd", str(busybox)], capture_output=True, text=True, check=False)
    if "not a dynamic executable" not in ldd.stdout + ldd.stderr:
        raise GuestBuildError("/bin/busybox is not static: apt-get install busybox-static")
    return busybox


def _module(modules: Path, name: str) -> bytes | None:
    """A kernel module's bytes (``.ko`` or ``.ko.xz``), or None when built in or absent."""
    for path in sorted(modules.rglob(f"{name}.ko*")):
        if path.name == f"{name}.ko":
            return path.read_bytes()
        if path.name == f"{name}.ko.xz":
            return lzma.decompress(path.read_bytes())
    return None


def _load_order(modules: Path, names: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """``names`` and the modules they depend on (their ``depends=`` in ``.modinfo``),
    dependencies first; modules built into the kernel or absent are left out."""
    ordered: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        data = _module(modules, name)
        if data is None:
            return
        found = re.search(rb"depends=([^\x00]*)\x00", data)
        for dependency in (found.group(1).decode() if found else "").split(","):
            if dependency:
                visit(dependency.replace("-", "_"))
        ordered.append((name, data))

    for name in names:
        visit(name)
    return ordered


def build_guest(directory: Path) -> Guest:
    """Build ``vmlinuz`` and ``initrd.gz`` in ``directory`` (made readable by everyone).

    Raises:
        GuestBuildError: a package or tool is missing, or a step failed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    installed = _installed_kernel()
    if installed is not None:
        kernel, modules = installed
        source = str(kernel)
    else:
        kernel, modules, source = _downloaded_kernel(directory)
    root = directory / "initramfs"
    for sub in ("bin", "dev", "proc", "sys", "tmp", "lib/modules"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(_static_busybox(), root / "bin" / "busybox")
    # /init loads them in name order: the number keeps dependencies first.
    for number, (name, data) in enumerate(_load_order(modules, GUEST_MODULES)):
        (root / "lib" / "modules" / f"{number:02d}-{name}.ko").write_bytes(data)
    (root / "mnt").mkdir()
    (root / "init").write_text(INIT, encoding="utf-8")
    (root / "init").chmod(0o755)
    names = sorted(str(path.relative_to(root)) for path in root.rglob("*"))
    archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root,
                             input="\n".join([".", *names]).encode() + b"\n",
                             capture_output=True, check=True).stdout
    initrd = directory / "initrd.gz"
    initrd.write_bytes(gzip.compress(archive, compresslevel=1))
    shutil.rmtree(root)
    guest_kernel = directory / "vmlinuz"
    shutil.copyfile(kernel, guest_kernel)
    for path in (guest_kernel, initrd):
        path.chmod(0o644)
    if installed is None:
        shutil.rmtree(directory / "kernel")
    return Guest(guest_kernel, initrd, source)
