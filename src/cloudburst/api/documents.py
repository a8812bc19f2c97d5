"""The XML documents of the API, shaped as oned's (spec/pyone.md section 6).

Every function returns a compact string: no XML declaration, no whitespace
between elements (pyone turns it into ``#text`` keys), no attributes. Template
values are CDATA (:meth:`Template.to_xml`); other text is escaped; integer
elements only ever hold integers and the VM ``MONITORING`` decimals only
numbers, because pyone's generated parser rejects anything else.

Documents are built from string pieces joined once, never through a DOM:
pools of ten thousand VMs are rendered on every ``one.vmpool.info``.
"""

from __future__ import annotations

import functools
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Final
from xml.sax.saxutils import escape

from cloudburst.auth import permissions
from cloudburst.config.settings import DriverSection, Settings
from cloudburst.drivers.registry import parse_driver_arguments
from cloudburst.model import cost
from cloudburst.model.reasons import PlacementReason
from cloudburst.model.records import HistoryRecord, HostRecord, TemplateRecord, VmRecord
from cloudburst.model.states import HostState
from cloudburst.template import Template

__all__ = [
    "PASSWORD_PLACEHOLDER",
    "config_document",
    "host_document",
    "host_pool_document",
    "template_document",
    "template_pool_document",
    "vm_document",
    "vm_pool_document",
]

#: What ``PASSWORD`` holds in user documents: the hash never leaves the daemon.
PASSWORD_PLACEHOLDER: Final = "********"

#: The TEMPLATE attributes of a VM in ``one.vmpool.info`` (oned's ``to_xml_short``).
SHORT_TEMPLATE_ATTRIBUTES: Final = frozenset({"CPU", "MEMORY", "VCPU", "DISK", "NIC", "GRAPHICS"})
#: The USER_TEMPLATE attributes oned 6.10 keeps in the short body (anything else,
#: e.g. DESCRIPTION or a partner's tags, is only in ``one.vm.info``/``infoextended``).
SHORT_USER_TEMPLATE_ATTRIBUTES: Final = frozenset({
    "LABELS", "ERROR", "SCHED_MESSAGE", "SCHED_RANK", "SCHED_REQUIREMENTS",
    "SCHED_DS_RANK", "SCHED_DS_REQUIREMENTS", "PUBLIC_CLOUD"})
#: oned's AUTOMATIC_REQUIREMENTS: no cloud host (and no pinned one) unless the VM
#: has a PUBLIC_CLOUD section, then also hosts of those hypervisors.
_LOCAL_ONLY: Final = "!(PUBLIC_CLOUD = YES) & !(PIN_POLICY = PINNED)"
#: Names a VM's OS/UUID is derived from (stable for the VM's life, unique per VM).
_UUID_NAMESPACE: Final = uuid.UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427")

#: VM MONITORING children pyone parses as ``xs:decimal``.
_DECIMAL_MONITORING: Final = frozenset(
    f"{base}{suffix}"
    for base in ("CPU", "MEMORY", *(f"{io}{bw}" for io in (
        "NETRX", "NETTX", "DISKRDBYTES", "DISKWRBYTES", "DISKRDIOPS", "DISKWRIOPS")
        for bw in ("", "_BW")))
    for suffix in ("", "_FORECAST", "_FORECAST_FAR")
)
#: Monitoring keys the document writes itself.
_OWN_MONITORING: Final = frozenset({"ID", "TIMESTAMP"})

_LOG_DEBUG_LEVELS: Final = {"ERROR": 0, "WARNING": 1, "INFO": 2, "DEBUG": 3}
_XML_NAME_RE: Final = re.compile(r"[A-Z_][A-Z0-9_]*")
_XML_ILLEGAL_RE: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: History REASON codes (oned 4.x: NONE, ERROR, USER); see :func:`_reason_code`.
_REASON_NONE, _REASON_ERROR, _REASON_USER = 0, 1, 2


# -- text helpers -------------------------------------------------------------------------


def _text(value: str) -> str:
    """``value`` escaped as element text, without characters XML 1.0 forbids."""
    if value.isascii() and value.isprintable():
        # The common case (names, ids), kept cheap for large pools.
        return escape(value) if ("&" in value or "<" in value or ">" in value) else value
    return escape(_XML_ILLEGAL_RE.sub("", value))


