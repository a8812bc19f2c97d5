"""The libvirt domain XML of a VM, built from its OpenNebula template.

Only the template's *local part* is read (the part the seed uses "when
submitting this VM to local resources"); ``EC2``/``PUBLIC_CLOUD`` sections
are ignored. Attributes, as in OpenNebula's KVM driver:

* ``MEMORY`` (MB, required); ``VCPU`` (virtual CPUs, default 1); ``CPU``
  (share of a physical CPU) becomes ``<cputune><shares>`` = ``CPU`` x 1024
  (except on session-mode libvirt, which has no CPU tuning).
* ``OS = [ KERNEL, INITRD, ROOT, KERNEL_CMD, BOOT, ARCH, MACHINE ]``: with
  ``KERNEL`` the guest boots that kernel directly, command line
  ``root=/dev/<ROOT> <KERNEL_CMD>`` (a ``ROOT`` starting with ``/`` or holding
  ``=`` is used as written; a top-level ``KERNEL_CMD`` is read when ``OS`` has
  none); without it, it boots from ``BOOT`` (``hd``, ``cdrom``, ``network``,
  ``fd``, or OpenNebula 5's ``disk0``/``nic0``; comma-separated; default ``hd``).
* ``DISK = [ SOURCE, TARGET, READONLY, DRIVER, TYPE, BUS, CACHE, DEV_PREFIX ]``:
  ``TYPE`` ``disk``/``file`` (default), ``block``, ``cdrom`` or ``floppy``;
  ``DRIVER`` is the image format (default ``raw``); a missing ``TARGET`` is
  the next free ``<DEV_PREFIX or hd><letter>``.
* ``CONTEXT = [ ... ]``: the driver makes a context CD-ROM
  (:mod:`.context_iso`); it is attached read-only as the next free ``hd``
  target (IDE, as OpenNebula does), after the VM's own disks.
* ``NIC = [ BRIDGE | NETWORK, MAC, MODEL, TARGET ]``: ``BRIDGE`` attaches to a
  host bridge, ``NETWORK`` to a libvirt network; with neither the NIC uses
  QEMU's user-mode network.
* ``GRAPHICS = [ TYPE (vnc|spice), LISTEN, PORT, PASSWD, KEYMAP ]``: optional;
  without ``PORT`` libvirt picks a free one.
* ``FEATURES = [ ACPI, PAE, APIC, LOCALTIME, GUEST_AGENT ]`` (``yes``/``no``):
  ACPI is on unless ``ACPI = "no"`` (graceful shutdown needs it).

Every domain gets a serial console on a pty (``virsh console one-<vmid>``),
optionally also logged to a file, and ``<metadata>`` naming this installation,
the VM id and the deploy token, which is how ``find`` and host monitoring
recognise our domains.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final
from xml.etree import ElementTree

from cloudburst.drivers.kvm.host_caps import Platform
from cloudburst.errors import one_line
from cloudburst.template import Template, Vector

#: XML namespace of cloudburst's domain metadata.
METADATA_NS: Final = "https://cloudburst.invalid/xmlns/libvirt/domain/1.0"
METADATA_PREFIX: Final = "cloudburst"

ElementTree.register_namespace(METADATA_PREFIX, METADATA_NS)

_NAME_RE: Final = re.compile(r"one-(\d+)")
_MAC_RE: Final = re.compile(r"(?:[0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}")
_YES: Final = frozenset({"yes", "true", "1", "on"})
_NO: Final = frozenset({"no", "false", "0", "off"})
_BOOT_DEVICES: Final = {"hd": "hd", "disk": "hd", "cdrom": "cdrom", "network": "network",
                        "nic": "network", "fd": "fd", "floppy": "fd"}
_DISK_DEVICES: Final = {"disk": "disk", "file": "disk", "block": "disk", "cdrom": "cdrom",
                        "floppy": "floppy"}
_GRAPHICS: Final = frozenset({"vnc", "spice"})
_DEFAULT_PREFIX: Final = "hd"


class DomainXmlError(ValueError):
    """The template's local part cannot become a domain (message names the attribute)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """What our ``<metadata>`` records: who created the domain, for which VM and deploy.

    ``host_id`` is the cloudburst host it was deployed to, so two hosts that
    share one hypervisor never take each other's domains for orphans.
    """

    install_id: str
    vm_id: int
    token: str
    host_id: int = -1


@dataclass(frozen=True, slots=True)
class DomainRequest:
    """Everything besides the template that shapes the domain.

    Attributes:
        vm_id: the VM's id (the domain is named ``one-<vm_id>``).
        identity: recorded in the metadata.
        platform: domain type and architecture chosen for the host.
        uuid: the domain UUID (derived from the token, so a retried define
            describes the same domain).
        console_log: a file on the host to copy the serial console to, if any.
        cpu_shares: whether ``CPU`` becomes ``<cputune><shares>``; an
            unprivileged (session-mode) libvirt refuses CPU tuning.
        context_iso: the VM's context CD-ROM on the host, if it has one.
    """

    vm_id: int
    identity: Identity
    platform: Platform
    uuid: str
    console_log: str | None = None
    cpu_shares: bool = True
    context_iso: str | None = None


def domain_name(vm_id: int) -> str:
    """The domain name of VM ``vm_id``: ``one-<vm_id>`` (OpenNebula's)."""
    return f"one-{vm_id}"


def vm_id_of(name: str) -> int | None:
    """The VM id in a domain name of the form ``one-<id>``, else ``None``."""
    match = _NAME_RE.fullmatch(name)
    return int(match.group(1)) if match else None


# -- metadata ---------------------------------------------------------------------


def identity_element(identity: Identity, *, namespaced: bool = True) -> ElementTree.Element:
    """The ``<cloudburst:vm>`` element recorded under ``<metadata>``.

    Without ``namespaced``, plain ``<vm>`` (what ``virDomainSetMetadata`` takes:
    it applies the namespace itself).
    """
    prefix = f"{{{METADATA_NS}}}" if namespaced else ""
    element = ElementTree.Element(f"{prefix}vm")
    for tag, value in (("installation", identity.install_id), ("vmid", str(identity.vm_id)),
                       ("token", identity.token), ("host", str(identity.host_id))):
        ElementTree.SubElement(element, f"{prefix}{tag}").text = value
    return element


def parse_identity(metadata: str) -> Identity | None:
    """Read the element :func:`identity_element` wrote, as libvirt returns it.

    libvirt hands back the element of our namespace with the namespace
    stripped, so tags are compared by local name. Returns ``None`` for
    anything else (foreign or damaged metadata).
    """
    try:
        element = ElementTree.fromstring(metadata)
    except ElementTree.ParseError:
        return None
    if _local(element.tag) != "vm":
        return None
    values = {_local(child.tag): (child.text or "").strip() for child in element}
    vm_id = values.get("vmid", "")
    if not vm_id.isdigit():
        return None
    host = values.get("host", "")
    host_id = int(host) if host.lstrip("-").isdigit() else -1
    return Identity(values.get("installation", ""), int(vm_id), values.get("token", ""), host_id)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


# -- helpers ----------------------------------------------------------------------


def _sub(parent: ElementTree.Element, tag: str, text: str | None = None,
         **attributes: str) -> ElementTree.Element:
    element = ElementTree.SubElement(parent, tag, attributes)
    if text is not None:
        element.text = text
    return element


def _flag(value: str | None, what: str, default: bool) -> bool:
    if value is None:
        return default
    word = value.strip().lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise DomainXmlError(f'{what} must be "yes" or "no", got {value!r}')


def _get(vector: Vector | None, key: str) -> str | None:
    if vector is None:
        return None
    value = vector.get(key)
    if value is None or not value.strip():
        return None
    return value.strip()


def _memory_kib(template: Template) -> int:
    text = (template.get("MEMORY") or "").strip()
    try:
        megabytes = float(text)
    except ValueError:
        raise DomainXmlError(f"MEMORY must be a number of MB, got {text!r}") from None
    if not math.isfinite(megabytes) or megabytes <= 0:
        raise DomainXmlError(f"MEMORY must be a number of MB above 0, got {text!r}")
    return math.ceil(megabytes * 1024)


def _vcpus(template: Template) -> int:
    text = (template.get("VCPU") or "1").strip()
    if not text.isdigit() or int(text) < 1:
        raise DomainXmlError(f"VCPU must be a whole number >= 1, got {text!r}")
    return int(text)


def _cpu_shares(template: Template) -> int | None:
    text = (template.get("CPU") or "").strip()
    if not text:
        return None
    try:
        cpu = float(text)
    except ValueError:
        raise DomainXmlError(f"CPU must be a number, got {text!r}") from None
    if not math.isfinite(cpu) or cpu <= 0:
        raise DomainXmlError(f"CPU must be a number above 0, got {text!r}")
    return max(2, math.ceil(cpu * 1024))


def _cmdline(os_vector: Vector | None, template: Template) -> str:
    parts: list[str] = []
    root = _get(os_vector, "ROOT")
    if root is not None:
        parts.append(f"root={root}" if root.startswith("/") or "=" in root
                     else f"root=/dev/{root}")
    extra = _get(os_vector, "KERNEL_CMD") or (template.get("KERNEL_CMD") or "").strip()
    if extra:
        parts.append(extra)
    return " ".join(parts)


def _boot_devices(value: str | None) -> list[str]:
    devices: list[str] = []
    for word in (value or "hd").replace(" ", ",").split(","):
        if not word:
            continue
        # OpenNebula 5 numbers them (disk0, nic1): libvirt boots by kind here.
        device = _BOOT_DEVICES.get(word.lower().rstrip(string.digits))
        if device is None:
            raise DomainXmlError(
                f"OS BOOT device {word!r} is not one of {', '.join(sorted(_BOOT_DEVICES))}")
        if device not in devices:
            devices.append(device)
    return devices or ["hd"]


# -- sections ---------------------------------------------------------------------


def _os(domain: ElementTree.Element, template: Template, platform: Platform) -> None:
    os_vector = template.get_vector("OS")
    os_element = _sub(domain, "os")
    type_attributes = {"arch": platform.arch}
    machine = _get(os_vector, "MACHINE")
    if machine is not None:
        type_attributes["machine"] = machine
    _sub(os_element, "type", "hvm", **type_attributes)
    kernel = _get(os_vector, "KERNEL")
    if kernel is None:
        for device in _boot_devices(_get(os_vector, "BOOT")):
            _sub(os_element, "boot", dev=device)
        return
    _sub(os_element, "kernel", kernel)
    initrd = _get(os_vector, "INITRD")
    if initrd is not None:
        _sub(os_element, "initrd", initrd)
    cmdline = _cmdline(os_vector, template)
    if cmdline:
        _sub(os_element, "cmdline", cmdline)


def _features(domain: ElementTree.Element, template: Template) -> None:
    features = template.get_vector("FEATURES")
    element = _sub(domain, "features")
    if _flag(_get(features, "ACPI"), "FEATURES ACPI", True):
        _sub(element, "acpi")
    if _flag(_get(features, "APIC"), "FEATURES APIC", False):
        _sub(element, "apic")
    if _flag(_get(features, "PAE"), "FEATURES PAE", False):
        _sub(element, "pae")
    localtime = _flag(_get(features, "LOCALTIME"), "FEATURES LOCALTIME", False)
    _sub(domain, "clock", offset="localtime" if localtime else "utc")


def _targets(disks: Iterable[Vector]) -> list[str]:
    """Each disk's target: its ``TARGET``, or the next free name of its prefix."""
    taken = {target for disk in disks if (target := _get(disk, "TARGET"))}
    result: list[str] = []
    for number, disk in enumerate(disks):
        target = _get(disk, "TARGET")
        if target is None:
            try:
                target = free_target(taken, _get(disk, "DEV_PREFIX"))
            except DomainXmlError as exc:
                raise DomainXmlError(f"DISK {number}: {exc}") from None
            taken.add(target)
        result.append(target)
    return result


def _disk(devices: ElementTree.Element, disk: Vector, number: int, target: str,
          what: str | None = None) -> None:
    label = what or f"DISK {number}"
    kind = (_get(disk, "TYPE") or "disk").lower()
    device = _DISK_DEVICES.get(kind)
    if device is None:
        raise DomainXmlError(
            f"{label}: TYPE {kind!r} is not supported by the kvm driver "
            f"(use one of {', '.join(sorted(_DISK_DEVICES))})")
    source = _get(disk, "SOURCE")
    if source is None and device == "disk":
        raise DomainXmlError(f"{label} has no SOURCE (a path on the host)")
    block = kind == "block"
    element = _sub(devices, "disk", type="block" if block else "file", device=device)
    driver = {"name": "qemu", "type": _get(disk, "DRIVER") or "raw"}
    cache = _get(disk, "CACHE")
    if cache is not None:
        driver["cache"] = cache
    _sub(element, "driver", **driver)
    if source is not None:
        _sub(element, "source", **{"dev" if block else "file": source})
    target_attributes = {"dev": target}
    bus = _get(disk, "BUS")
    if bus is not None:
        target_attributes["bus"] = bus
    _sub(element, "target", **target_attributes)
    readonly = _flag(_get(disk, "READONLY"), f"{label} READONLY", False)
    if readonly or device == "cdrom":
        _sub(element, "readonly")


def _nic(devices: ElementTree.Element, nic: Vector, number: int,
         what: str | None = None) -> None:
    label = what or f"NIC {number}"
    bridge = _get(nic, "BRIDGE")
    network = _get(nic, "NETWORK")
    if bridge is not None:
        element = _sub(devices, "interface", type="bridge")
        _sub(element, "source", bridge=bridge)
    elif network is not None:
        element = _sub(devices, "interface", type="network")
        _sub(element, "source", network=network)
    else:
        element = _sub(devices, "interface", type="user")
    mac = _get(nic, "MAC")
    if mac is not None:
        if _MAC_RE.fullmatch(mac) is None:
            raise DomainXmlError(f"{label}: MAC {mac!r} is not of the form 02:00:0a:00:00:01")
        _sub(element, "mac", address=mac.lower())
    model = _get(nic, "MODEL")
    if model is not None:
        _sub(element, "model", type=model)
    target = _get(nic, "TARGET")
    if target is not None:
        _sub(element, "target", dev=target)


def _graphics(devices: ElementTree.Element, graphics: Vector) -> None:
    kind = (_get(graphics, "TYPE") or "vnc").lower()
    if kind not in _GRAPHICS:
        raise DomainXmlError(f"GRAPHICS TYPE {kind!r} is not one of {', '.join(sorted(_GRAPHICS))}")
    attributes = {"type": kind}
    port = _get(graphics, "PORT")
    if port is None:
        attributes.update(port="-1", autoport="yes")
    elif port.isdigit():
        attributes.update(port=port, autoport="no")
    else:
        raise DomainXmlError(f"GRAPHICS PORT must be a port number, got {port!r}")
    for key, attribute in (("LISTEN", "listen"), ("PASSWD", "passwd"), ("KEYMAP", "keymap")):
        value = _get(graphics, key)
        if value is not None:
            attributes[attribute] = value
    _sub(devices, "graphics", **attributes)


def _console(devices: ElementTree.Element, log_file: str | None) -> None:
    serial = _sub(devices, "serial", type="pty")
    if log_file is not None:
        _sub(serial, "log", file=log_file, append="off")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")


def _devices(domain: ElementTree.Element, template: Template, request: DomainRequest) -> None:
    devices = _sub(domain, "devices")
    disks = template.vectors("DISK")
    if request.context_iso is not None:
        disks = [*disks, {"SOURCE": request.context_iso, "TYPE": "cdrom"}]
    for number, (disk, target) in enumerate(zip(disks, _targets(disks), strict=True)):
        _disk(devices, disk, number, target)
    for number, nic in enumerate(template.vectors("NIC")):
        _nic(devices, nic, number)
    graphics = template.get_vector("GRAPHICS")
    if graphics is not None:
        _graphics(devices, graphics)
    _console(devices, request.console_log)
    if _flag(_get(template.get_vector("FEATURES"), "GUEST_AGENT"), "FEATURES GUEST_AGENT",
             False):
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "source", mode="bind")
        _sub(channel, "target", type="virtio", name="org.qemu.guest_agent.0")


