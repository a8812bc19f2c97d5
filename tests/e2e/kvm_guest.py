"""A tiny bootable guest and a private libvirtd, built and started at test time.

A plain module (import it; there is no conftest)::

    from kvm_guest import GUEST_UP, build_guest, private_libvirtd

    guest = build_guest(directory)           # kernel + busybox initramfs
    with private_libvirtd(directory) as libvirtd:
        ... LIBVIRT_URI = libvirtd.uri, CONSOLE_LOG_DIR = libvirtd.console_dir ...

Nothing binary is committed: :func:`build_guest` takes a Debian kernel (from
``/boot`` when there is one, else ``apt-get download`` of the
``linux-image-cloud-amd64`` kernel, falling back to ``linux-image-amd64``,
unpacked with ``dpkg-deb -x``) and builds a gzip'd ``newc`` initramfs with
``cpio`` around Debian's ``busybox-static``. Its ``/init`` prints
:data:`GUEST_UP` on the console (``console=ttyS0``), then waits for the ACPI
power button (``button.ko`` and ``evdev.ko`` from the same kernel), prints
:data:`GUEST_POWEROFF` and powers off.

:func:`private_libvirtd` runs ``libvirtd -d`` in *session* mode with its
config, runtime and cache directories in a private directory, as the
unprivileged user ``nobody`` when the tests run as root (a session daemon
needs no system configuration, no ``libvirt-qemu`` user and no systemd, and
cannot clash with a system libvirtd). Guests run under QEMU's TCG (``nobody``
has no ``/dev/kvm``). On exit every domain is destroyed, then libvirtd and the
``virtlogd`` it spawned are stopped.
"""

from __future__ import annotations

import contextlib
import gzip
import lzma
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

GUEST_UP = "CLOUDBURST-GUEST-UP"
GUEST_POWEROFF = "CLOUDBURST-GUEST-POWEROFF"

#: Debian packages the guest and the daemon need (installed by scripts/test).
DEBIAN_PACKAGES = ("libvirt-daemon", "libvirt-daemon-driver-qemu", "qemu-system-x86",
                   "busybox-static", "cpio")
KERNEL_PACKAGES = ("linux-image-cloud-amd64", "linux-image-amd64")
SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

INIT = f"""#!/bin/busybox sh
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
while [ ! -e /tmp/power ]; do sleep 0.2; done
echo "{GUEST_POWEROFF}"
poweroff -f
"""


@dataclass(frozen=True)
class Guest:
    kernel: Path
    initrd: Path
    source: str  #: where the kernel came from, for messages


def _run(*argv: str, cwd: Path | None = None) -> str:
    completed = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300,
                               check=False, env={**os.environ, "LC_ALL": "C"})
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({completed.returncode}): "
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
    except RuntimeError:
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
        except RuntimeError as exc:
            errors.append(str(exc))
            continue
        [deb] = directory.glob(f"{package}_*.deb")
        unpacked = directory / "kernel"
        _run("dpkg-deb", "-x", str(deb), str(unpacked))
        deb.unlink()
        [kernel] = sorted((unpacked / "boot").glob("vmlinuz-*"))
        [modules] = sorted((unpacked / "lib" / "modules").iterdir())
        return kernel, modules, package
    raise RuntimeError("cannot download a Debian kernel: " + " | ".join(errors))


def _static_busybox() -> Path:
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise RuntimeError("busybox is missing: apt-get install busybox-static")
    ldd = subprocess.run(["ldd", str(busybox)], capture_output=True, text=True, check=False)
    if "not a dynamic executable" not in ldd.stdout + ldd.stderr:
        raise RuntimeError("/bin/busybox is not static: apt-get install busybox-static")
    return busybox


def _module(modules: Path, name: str) -> bytes | None:
    """A kernel module's bytes (``.ko`` or ``.ko.xz``), or None when built in or absent."""
    for path in sorted(modules.rglob(f"{name}.ko*")):
        if path.name == f"{name}.ko":
            return path.read_bytes()
        if path.name == f"{name}.ko.xz":
            return lzma.decompress(path.read_bytes())
    return None