def _cdata(value: str) -> str:
    """``value`` as one CDATA section (split around ``]]>``), XML-legal.

    Carriage returns go out as character references: inside CDATA a parser
    would turn them into newlines (the same rule as :meth:`Template.to_xml`).
    """
    if not (value.isascii() and value.isprintable()):
        value = _XML_ILLEGAL_RE.sub("", value).replace("\r", "]]>&#13;<![CDATA[")
    if "]]>" in value:
        value = value.replace("]]>", "]]]]><![CDATA[>")
    return f"<![CDATA[{value}]]>"


def _int(name: str, value: int) -> str:
    return f"<{name}>{int(value)}</{name}>"


def _str(name: str, value: str) -> str:
    return f"<{name}>{_text(value)}</{name}>"


# -- VM -----------------------------------------------------------------------------------


def vm_document(vm: VmRecord, *, extended: bool = True, uname: str, gname: str) -> str:
    """The ``VM`` document of ``one.vm.info`` (``extended``) or of a pool entry.

    Args:
        vm: the VM, with its history.
        extended: the full document (PERMISSIONS, PREV_*, SCHED_ACTIONS, the
            whole system TEMPLATE with ``TM_MAD_SYSTEM`` and ``VMID``, every
            HISTORY field); otherwise oned's reduced pool form (TEMPLATE with
            only CPU, MEMORY, VCPU, DISK, NIC, GRAPHICS; the last HISTORY only,
            with its short fields).
        uname: the owner's name.
        gname: the group's name.
    """
    parts: list[str] = []
    _vm_parts(parts, vm, extended, _str("UNAME", uname) + _str("GNAME", gname))
    if extended:
        # cloudburst's additions, in one.vm.info only: pools stay as oned's.
        parts.insert(len(parts) - 1, _placement_xml(vm) + _cost_xml(vm))
    return "".join(parts)


def _figure(value: float | None) -> str:
    return "" if value is None else cost.money(value)


def _cost_xml(vm: VmRecord) -> str:
    """``COST``: the VM's price per hour now and the cost accrued (``model/cost.py``)."""
    price, spent = cost.vm_figures(vm)
    return (f"<COST><PRICE_PER_HOUR>{_figure(price)}</PRICE_PER_HOUR>"
            f"<ACCRUED>{_figure(spent)}</ACCRUED></COST>")


def _placement_xml(vm: VmRecord) -> str:
    """``PLACEMENT``: the candidates, refusals and winner of the VM's last placement."""
    reason = PlacementReason.from_json(vm.placement)
    if reason is None:
        return "<PLACEMENT/>"
    parts = [f"<PLACEMENT>{_str('MESSAGE', reason.summary())}"
             f"<CONSIDERED>{reason.considered}</CONSIDERED>"]
    if reason.host_id is not None:
        parts.append(f"<HOST_ID>{reason.host_id}</HOST_ID>{_str('HOST', reason.host)}"
                     f"{_str('TIER', reason.tier)}<PRICE>{_figure(reason.price)}</PRICE>"
                     f"<RANK>{_figure(reason.rank)}</RANK>{_str('ORDER', reason.order)}")
    for refused in reason.refused:
        parts.append(f"<REFUSED>{_str('KIND', refused.kind)}<COUNT>{refused.count}</COUNT>"
                     f"{_str('HOSTS', ','.join(refused.examples))}</REFUSED>")
    parts.append("</PLACEMENT>")
    return "".join(parts)


def vm_pool_document(vms: Iterable[VmRecord], *, extended: bool,
                     uname: Callable[[int], str], gname: Callable[[int], str]) -> str:
    """``VM_POOL``: reduced VMs for ``one.vmpool.info``, full ones when ``extended``.

    Args:
        vms: the VMs, in the order to list them.
        extended: render each VM as :func:`vm_document` does for ``one.vm.info``.
        uname: the user name of a uid.
        gname: the group name of a gid.
    """
    parts = ["<VM_POOL>"]
    owners: dict[tuple[int, int], str] = {}
    for vm in vms:
        owner = owners.get((vm.uid, vm.gid))
        if owner is None:
            owner = _str("UNAME", uname(vm.uid)) + _str("GNAME", gname(vm.gid))
            owners[(vm.uid, vm.gid)] = owner
        _vm_parts(parts, vm, extended, owner)
    parts.append("</VM_POOL>")
    return "".join(parts)


