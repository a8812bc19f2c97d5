"""The kvm driver's optional actions against libvirt's ``test:///`` hypervisors.

Each test has its own hypervisors: ``test:///<tmp>/<name>.xml`` opens a fresh
in-memory instance per URI, so two hosts with two such URIs are two separate
hypervisors (one connection each in the driver's pool), and nothing is shared
with other tests or xdist workers. What libvirt holds is read through the
driver's own connections (a second ``open`` of such a URI would be another
instance).

The test hypervisor has no device hot-plug and no migration: those are
checked against real libvirtds in ``tests/e2e/test_kvm_actions_e2e.py``; here
the refusal of live migration is checked to leave the guest where it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import libvirt
import pytest

from cloudburst.drivers.base import (
    DeploySpec,
    DriverContext,
    DriverOptions,
    HostRef,
    PollState,
    ResizeSpec,
    VmRef,
    implemented_actions,
)
from cloudburst.drivers.kvm.domain_xml import METADATA_NS, parse_identity
from cloudburst.drivers.kvm.snapshots import STASH_NS
from cloudburst.drivers.kvm.vm import KvmVmDriver
from cloudburst.errors import DriverError, InstanceNotFoundError, UnsupportedActionError
from cloudburst.template import parse

INSTALL = "inst-kvm-actions"
NODE = """<node>
  <cpu><mhz>2000</mhz><model>x86_64</model><active>2</active><nodes>1</nodes>
       <sockets>1</sockets><cores>2</cores><threads>1</threads></cpu>
  <memory>4194304</memory>
</node>
"""


@pytest.fixture
def hosts(tmp_path: Path) -> tuple[HostRef, HostRef]:
    """Two hosts, each on its own private test hypervisor."""
    made = []
    for host_id, name in ((1, "kvm-a"), (2, "kvm-b")):
        node = tmp_path / f"{name}.xml"
        node.write_text(NODE)
        made.append(HostRef(host_id, name, {"LIBVIRT_URI": f"test://{node}",
                                            "SHUTDOWN_TIMEOUT": "0"}))
    return made[0], made[1]


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[KvmVmDriver]:
    vm_driver = KvmVmDriver(DriverContext(
        name="kvm", executable="one_vmm_kvm", arguments=(), options=DriverOptions(threads=2),
        etc_dir=tmp_path, remotes_dir=tmp_path, var_dir=tmp_path, install_id=INSTALL))
    yield vm_driver
    asyncio.run(vm_driver.close())


def spec(vm_id: int, host: HostRef, token: str = "", text: str = "MEMORY = 64\nCPU = 0.25\n",
         deployment: Path | None = None) -> DeploySpec:
    """A deployment of ``text`` (the deployment file ``deployment``: its directory gets
    the context CD-ROM)."""
    template = parse(text)
    template.set("VMID", str(vm_id))
    return DeploySpec(vm_id=vm_id, host=host,
                      deployment_file=deployment or Path(f"/nonexistent/{vm_id}"),
                      template=template, token=token or f"{INSTALL}-vm{vm_id}-0",
                      memory_mb=int(template.get("MEMORY") or 64), cpu=0.25)


def ref(vm_id: int, host: HostRef) -> VmRef:
    return VmRef(vm_id=vm_id, deploy_id=f"one-{vm_id}", host=host)


def look(driver: KvmVmDriver, host: HostRef, work: Any) -> Any:
    """Run ``work(connection)`` on the driver's own connection to ``host``."""
    async def call() -> Any:
        return await driver.pool.call(driver.settings(host).uri, "look", work)

    return asyncio.run(call())


def state(driver: KvmVmDriver, host: HostRef, name: str) -> tuple[int, bool, bool] | None:
    """``(libvirt state, persistent, has managed save)`` of ``name``; ``None``: no domain."""
    def read(connection: Any) -> tuple[int, bool, bool] | None:
        try:
            domain = connection.lookupByName(name)
        except libvirt.libvirtError:
            return None
        return (domain.state()[0], bool(domain.isPersistent()),
                bool(domain.hasManagedSaveImage(0)))

    result: tuple[int, bool, bool] | None = look(driver, host, read)
    return result