# -- the document ------------------------------------------------------------------


def build_domain(template: Template, request: DomainRequest) -> ElementTree.Element:
    """The ``<domain>`` element for ``template`` (see the module docs).

    Raises:
        DomainXmlError: an attribute of the local part is missing or wrong.
    """
    domain = ElementTree.Element("domain", type=request.platform.domain_type)
    _sub(domain, "name", domain_name(request.vm_id))
    _sub(domain, "uuid", request.uuid)
    title = one_line(template.get("NAME") or "", 200)
    if title:
        _sub(domain, "title", title)
    metadata = _sub(domain, "metadata")
    metadata.append(identity_element(request.identity))
    _sub(domain, "memory", str(_memory_kib(template)), unit="KiB")
    _sub(domain, "vcpu", str(_vcpus(template)))
    shares = _cpu_shares(template)
    if shares is not None and request.cpu_shares:
        _sub(_sub(domain, "cputune"), "shares", str(shares))
    _os(domain, template, request.platform)
    _features(domain, template)
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    _devices(domain, template, request)
    return domain


def _device_xml(build: Callable[[ElementTree.Element], None]) -> str:
    devices = ElementTree.Element("devices")
    build(devices)
    [element] = devices
    ElementTree.indent(element)
    return ElementTree.tostring(element, encoding="unicode")


