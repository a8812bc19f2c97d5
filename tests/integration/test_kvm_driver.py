"""The kvm driver against libvirt's built-in ``test:///default`` hypervisor.

``test:///default`` keeps its state per process and shares it between
connections, so the information and VM drivers see the same domains, and a
domain left behind would leak into the next test: every test uses its own VM
ids and the ``clean_libvirt`` fixture removes our domains afterwards. The
hypervisor starts with one running domain named ``test`` (a "wild" VM for us).

Domain XML is compared structurally: both sides are parsed with ElementTree
and compared as trees of (tag, attributes, text, children).
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import libvirt
import pytest

from cloudburst.config import oned
from cloudburst.drivers import registry
from cloudburst.drivers.base import (
    DeploySpec,
    DriverContext,
    DriverOptions,
    HostRef,
    PollState,
    ResizeSpec,
    VmRef,
)
from cloudburst.drivers.kvm import connection as kvm_connection
from cloudburst.drivers.kvm import vm as kvm_vm
from cloudburst.drivers.kvm.connection import resolve_uri, translate
from cloudburst.drivers.kvm.domain_xml import (
    METADATA_NS,
    DomainRequest,
    DomainXmlError,
    Identity,
    build_domain_xml,
    parse_identity,
)
from cloudburst.drivers.kvm.domains import CpuMeter, DomainSample, poll_result
from cloudburst.drivers.kvm.host_caps import CapabilitiesError, Platform, choose_platform
from cloudburst.drivers.kvm.information import KvmInformationDriver, version_text
from cloudburst.drivers.kvm.settings import shutdown_timeout_argument
from cloudburst.drivers.kvm.states import poll_state
from cloudburst.drivers.kvm.vm import KvmVmDriver, domain_uuid
from cloudburst.drivers.orphans import OrphanSightings
from cloudburst.errors import (
    CapacityError,
    DriverError,
    InstanceNotFoundError,
    TransientDriverError,
    UnsupportedActionError,
    ValidationError,
)
from cloudburst.template import Template, parse
from seed_templates import SEED_EC2_TEMPLATE

URI = "test:///default"
INSTALL = "inst-kvm-test"
REPO = Path(__file__).resolve().parents[2]
HOST = HostRef(id=3, name="kvm1", attributes={"LIBVIRT_URI": URI})
X86 = Platform("kvm", "x86_64")


def seed_template() -> Template:
    """The EC2 guide's VM template as printed in the seed (local part and EC2 section)."""
    return parse(SEED_EC2_TEMPLATE)


def tree(element: ElementTree.Element) -> tuple[Any, ...]:
    """A comparable form of an element: tag, attributes, text and children, in order."""
    return (element.tag, dict(sorted(element.attrib.items())), (element.text or "").strip(),
            [tree(child) for child in element])


def same_xml(actual: str, expected: str) -> None:
    assert tree(ElementTree.fromstring(actual)) == tree(ElementTree.fromstring(expected))


def context(arguments: tuple[str, ...] = (), name: str = "kvm",
            executable: str = "one_vmm_kvm") -> DriverContext:
    return DriverContext(
        name=name, executable=executable, arguments=arguments, options=DriverOptions(threads=4),
        etc_dir=Path("/nonexistent/etc"), remotes_dir=Path("/nonexistent/remotes"),
        var_dir=Path("/nonexistent/var"), install_id=INSTALL)


def spec(vm_id: int, text: str = "MEMORY = 64\nCPU = 0.25\n", token: str | None = None,
         host: HostRef = HOST) -> DeploySpec:
    template = parse(text)
    template.set("VMID", str(vm_id))
    return DeploySpec(vm_id=vm_id, host=host, deployment_file=Path(f"/nonexistent/{vm_id}"),
                      template=template,
                      token=token or f"{INSTALL}-vm{vm_id}-0", memory_mb=64, cpu=0.25)


def ref(vm_id: int, host: HostRef = HOST) -> VmRef:
    return VmRef(vm_id=vm_id, deploy_id=f"one-{vm_id}", host=host)


@pytest.fixture
def conn() -> Iterator[Any]:
    """A direct connection to the test hypervisor, to look behind the driver's back."""
    connection = libvirt.open(URI)
    yield connection
    for domain in connection.listAllDomains(0):
        if domain.name().startswith("one-"):
            if domain.isActive():
                domain.destroy()
            if domain.isPersistent():
                domain.undefine()
    connection.close()


@pytest.fixture
def driver(conn: Any) -> Iterator[KvmVmDriver]:
    vm_driver = KvmVmDriver(context())
    yield vm_driver
    asyncio.run(vm_driver.close())