def domain_names(driver: KvmVmDriver, host: HostRef) -> list[str]:
    return sorted(look(driver, host, lambda c: [d.name() for d in c.listAllDomains(0)]))


def snapshot_names(driver: KvmVmDriver, host: HostRef, name: str) -> list[str]:
    return sorted(look(driver, host, lambda c: c.lookupByName(name).snapshotListNames(0)))


RUNNING, SHUTOFF = libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_SHUTOFF


def test_capabilities_are_every_implemented_action() -> None:
    assert KvmVmDriver.capabilities == implemented_actions(KvmVmDriver)
    assert KvmVmDriver.capabilities >= {"poweroff", "save", "restore", "migrate",
                                        "migrate_live", "snapshot_create", "attach_disk",
                                        "attach_nic", "resize"}


def test_poweroff_keeps_the_definition_and_poweron_boots_it(
        driver: KvmVmDriver, hosts: tuple[HostRef, HostRef]) -> None:
    host, other = hosts
    asyncio.run(driver.deploy(spec(1, host)))
    asyncio.run(driver.poweroff(ref(1, host), hard=False, leaving=False))
    assert state(driver, host, "one-1") == (SHUTOFF, True, False)
    asyncio.run(driver.poweroff(ref(1, host), hard=True, leaving=False))  # already off: fine
    assert asyncio.run(driver.poweron(ref(1, host), spec(1, host, "t2"))) == "one-1"
    assert state(driver, host, "one-1") == (RUNNING, True, False)
    asyncio.run(driver.poweroff(ref(1, host), hard=True, leaving=False))
    assert state(driver, host, "one-1") == (SHUTOFF, True, False)
    # Resumed on a host that does not hold it (undeploy): defined from the deployment.
    assert asyncio.run(driver.poweron(ref(1, other), spec(1, other, "t3"))) == "one-1"
    assert state(driver, other, "one-1") == (RUNNING, True, False)


def test_undeploy_leaves_nothing_on_the_host_and_drops_the_snapshots(
        driver: KvmVmDriver, hosts: tuple[HostRef, HostRef]) -> None:
    host, other = hosts
    for vm_id, hard in ((21, False), (22, True)):  # running: ACPI or destroy, then leave
        asyncio.run(driver.deploy(spec(vm_id, host)))
        asyncio.run(driver.snapshot_create(ref(vm_id, host), 0, "dropped"))
        asyncio.run(driver.poweroff(ref(vm_id, host), hard=hard, leaving=True))
        assert f"one-{vm_id}" not in domain_names(driver, host)
    # Powered off first (the definition and its snapshot stay), then undeployed.
    asyncio.run(driver.deploy(spec(23, host)))
    asyncio.run(driver.snapshot_create(ref(23, host), 0, "dropped"))
    asyncio.run(driver.poweroff(ref(23, host), hard=True, leaving=False))
    assert snapshot_names(driver, host, "one-23") == ["snap-0"]
    asyncio.run(driver.poweroff(ref(23, host), hard=True, leaving=True))
    assert domain_names(driver, host) == []
    asyncio.run(driver.poweroff(ref(23, host), hard=True, leaving=True))  # again: nothing left
    # Resumed on the other host: defined from the deployment, with no snapshot.
    assert asyncio.run(driver.poweron(ref(23, other), spec(23, other, "t2"))) == "one-23"
    assert state(driver, other, "one-23") == (RUNNING, True, False)
    assert snapshot_names(driver, other, "one-23") == []
    assert asyncio.run(driver.snapshot_create(ref(23, other), 0, "new")) == "snap-0"