def disk_device_xml(disk: Vector, target: str, what: str = "DISK") -> str:
    """The ``<disk>`` element of ``disk`` (a ``DISK`` vector) on ``target``, for hot-plug.

    Raises:
        DomainXmlError: an attribute is missing or wrong (``what`` names the disk).
    """
    return _device_xml(lambda devices: _disk(devices, disk, 0, target, what))


def nic_device_xml(nic: Vector, what: str = "NIC") -> str:
    """The ``<interface>`` element of ``nic`` (a ``NIC`` vector), for hot-plug.

    Raises:
        DomainXmlError: an attribute is wrong (``what`` names the NIC).
    """
    return _device_xml(lambda devices: _nic(devices, nic, 0, what))


def free_target(taken: Iterable[str], prefix: str | None) -> str:
    """The first ``<prefix><letter>`` not in ``taken`` (prefix default ``hd``).

    Raises:
        DomainXmlError: every letter is taken.
    """
    used = set(taken)
    base = (prefix or "").strip() or _DEFAULT_PREFIX
    for letter in string.ascii_lowercase:
        if base + letter not in used:
            return base + letter
    raise DomainXmlError(f"no free disk target name with prefix {base}")


def build_domain_xml(template: Template, request: DomainRequest) -> str:
    """:func:`build_domain` serialised as text, ready for ``virDomainDefineXML``."""
    element = build_domain(template, request)
    ElementTree.indent(element)
    return ElementTree.tostring(element, encoding="unicode")