def vm_pool_entry(vm: VmRecord, *, extended: bool, uname: str, gname: str) -> str:
    """One ``VM`` element as :func:`vm_pool_document` renders it (for caching)."""
    parts: list[str] = []
    _vm_parts(parts, vm, extended, _str("UNAME", uname) + _str("GNAME", gname))
    return "".join(parts)


def _vm_parts(parts: list[str], vm: VmRecord, extended: bool, owner: str) -> None:
    """Append one VM; ``owner`` is its rendered UNAME and GNAME."""
    parts.append(
        f"<VM><ID>{vm.id}</ID><UID>{vm.uid}</UID><GID>{vm.gid}</GID>{owner}"
        f"{_str('NAME', vm.name)}"
    )
    if extended:
        parts.append(permissions.xml(vm.perms))
    parts.append(f"<LAST_POLL>{vm.last_poll}</LAST_POLL><STATE>{int(vm.state)}</STATE>"
                 f"<LCM_STATE>{int(vm.lcm_state)}</LCM_STATE>")
    if extended:
        parts.append(f"<PREV_STATE>{int(vm.prev_state)}</PREV_STATE>"
                     f"<PREV_LCM_STATE>{int(vm.prev_lcm_state)}</PREV_LCM_STATE>")
    parts.append(f"<RESCHED>{vm.resched}</RESCHED><STIME>{vm.stime}</STIME>"
                 f"<ETIME>{vm.etime}</ETIME>{_str('DEPLOY_ID', vm.deploy_id)}")
    template = vm.template
    lock = template.get_vector("LOCK")
    if lock is not None:
        _lock_parts(parts, lock, extended)
        template = template.copy()
        template.remove("LOCK")
    _vm_monitoring(parts, vm)
    if extended:
        parts.append("<SCHED_ACTIONS/>")
        parts.append(_with_os_uuid(_with_extra(template, "TEMPLATE", _system_extra(vm)), vm))
        parts.append(_with_extra(vm.user_template, "USER_TEMPLATE", _user_extra(vm)))
    else:
        _short_template(parts, vm.template)
        _short_user_template(parts, vm)
    parts.append("<HISTORY_RECORDS>")
    if extended:
        for record in vm.history:
            _history_parts(parts, record, vm)
    elif vm.history:
        _short_history_parts(parts, vm.history[-1])
    parts.append("</HISTORY_RECORDS>")
    if extended:
        parts.append("<BACKUPS><BACKUP_CONFIG/><BACKUP_IDS/></BACKUPS>")
    parts.append("</VM>")


def _lock_parts(parts: list[str], lock: Mapping[str, str], extended: bool) -> None:
    """oned's ``LOCK`` element of a locked VM (kept as the ``LOCK`` vector of its
    template): the level, and in the full form who locked it and when."""
    parts.append(f"<LOCK>{_int('LOCKED', _whole(lock.get('LOCKED'), 4))}")
    if extended:
        parts.append(f"{_int('OWNER', _whole(lock.get('OWNER'), 0))}"
                     f"{_int('TIME', _whole(lock.get('TIME'), 0))}"
                     f"{_int('REQ_ID', _whole(lock.get('REQ_ID'), -1))}")
    parts.append("</LOCK>")


def _whole(value: str | None, default: int) -> int:
    try:
        return int(value or "")
    except ValueError:
        return default


def _with_extra(template: Template, root: str, extra: dict[str, str]) -> str:
    """``template.to_xml(root)`` with ``extra`` attributes replacing same-named ones.

    Adding to the rendered text rather than to a copy of the template keeps
    large pools cheap: most VMs need one or two attributes appended.
    """
    if not extra:
        return template.to_xml(root)
    if any(name in template for name in extra):
        template = template.copy()
        for name in extra:
            template.remove(name)
    body = template.to_xml(root)[: -len(root) - 3]
    added = "".join(f"<{name}>{_cdata(value)}</{name}>" for name, value in extra.items())
    return f"{body}{added}</{root}>"