def test_resize_rewrites_the_powered_off_definition(
        driver: KvmVmDriver, hosts: tuple[HostRef, HostRef]) -> None:
    host, other = hosts
    asyncio.run(driver.deploy(spec(11, host)))
    asyncio.run(driver.poweroff(ref(11, host), hard=True, leaving=False))
    asyncio.run(driver.resize(ref(11, host), ResizeSpec(cpu=1.5, vcpu=2, memory_mb=96)))
    xml = look(driver, host, lambda c: c.lookupByName("one-11").XMLDesc(
        libvirt.VIR_DOMAIN_XML_INACTIVE))
    domain = ElementTree.fromstring(xml)
    assert (domain.findtext("memory"), domain.findtext("vcpu"),
            domain.findtext("cputune/shares")) == ("98304", "2", "1536")
    # poweron defines the domain from the deployment, which the core resized too
    asyncio.run(driver.poweron(ref(11, host), spec(11, host, text="MEMORY=96 VCPU=2 CPU=1.5")))
    assert look(driver, host, lambda c: c.lookupByName("one-11").info()[1]) == 98304
    asyncio.run(driver.resize(ref(11, other), ResizeSpec(1, 1, 64)))  # not held there: no-op
    asyncio.run(driver.poweroff(ref(11, host), hard=True, leaving=False))
    with pytest.raises(DriverError, match="VCPU must be a whole number >= 1"):
        asyncio.run(driver.resize(ref(11, host), ResizeSpec(1, 0, 64)))


def test_poweron_boots_from_the_changed_deployment_with_a_new_context_cd(
        driver: KvmVmDriver, hosts: tuple[HostRef, HostRef], tmp_path: Path) -> None:
    """After ``updateconf`` of a powered-off VM, ``poweron`` defines the domain from the
    new deployment (as OpenNebula boots from a new deployment file): the same domain
    (UUID, identity, snapshots) with the new memory and a context CD-ROM made anew."""
    host, _ = hosts
    deployment = tmp_path / "vms" / "12" / "deployment.0"
    deployment.parent.mkdir(parents=True)
    asyncio.run(driver.deploy(spec(12, host, text='MEMORY=64 CONTEXT=[ KEY="old" ]',
                                   deployment=deployment)))
    asyncio.run(driver.snapshot_create(ref(12, host), 0, "kept"))
    uuid = look(driver, host, lambda c: c.lookupByName("one-12").UUIDString())
    iso = deployment.parent / "one-12.context.iso"
    assert b"KEY='old'" in iso.read_bytes()
    asyncio.run(driver.poweroff(ref(12, host), hard=True, leaving=False))
    changed = spec(12, host, "t2", 'MEMORY=80 CONTEXT=[ KEY="new" ]', deployment)
    assert asyncio.run(driver.poweron(ref(12, host), changed)) == "one-12"
    assert state(driver, host, "one-12") == (RUNNING, True, False)
    xml = look(driver, host, lambda c: c.lookupByName("one-12").XMLDesc(
        libvirt.VIR_DOMAIN_XML_INACTIVE))
    domain = ElementTree.fromstring(xml)
    assert (domain.findtext("uuid"), domain.findtext("memory")) == (uuid, str(80 * 1024))
    assert [source.get("file") for source in domain.findall(
        "devices/disk[@device='cdrom']/source")] == [str(iso)]
    assert b"KEY='new'" in iso.read_bytes() and b"KEY='old'" not in iso.read_bytes()
    identity = parse_identity(look(driver, host, lambda c: c.lookupByName("one-12").metadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)))
    assert identity is not None and identity.token == f"{INSTALL}-vm12-0"  # find() knows it
    assert snapshot_names(driver, host, "one-12") == ["snap-0"]


def test_suspend_is_a_managed_save_kept_on_the_host(
        driver: KvmVmDriver, hosts: tuple[HostRef, HostRef], tmp_path: Path) -> None:
    host, _ = hosts
    checkpoint = tmp_path / "checkpoint"
    asyncio.run(driver.deploy(spec(2, host)))
    asyncio.run(driver.snapshot_create(ref(2, host), 0, "before suspend"))
    asyncio.run(driver.save(ref(2, host), checkpoint, leaving=False))
    assert state(driver, host, "one-2") == (SHUTOFF, True, True)
    assert not checkpoint.exists()  # libvirt holds the state, not the core's file
    assert asyncio.run(driver.poll([ref(2, host)]))[2].state is PollState.GONE
    asyncio.run(driver.save(ref(2, host), checkpoint, leaving=False))  # a replay: no-op
    assert asyncio.run(driver.restore(ref(2, host), checkpoint)) == "one-2"
    assert state(driver, host, "one-2") == (RUNNING, True, False)
    assert snapshot_names(driver, host, "one-2") == ["snap-0"]  # survived
    asyncio.run(driver.restore(ref(2, host), checkpoint))  # a replay: already running


