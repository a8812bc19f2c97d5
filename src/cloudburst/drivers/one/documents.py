"""The partner's pool documents, read into small immutable values.

``one.vmpool.infoextended``, ``one.hostpool.info`` and ``one.user.info``
answer with XML documents (``VM_POOL``, ``HOST_POOL``, ``USER``); they are
parsed on the client's worker thread (a partner may hold thousands of VMs)
into :class:`RemoteVm`, :class:`RemoteHost` and :class:`AccountRoom`. A
document with a ``DOCTYPE`` is refused: partner documents never need
entities. Missing or unreadable numbers read as 0 (ids and states as -1).

Every partner VM the driver creates carries three tags in its
``USER_TEMPLATE`` (:data:`ORIGIN_TAG`, :data:`TOKEN_TAG`, :data:`HOST_TAG`):
they tell our VMs from the account's others, find a deploy again after a
retry, and assign an orphan to the host that stands for the partner. A real
OpenNebula shows the user template only in *extended* bodies
(``one.vmpool.infoextended``, ``one.vm.info``): the short ``one.vmpool.info``
body keeps a handful of attributes and none of the tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final
from xml.etree import ElementTree

from cloudburst.errors import DriverError, one_line

#: Tags written into every partner VM's USER_TEMPLATE.
ORIGIN_TAG: Final = "CLOUDBURST_ORIGIN"  # "<installation id>:<our VM id>"
TOKEN_TAG: Final = "CLOUDBURST_TOKEN"  # the deploy's idempotency token
HOST_TAG: Final = "CLOUDBURST_HOST"  # the id of our host that stands for the partner


@dataclass(frozen=True, slots=True)
class RemoteVm:
    """A VM of the partner's pool, reduced to what the drivers read."""

    id: int
    name: str
    state: int
    lcm_state: int
    cpu: float = 0.0
    memory_mb: int = 0
    ip: str = ""
    origin: str = ""
    token: str = ""
    host_tag: str = ""
    error: str = ""
    sched_message: str = ""
    monitoring: dict[str, str] = field(default_factory=dict)

    def origin_of(self, install_id: str) -> int | None:
        """Our VM id when the VM carries installation ``install_id``'s tag."""
        owner, colon, vm_id = self.origin.rpartition(":")
        if not colon or owner != install_id:
            return None
        try:
            return int(vm_id)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class RemoteHost:
    """A host of the partner's pool (capacity in OpenNebula units)."""

    id: int
    state: int
    max_cpu: int
    cpu_usage: int
    max_mem: int
    mem_usage: int
    public_cloud: bool


class _NoDoctype(ElementTree.TreeBuilder):
    """Refuses DOCTYPE declarations: partner documents never need entities."""

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise DriverError("the partner sent an XML document with a DOCTYPE; refused")


def _document(text: object, root: str) -> ElementTree.Element:
    """``text`` parsed, checked to be a ``root`` document.

    Raises:
        DriverError: not XML, malformed, with a DOCTYPE, or another document.
    """
    if not isinstance(text, str) or not text.lstrip().startswith("<"):
        raise DriverError(f"the partner sent no {root} document")
    parser = ElementTree.XMLParser(target=_NoDoctype())
    try:
        parser.feed(text)
        element = parser.close()
    except ElementTree.ParseError as exc:
        raise DriverError(f"the partner sent a malformed {root} document: {exc}") from None
    if element.tag != root:
        raise DriverError(f"the partner sent a {element.tag} document instead of {root}")
    return element


def _int(element: ElementTree.Element, path: str, default: int = 0) -> int:
    value = element.findtext(path)
    try:
        return int(float(value)) if value is not None and value.strip() else default
    except ValueError:
        return default


def _float(element: ElementTree.Element, path: str) -> float:
    value = element.findtext(path)
    try:
        return float(value) if value is not None and value.strip() else 0.0
    except ValueError:
        return 0.0


def _text(element: ElementTree.Element, path: str) -> str:
    return (element.findtext(path) or "").strip()


def _ip(vm: ElementTree.Element, monitoring: dict[str, str]) -> str:
    """The address the partner reports: monitoring IP, guest IP, else the first NIC's."""
    for key in ("IP", "GUEST_IP", "PUBLIC_IP"):
        if monitoring.get(key):
            return monitoring[key]
    for path in ("TEMPLATE/NIC/IP", "TEMPLATE/NIC/EXTERNAL_IP", "TEMPLATE/NIC/IP6_GLOBAL"):
        found = _text(vm, path)
        if found:
            return found
    return ""