@pytest.fixture
def info_driver(conn: Any) -> Iterator[KvmInformationDriver]:
    information = KvmInformationDriver(context(name="kvm", executable="one_im_kvm"))
    yield information
    asyncio.run(information.close())


def domain_state(conn: Any, name: str) -> int | None:
    try:
        return int(conn.lookupByName(name).state()[0])
    except libvirt.libvirtError:
        return None


# -- URIs, settings, registry ----------------------------------------------------------


def test_uri_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI", raising=False)
    local = "qemu:///system" if os.geteuid() == 0 else "qemu:///session"
    assert resolve_uri(HostRef(1, "localhost")) == local
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "test:///default")
    assert resolve_uri(HostRef(1, "localhost")) == "test:///default"
    assert resolve_uri(HostRef(1, "node7")) == "qemu+ssh://node7/system"
    assert resolve_uri(HostRef(1, "localhost", {"LIBVIRT_URI": " test:///default "})) == URI
    assert resolve_uri(HostRef(1, "node7", {"LIBVIRT_URI": ""})) == "qemu+ssh://node7/system"


def test_registry_and_default_oned_conf(tmp_path: Path) -> None:
    for executable in ("one_vmm_kvm", "kvm", "/usr/lib/one/mads/one_vmm_kvm"):
        assert isinstance(registry.build_vm_driver(context(executable=executable)), KvmVmDriver)
    for executable in ("one_im_kvm", "kvm"):
        built = registry.build_information_driver(context(executable=executable))
        assert isinstance(built, KvmInformationDriver)
    home = tmp_path / "home"
    (home / "etc").mkdir(parents=True)
    conf = (REPO / "src/cloudburst/share/etc/oned.conf").read_text(encoding="utf-8")
    (home / "etc" / "oned.conf").write_text(conf, encoding="utf-8")
    settings, warnings = oned.load(home / "etc" / "oned.conf", home)
    assert warnings == []
    im, vmm = settings.driver("IM_MAD", "kvm"), settings.driver("VM_MAD", "kvm")
    assert im is not None and im.executable == "one_im_kvm"
    assert vmm is not None and vmm.executable == "one_vmm_kvm"
    _options, words = registry.parse_driver_arguments(vmm.arguments)
    assert shutdown_timeout_argument(words) == 90


def test_shutdown_timeout_argument() -> None:
    assert shutdown_timeout_argument(()) == 90
    assert shutdown_timeout_argument(("kvm", "--shutdown-timeout", "12")) == 12
    assert shutdown_timeout_argument(("--shutdown-timeout=0.5",)) == 0.5
    for bad in (("--shutdown-timeout",), ("--shutdown-timeout", "soon"),
                ("--shutdown-timeout=-1",)):
        with pytest.raises(ValueError, match="shutdown-timeout"):
            shutdown_timeout_argument(bad)
    with pytest.raises(ValueError):
        KvmVmDriver(context(arguments=("--shutdown-timeout", "x")))


def test_bad_host_attributes_fail_cleanly(driver: KvmVmDriver) -> None:
    for attribute, value in (("LIBVIRT_DOMAIN_TYPE", "xen"), ("CONSOLE_LOG_DIR", "logs"),
                             ("SHUTDOWN_TIMEOUT", "never"), ("RESERVED_CPU", "lots")):
        host = HostRef(3, "kvm1", {"LIBVIRT_URI": URI, attribute: value})
        with pytest.raises(DriverError, match=attribute):
            asyncio.run(driver.deploy(spec(90, host=host)))


def test_libvirt_is_imported_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kvm_connection, "_module", None)

    def no_libvirt(name: str) -> Any:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(importlib, "import_module", no_libvirt)
    vm_driver = KvmVmDriver(context())  # building the driver needs no libvirt
    with pytest.raises(DriverError, match=r"libvirt-python missing: run .*cloudburst\[kvm\]"):
        asyncio.run(vm_driver.poll([ref(1)]))


def test_error_translation() -> None:
    def error(code: int, domain: int = 10, message: str = "boom") -> libvirt.libvirtError:
        exc = libvirt.libvirtError(message)
        exc.err = (code, domain, message, 2, None, None, None, 0, 0)
        return exc

    assert isinstance(translate(error(libvirt.VIR_ERR_NO_DOMAIN), "x"), InstanceNotFoundError)
    assert isinstance(translate(error(libvirt.VIR_ERR_SYSTEM_ERROR), "x"), TransientDriverError)
    assert isinstance(translate(error(1, libvirt.VIR_FROM_RPC), "x"), TransientDriverError)
    assert isinstance(translate(error(libvirt.VIR_ERR_NO_SUPPORT), "x"), UnsupportedActionError)
    capacity = translate(error(1, message="cannot set up guest memory: Cannot allocate memory"),
                         "deploy one-1")
    assert isinstance(capacity, CapacityError)
    plain = translate(error(libvirt.VIR_ERR_INTERNAL_ERROR, message="a\nb"), "deploy one-1")
    assert type(plain) is DriverError and plain.message == "deploy one-1: a b"


