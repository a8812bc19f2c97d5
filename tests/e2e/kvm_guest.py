"""A tiny bootable guest and a private libvirtd, built and started at test time.

A plain module (import it; there is no conftest)::

    from kvm_guest import GUEST_UP, build_guest, private_libvirtd

    guest = build_guest(directory)           # kernel + busybox initramfs
    with private_libvirtd(directory) as libvirtd:
        ... LIBVIRT_URI = libvirtd.uri, CONSOLE_LOG_DIR = libvirtd.console_dir ...

The guest is the product's own (:mod:`cloudburst.guest`, ``cloudburst guest
build``); :func:`build_guest` here builds it once per machine and version of
that module and copies it afterwards (a build downloads and unpacks a Debian
kernel: 11-23 s on the shared 2-core machine).

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
import hashlib
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cloudburst.guest
from cloudburst.guest import GUEST_CONTEXT, GUEST_POWEROFF, GUEST_UP, Guest

__all__ = ["GUEST_CONTEXT", "GUEST_POWEROFF", "GUEST_UP", "Guest", "Libvirtd", "build_guest",
           "give_to_libvirtd", "make_qcow2", "private_libvirtd"]

SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


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


def build_guest(directory: Path) -> Guest:
    """:func:`cloudburst.guest.build_guest` into ``directory``, from a copy when this
    machine already built the same version of it (kept under the temporary directory,
    keyed on the guest module's text; renamed into place whole, so a build running in
    another test worker never sees half of one)."""
    module = Path(cloudburst.guest.__file__).read_bytes()
    key = hashlib.sha256(module).hexdigest()[:16]
    kept = Path(tempfile.gettempdir()) / f"cloudburst-test-guest-{os.getuid()}-{key}"
    if not (kept / "source").is_file():
        staging = Path(tempfile.mkdtemp(prefix=kept.name + ".", dir=kept.parent))
        built = cloudburst.guest.build_guest(staging / "guest")
        (staging / "guest" / "source").write_text(built.source, encoding="utf-8")
        with contextlib.suppress(OSError):  # another worker's build got there first
            (staging / "guest").rename(kept)
        shutil.rmtree(staging, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    copies = [Path(shutil.copy(kept / name, directory / name)) for name in ("vmlinuz", "initrd.gz")]
    for copy in copies:
        copy.chmod(0o644)
    return Guest(copies[0], copies[1], (kept / "source").read_text(encoding="utf-8"))


def _owner() -> tuple[int, int] | None:
    """The user and group to run libvirtd as: ``nobody`` when root, else ourselves."""
    if os.geteuid() != 0:
        return None
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid


def make_qcow2(path: Path, size: int) -> Path:
    """Write an empty qcow2 (version 2) image of ``size`` bytes at ``path``.

    ``qemu-img`` (Debian's ``qemu-utils``) is not among the packages the
    scripts install, and an empty image is four 64 KiB clusters: the header,
    the refcount table, one refcount block (counting those four clusters) and
    the L1 table. QEMU grows it as the guest writes and snapshots.
    """
    cluster = 1 << 16
    l1_size = max(1, -(-size // (cluster * (cluster // 8))))
    header = struct.pack(">IIQIIQIIQQIIQ", 0x514649FB, 2, 0, 0, 16, size, 0, l1_size,
                         3 * cluster, cluster, 1, 0, 0)
    image = bytearray(4 * cluster)
    image[:len(header)] = header
    image[cluster:cluster + 8] = struct.pack(">Q", 2 * cluster)
    image[2 * cluster:2 * cluster + 8] = struct.pack(">4H", 1, 1, 1, 1)
    path.write_bytes(bytes(image))
    return path


def give_to_libvirtd(*paths: Path) -> None:
    """Hand files or directories to the user :func:`private_libvirtd` runs as."""
    for path in paths:
        _chown_tree(path, _owner())


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


#: QEMU capabilities a private libvirtd probed, shared by the next ones: probing
#: runs the QEMU binaries and takes ~5 s (at a high load, more) per new libvirtd.
#: libvirtd checks each cached file against the binaries and itself and probes
#: again when it is stale, so a copy can only save time.
CAPABILITIES_SEED = Path(tempfile.gettempdir()) / f"cloudburst-test-qemu-caps-{os.getuid()}"
_CAPABILITIES = Path("libvirt") / "qemu" / "cache" / "capabilities"


def _seed_capabilities(cache: Path) -> None:
    """Give a new libvirtd's ``cache`` the capabilities a previous one probed."""
    if CAPABILITIES_SEED.is_dir():
        shutil.copytree(CAPABILITIES_SEED, cache / _CAPABILITIES, dirs_exist_ok=True)


def _keep_capabilities(cache: Path) -> None:
    """Keep what a stopping libvirtd probed as the seed (once; renamed into place
    whole, so a libvirtd starting meanwhile in another test worker sees all or none)."""
    probed = cache / _CAPABILITIES
    if CAPABILITIES_SEED.exists() or not any(probed.glob("*.xml")):
        return
    staging = Path(tempfile.mkdtemp(prefix=CAPABILITIES_SEED.name + ".",
                                    dir=CAPABILITIES_SEED.parent))
    for found in probed.glob("*.xml"):
        shutil.copy(found, staging / found.name)
    try:
        staging.rename(CAPABILITIES_SEED)
    except OSError:  # another worker's seed got there first
        shutil.rmtree(staging, ignore_errors=True)


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
    _seed_capabilities(directory / "cache")
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
        _keep_capabilities(directory / "cache")