def resized_xml(xml: str, *, memory_mb: int, vcpu: int, cpu: float) -> str:
    """A domain definition ``xml`` with new capacity, by the deploy's rules.

    ``<memory>``/``<currentMemory>`` from ``memory_mb``, ``<vcpu>`` from ``vcpu``
    and, when the definition has CPU tuning, ``<shares>`` from ``cpu``.

    Raises:
        DomainXmlError: a value is out of range (named as the template attribute).
    """
    capacity = Template([("MEMORY", str(memory_mb)), ("VCPU", str(vcpu)), ("CPU", f"{cpu:g}")])
    kib, vcpus, shares = _memory_kib(capacity), _vcpus(capacity), _cpu_shares(capacity)
    domain = ElementTree.fromstring(xml)
    for tag in ("memory", "currentMemory"):
        element = domain.find(tag)
        if element is not None:
            element.text, element.attrib = str(kib), {"unit": "KiB"}
    vcpu_element = domain.find("vcpu")
    if vcpu_element is None:
        vcpu_element = _sub(domain, "vcpu")
    vcpu_element.text = str(vcpus)
    vcpu_element.attrib.pop("current", None)
    shares_element = domain.find("cputune/shares")
    if shares_element is not None and shares is not None:
        shares_element.text = str(shares)
    return ElementTree.tostring(domain, encoding="unicode")


def check_local_part(template: Template) -> None:
    """Validate, at VM creation, what is wrong wherever the VM would run.

    A VM may be meant for a cloud site, so only values no OpenNebula template
    may hold are refused: a malformed NIC ``MAC``, a ``READONLY`` that is not
    yes/no, a ``VCPU`` that is not a whole number. Everything else (``MEMORY``,
    a disk's ``SOURCE`` and ``TYPE``, ``BOOT``, ``GRAPHICS``) is checked when
    the VM is deployed on a kvm host.

    Raises:
        DomainXmlError: naming the attribute.
    """
    _vcpus(template)
    for number, disk in enumerate(template.vectors("DISK")):
        _flag(_get(disk, "READONLY"), f"DISK {number} READONLY", False)
    for number, nic in enumerate(template.vectors("NIC")):
        mac = _get(nic, "MAC")
        if mac is not None and _MAC_RE.fullmatch(mac) is None:
            raise DomainXmlError(f"NIC {number}: MAC {mac!r} is not of the form "
                                 "02:00:0a:00:00:01")