def _automatic_requirements(vm: VmRecord) -> str:
    """oned's ``AUTOMATIC_REQUIREMENTS`` for the VM's ``PUBLIC_CLOUD`` sections."""
    types = sorted({section.get("TYPE", "").strip().lower()
                    for section in vm.user_template.vectors("PUBLIC_CLOUD")} - {""})
    if not types:
        return _LOCAL_ONLY
    clouds = " | ".join(f"HYPERVISOR = {kind}" for kind in types)
    return f"{_LOCAL_ONLY} | (PUBLIC_CLOUD = YES & ({clouds}))"


def _with_os_uuid(rendered: str, vm: VmRecord) -> str:
    """The rendered TEMPLATE with ``OS/UUID`` added as oned adds it (a stable id per VM)."""
    os_vector = vm.template.get_vector("OS")
    if vm.template.get("OS") or (os_vector is not None and "UUID" in os_vector):
        return rendered  # the user's own OS UUID, or a scalar OS: left as written
    value = uuid.uuid5(_UUID_NAMESPACE, f"vm-{vm.id}-{vm.stime}")
    uuid_element = f"<UUID>{_cdata(str(value))}</UUID>"
    if os_vector:
        return rendered.replace("</OS>", f"{uuid_element}</OS>", 1)
    body = rendered.replace("<OS/>", "", 1)[: -len("</TEMPLATE>")]
    return f"{body}<OS>{uuid_element}</OS></TEMPLATE>"


def _system_extra(vm: VmRecord) -> dict[str, str]:
    """What oned adds to a VM's TEMPLATE: ``AUTOMATIC_REQUIREMENTS``, ``TM_MAD_SYSTEM``
    once placed, ``VMID`` (and ``OS/UUID``, :func:`_with_os_uuid`)."""
    extra: dict[str, str] = {}
    if "AUTOMATIC_REQUIREMENTS" not in vm.template:
        extra["AUTOMATIC_REQUIREMENTS"] = _automatic_requirements(vm)
    last = vm.last_history
    if last is not None and "TM_MAD_SYSTEM" not in vm.template:
        extra["TM_MAD_SYSTEM"] = last.tm_mad
    if "VMID" not in vm.template:
        extra["VMID"] = str(vm.id)
    return extra


def _user_extra(vm: VmRecord) -> dict[str, str]:
    """USER_TEMPLATE additions: ``ERROR`` and ``SCHED_MESSAGE`` when set, as oned keeps them."""
    extra: dict[str, str] = {}
    if vm.error:
        extra["ERROR"] = vm.error
    if vm.sched_message:
        extra["SCHED_MESSAGE"] = vm.sched_message
    return extra


def _short_user_template(parts: list[str], vm: VmRecord) -> None:
    """USER_TEMPLATE with only :data:`SHORT_USER_TEMPLATE_ATTRIBUTES` (and ERROR,
    SCHED_MESSAGE), as oned's short body has it."""
    kept = Template([(name, value) for name, value in vm.user_template
                     if name in SHORT_USER_TEMPLATE_ATTRIBUTES])
    parts.append(_with_extra(kept, "USER_TEMPLATE", _user_extra(vm)))


def _short_template(parts: list[str], template: Template) -> None:
    """TEMPLATE with only :data:`SHORT_TEMPLATE_ATTRIBUTES`, written as ``to_xml`` does;
    ``VCPU`` is always there (empty when unset), as in oned's short body."""
    parts.append("<TEMPLATE>")
    if "VCPU" not in template:
        parts.append("<VCPU/>")
    for name, value in template:
        if name not in SHORT_TEMPLATE_ATTRIBUTES:
            continue
        if isinstance(value, str):
            parts.append(f"<{name}>{_cdata(value)}</{name}>")
        elif not value:
            parts.append(f"<{name}/>")
        else:
            parts.append(f"<{name}>")
            parts.extend(f"<{key}>{_cdata(item)}</{key}>" for key, item in value.items())
            parts.append(f"</{name}>")
    parts.append("</TEMPLATE>")