def build_guest(directory: Path) -> Guest:
    """Build the kernel and initramfs in ``directory`` (made readable by everyone)."""
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
    for name in ("evdev", "button"):
        data = _module(modules, name)
        if data is not None:
            (root / "lib" / "modules" / f"{name}.ko").write_bytes(data)
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


@dataclass(frozen=True)
class Libvirtd:
    """A running private libvirtd: its URI and a console log directory it can write."""

    directory: Path
    uri: str
    console_dir: Path
    pid: int

    def log(self) -> str:
        path = self.directory / "cache" / "libvirt" / "libvirtd.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _owner() -> tuple[int, int] | None:
    """The user and group to run libvirtd as: ``nobody`` when root, else ourselves."""
    if os.geteuid() != 0:
        return None
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid


def _chown_tree(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is None:
        return
    for item in [path, *path.rglob("*")]:
        os.chown(item, *owner)


def _answers(socket_path: Path) -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
        probe.connect(str(socket_path))
        return True
    return False


def _pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a daemon's zombie, awaiting a reaper that is not us, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _stop_pid(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.05)


def _destroy_all(uri: str) -> None:
    import libvirt

    connection = libvirt.open(uri)
    try:
        for domain in connection.listAllDomains(0):
            with contextlib.suppress(libvirt.libvirtError):
                if domain.isActive():
                    domain.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                domain.undefine()
    finally:
        connection.close()


@contextlib.contextmanager
def private_libvirtd(directory: Path) -> Iterator[Libvirtd]:
    """Run a session-mode ``libvirtd -d`` rooted at ``directory`` for the block."""
    libvirtd = shutil.which("libvirtd", path=SBIN_PATH)
    if libvirtd is None:
        raise RuntimeError("libvirtd is missing: apt-get install libvirt-daemon "
                           "libvirt-daemon-driver-qemu qemu-system-x86")
    owner = _owner()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    console = directory / "console"
    for sub in ("run", "config", "cache", "data", console.name):
        (directory / sub).mkdir(exist_ok=True)
    _chown_tree(directory, owner)
    env = {"PATH": SBIN_PATH, "HOME": str(directory), "LC_ALL": "C",
           "XDG_RUNTIME_DIR": str(directory / "run"),
           "XDG_CONFIG_HOME": str(directory / "config"),
           "XDG_CACHE_HOME": str(directory / "cache"),
           "XDG_DATA_HOME": str(directory / "data")}
    pid_file = directory / "run" / "libvirtd.pid"
    socket_path = directory / "run" / "libvirt" / "libvirt-sock"
    started = subprocess.run(
        [libvirtd, "-d", "--pid-file", str(pid_file)], env=env, cwd=directory,
        user=owner[0] if owner else None, group=owner[1] if owner else None,
        extra_groups=[] if owner else None, capture_output=True, text=True, timeout=60,
        check=False)
    pid: int | None = None
    uri = f"qemu+unix:///session?socket={socket_path}"
    try:
        if started.returncode != 0:
            raise RuntimeError(f"libvirtd -d failed ({started.returncode}): {started.stderr}")
        deadline = time.monotonic() + 30
        while not (_answers(socket_path) and (pid := _pid(pid_file))):
            if time.monotonic() > deadline:
                raise RuntimeError("libvirtd did not start answering on " + str(socket_path))
            time.sleep(0.05)
        yield Libvirtd(directory, uri, console, pid)
    finally:
        if _answers(socket_path):
            with contextlib.suppress(Exception):
                _destroy_all(uri)
        pid = pid or _pid(pid_file)
        if pid is not None:
            _stop_pid(pid)
        # Whatever it left running: guests (if it died first) and its virtlogd.
        run = directory / "run" / "libvirt"
        for leftover in [*run.glob("qemu/run/*.pid"), run / "virtlogd.pid"]:
            if (leftover_pid := _pid(leftover)) is not None:
                _stop_pid(leftover_pid)