def parse_vm_pool(text: object) -> list[RemoteVm]:
    """A ``VM_POOL`` document (reduced or extended) as :class:`RemoteVm` values.

    Raises:
        DriverError: not a readable ``VM_POOL`` document.
    """
    pool = _document(text, "VM_POOL")
    vms = []
    for vm in pool.findall("VM"):
        monitoring = {child.tag: (child.text or "").strip() for child in vm.findall("MONITORING/*")
                      if len(child) == 0}
        vms.append(RemoteVm(
            id=_int(vm, "ID", -1), name=_text(vm, "NAME"), state=_int(vm, "STATE", -1),
            lcm_state=_int(vm, "LCM_STATE", -1), cpu=_float(vm, "TEMPLATE/CPU"),
            memory_mb=_int(vm, "TEMPLATE/MEMORY"), ip=_ip(vm, monitoring),
            origin=_text(vm, f"USER_TEMPLATE/{ORIGIN_TAG}"),
            token=_text(vm, f"USER_TEMPLATE/{TOKEN_TAG}"),
            host_tag=_text(vm, f"USER_TEMPLATE/{HOST_TAG}"),
            error=one_line(_text(vm, "USER_TEMPLATE/ERROR"), 300),
            sched_message=one_line(_text(vm, "USER_TEMPLATE/SCHED_MESSAGE"), 300),
            monitoring=monitoring,
        ))
    return vms


def parse_host_pool(text: object) -> list[RemoteHost]:
    """A ``HOST_POOL`` document as :class:`RemoteHost` values.

    Raises:
        DriverError: not a readable ``HOST_POOL`` document.
    """
    pool = _document(text, "HOST_POOL")
    return [
        RemoteHost(
            id=_int(host, "ID", -1), state=_int(host, "STATE", -1),
            max_cpu=_int(host, "HOST_SHARE/MAX_CPU"), cpu_usage=_int(host, "HOST_SHARE/CPU_USAGE"),
            max_mem=_int(host, "HOST_SHARE/MAX_MEM"), mem_usage=_int(host, "HOST_SHARE/MEM_USAGE"),
            public_cloud=_text(host, "TEMPLATE/PUBLIC_CLOUD").upper() == "YES",
        )
        for host in pool.findall("HOST")
    ]


@dataclass(frozen=True, slots=True)
class AccountRoom:
    """What the partner account's VM quotas leave it (``one.user.info``).

    ``cpu``/``memory_mb`` are the smallest headroom (limit minus the
    account's usage) over the quotas that limit it (``CPU`` and
    ``RUNNING_CPU``, ``MEMORY`` and ``RUNNING_MEMORY``), ``None`` when no
    quota limits it. Usage counts every VM of the account, ours included.
    """

    cpu: float | None
    memory_mb: float | None


#: oned's quota values that are not limits: -1 "the default quota", -2 "unlimited".
_DEFAULT_QUOTA: Final = -1.0


def _quota_headroom(user: ElementTree.Element, keys: tuple[str, ...]) -> float | None:
    """The smallest ``limit - used`` over ``keys`` of the user's VM quota."""
    quota = user.find("VM_QUOTA/VM")
    defaults = user.find("DEFAULT_USER_QUOTAS/VM_QUOTA/VM")
    room: float | None = None
    for key in keys:
        limit = _float_or(quota, key, _DEFAULT_QUOTA)
        if limit == _DEFAULT_QUOTA:
            limit = _float_or(defaults, key, -2.0)
        if limit < 0:
            continue  # unlimited
        headroom = limit - _float_or(quota, f"{key}_USED", 0.0)
        room = headroom if room is None else min(room, headroom)
    return room


def _float_or(element: ElementTree.Element | None, path: str, default: float) -> float:
    value = None if element is None else element.findtext(path)
    try:
        return float(value) if value is not None and value.strip() else default
    except ValueError:
        return default


def parse_account_room(text: object) -> AccountRoom:
    """A ``USER`` document's VM quotas as :class:`AccountRoom`.

    Raises:
        DriverError: not a readable ``USER`` document.
    """
    user = _document(text, "USER")
    return AccountRoom(cpu=_quota_headroom(user, ("CPU", "RUNNING_CPU")),
                       memory_mb=_quota_headroom(user, ("MEMORY", "RUNNING_MEMORY")))