def _vm_monitoring(parts: list[str], vm: VmRecord) -> None:
    """MONITORING: ID, TIMESTAMP and the poll data; pyone's decimals only when numeric."""
    parts.append(f"<MONITORING><ID>{vm.id}</ID><TIMESTAMP>{vm.last_poll}</TIMESTAMP>")
    for key, value in vm.monitoring.items():
        if not _monitoring_key(key):
            continue
        if key in _DECIMAL_MONITORING:
            number = _decimal(value)
            if number is not None:
                parts.append(f"<{key}>{number}</{key}>")
        else:
            parts.append(f"<{key}>{_cdata(value)}</{key}>")
    parts.append("</MONITORING>")


@functools.lru_cache(maxsize=1024)
def _monitoring_key(key: str) -> bool:
    """Whether a reported key can be written as a MONITORING element of its own."""
    return (key not in _OWN_MONITORING and _XML_NAME_RE.fullmatch(key) is not None
            and not key.startswith("XML"))


def _decimal(value: str) -> str | None:
    """``value`` as a finite decimal literal, or None when it is not one."""
    try:
        number = Decimal(value.strip())
    except (InvalidOperation, ValueError):
        return None
    return str(number) if number.is_finite() else None


def _reason_code(record: HistoryRecord) -> int:
    """oned's history REASON: none while the stay lasts, user for a requested end."""
    if not record.reason:
        return _REASON_NONE
    return _REASON_USER if record.reason.endswith(" requested") else _REASON_ERROR


def _history_parts(parts: list[str], record: HistoryRecord, vm: VmRecord) -> None:
    """A full HISTORY, plus 4.x's REASON (0 none, 1 error, 2 user) for the CLI.

    UID/GID name who ended the stay with its ACTION: -1 while no action did (a stay
    the scheduler started and nobody ended), as oned; else the VM's owner.
    """
    uid, gid = (-1, -1) if record.action == 0 else (vm.uid, vm.gid)
    parts.append(
        f"<HISTORY><OID>{record.vm_id}</OID><SEQ>{record.seq}</SEQ>"
        f"{_str('HOSTNAME', record.hostname)}<HID>{record.host_id}</HID>"
        f"<CID>{record.cluster_id}</CID><STIME>{record.stime}</STIME><ETIME>{record.etime}</ETIME>"
        f"{_str('VM_MAD', record.vm_mad)}{_str('TM_MAD', record.tm_mad)}<DS_ID>0</DS_ID>"
        f"<PLAN_ID>-1</PLAN_ID><ACTION_ID>-1</ACTION_ID>"
        f"<PSTIME>{record.pstime}</PSTIME><PETIME>{record.petime}</PETIME>"
        f"<RSTIME>{record.rstime}</RSTIME><RETIME>{record.retime}</RETIME>"
        f"<ESTIME>{record.estime}</ESTIME><EETIME>{record.eetime}</EETIME>"
        f"<ACTION>{record.action}</ACTION><REASON>{_reason_code(record)}</REASON>"
        f"<UID>{uid}</UID><GID>{gid}</GID><REQUEST_ID>-1</REQUEST_ID></HISTORY>"
    )


def _short_history_parts(parts: list[str], record: HistoryRecord) -> None:
    parts.append(
        f"<HISTORY><OID>{record.vm_id}</OID><SEQ>{record.seq}</SEQ>"
        f"{_str('HOSTNAME', record.hostname)}<HID>{record.host_id}</HID>"
        f"<CID>{record.cluster_id}</CID><DS_ID>0</DS_ID>{_str('VM_MAD', record.vm_mad)}"
        f"{_str('TM_MAD', record.tm_mad)}"
        f"<ACTION>{record.action}</ACTION></HISTORY>"
    )


# -- host ---------------------------------------------------------------------------------


def host_document(host: HostRecord, *, cluster: str) -> str:
    """The ``HOST`` document of ``one.host.info``; ``cluster`` is its cluster's name.

    HOST_SHARE carries oned's allocation fields (``*_USAGE`` is what placed VMs
    hold, ``MAX_*``/``TOTAL_*`` the monitored capacity) plus the monitored
    ``FREE_*``/``USED_*`` of 3.x-4.x. TEMPLATE is the monitoring report plus
    ``ERROR`` while the host is in error. ``TM_MAD``, ``VN_MAD`` and
    ``LAST_MON_TIME`` are the 4.x elements, kept for the CLI and old clients.
    """
    parts: list[str] = []
    _host_parts(parts, host, cluster)
    return "".join(parts)


