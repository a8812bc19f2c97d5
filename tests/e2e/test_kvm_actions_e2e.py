"""Every optional kvm action through the real daemon (pyone, then our ``onevm`` CLI)
on two real libvirtds.

Two private session-mode libvirtds (:mod:`kvm_guest`) are two hypervisors
for two kvm hosts, ``kvm-a`` and ``kvm-b``; the guest is the tiny kernel +
busybox one, booted under QEMU's TCG with a qcow2 disk (internal snapshots
need one). Both daemons see the same files, which is the shared storage that
migration and stop/resume across hosts need (``CHECKPOINT_DIR`` is a
directory they can both write).

Each step goes through pyone and checks three things: the VM's state, its
history record (OpenNebula's action code, and the host for migrations) and
what libvirt holds, read over our own connections to the two libvirtds
(domain state, managed save image, snapshot list, device XML). What is
exercised for real: ``virDomainSnapshotCreateXML``/``revertToSnapshot``/
``delete`` on QEMU, ``virDomainAttachDeviceFlags``/``DetachDeviceFlags`` with
the guest releasing the device, ``virDomainManagedSave``, ``virDomainSave``/
``Restore`` between the two daemons (stop, cold migration),
``virDomainMigrate`` between them (live: QEMU moves the running guest) and a
powered-off resize.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import libvirt
import pyone
import pytest
from burst_helpers import cli
from daemon_fixture import RunningDaemon, start_daemon, wait_for
from kvm_guest import (
    GUEST_UP,
    Guest,
    Libvirtd,
    build_guest,
    give_to_libvirtd,
    make_qcow2,
    private_libvirtd,
)

from cloudburst.model.states import LcmState

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUNNING = (3, 3)
SUSPENDED, STOPPED, POWEROFF, UNDEPLOYED, DONE = (5, 0), (4, 0), (8, 0), (9, 0), (6, 0)
#: Seconds allowed for each step (a guest under TCG on a loaded 2-core machine).
STEP_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A directory the unprivileged libvirtds and their QEMUs can reach (pytest's is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="cloudburst-kvm-actions-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def guest(workdir: Path) -> Guest:
    return build_guest(workdir / "guest")


@pytest.fixture(scope="module")
def libvirtds(workdir: Path) -> Iterator[tuple[Libvirtd, Libvirtd]]:
    with private_libvirtd(workdir / "a") as first, private_libvirtd(workdir / "b") as second:
        yield first, second


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with start_daemon(tmp_path_factory.mktemp("kvm-actions")) as running:
        yield running


@pytest.fixture(scope="module")
def one(daemon: RunningDaemon, libvirtds: tuple[Libvirtd, Libvirtd],
        workdir: Path) -> pyone.OneServer:
    """The daemon with hosts kvm-a and kvm-b (one per libvirtd), both monitored."""
    server = pyone.OneServer(daemon.url, session=daemon.session)
    shared = workdir / "shared"
    shared.mkdir(mode=0o755)
    give_to_libvirtd(shared)
    host_ids = []
    for name, libvirtd in zip(("kvm-a", "kvm-b"), libvirtds, strict=True):
        host_id = server.host.allocate(name, "kvm", "kvm", -1)
        server.host.update(host_id, f'LIBVIRT_URI = "{libvirtd.uri}"\n'
                                    f'CONSOLE_LOG_DIR = "{libvirtd.console_dir}"\n'
                                    f'CHECKPOINT_DIR = "{shared}"\nSHUTDOWN_TIMEOUT = "20"\n', 1)
        host_ids.append(host_id)
    # Both first probes (~5 s each) run at once.
    wait_for(lambda: all(server.host.info(h).STATE == 2 for h in host_ids), timeout=60)
    return server


class Hypervisors:
    """Our own connections to the two libvirtds, to see what they really hold."""

    def __init__(self, libvirtds: tuple[Libvirtd, Libvirtd]) -> None:
        self.by_host = {name: libvirt.open(libvirtd.uri)
                        for name, libvirtd in zip(("kvm-a", "kvm-b"), libvirtds, strict=True)}

    def domain(self, host: str, name: str) -> Any | None:
        try:
            return self.by_host[host].lookupByName(name)
        except libvirt.libvirtError:
            return None

    def where(self, name: str) -> dict[str, int]:
        """``host -> libvirt state`` of every hypervisor that holds domain ``name``."""
        found = {host: self.domain(host, name) for host in self.by_host}
        return {host: domain.state()[0] for host, domain in found.items() if domain is not None}

    def close(self) -> None:
        for connection in self.by_host.values():
            connection.close()


def position(one: pyone.OneServer, vm_id: int) -> tuple[int, int]:
    vm = one.vm.info(vm_id)
    return vm.STATE, vm.LCM_STATE


def reach(one: pyone.OneServer, vm_id: int, state: tuple[int, int]) -> Any:
    """Wait for ``state``; fail at once with the VM's error if it lands elsewhere."""
    def arrived() -> Any:
        vm = one.vm.info(vm_id)
        assert not LcmState(vm.LCM_STATE).name.endswith("FAILURE"), vm.USER_TEMPLATE
        return vm if state == (vm.STATE, vm.LCM_STATE) else None

    return wait_for(arrived, timeout=STEP_TIMEOUT, interval=0.2)