# -- domain XML -------------------------------------------------------------------------


def request(vm_id: int = 5, platform: Platform = X86, console_log: str | None = None
            ) -> DomainRequest:
    return DomainRequest(vm_id=vm_id, identity=Identity(INSTALL, vm_id, "tok-5", 3),
                         platform=platform, uuid="c0ffee00-0000-4000-8000-000000000005",
                         console_log=console_log)


METADATA = f"""
  <metadata>
    <cb:vm xmlns:cb="{METADATA_NS}">
      <cb:installation>{INSTALL}</cb:installation><cb:vmid>5</cb:vmid>
      <cb:token>tok-5</cb:token><cb:host>3</cb:host>
    </cb:vm>
  </metadata>"""

CONSOLE = """
    <serial type="pty"><target port="0"/></serial>
    <console type="pty"><target type="serial" port="0"/></console>"""


def test_domain_xml_of_the_seed_template() -> None:
    expected = f"""
    <domain type="kvm">
      <name>one-5</name>
      <uuid>c0ffee00-0000-4000-8000-000000000005</uuid>
      {METADATA}
      <memory unit="KiB">131072</memory>
      <vcpu>1</vcpu>
      <cputune><shares>512</shares></cputune>
      <os>
        <type arch="x86_64">hvm</type>
        <kernel>/vmlinuz</kernel>
        <initrd>/initrd.img</initrd>
        <cmdline>root=/dev/sda1</cmdline>
      </os>
      <features><acpi/></features>
      <clock offset="utc"/>
      <on_poweroff>destroy</on_poweroff>
      <on_reboot>restart</on_reboot>
      <on_crash>destroy</on_crash>
      <devices>
        <disk type="file" device="disk">
          <driver name="qemu" type="raw"/>
          <source file="/imges/apache.img"/>
          <target dev="sda"/>
        </disk>
        <interface type="bridge"><source bridge="eth0"/></interface>
        {CONSOLE}
      </devices>
    </domain>"""
    same_xml(build_domain_xml(seed_template(), request()), expected)


def test_domain_xml_kernel_command_line_and_console_log() -> None:
    template = parse("""
        NAME = "web 1"
        MEMORY = 96
        VCPU = 2
        OS = [ KERNEL = "/k", INITRD = "/i", ROOT = "/dev/vda1", MACHINE = "pc" ]
        KERNEL_CMD = "console=ttyS0 quiet"
    """)
    element = ElementTree.fromstring(build_domain_xml(
        template, request(platform=Platform("qemu", "x86_64"), console_log="/var/log/c/one-5.log")))
    assert element.get("type") == "qemu"
    assert element.findtext("title") == "web 1"
    assert element.findtext("vcpu") == "2"
    assert element.find("cputune") is None  # no CPU attribute, no shares
    same_xml(ElementTree.tostring(element.find("os"), encoding="unicode"), """
      <os><type arch="x86_64" machine="pc">hvm</type><kernel>/k</kernel><initrd>/i</initrd>
          <cmdline>root=/dev/vda1 console=ttyS0 quiet</cmdline></os>""")
    same_xml(ElementTree.tostring(element.find("devices/serial"), encoding="unicode"), """
      <serial type="pty"><log file="/var/log/c/one-5.log" append="off"/>
        <target port="0"/></serial>""")
    # KERNEL_CMD inside OS wins over the top-level one.
    template.set("OS", {"KERNEL": "/k", "KERNEL_CMD": "init=/bin/sh"})
    element = ElementTree.fromstring(build_domain_xml(template, request()))
    assert element.findtext("os/cmdline") == "init=/bin/sh"