def host_pool_document(hosts: Iterable[HostRecord], *, cluster: Callable[[int], str]) -> str:
    """``HOST_POOL`` with every host as :func:`host_document` renders it;
    ``cluster`` names a cluster id."""
    parts = ["<HOST_POOL>"]
    for host in hosts:
        _host_parts(parts, host, cluster(host.cluster_id))
    parts.append("</HOST_POOL>")
    return "".join(parts)


def _host_parts(parts: list[str], host: HostRecord, cluster: str) -> None:
    parts.append(
        f"<HOST><ID>{host.id}</ID>{_str('NAME', host.name)}<STATE>{int(host.state)}</STATE>"
        f"<PREV_STATE>{int(host.prev_state)}</PREV_STATE>{_str('IM_MAD', host.im_mad)}"
        f"{_str('VM_MAD', host.vm_mad)}{_str('TM_MAD', host.tm_mad)}"
        f"{_str('VN_MAD', host.vn_mad)}<LAST_MON_TIME>{host.last_mon_time}</LAST_MON_TIME>"
        f"<CLUSTER_ID>{host.cluster_id}</CLUSTER_ID>{_str('CLUSTER', cluster)}"
        f"<HOST_SHARE><MEM_USAGE>{host.mem_usage}</MEM_USAGE>"
        f"<CPU_USAGE>{host.cpu_usage}</CPU_USAGE><TOTAL_MEM>{host.max_mem}</TOTAL_MEM>"
        f"<TOTAL_CPU>{host.max_cpu}</TOTAL_CPU><MAX_MEM>{host.max_mem}</MAX_MEM>"
        f"<MAX_CPU>{host.max_cpu}</MAX_CPU><FREE_MEM>{host.free_mem}</FREE_MEM>"
        f"<FREE_CPU>{host.free_cpu}</FREE_CPU><USED_MEM>{host.used_mem}</USED_MEM>"
        f"<USED_CPU>{host.used_cpu}</USED_CPU><RUNNING_VMS>{host.running_vms}</RUNNING_VMS>"
        "<VMS_THREAD>0</VMS_THREAD><DATASTORES><DISK_USAGE>0</DISK_USAGE>"
        "<FREE_DISK>0</FREE_DISK><MAX_DISK>0</MAX_DISK><USED_DISK>0</USED_DISK></DATASTORES>"
        "<PCI_DEVICES/><NUMA_NODES/></HOST_SHARE><VMS>"
    )
    parts.extend(f"<ID>{vm_id}</ID>" for vm_id in host.vm_ids)
    parts.append("</VMS>")
    extra = {}
    if host.state is HostState.ERROR and host.error and "ERROR" not in host.template:
        extra["ERROR"] = host.error
    parts.append(_with_extra(host.template, "TEMPLATE", extra))
    if host.last_mon_time:
        parts.append(
            f"<MONITORING><TIMESTAMP>{host.last_mon_time}</TIMESTAMP><ID>{host.id}</ID>"
            f"<CAPACITY><FREE_CPU>{host.free_cpu}</FREE_CPU>"
            f"<FREE_MEMORY>{host.free_mem}</FREE_MEMORY><USED_CPU>{host.used_cpu}</USED_CPU>"
            f"<USED_MEMORY>{host.used_mem}</USED_MEMORY></CAPACITY><SYSTEM/></MONITORING>"
        )
    else:
        parts.append("<MONITORING/>")
    parts.append("</HOST>")


# -- VM templates -------------------------------------------------------------------------


def template_document(record: TemplateRecord, *, uname: str, gname: str) -> str:
    """The ``VMTEMPLATE`` document of ``one.template.info`` (owner and group named)."""
    parts: list[str] = []
    _template_parts(parts, record, uname, gname)
    return "".join(parts)