def test_stop_saves_to_a_file_leaves_the_host_and_resumes_elsewhere(
        driver: KvmVmDriver, hosts: tuple[HostRef, HostRef], tmp_path: Path) -> None:
    host, other = hosts
    checkpoint = tmp_path / "vm3" / "checkpoint"
    checkpoint.parent.mkdir()
    asyncio.run(driver.deploy(spec(3, host)))
    asyncio.run(driver.snapshot_create(ref(3, host), 0, "kept"))
    asyncio.run(driver.snapshot_create(ref(3, host), 1, "current"))
    asyncio.run(driver.save(ref(3, host), checkpoint, leaving=True))
    assert state(driver, host, "one-3") is None  # the host holds nothing
    assert checkpoint.is_file()
    asyncio.run(driver.save(ref(3, host), checkpoint, leaving=True))  # a replay: no-op
    assert asyncio.run(driver.restore(ref(3, other), checkpoint)) == "one-3"
    assert state(driver, other, "one-3") == (RUNNING, True, False)
    assert not checkpoint.exists()
    assert snapshot_names(driver, other, "one-3") == ["snap-0", "snap-1"]  # carried in the image
    assert look(driver, other, lambda c: c.lookupByName("one-3").snapshotCurrent(0).getName()) \
        == "snap-1"
    stash = look(driver, other, lambda c: c.lookupByName("one-3").XMLDesc(0))
    assert STASH_NS not in stash  # taken out again
    metadata = look(driver, other, lambda c: c.lookupByName("one-3").metadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0))
    identity = parse_identity(metadata)
    assert identity is not None and identity.host_id == other.id and identity.vm_id == 3
    with pytest.raises(DriverError, match="no saved state of one-9"):
        asyncio.run(driver.restore(ref(9, other), checkpoint))


def test_stop_uses_the_hosts_checkpoint_dir(driver: KvmVmDriver, hosts: tuple[HostRef, HostRef],
                                            tmp_path: Path) -> None:
    host, _ = hosts
    shared = tmp_path / "shared"
    shared.mkdir()
    with_dir = HostRef(host.id, host.name, {**host.attributes, "CHECKPOINT_DIR": str(shared)})
    asyncio.run(driver.deploy(spec(4, with_dir)))
    asyncio.run(driver.save(ref(4, with_dir), tmp_path / "unused", leaving=True))
    assert (shared / "one-4.checkpoint").is_file() and not (tmp_path / "unused").exists()
    asyncio.run(driver.restore(ref(4, with_dir), tmp_path / "unused"))
    assert state(driver, host, "one-4") == (RUNNING, True, False)