def test_domain_xml_boot_disk_network_nic_readonly_disk_and_graphics() -> None:
    template = parse("""
        CPU = 2
        MEMORY = 1024
        OS = [ BOOT = "cdrom,disk0", ARCH = "x86_64" ]
        DISK = [ SOURCE = "/images/root.qcow2", DRIVER = "qcow2", BUS = "virtio",
                 TARGET = "vda", CACHE = "none" ]
        DISK = [ SOURCE = "/images/data.img", READONLY = "yes" ]
        DISK = [ TYPE = "cdrom", SOURCE = "/images/install.iso", TARGET = "hdc" ]
        DISK = [ TYPE = "block", SOURCE = "/dev/vg0/scratch", DEV_PREFIX = "sd" ]
        NIC = [ NETWORK = "default", MAC = "02:00:0A:00:00:05", MODEL = "virtio" ]
        NIC = [ BRIDGE = "br0", TARGET = "one-5-1" ]
        NIC = [ MODEL = "e1000" ]
        GRAPHICS = [ TYPE = "VNC", LISTEN = "0.0.0.0", PORT = "5905", PASSWD = "s3cret" ]
        FEATURES = [ ACPI = "yes", PAE = "yes", APIC = "yes", LOCALTIME = "yes" ]
    """)
    expected = f"""
    <domain type="kvm">
      <name>one-5</name>
      <uuid>c0ffee00-0000-4000-8000-000000000005</uuid>
      {METADATA}
      <memory unit="KiB">1048576</memory>
      <vcpu>1</vcpu>
      <cputune><shares>2048</shares></cputune>
      <os><type arch="x86_64">hvm</type><boot dev="cdrom"/><boot dev="hd"/></os>
      <features><acpi/><apic/><pae/></features>
      <clock offset="localtime"/>
      <on_poweroff>destroy</on_poweroff>
      <on_reboot>restart</on_reboot>
      <on_crash>destroy</on_crash>
      <devices>
        <disk type="file" device="disk">
          <driver name="qemu" type="qcow2" cache="none"/>
          <source file="/images/root.qcow2"/>
          <target dev="vda" bus="virtio"/>
        </disk>
        <disk type="file" device="disk">
          <driver name="qemu" type="raw"/>
          <source file="/images/data.img"/>
          <target dev="hda"/>
          <readonly/>
        </disk>
        <disk type="file" device="cdrom">
          <driver name="qemu" type="raw"/>
          <source file="/images/install.iso"/>
          <target dev="hdc"/>
          <readonly/>
        </disk>
        <disk type="block" device="disk">
          <driver name="qemu" type="raw"/>
          <source dev="/dev/vg0/scratch"/>
          <target dev="sda"/>
        </disk>
        <interface type="network">
          <source network="default"/>
          <mac address="02:00:0a:00:00:05"/>
          <model type="virtio"/>
        </interface>
        <interface type="bridge"><source bridge="br0"/><target dev="one-5-1"/></interface>
        <interface type="user"><model type="e1000"/></interface>
        <graphics type="vnc" port="5905" autoport="no" listen="0.0.0.0" passwd="s3cret"/>
        {CONSOLE}
      </devices>
    </domain>"""
    same_xml(build_domain_xml(template, request()), expected)


def test_domain_xml_defaults_graphics_autoport_and_acpi_off() -> None:
    template = parse('MEMORY = 32\nGRAPHICS = [ TYPE = "spice" ]\nFEATURES = [ ACPI = "no" ]\n')
    element = ElementTree.fromstring(build_domain_xml(template, request()))
    same_xml(ElementTree.tostring(element.find("devices/graphics"), encoding="unicode"),
             '<graphics type="spice" port="-1" autoport="yes"/>')
    assert element.find("features/acpi") is None
    same_xml(ElementTree.tostring(element.find("os"), encoding="unicode"),
             '<os><type arch="x86_64">hvm</type><boot dev="hd"/></os>')


@pytest.mark.parametrize(("text", "message"), [
    ("CPU = 1\n", "MEMORY must be a number"),
    ("MEMORY = -4\n", "above 0"),
    ("MEMORY = 64\nVCPU = 0\n", "VCPU"),
    ("MEMORY = 64\nCPU = lots\n", "CPU must be a number"),
    ("MEMORY = 64\nNIC = [ BRIDGE = br0, MAC = \"02:00:zz\" ]\n", "NIC 0: MAC"),
    ("MEMORY = 64\nDISK = [ SOURCE = /a, READONLY = maybe ]\n", "DISK 0 READONLY"),
    ("MEMORY = 64\nDISK = [ TARGET = hda ]\n", "DISK 0 has no SOURCE"),
    ("MEMORY = 64\nDISK = [ SOURCE = /a, TYPE = swap ]\n", "TYPE 'swap' is not supported"),
    ("MEMORY = 64\nGRAPHICS = [ TYPE = sdl ]\n", "GRAPHICS TYPE"),
    ("MEMORY = 64\nGRAPHICS = [ PORT = high ]\n", "GRAPHICS PORT"),
    ("MEMORY = 64\nOS = [ BOOT = usb ]\n", "OS BOOT device"),
])
def test_domain_xml_refuses_wrong_local_parts(text: str, message: str) -> None:
    with pytest.raises(DomainXmlError, match=message):
        build_domain_xml(parse(text), request())