def history(vm: Any) -> list[Any]:
    return list(vm.HISTORY_RECORDS.HISTORY)


def vectors(vm: Any, key: str) -> list[dict[str, str]]:
    """The ``key`` sections of the VM's template (pyone gives one or a list)."""
    found = vm.TEMPLATE.get(key)
    if found is None:
        return []
    return list(found) if isinstance(found, list) else [found]


def error_free(vm: Any) -> None:
    assert "ERROR" not in vm.USER_TEMPLATE, vm.USER_TEMPLATE["ERROR"]


def devices(domain: Any, flags: int = 0) -> ElementTree.Element:
    return ElementTree.fromstring(domain.XMLDesc(flags)).find("devices")


def test_every_kvm_action_through_pyone_and_the_cli(
        one: pyone.OneServer, guest: Guest, libvirtds: tuple[Libvirtd, Libvirtd],
        workdir: Path, daemon: RunningDaemon) -> None:
    disk = make_qcow2(workdir / "root.qcow2", 64 << 20)
    extra = make_qcow2(workdir / "extra.qcow2", 16 << 20)
    give_to_libvirtd(disk, extra)
    vm_id = one.vm.allocate(
        f'NAME = "acts"\nCPU = 0.5\nMEMORY = 128\n'
        f'OS = [ KERNEL = "{guest.kernel}", INITRD = "{guest.initrd}", ROOT = "ram0" ]\n'
        f'KERNEL_CMD = "console=ttyS0 quiet"\n'
        f'DISK = [ SOURCE = "{disk}", DRIVER = "qcow2", TARGET = "vda" ]\n', False)
    name = f"one-{vm_id}"
    hypervisors = Hypervisors(libvirtds)
    try:
        vm = reach(one, vm_id, RUNNING)
        home = history(vm)[-1].HOSTNAME
        away = "kvm-b" if home == "kvm-a" else "kvm-a"
        console = {host: libvirtd.console_dir / f"{name}.log"
                   for host, libvirtd in zip(("kvm-a", "kvm-b"), libvirtds, strict=True)}
        wait_for(lambda: GUEST_UP in console[home].read_text(errors="replace"),
                 timeout=STEP_TIMEOUT, interval=0.2)
        assert hypervisors.where(name) == {home: libvirt.VIR_DOMAIN_RUNNING}

        # -- snapshots: libvirt domain snapshots named snap-<SNAPSHOT_ID> ----------------
        assert one.vm.snapshotcreate(vm_id, "first") == 0
        vm = wait_for(lambda: "SNAPSHOT" in (v := one.vm.info(vm_id)).TEMPLATE and v,
                      timeout=STEP_TIMEOUT)
        vm = reach(one, vm_id, RUNNING)
        [snapshot] = vectors(vm, "SNAPSHOT")
        assert (snapshot["SNAPSHOT_ID"], snapshot["NAME"], snapshot["HYPERVISOR_ID"]) == \
            ("0", "first", "snap-0")
        assert int(history(vm)[-1].ACTION) == 37
        domain = hypervisors.domain(home, name)
        assert domain.snapshotListNames(0) == ["snap-0"]
        assert domain.snapshotLookupByName("snap-0", 0).getXMLDesc(0).count("first") == 1
        one.vm.snapshotrevert(vm_id, 0)
        vm = wait_for(lambda: int(history(v := one.vm.info(vm_id))[-1].ACTION) == 39 and v,
                      timeout=STEP_TIMEOUT)
        vm = reach(one, vm_id, RUNNING)
        error_free(vm)
        assert domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert domain.snapshotCurrent(0).getName() == "snap-0"

        # -- disk hot-plug: live and persistent, found again by SOURCE for detach --------
        one.vm.attach(vm_id, f'DISK = [ SOURCE = "{extra}", DRIVER = "qcow2" ]')
        vm = wait_for(lambda: len(vectors(v := one.vm.info(vm_id), "DISK")) == 2 and v,
                      timeout=STEP_TIMEOUT)
        vm = reach(one, vm_id, RUNNING)
        error_free(vm)
        assert int(history(vm)[-1].ACTION) == 21
        attached = [d for d in vectors(vm, "DISK") if d.get("SOURCE") == str(extra)]
        assert len(attached) == 1
        disk_id = int(attached[0]["DISK_ID"])
        for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
            targets = {d.find("source").get("file"): d.find("target").get("dev")
                       for d in devices(domain, flags).findall("disk")}
            assert targets == {str(disk): "vda", str(extra): "vdb"}, flags
        one.vm.detach(vm_id, disk_id)
        vm = wait_for(lambda: len(vectors(v := one.vm.info(vm_id), "DISK")) == 1 and v,
                      timeout=STEP_TIMEOUT)
        vm = reach(one, vm_id, RUNNING)
        error_free(vm)
        assert int(history(vm)[-1].ACTION) == 22
        for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
            sources = [d.find("source").get("file")
                       for d in devices(domain, flags).findall("disk")]
            assert sources == [str(disk)], flags

        # -- NIC hot-plug: without MAC the driver derives one from the VM and NIC ids ----
        one.vm.attachnic(vm_id, 'NIC = [ MODEL = "virtio" ]')
        vm = wait_for(lambda: "NIC" in (v := one.vm.info(vm_id)).TEMPLATE and v,
                      timeout=STEP_TIMEOUT)
        vm = reach(one, vm_id, RUNNING)
        error_free(vm)
        assert int(history(vm)[-1].ACTION) == 23
        [nic] = vectors(vm, "NIC")
        nic_id = int(nic["NIC_ID"])
        mac = f"02:cb:00:00:{vm_id:02x}:{nic_id:02x}"
        for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
            macs = [i.find("mac").get("address")
                    for i in devices(domain, flags).findall("interface")]
            assert macs == [mac], flags
        one.vm.detachnic(vm_id, nic_id)
        vm = wait_for(lambda: "NIC" not in (v := one.vm.info(vm_id)).TEMPLATE and v,
                      timeout=STEP_TIMEOUT)
        vm = reach(one, vm_id, RUNNING)
        assert int(history(vm)[-1].ACTION) == 24
        assert devices(domain).findall("interface") == []

        # -- suspend: libvirt's managed save, kept with the definition on the host -------
        one.vm.action("suspend", vm_id)
        vm = reach(one, vm_id, SUSPENDED)
        assert int(history(vm)[-1].ACTION) == 10
        assert domain.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF and domain.hasManagedSaveImage(0)
        one.vm.action("resume", vm_id)
        vm = reach(one, vm_id, RUNNING)
        error_free(vm)
        assert domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert not domain.hasManagedSaveImage(0)
        assert domain.snapshotListNames(0) == ["snap-0"]

        # -- poweroff keeps the definition; resume boots it again -----------------------
        one.vm.action("poweroff-hard", vm_id)
        vm = reach(one, vm_id, POWEROFF)
        assert int(history(vm)[-1].ACTION) == 20
        assert domain.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF and domain.isPersistent()
        # resize while powered off rewrites the definition
        one.vm.resize(vm_id, "CPU = 1\nVCPU = 1\nMEMORY = 144", False)
        # (in place: the VM stays POWEROFF, so libvirt's definition says when it is done)
        wait_for(lambda: ElementTree.fromstring(domain.XMLDesc(
            libvirt.VIR_DOMAIN_XML_INACTIVE)).findtext("memory") == str(144 * 1024),
            timeout=STEP_TIMEOUT, interval=0.2)
        vm = reach(one, vm_id, POWEROFF)
        error_free(vm)
        assert int(history(vm)[-1].ACTION) == 35
        one.vm.action("resume", vm_id)
        reach(one, vm_id, RUNNING)
        assert domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert domain.info()[1] == 144 * 1024

        # -- undeploy: off the host, which keeps nothing; the snapshots are dropped ------
        # (as OpenNebula 6.10 does), so core and libvirt agree wherever it resumes.
        assert domain.snapshotListNames(0) == ["snap-0"]
        one.vm.action("undeploy-hard", vm_id)
        vm = reach(one, vm_id, UNDEPLOYED)
        assert int(history(vm)[-1].ACTION) == 6
        assert hypervisors.where(name) == {} and vectors(vm, "SNAPSHOT") == []
        one.vm.action("resume", vm_id)
        vm = reach(one, vm_id, RUNNING)
        error_free(vm)
        home = history(vm)[-1].HOSTNAME
        away = "kvm-b" if home == "kvm-a" else "kvm-a"
        assert hypervisors.where(name) == {home: libvirt.VIR_DOMAIN_RUNNING}
        domain = hypervisors.domain(home, name)
        assert domain.snapshotListNames(0) == []
        # A snapshot taken now reverts: the core lists only what libvirt holds.
        assert one.vm.snapshotcreate(vm_id, "after undeploy") == 0
        wait_for(lambda: len(vectors(one.vm.info(vm_id), "SNAPSHOT")) == 1, STEP_TIMEOUT)
        reach(one, vm_id, RUNNING)
        one.vm.snapshotrevert(vm_id, 0)
        vm = wait_for(lambda: int(history(v := one.vm.info(vm_id))[-1].ACTION) == 39 and v,
                      timeout=STEP_TIMEOUT)
        vm = reach(one, vm_id, RUNNING)
        error_free(vm)
        carried = domain.snapshotListNames(0)
        assert carried == ["snap-0"]

        # -- live migration: QEMU moves the running guest, snapshots follow -------------
        host_ids = {host.NAME: host.ID for host in one.hostpool.info().HOST}
        one.vm.migrate(vm_id, host_ids[away], True, False, -1, 0)
        vm = wait_for(lambda: away == history(v := one.vm.info(vm_id))[-1].HOSTNAME
                      and (v.STATE, v.LCM_STATE) == RUNNING and v, timeout=STEP_TIMEOUT)
        error_free(vm)
        assert int(history(vm)[-2].ACTION) == 2
        assert hypervisors.where(name) == {away: libvirt.VIR_DOMAIN_RUNNING}
        moved = hypervisors.domain(away, name)
        assert moved.isPersistent() and moved.snapshotListNames(0) == carried

        # -- cold migration back: save, restore on the other libvirtd --------------------
        one.vm.migrate(vm_id, host_ids[home], False, False, -1, 0)
        vm = wait_for(lambda: home == history(v := one.vm.info(vm_id))[-1].HOSTNAME
                      and (v.STATE, v.LCM_STATE) == RUNNING and v, timeout=STEP_TIMEOUT)
        error_free(vm)
        assert int(history(vm)[-2].ACTION) == 1
        assert hypervisors.where(name) == {home: libvirt.VIR_DOMAIN_RUNNING}
        domain = hypervisors.domain(home, name)
        assert domain.isPersistent() and domain.snapshotListNames(0) == carried
        assert list((workdir / "shared").iterdir()) == []

        one.vm.snapshotdelete(vm_id, 0)
        vm = wait_for(lambda: "SNAPSHOT" not in (v := one.vm.info(vm_id)).TEMPLATE and v,
                      timeout=STEP_TIMEOUT)
        vm = reach(one, vm_id, RUNNING)
        assert int(history(vm)[-1].ACTION) == 38
        assert domain.snapshotListNames(0) == []

        # -- stop: memory to a file in CHECKPOINT_DIR; the host holds nothing -----------
        kept = one.vm.snapshotcreate(vm_id, "over the stop")
        wait_for(lambda: len(vectors(one.vm.info(vm_id), "SNAPSHOT")) == 1, STEP_TIMEOUT)
        reach(one, vm_id, RUNNING)
        one.vm.action("stop", vm_id)
        vm = reach(one, vm_id, STOPPED)
        assert int(history(vm)[-1].ACTION) == 9
        assert hypervisors.where(name) == {}
        assert [p.name for p in (workdir / "shared").iterdir()] == [f"{name}.checkpoint"]
        one.vm.action("resume", vm_id)
        vm = reach(one, vm_id, RUNNING)
        error_free(vm)
        landed = history(vm)[-1].HOSTNAME
        assert hypervisors.where(name) == {landed: libvirt.VIR_DOMAIN_RUNNING}
        assert list((workdir / "shared").iterdir()) == []
        domain = hypervisors.domain(landed, name)
        # carried inside the saved image
        assert domain.snapshotListNames(0) == [f"snap-{kept}"]
        one.vm.snapshotrevert(vm_id, kept)
        vm = wait_for(lambda: int(history(v := one.vm.info(vm_id))[-1].ACTION) == 39 and v,
                      timeout=STEP_TIMEOUT)
        vm = reach(one, vm_id, RUNNING)
        error_free(vm)
        assert domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING

        # -- our onevm CLI against the same kvm hosts ------------------------------------
        cli_steps(daemon, one, hypervisors, vm_id, workdir, extra)

        one.vm.action("terminate-hard", vm_id)
        reach(one, vm_id, DONE)
        assert hypervisors.where(name) == {}
    finally:
        hypervisors.close()