def test_snapshots_create_revert_delete(driver: KvmVmDriver,
                                        hosts: tuple[HostRef, HostRef]) -> None:
    host, _ = hosts
    vm = ref(5, host)
    asyncio.run(driver.deploy(spec(5, host)))
    assert asyncio.run(driver.snapshot_create(vm, 0, "first")) == "snap-0"
    assert asyncio.run(driver.snapshot_create(vm, 1, "second")) == "snap-1"
    assert asyncio.run(driver.snapshot_create(vm, 1, "second")) == "snap-1"  # retried
    assert snapshot_names(driver, host, "one-5") == ["snap-0", "snap-1"]
    description = look(driver, host, lambda c: c.lookupByName("one-5").snapshotLookupByName(
        "snap-0", 0).getXMLDesc(0))
    assert ElementTree.fromstring(description).findtext("description") == "first"
    asyncio.run(driver.snapshot_revert(vm, "snap-0"))
    assert state(driver, host, "one-5") == (RUNNING, True, False)
    assert look(driver, host, lambda c: c.lookupByName("one-5").snapshotCurrent(0).getName()) \
        == "snap-0"
    asyncio.run(driver.snapshot_delete(vm, "snap-1"))
    asyncio.run(driver.snapshot_delete(vm, "snap-1"))  # gone: fine
    assert snapshot_names(driver, host, "one-5") == ["snap-0"]
    with pytest.raises(DriverError, match="has no snapshot snap-7"):
        asyncio.run(driver.snapshot_revert(vm, "snap-7"))
    with pytest.raises(InstanceNotFoundError):
        asyncio.run(driver.snapshot_create(ref(55, host), 0, "x"))


def test_cold_migration_moves_the_guest_and_its_snapshots(
        driver: KvmVmDriver, hosts: tuple[HostRef, HostRef], tmp_path: Path) -> None:
    source, destination = hosts
    shared = tmp_path / "shared"
    shared.mkdir()
    source = HostRef(source.id, source.name, {**source.attributes,
                                              "CHECKPOINT_DIR": str(shared)})
    asyncio.run(driver.deploy(spec(6, source)))
    asyncio.run(driver.snapshot_create(ref(6, source), 0, "carried"))
    assert asyncio.run(driver.migrate(ref(6, source), destination, live=False)) == "one-6"
    assert state(driver, source, "one-6") is None
    assert state(driver, destination, "one-6") == (RUNNING, True, False)
    assert snapshot_names(driver, destination, "one-6") == ["snap-0"]
    assert list(shared.iterdir()) == []
    metadata = look(driver, destination, lambda c: c.lookupByName("one-6").metadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0))
    identity = parse_identity(metadata)
    assert identity is not None and identity.host_id == destination.id
    # and back again
    asyncio.run(driver.migrate(ref(6, destination), source, live=False))
    assert state(driver, source, "one-6") == (RUNNING, True, False)
    assert state(driver, destination, "one-6") is None


def test_live_migration_refused_by_the_hypervisor_leaves_the_guest(
        driver: KvmVmDriver, hosts: tuple[HostRef, HostRef]) -> None:
    source, destination = hosts
    asyncio.run(driver.deploy(spec(7, source)))
    with pytest.raises(UnsupportedActionError, match="live migrate one-7 from kvm-a to kvm-b"):
        asyncio.run(driver.migrate(ref(7, source), destination, live=True))
    assert state(driver, source, "one-7") == (RUNNING, True, False)
    assert state(driver, destination, "one-7") is None


def test_migration_refuses_a_foreign_domain_on_the_destination(
        driver: KvmVmDriver, hosts: tuple[HostRef, HostRef], tmp_path: Path) -> None:
    source, destination = hosts
    asyncio.run(driver.deploy(spec(8, source)))
    look(driver, destination, lambda c: c.defineXML(
        "<domain type='test'><name>one-8</name><memory>1024</memory>"
        "<os><type>hvm</type></os></domain>"))
    with pytest.raises(DriverError, match="a domain named one-8 already exists"):
        asyncio.run(driver.migrate(ref(8, source), destination, live=False))
    assert state(driver, source, "one-8") == (RUNNING, True, False)


def test_migration_between_hosts_of_one_hypervisor_only_relabels(
        driver: KvmVmDriver, hosts: tuple[HostRef, HostRef]) -> None:
    source, _ = hosts
    twin = HostRef(9, "kvm-twin", dict(source.attributes))
    asyncio.run(driver.deploy(spec(10, source)))
    assert asyncio.run(driver.migrate(ref(10, source), twin, live=True)) == "one-10"
    metadata = look(driver, source, lambda c: c.lookupByName("one-10").metadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0))
    identity = parse_identity(metadata)
    assert identity is not None and identity.host_id == twin.id
    assert state(driver, source, "one-10") == (RUNNING, True, False)