def test_check_template_only_refuses_what_is_wrong_anywhere(driver: KvmVmDriver) -> None:
    driver.check_template(seed_template())
    driver.check_template(parse('CPU = 1\nMEMORY = 64\nEC2 = [ AMI = "ami-1" ]\n'))
    driver.check_template(parse("CPU = 1\nDISK = [ IMAGE = ubuntu, TYPE = rbd ]\n"
                                'OS = [ BOOT = "usb" ]\nGRAPHICS = [ TYPE = sdl ]\n'))
    for wrong, attribute in (('NIC = [ MAC = "nope" ]', "NIC 0: MAC"),
                             ("DISK = [ SOURCE = /a, READONLY = perhaps ]", "DISK 0 READONLY"),
                             ("VCPU = 1.5", "VCPU")):
        with pytest.raises(ValidationError, match=attribute):
            driver.check_template(parse(f"MEMORY = 64\n{wrong}\n"))


def test_metadata_round_trip() -> None:
    identity = Identity(INSTALL, 12, "tok", 4)
    element = ElementTree.fromstring(build_domain_xml(
        parse("MEMORY = 8\n"), DomainRequest(12, identity, X86, "c0ffee00-0000-4000-8000-0000")))
    vm_element = element.find(f"metadata/{{{METADATA_NS}}}vm")
    assert vm_element is not None
    assert parse_identity(ElementTree.tostring(vm_element, encoding="unicode")) == identity
    # libvirt hands the element back without its namespace.
    assert parse_identity("<vm><installation>i</installation><vmid>3</vmid><token>t</token>"
                          "</vm>") == Identity("i", 3, "t", -1)
    assert parse_identity("<other/>") is None
    assert parse_identity("<vm><vmid>x</vmid></vm>") is None


# -- platform ----------------------------------------------------------------------------


def capabilities(*guests: tuple[str, tuple[str, ...]], host_arch: str = "x86_64") -> str:
    body = "".join(
        f"<guest><os_type>hvm</os_type><arch name='{arch}'>"
        + "".join(f"<domain type='{kind}'/>" for kind in types) + "</arch></guest>"
        for arch, types in guests)
    return (f"<capabilities><host><cpu><arch>{host_arch}</arch><model>Haswell</model>"
            f"<vendor>Intel</vendor></cpu></host>{body}</capabilities>")


def test_kvm_when_usable_else_tcg() -> None:
    with_kvm = capabilities(("i686", ("qemu", "kvm")), ("x86_64", ("qemu", "kvm")))
    assert choose_platform(with_kvm) == Platform("kvm", "x86_64")
    assert choose_platform(with_kvm, arch="i686") == Platform("kvm", "i686")
    assert choose_platform(with_kvm, domain_type="qemu") == Platform("qemu", "x86_64")
    tcg_only = capabilities(("x86_64", ("qemu",)), ("aarch64", ("qemu",)))
    assert choose_platform(tcg_only) == Platform("qemu", "x86_64")
    with pytest.raises(CapabilitiesError, match="no domain type 'kvm'"):
        choose_platform(tcg_only, domain_type="kvm")
    with pytest.raises(CapabilitiesError, match="runs no ppc64 guests"):
        choose_platform(tcg_only, arch="ppc64")
    assert choose_platform(libvirt.open(URI).getCapabilities()) == Platform("test", "i686")


# -- VM driver on test:///default ---------------------------------------------------------


def test_deploy_defines_and_starts_the_domain(driver: KvmVmDriver, conn: Any) -> None:
    text = seed_template().to_text()
    deploy_id = asyncio.run(driver.deploy(spec(20, text)))
    assert deploy_id == "one-20"
    domain = conn.lookupByName("one-20")
    assert domain.isActive() and domain.isPersistent()
    assert domain.UUIDString() == domain_uuid(INSTALL, f"{INSTALL}-vm20-0")
    described = ElementTree.fromstring(domain.XMLDesc(0))
    assert described.get("type") == "test"
    assert described.findtext("memory") == "131072"
    assert described.find("devices/disk/source").get("file") == "/imges/apache.img"
    assert described.find("devices/interface/source").get("bridge") == "eth0"
    metadata = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
    assert parse_identity(metadata) == Identity(INSTALL, 20, f"{INSTALL}-vm20-0", HOST.id)