def onevm(daemon: RunningDaemon, *args: str) -> None:
    cli(daemon, "onevm", *args)


def cli_steps(daemon: RunningDaemon, one: pyone.OneServer, hypervisors: Hypervisors,
              vm_id: int, workdir: Path, extra: Path) -> None:
    """snapshot-create, disk-attach, migrate --live, poweroff, undeploy, resume and
    snapshot-create/revert through ``onevm``: state, history and libvirt after each."""
    name, ids = f"one-{vm_id}", str(vm_id)
    vm = reach(one, vm_id, RUNNING)
    home = history(vm)[-1].HOSTNAME
    away = "kvm-b" if home == "kvm-a" else "kvm-a"
    domain = hypervisors.domain(home, name)
    before = len(vectors(vm, "SNAPSHOT"))

    onevm(daemon, "snapshot-create", ids, "by the cli")
    vm = wait_for(lambda: len(vectors(v := one.vm.info(vm_id), "SNAPSHOT")) == before + 1
                  and (v.STATE, v.LCM_STATE) == RUNNING and v, timeout=STEP_TIMEOUT)
    error_free(vm)
    assert int(history(vm)[-1].ACTION) == 37
    taken = vectors(vm, "SNAPSHOT")[-1]
    assert taken["NAME"] == "by the cli"
    snaps = sorted(domain.snapshotListNames(0))
    assert taken["HYPERVISOR_ID"] in snaps and len(snaps) == before + 1

    template = workdir / "extra-disk.tpl"
    template.write_text(f'DISK = [ SOURCE = "{extra}", DRIVER = "qcow2" ]\n')
    onevm(daemon, "disk-attach", ids, "--file", str(template))
    vm = wait_for(lambda: len(vectors(v := one.vm.info(vm_id), "DISK")) == 2
                  and (v.STATE, v.LCM_STATE) == RUNNING and v, timeout=STEP_TIMEOUT)
    error_free(vm)
    assert int(history(vm)[-1].ACTION) == 21
    for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
        sources = [d.find("source").get("file") for d in devices(domain, flags).findall("disk")]
        assert str(extra) in sources, flags

    onevm(daemon, "migrate", ids, away, "--live")
    vm = wait_for(lambda: away == history(v := one.vm.info(vm_id))[-1].HOSTNAME
                  and (v.STATE, v.LCM_STATE) == RUNNING and v, timeout=STEP_TIMEOUT)
    error_free(vm)
    assert int(history(vm)[-2].ACTION) == 2
    assert hypervisors.where(name) == {away: libvirt.VIR_DOMAIN_RUNNING}
    domain = hypervisors.domain(away, name)
    assert sorted(domain.snapshotListNames(0)) == snaps
    assert str(extra) in [d.find("source").get("file") for d in devices(domain).findall("disk")]

    onevm(daemon, "poweroff", ids)  # ACPI, then destroyed after SHUTDOWN_TIMEOUT
    vm = reach(one, vm_id, POWEROFF)
    assert int(history(vm)[-1].ACTION) == 19
    assert domain.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF and domain.isPersistent()
    assert sorted(domain.snapshotListNames(0)) == snaps  # a power cycle keeps them

    onevm(daemon, "undeploy", ids)  # of a powered-off VM: the host is released too
    vm = reach(one, vm_id, UNDEPLOYED)
    assert int(history(vm)[-1].ACTION) == 5 and int(history(vm)[-1].ETIME) > 0
    assert hypervisors.where(name) == {} and vectors(vm, "SNAPSHOT") == []

    onevm(daemon, "resume", ids)
    vm = reach(one, vm_id, RUNNING)
    error_free(vm)
    landed = history(vm)[-1].HOSTNAME
    assert hypervisors.where(name) == {landed: libvirt.VIR_DOMAIN_RUNNING}
    domain = hypervisors.domain(landed, name)
    assert domain.snapshotListNames(0) == []
    assert len(vectors(vm, "DISK")) == 2  # the hot-plugged disk is in the deployment

    # A snapshot after the undeploy reverts (the core lists only what libvirt has).
    onevm(daemon, "snapshot-create", ids, "after undeploy")
    vm = wait_for(lambda: len(vectors(v := one.vm.info(vm_id), "SNAPSHOT")) == 1
                  and (v.STATE, v.LCM_STATE) == RUNNING and v, timeout=STEP_TIMEOUT)
    [snapshot] = vectors(vm, "SNAPSHOT")
    assert domain.snapshotListNames(0) == [snapshot["HYPERVISOR_ID"]]
    onevm(daemon, "snapshot-revert", ids, snapshot["SNAPSHOT_ID"])
    vm = wait_for(lambda: int(history(v := one.vm.info(vm_id))[-1].ACTION) == 39 and v,
                  timeout=STEP_TIMEOUT)
    vm = reach(one, vm_id, RUNNING)
    error_free(vm)
    assert domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING
