"""Real guests under QEMU, through a private libvirtd, the real daemon and the CLI.

The guest (a Debian kernel and a busybox initramfs) and the libvirtd are made
at test time by :mod:`kvm_guest`. The host is ``localhost`` with its
``LIBVIRT_URI`` set through ``onehost update`` to the private daemon; the
guests boot under TCG (the private daemon runs unprivileged, without
``/dev/kvm``), print a marker on their serial console, which libvirt logs to a
file, and power off when ``onevm terminate`` presses their ACPI button.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.etree import ElementTree

import libvirt
import pyone
import pytest
from daemon_fixture import RunningDaemon, daemon_environment, start_daemon, wait_for
from kvm_guest import (
    GUEST_CONTEXT,
    GUEST_POWEROFF,
    GUEST_UP,
    Guest,
    Libvirtd,
    build_guest,
    give_to_libvirtd,
    private_libvirtd,
)

pytestmark = pytest.mark.e2e

#: Seconds allowed for a guest to print its marker (about 4 s each under TCG here).
BOOT_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A directory the unprivileged libvirtd and its QEMUs can reach (pytest's is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="cloudburst-kvm-e2e-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def guest(workdir: Path) -> Guest:
    start = time.monotonic()
    built = build_guest(workdir / "guest")
    print(f"\nguest built in {time.monotonic() - start:.1f} s from {built.source}")
    return built


@pytest.fixture(scope="module")
def libvirtd(workdir: Path) -> Iterator[Libvirtd]:
    with private_libvirtd(workdir / "libvirtd") as running:
        yield running


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with start_daemon(tmp_path_factory.mktemp("kvm-daemon")) as running:
        yield running


class Cli:
    """``python -m cloudburst.cli.<command>`` with ``ONE_XMLRPC``/``ONE_AUTH`` set."""

    def __init__(self, daemon: RunningDaemon, home: Path) -> None:
        self.env = daemon_environment(daemon.home, daemon.port, {
            "ONE_XMLRPC": daemon.url, "ONE_AUTH": str(daemon.auth_file), "HOME": str(home)})

    def ok(self, command: str, *args: str, stdin: str | None = None) -> str:
        completed = subprocess.run(
            [sys.executable, "-m", f"cloudburst.cli.{command}", *args], env=self.env,
            input=stdin, capture_output=True, text=True, timeout=60, check=False)
        assert completed.returncode == 0, completed.stderr
        return completed.stdout

    def json(self, command: str, *args: str) -> object:
        return json.loads(self.ok(command, *args, "--json"))

    def vms(self) -> dict[int, str]:
        listed = self.json("onevm", "list")
        assert isinstance(listed, list)
        return {vm["ID"]: vm["STAT"] for vm in listed}


def wait_running(cli: Cli, ids: list[int], timeout: float = 60) -> None:
    """Wait until every VM is ``runn``; fail at once, with its error, if one fails."""
    deadline = time.monotonic() + timeout
    while True:
        states = cli.vms()
        failed = [vm_id for vm_id in ids if states.get(vm_id) == "fail"]
        assert not failed, cli.ok("onevm", "show", str(failed[0]))
        if all(states.get(vm_id) == "runn" for vm_id in ids):
            return
        assert time.monotonic() < deadline, states
        time.sleep(0.2)


def console(libvirtd: Libvirtd, vm_id: int) -> str:
    path = libvirtd.console_dir / f"one-{vm_id}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def local_host(cli: Cli, libvirtd: Libvirtd) -> None:
    """The host ``localhost`` on the private libvirtd (made by the first test that needs it)."""
    if "localhost" in cli.ok("onehost", "list"):
        return
    assert cli.ok("onehost", "create", "localhost", "kvm", "kvm") == "ID: 0\n"
    context_dir = libvirtd.directory.parent / "context"
    context_dir.mkdir(mode=0o755, exist_ok=True)
    cli.ok("onehost", "update", "localhost", "-", "--append", stdin=(
        f'LIBVIRT_URI = "{libvirtd.uri}"\nCONSOLE_LOG_DIR = "{libvirtd.console_dir}"\n'
        f'SHUTDOWN_TIMEOUT = "30"\nCONTEXT_DIR = "{context_dir}"\n'))


def test_guests_boot_run_and_power_off(daemon: RunningDaemon, guest: Guest,
                                       libvirtd: Libvirtd, tmp_path: Path) -> None:
    cli = Cli(daemon, tmp_path)
    local_host(cli, libvirtd)

    def monitored() -> dict[str, object] | None:
        shown = cli.json("onehost", "show", "localhost")
        assert isinstance(shown, dict)
        good = shown["STATE"] == "MONITORED" and "EMULATION" in json.dumps(shown)
        return shown if good else None

    host = wait_for(monitored, timeout=30)
    text = json.dumps(host)
    for expected in ('"HYPERVISOR": "kvm"', '"EMULATION": "qemu"', '"LIBVIRT_VERSION"'):
        assert expected in text

    template = (f'NAME = "tiny"\nCPU = 0.5\nMEMORY = 128\n'
                f'OS = [ KERNEL = "{guest.kernel}", INITRD = "{guest.initrd}", ROOT = "ram0" ]\n'
                f'KERNEL_CMD = "console=ttyS0 quiet"\n')
    start = time.monotonic()
    created = cli.ok("onevm", "create", "-", "-m", "2", stdin=template)
    ids = [int(line.split()[1]) for line in created.splitlines()]
    assert len(ids) == 2

    wait_running(cli, ids)
    running = time.monotonic() - start
    rows = [line for line in cli.ok("onevm", "list").splitlines()[1:]
            if int(line.split()[0]) in ids]
    assert all(" runn " in row and " localhost " in row for row in rows), rows
    for vm_id in ids:
        shown = cli.json("onevm", "show", str(vm_id))
        assert isinstance(shown, dict)
        assert f'"DEPLOY_ID": "one-{vm_id}"' in json.dumps(shown), shown

    wait_for(lambda: all(GUEST_UP in console(libvirtd, vm_id) for vm_id in ids),
             timeout=BOOT_TIMEOUT, interval=0.2)
    booted = time.monotonic() - start
    connection = libvirt.open(libvirtd.uri)
    try:
        domains = {domain.name(): domain for domain in connection.listAllDomains(0)}
        assert sorted(domains) == sorted(f"one-{vm_id}" for vm_id in ids)
        kinds = {domain.name(): domain.XMLDesc(0) for domain in domains.values()}
        assert all("<domain type='qemu'" in xml for xml in kinds.values())

        stop = time.monotonic()
        assert cli.ok("onevm", "terminate", ",".join(map(str, ids))) == ""
        wait_for(lambda: not any(vm_id in cli.vms() for vm_id in ids), timeout=60)
        stopped = time.monotonic() - stop
        assert connection.listAllDomains(0) == []
    finally:
        connection.close()
    for vm_id in ids:
        assert GUEST_POWEROFF in console(libvirtd, vm_id), console(libvirtd, vm_id)
    print(f"\n2 guests: runn after {running:.1f} s, console marker after {booted:.1f} s, "
          f"ACPI power-off and DONE after {stopped:.1f} s")


def test_context_reaches_the_guest_on_a_cd(daemon: RunningDaemon, guest: Guest,
                                           libvirtd: Libvirtd, tmp_path: Path) -> None:
    """``CONTEXT`` becomes a CD-ROM the tiny guest mounts; it prints the values it read
    (``$NAME`` and ``$VMID`` expanded at creation)."""
    cli = Cli(daemon, tmp_path)
    local_host(cli, libvirtd)
    template = (f'NAME = "contextualized"\nCPU = 0.5\nMEMORY = 128\n'
                f'OS = [ KERNEL = "{guest.kernel}", INITRD = "{guest.initrd}", ROOT = "ram0" ]\n'
                'KERNEL_CMD = "console=ttyS0 quiet"\n'
                'CONTEXT = [ GREETING = "hello from $NAME $VMID", NETWORK = "YES" ]\n')
    vm_id = int(cli.ok("onevm", "create", "-", stdin=template).split()[-1])
    wait_running(cli, [vm_id])
    # The guest prints one line per value, in no set order: wait for both.
    expected = (f"{GUEST_CONTEXT} GREETING='hello from contextualized {vm_id}'",
                f"{GUEST_CONTEXT} NETWORK='YES'")
    wait_for(lambda: all(line in console(libvirtd, vm_id) for line in expected),
             timeout=BOOT_TIMEOUT, interval=0.2)
    iso = libvirtd.directory.parent / "context" / f"one-{vm_id}.context.iso"
    assert iso.is_file()

    # updateconf of the running VM: a new CD-ROM image, and the running domain's media
    # changed to it: QEMU holds the new file, not the replaced one (a reset guest would
    # read it, but a second boot under TCG costs a minute at load 12).
    cli.ok("onevm", "updateconf", str(vm_id), "-",
           stdin='CONTEXT = [ GREETING = "updated for $NAME" ]\n')
    wait_for(lambda: "VM configuration updated in the running guest" in (
        Path(daemon.home) / "vms" / str(vm_id) / "vm.log").read_text(), timeout=BOOT_TIMEOUT)
    wait_running(cli, [vm_id])
    shown = cli.json("onevm", "show", str(vm_id))
    assert isinstance(shown, dict) and shown["ERROR"] is None, shown["ERROR"]
    assert b"GREETING='updated for contextualized'" in iso.read_bytes()
    assert context_cd(libvirtd, vm_id) == [str(iso)] * 2
    assert open_by_qemu(iso) == [str(iso)]
    cli.ok("onevm", "terminate", "--hard", str(vm_id))
    wait_for(lambda: vm_id not in cli.vms(), timeout=60)
    assert not iso.exists()  # removed with the domain


def open_by_qemu(path: Path) -> list[str]:
    """What the processes of this user that have ``path`` open see it as: the path
    itself for the current file, ``<path> (deleted)`` for one replaced since."""
    seen = []
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith(str(path)):
                seen.append(target)
    return seen


def arrive(one: pyone.OneServer, vm_id: int, host: str, move: Callable[[], object]) -> None:
    """``move()`` (a migration or a resume), waited for until the VM runs on ``host``."""
    move()

    def arrived() -> bool:
        vm = one.vm.info(vm_id)
        assert "ERROR" not in vm.USER_TEMPLATE, vm.USER_TEMPLATE["ERROR"]
        records = vm.HISTORY_RECORDS.HISTORY
        last = records[-1] if isinstance(records, list) else records
        return bool(host == last.HOSTNAME and (vm.STATE, vm.LCM_STATE) == (3, 3))

    wait_for(arrived, timeout=BOOT_TIMEOUT, interval=0.2)


def context_cd(libvirtd: Libvirtd, vm_id: int) -> list[str]:
    """The CD-ROM files of the domain on ``libvirtd``: running, then as defined."""
    connection = libvirt.open(libvirtd.uri)
    try:
        domain = connection.lookupByName(f"one-{vm_id}")
        return [source.get("file", "")
                for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE)
                for source in ElementTree.fromstring(domain.XMLDesc(flags)).findall(
                    "devices/disk[@device='cdrom']/source")]
    finally:
        connection.close()


def test_context_cd_reaches_a_guest_on_another_libvirtd_through_a_storage_pool(
        daemon: RunningDaemon, guest: Guest, libvirtd: Libvirtd, workdir: Path,
        tmp_path: Path) -> None:
    """A host whose hypervisor cannot read the daemon's files gets the context CD-ROM as
    a volume uploaded into its storage pool (``CONTEXT_POOL``; a libvirt stream, no
    shared file), and loses it with the domain. The second libvirtd is reached only
    through its own socket, as a remote one is through ``qemu+ssh``."""
    cli = Cli(daemon, tmp_path)
    local_host(cli, libvirtd)
    pool_dir = workdir / "remote-pool"
    pool_dir.mkdir(mode=0o755)
    with private_libvirtd(workdir / "remote") as remote:
        give_to_libvirtd(pool_dir)
        hypervisor = libvirt.open(remote.uri)
        pool = hypervisor.storagePoolDefineXML(
            f"<pool type='dir'><name>ctx</name><target><path>{pool_dir}</path></target></pool>")
        pool.create(0)
        try:
            cli.ok("onehost", "create", "node2", "kvm", "kvm")
            cli.ok("onehost", "update", "node2", "-", "--append", stdin=(
                f'LIBVIRT_URI = "{remote.uri}"\nCONSOLE_LOG_DIR = "{remote.console_dir}"\n'
                'SHUTDOWN_TIMEOUT = "30"\nCONTEXT_POOL = "ctx"\n'))

            def node2_on() -> bool:
                listed = cli.json("onehost", "list")
                assert isinstance(listed, list)
                return any(host["NAME"] == "node2" and host["STAT"] == "on" for host in listed)

            wait_for(node2_on, timeout=60, interval=0.5)
            template = (f'NAME = "far"\nCPU = 0.5\nMEMORY = 128\n'
                        f'OS = [ KERNEL = "{guest.kernel}", INITRD = "{guest.initrd}", '
                        'ROOT = "ram0" ]\nKERNEL_CMD = "console=ttyS0 quiet"\n'
                        'SCHED_REQUIREMENTS = "NAME = \\"node2\\""\n'
                        'CONTEXT = [ GREETING = "hello $NAME from the pool" ]\n')
            vm_id = int(cli.ok("onevm", "create", "-", stdin=template).split()[-1])
            try:
                wait_running(cli, [vm_id], timeout=120)
            except AssertionError:
                raise AssertionError(cli.ok("onevm", "show", str(vm_id))) from None
            wait_for(lambda: f"{GUEST_CONTEXT} GREETING='hello far from the pool'"
                     in console(remote, vm_id), timeout=BOOT_TIMEOUT, interval=0.2)
            volume = f"one-{vm_id}.context.iso"
            pool.refresh(0)
            assert pool.listVolumes() == [volume]
            disks = hypervisor.lookupByName(f"one-{vm_id}").XMLDesc(0)
            assert str(pool_dir / volume) in disks
            local_copy = libvirtd.directory.parent / "context" / volume
            assert not local_copy.exists()
            # The CD-ROM follows the VM: live to localhost (its CONTEXT_DIR), cold back
            # into node2's pool; each time the source's copy goes.
            shared = workdir / "migrations"
            shared.mkdir(mode=0o755)
            give_to_libvirtd(shared)
            for name in ("localhost", "node2"):
                cli.ok("onehost", "update", name, "-", "--append",
                       stdin=f'CHECKPOINT_DIR = "{shared}"\n')
            one = pyone.OneServer(daemon.url, session=daemon.session)
            hosts = {host.NAME: host.ID for host in one.hostpool.info().HOST}
            arrive(one, vm_id, "localhost",
                   lambda: one.vm.migrate(vm_id, hosts["localhost"], True, False, -1, 0))
            pool.refresh(0)
            assert pool.listVolumes() == [] and local_copy.is_file()
            assert context_cd(libvirtd, vm_id) == [str(local_copy)] * 2
            arrive(one, vm_id, "node2",
                   lambda: one.vm.migrate(vm_id, hosts["node2"], False, False, -1, 0))
            pool.refresh(0)
            assert pool.listVolumes() == [volume] and not local_copy.exists()
            assert context_cd(remote, vm_id) == [str(pool_dir / volume)] * 2
            assert list(shared.iterdir()) == []
            # Stopped, the VM leaves node2, which keeps nothing (the CD waits with the
            # daemon); resumed (on node2 again, its requirement), the CD is uploaded anew.
            one.vm.action("stop", vm_id)
            wait_for(lambda: one.vm.info(vm_id).STATE == 4, timeout=BOOT_TIMEOUT, interval=0.2)
            pool.refresh(0)
            assert pool.listVolumes() == [] and not local_copy.exists()
            arrive(one, vm_id, "node2", lambda: one.vm.action("resume", vm_id))
            pool.refresh(0)
            assert pool.listVolumes() == [volume]
            assert context_cd(remote, vm_id) == [str(pool_dir / volume)] * 2
            assert not list(daemon.home.rglob("*.iso"))
            # updateconf: the volume is uploaded anew and the running domain's media
            # changed to it.
            one.vm.updateconf(vm_id, 'CONTEXT = [ GREETING = "pool again" ]', 0)
            wait_for(lambda: "VM configuration updated in the running guest" in (
                daemon.home / "vms" / str(vm_id) / "vm.log").read_text(),
                timeout=BOOT_TIMEOUT, interval=0.2)
            arrive(one, vm_id, "node2", lambda: None)
            assert b"GREETING='pool again'" in (pool_dir / volume).read_bytes()
            assert context_cd(remote, vm_id) == [str(pool_dir / volume)] * 2
            assert open_by_qemu(pool_dir / volume) == [str(pool_dir / volume)]
            cli.ok("onevm", "terminate", "--hard", str(vm_id))
            wait_for(lambda: vm_id not in cli.vms(), timeout=60)
            pool.refresh(0)
            assert pool.listVolumes() == []  # deleted with the domain
        finally:
            cli.ok("onehost", "delete", "node2")
            with contextlib.suppress(libvirt.libvirtError):
                pool.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                pool.undefine()
            hypervisor.close()