def test_deploy_is_idempotent_on_the_token(driver: KvmVmDriver, conn: Any) -> None:
    first = spec(21)
    assert asyncio.run(driver.deploy(first)) == "one-21"
    uuid = conn.lookupByName("one-21").UUIDString()
    assert asyncio.run(driver.deploy(first)) == "one-21"  # a retry: the same domain
    assert [d.name() for d in conn.listAllDomains(0)].count("one-21") == 1
    assert conn.lookupByName("one-21").UUIDString() == uuid
    assert asyncio.run(driver.find(first)) == "one-21"
    assert asyncio.run(driver.find(spec(21, token="another-token"))) is None
    assert asyncio.run(driver.find(spec(22))) is None
    # A replay after the domain stopped starts it again.
    conn.lookupByName("one-21").destroy()
    assert asyncio.run(driver.deploy(first)) == "one-21"
    assert conn.lookupByName("one-21").isActive()
    # A running domain from another deploy of this VM is never taken over.
    with pytest.raises(DriverError, match=r"already exists.*another deploy"):
        asyncio.run(driver.deploy(spec(21, token="second-stay")))
    # A stopped one is a leftover: replaced.
    conn.lookupByName("one-21").destroy()
    assert asyncio.run(driver.deploy(spec(21, token="second-stay"))) == "one-21"
    assert conn.lookupByName("one-21").UUIDString() == domain_uuid(INSTALL, "second-stay")


def test_deploy_refuses_a_foreign_domain_of_the_same_name(driver: KvmVmDriver,
                                                           conn: Any) -> None:
    conn.defineXML("<domain type='test'><name>one-23</name><memory>8192</memory>"
                   "<os><type>hvm</type></os></domain>")
    with pytest.raises(DriverError, match=r"one-23 already exists.*other than cloudburst"):
        asyncio.run(driver.deploy(spec(23)))
    assert not conn.lookupByName("one-23").isActive()  # untouched


def test_deploy_failures(driver: KvmVmDriver, conn: Any) -> None:
    with pytest.raises(DriverError, match="deploy one-24 on kvm1: MEMORY"):
        asyncio.run(driver.deploy(spec(24, "CPU = 1\n")))
    forced = HostRef(3, "kvm1", {"LIBVIRT_URI": URI, "LIBVIRT_DOMAIN_TYPE": "kvm"})
    with pytest.raises(DriverError, match="no domain type 'kvm'"):
        asyncio.run(driver.deploy(spec(24, host=forced)))
    nowhere = HostRef(3, "kvm1", {"LIBVIRT_URI": "test+unix:///default?socket=/nonexistent"})
    with pytest.raises(TransientDriverError) as missing:
        asyncio.run(driver.deploy(spec(24, host=nowhere)))
    # What to do comes first, on one line: it is what `onehost list -l ...,REASON` shows.
    assert missing.value.message.startswith(
        "start 'libvirtd -d' (./scripts/run does) for test+unix:///default?socket=/nonexistent,"
        " or set the host's LIBVIRT_URI; no libvirtd answers: "), missing.value
    assert "\n" not in missing.value.message
    assert domain_state(conn, "one-24") is None