def template_pool_document(records: Iterable[TemplateRecord], *,
                           uname: Callable[[int], str], gname: Callable[[int], str]) -> str:
    """``VMTEMPLATE_POOL`` of ``one.templatepool.info``."""
    parts = ["<VMTEMPLATE_POOL>"]
    for record in records:
        _template_parts(parts, record, uname(record.uid), gname(record.gid))
    parts.append("</VMTEMPLATE_POOL>")
    return "".join(parts)


def _template_parts(parts: list[str], record: TemplateRecord, uname: str, gname: str) -> None:
    parts.append(
        f"<VMTEMPLATE><ID>{record.id}</ID><UID>{record.uid}</UID><GID>{record.gid}</GID>"
        f"{_str('UNAME', uname)}{_str('GNAME', gname)}"
        f"{_str('NAME', record.name)}{permissions.xml(record.perms)}"
        f"<REGTIME>{record.regtime}</REGTIME>"
    )
    parts.append(record.template.to_xml("TEMPLATE"))
    parts.append("</VMTEMPLATE>")


# -- configuration ------------------------------------------------------------------------


def config_document(settings: Settings) -> str:
    """``OPENNEBULA_CONFIGURATION`` of ``one.system.config``.

    Only what is safe to show: the listen address, timers, limits and each
    driver section with its name, executable and the dispatcher options of its
    ARGUMENTS. The database URL and the driver-specific argument words (which
    may carry endpoints with credentials) are never included.
    """
    scheduler = settings.scheduler
    parts = [
        "<OPENNEBULA_CONFIGURATION>",
        _str("LISTEN_ADDRESS", settings.listen_address),
        _int("PORT", settings.port),
        _str("MONITORING_INTERVAL", _number(settings.monitoring_interval)),
        _str("VM_POLLING_INTERVAL", _number(settings.vm_polling_interval)),
        _int("MONITORING_INTERVAL_HOST", math.ceil(settings.monitoring_interval)),
        _int("MONITORING_INTERVAL_VM", math.ceil(settings.vm_polling_interval)),
        _str("SCHED_INTERVAL", _number(scheduler.interval)),
        _int("MAX_VM", scheduler.max_vm),
        _int("MAX_DISPATCH", scheduler.max_dispatch),
        _int("MAX_HOST", scheduler.max_host),
        f"<DEFAULT_SCHED>{_str('RANK', scheduler.default_rank)}</DEFAULT_SCHED>",
        _str("DEFAULT_ACTION_TIMEOUT", _number(settings.default_action_timeout)),
        _str("ORPHAN_GRACE_PERIOD", _number(settings.orphan_grace_period)),
        _int("MAX_REQUEST_BYTES", settings.max_request_bytes),
        _int("MESSAGE_SIZE", settings.max_request_bytes),
        f"<DB>{_str('BACKEND', _db_backend(settings.database_url))}</DB>",
        f"<LOG>{_int('DEBUG_LEVEL', _LOG_DEBUG_LEVELS.get(settings.log_level, 2))}</LOG>",
    ]
    parts.extend(_driver_section(section) for section in settings.drivers)
    parts.append("</OPENNEBULA_CONFIGURATION>")
    return "".join(parts)


def _number(value: float) -> str:
    return f"{value:g}"


def _db_backend(url: str) -> str:
    scheme = url.partition(":")[0].partition("+")[0]
    return "postgresql" if scheme.startswith("postgres") else scheme


def _driver_section(section: DriverSection) -> str:
    try:
        options, _ = parse_driver_arguments(section.arguments)
    except ValueError:
        arguments = ""
        threads = 1
    else:
        arguments = f"-t {options.threads} -r {options.retries}"
        if options.timeout is not None:
            arguments += f" -w {options.timeout:g}"
        threads = options.threads
    fields: Mapping[str, str] = {"NAME": section.name, "EXECUTABLE": section.executable,
                                 "ARGUMENTS": arguments}
    body = "".join(_str(name, value) for name, value in fields.items())
    if section.kind == "IM_MAD":
        body += _int("THREADS", threads)
    elif section.kind == "VM_MAD":
        body += _str("TYPE", section.type)
        if section.default:
            body += _str("DEFAULT", section.default)
    return f"<{section.kind}>{body}</{section.kind}>"