def test_poll_maps_states_in_one_listing(driver: KvmVmDriver, conn: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for vm_id in (30, 31, 32, 33):
        asyncio.run(driver.deploy(spec(vm_id)))
    conn.lookupByName("one-31").suspend()
    conn.lookupByName("one-32").destroy()  # defined, shut off
    conn.lookupByName("one-33").undefine()  # transient now ...
    conn.lookupByName("one-33").destroy()  # ... and gone
    listings: list[str] = []
    sample = kvm_vm.sample_domains

    def counted(connection: Any, **kwargs: Any) -> list[DomainSample]:
        listings.append(connection.getURI())
        return sample(connection, **kwargs)

    monkeypatch.setattr(kvm_vm, "sample_domains", counted)
    refs = [ref(vm_id) for vm_id in (30, 31, 32, 33, 34)]
    results = asyncio.run(driver.poll(refs))
    assert listings == [URI]
    assert {vm_id: result.state for vm_id, result in results.items()} == {
        30: PollState.ACTIVE, 31: PollState.PAUSED, 32: PollState.GONE, 33: PollState.GONE,
        34: PollState.GONE}
    # The deploy id may also be the domain's UUID.
    uuid = conn.lookupByName("one-30").UUIDString()
    assert asyncio.run(driver.poll([VmRef(30, uuid, HOST)]))[30].state is PollState.ACTIVE


def test_poll_across_hosts_reports_the_unreachable_one(driver: KvmVmDriver) -> None:
    asyncio.run(driver.deploy(spec(35)))
    broken = HostRef(9, "broken", {"LIBVIRT_URI": "test+unix:///default?socket=/nonexistent"})
    results = asyncio.run(driver.poll([ref(35), ref(36, broken)]))
    assert results[35].state is PollState.ACTIVE
    assert results[36].state is PollState.UNKNOWN
    assert "no libvirtd answers" in results[36].info["ERROR"]
    with pytest.raises(TransientDriverError):
        asyncio.run(driver.poll([ref(36, broken)]))


def test_shutdown_is_graceful_then_undefines(driver: KvmVmDriver, conn: Any) -> None:
    asyncio.run(driver.deploy(spec(40)))
    asyncio.run(driver.shutdown(ref(40)))
    assert domain_state(conn, "one-40") is None
    asyncio.run(driver.shutdown(ref(40)))  # already gone: nothing to do


def test_shutdown_destroys_a_guest_that_ignores_acpi(driver: KvmVmDriver, conn: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(driver.deploy(spec(41)))
    asked: list[str] = []
    monkeypatch.setattr(libvirt.virDomain, "shutdown", lambda self: asked.append(self.name()))
    host = HostRef(3, "kvm1", {"LIBVIRT_URI": URI, "SHUTDOWN_TIMEOUT": "0.3"})
    loop_time = asyncio.run(_timed(driver.shutdown(ref(41, host))))
    assert asked == ["one-41"]
    assert 0.3 <= loop_time < 5
    assert domain_state(conn, "one-41") is None


async def _timed(call: Any) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await call
    return loop.time() - start


def test_cancel_succeeds_when_gone(driver: KvmVmDriver, conn: Any) -> None:
    asyncio.run(driver.deploy(spec(42)))
    asyncio.run(driver.cancel(ref(42)))
    assert domain_state(conn, "one-42") is None
    asyncio.run(driver.cancel(ref(42)))
    conn.lookupByName("test")  # the wild domain is untouched


def test_reboot_reset_and_missing_domains(driver: KvmVmDriver, conn: Any) -> None:
    asyncio.run(driver.deploy(spec(43)))
    asyncio.run(driver.reboot(ref(43)))
    asyncio.run(driver.reset(ref(43)))
    assert domain_state(conn, "one-43") == libvirt.VIR_DOMAIN_RUNNING
    for action in (driver.reboot, driver.reset):
        with pytest.raises(InstanceNotFoundError, match="one-44"):
            asyncio.run(action(ref(44)))


def test_save_and_restore(driver: KvmVmDriver, conn: Any, tmp_path: Path) -> None:
    assert driver.supports("save") and driver.supports("restore")
    asyncio.run(driver.deploy(spec(45)))
    checkpoint = tmp_path / "one-45.checkpoint"
    asyncio.run(driver.save(ref(45), checkpoint, leaving=True))
    assert asyncio.run(driver.poll([ref(45)]))[45].state is PollState.GONE
    assert asyncio.run(driver.restore(ref(45), checkpoint)) == "one-45"
    assert asyncio.run(driver.poll([ref(45)]))[45].state is PollState.ACTIVE
    with pytest.raises(DriverError, match="one-45 is running; power it off to resize it"):
        asyncio.run(driver.resize(ref(45), ResizeSpec(1, 1, 64)))


def test_sweep_removes_orphans_after_the_grace_period(driver: KvmVmDriver, conn: Any) -> None:
    for vm_id in (50, 51):
        asyncio.run(driver.deploy(spec(vm_id)))
    other_host = HostRef(4, "kvm2", {"LIBVIRT_URI": URI})  # same hypervisor, other host
    asyncio.run(driver.deploy(spec(52, host=other_host)))
    sightings = OrphanSightings()
    report = asyncio.run(driver.sweep(HOST, frozenset({50}), 3600, sightings))
    assert report is not None and list(report.orphans) == ["one-51"] and not report.terminated
    report = asyncio.run(driver.sweep(HOST, frozenset({50}), 0, sightings))
    assert report is not None and list(report.terminated) == ["one-51"]
    assert domain_state(conn, "one-51") is None
    assert domain_state(conn, "one-50") == domain_state(conn, "one-52") == 1
    assert domain_state(conn, "test") == 1  # wild domains are never swept


# -- information driver ---------------------------------------------------------------------


def test_host_figures(info_driver: KvmInformationDriver, conn: Any) -> None:
    info = asyncio.run(info_driver.monitor(HOST))
    figures = info.attributes
    node = conn.getInfo()
    assert figures["HYPERVISOR"] == "kvm"
    assert figures["TOTALCPU"] == str(node[2] * 100) == "1600"
    assert int(figures["USEDCPU"]) + int(figures["FREECPU"]) == 1600
    total = int(figures["TOTALMEMORY"])
    assert total == node[1] * 1024
    assert int(figures["USEDMEMORY"]) + int(figures["FREEMEMORY"]) == total
    assert figures["LIBVIRT_VERSION"] == version_text(libvirt.getVersion())
    assert figures["MODELNAME"] == "i686"  # the test host names no CPU model
    assert figures["CPUSPEED"] == str(node[3])
    assert figures["EMULATION"] == "test"
    assert figures["HOSTNAME"] == conn.getHostname()
    reserved = HostRef(3, "kvm1", {"LIBVIRT_URI": URI, "RESERVED_CPU": "400",
                                   "RESERVED_MEM": str(total // 2)})
    figures = asyncio.run(info_driver.monitor(reserved)).attributes
    assert figures["TOTALCPU"] == "1200"
    assert int(figures["TOTALMEMORY"]) == total - total // 2


def test_reported_vms_ours_and_wild(info_driver: KvmInformationDriver, driver: KvmVmDriver,
                                    conn: Any) -> None:
    asyncio.run(driver.deploy(spec(60)))
    asyncio.run(driver.deploy(spec(61)))
    conn.lookupByName("one-61").suspend()
    asyncio.run(driver.deploy(spec(62)))
    conn.lookupByName("one-62").destroy()  # not running: not reported
    # another installation's one-63 is wild too
    foreign = KvmVmDriver(DriverContext(
        name="kvm", executable="one_vmm_kvm", arguments=(), options=DriverOptions(),
        etc_dir=Path("/x"), remotes_dir=Path("/x"), var_dir=Path("/x"), install_id="other"))
    asyncio.run(foreign.deploy(spec(63)))
    asyncio.run(foreign.close())
    info = asyncio.run(info_driver.monitor(HOST))
    reported = {vm.deploy_id: (vm.vm_id, vm.poll.state if vm.poll else None) for vm in info.vms}
    assert reported == {
        "test": (-1, PollState.ACTIVE),
        "one-60": (60, PollState.ACTIVE),
        "one-61": (61, PollState.PAUSED),
        "one-63": (-1, PollState.ACTIVE),
    }


def test_monitor_of_an_unreachable_host(info_driver: KvmInformationDriver) -> None:
    host = HostRef(8, "gone", {"LIBVIRT_URI": "test+unix:///default?socket=/nonexistent"})
    with pytest.raises(TransientDriverError, match="no libvirtd answers"):
        asyncio.run(info_driver.monitor(host))


# -- states and usage figures --------------------------------------------------------------


def test_state_table() -> None:
    expected = {
        libvirt.VIR_DOMAIN_NOSTATE: PollState.UNKNOWN,
        libvirt.VIR_DOMAIN_RUNNING: PollState.ACTIVE,
        libvirt.VIR_DOMAIN_BLOCKED: PollState.ACTIVE,
        libvirt.VIR_DOMAIN_PAUSED: PollState.PAUSED,
        libvirt.VIR_DOMAIN_SHUTDOWN: PollState.ACTIVE,
        libvirt.VIR_DOMAIN_SHUTOFF: PollState.GONE,
        libvirt.VIR_DOMAIN_CRASHED: PollState.ERROR,
        libvirt.VIR_DOMAIN_PMSUSPENDED: PollState.PAUSED,
        99: PollState.UNKNOWN,
    }
    assert {state: poll_state(state) for state in expected} == expected


def test_cpu_meter_and_poll_info() -> None:
    meter = CpuMeter()
    first = DomainSample("one-1", "u1", 1, cpu_time=1_000_000_000, memory_kb=65536,
                         net_rx=10, net_tx=20, disk_read=30, disk_write=40)
    assert meter.measure(URI, [first], now=100.0) == {}
    later = DomainSample("one-1", "u1", 1, cpu_time=2_500_000_000, memory_kb=65536)
    assert meter.measure(URI, [later], now=102.0) == {"u1": 75.0}
    result = poll_result(first, 75.0)
    assert result.state is PollState.ACTIVE
    assert result.info == {"MEMORY": "65536", "NETRX": "10", "NETTX": "20",
                           "DISKRDBYTES": "30", "DISKWRBYTES": "40", "CPU": "75"}
    stopped = DomainSample("one-1", "u1", libvirt.VIR_DOMAIN_SHUTOFF, memory_kb=65536)
    assert poll_result(stopped).info == {}
    assert meter.measure(URI, [], now=103.0) == {}  # forgotten when no longer seen
    assert meter.measure(URI, [later], now=104.0) == {}
