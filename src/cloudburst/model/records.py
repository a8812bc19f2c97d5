"""Records of the pools: what the store returns and the API renders.

Records are immutable values; a change is a new record written with
compare-and-swap on ``version`` (see :mod:`cloudburst.store`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cloudburst.model.lifecycle import StateKey
from cloudburst.model.states import HostState, LcmState, VmState
from cloudburst.template import Template

#: Attributes oned keeps in a VM's TEMPLATE; everything else is USER_TEMPLATE
#: (spec/pyone.md 6.3). ``EC2``/``PUBLIC_CLOUD`` stay in USER_TEMPLATE.
SYSTEM_TEMPLATE_ATTRIBUTES: frozenset[str] = frozenset({
    "CPU", "VCPU", "MEMORY", "DISK", "NIC", "NIC_ALIAS", "OS", "GRAPHICS", "CONTEXT",
    "INPUT", "RAW", "FEATURES", "TOPOLOGY", "NUMA_NODE", "PCI", "VMID", "TEMPLATE_ID",
    "CLONING_TEMPLATE_ID", "AUTOMATIC_REQUIREMENTS", "CPU_MODEL", "MEMORY_UNIT_COST",
    "TM_MAD_SYSTEM", "SUBMIT_ON_HOLD", "VIDEO",
})


def cpu_share(cpu: float) -> int:
    """A VM's ``CPU`` as host capacity: percent of one core (``CPU=0.5`` is 50).

    Rounded, not truncated as oned does, so that ``CPU=0.29`` costs 29 and
    not 28 through float error. Every capacity computation uses this one
    function (and the stored ``cpu_share`` column it fills).
    """
    return round(cpu * 100)


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One stay of a VM on a host (OpenNebula's ``HISTORY``).

    Times are UNIX seconds; 0 means "not yet". ``reason`` says why the stay
    ended (user action, failure text) in one line.
    """

    vm_id: int
    seq: int
    host_id: int
    hostname: str
    vm_mad: str
    tm_mad: str
    stime: int
    etime: int = 0
    pstime: int = 0
    petime: int = 0
    rstime: int = 0
    retime: int = 0
    estime: int = 0
    eetime: int = 0
    action: int = 0
    reason: str = ""
    #: Price per hour of a cloud stay, fixed when it opened (``None``: unknown or local).
    price: float | None = None
    #: The host's cluster when the stay began (oned's history ``CID``).
    cluster_id: int = 0


@dataclass(frozen=True, slots=True)
class VmRecord:
    """A virtual machine as stored."""

    id: int
    name: str
    uid: int
    gid: int
    state: VmState
    lcm_state: LcmState
    prev_state: VmState
    prev_lcm_state: LcmState
    stime: int
    etime: int
    deploy_id: str
    host_id: int | None
    template: Template
    user_template: Template
    cpu: float
    memory: int
    version: int
    monitoring: dict[str, str] = field(default_factory=dict)
    last_poll: int = 0
    error: str = ""
    sched_message: str = ""
    resched: int = 0
    history: tuple[HistoryRecord, ...] = ()
    #: ``UUU GGG OOO`` as octal (``auth/permissions.py``); only chmod changes it.
    perms: int = 0o600
    #: Why the VM went where it went or why it waits (``model/reasons.py`` JSON).
    placement: str = ""

    @property
    def position(self) -> StateKey:
        return (self.state, self.lcm_state)

    @property
    def last_history(self) -> HistoryRecord | None:
        return self.history[-1] if self.history else None

    def full_template(self) -> Template:
        """TEMPLATE and USER_TEMPLATE merged: what the user wrote, plus VMID."""
        merged = self.template.copy()
        merged.merge(self.user_template, replace=False)
        return merged


@dataclass(frozen=True, slots=True)
class HostRecord:
    """A host (hypervisor or cloud site) with its monitored capacity.

    ``max_*``/``free_*``/``used_*`` come from the last monitoring (CPU in
    percent of a core, memory in KB). ``cpu_usage``/``mem_usage``/
    ``running_vms``/``vm_ids`` are what VMs placed here hold, derived from the
    VM pool when the record is read.
    """

    id: int
    name: str
    state: HostState
    prev_state: HostState
    im_mad: str
    vm_mad: str
    tm_mad: str
    vn_mad: str
    cluster_id: int
    template: Template
    last_mon_time: int
    version: int
    error: str = ""
    max_cpu: int = 0
    max_mem: int = 0
    free_cpu: int = 0
    free_mem: int = 0
    used_cpu: int = 0
    used_mem: int = 0
    cpu_usage: int = 0
    mem_usage: int = 0
    running_vms: int = 0
    vm_ids: tuple[int, ...] = ()

    @property
    def hypervisor(self) -> str:
        return self.template.get("HYPERVISOR") or ""

    @property
    def is_public_cloud(self) -> bool:
        """A cloud site: probes reported ``PUBLIC_CLOUD=YES`` and a ``HYPERVISOR``."""
        flag = (self.template.get("PUBLIC_CLOUD") or "").strip().upper()
        return flag == "YES" and bool(self.hypervisor)

    @property
    def locality_reason(self) -> str:
        """Why the host is local or cloud, in words for ``onehost show``."""
        flag = (self.template.get("PUBLIC_CLOUD") or "").strip()
        if self.is_public_cloud:
            return f"public cloud: PUBLIC_CLOUD=YES, HYPERVISOR={self.hypervisor}"
        if self.last_mon_time == 0:
            return "local until first monitored"
        if flag.upper() != "YES":
            shown = f"PUBLIC_CLOUD={flag}" if flag else "no PUBLIC_CLOUD=YES"
            return f"local: its probes reported {shown}"
        return "local: its probes reported PUBLIC_CLOUD=YES but no HYPERVISOR"


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    """A registered VM template (``VMTEMPLATE``)."""

    id: int
    name: str
    uid: int
    gid: int
    regtime: int
    template: Template
    perms: int = 0o600


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user; the password is only ever held hashed."""

    id: int
    name: str
    gid: int
    password_hash: str
    auth_driver: str = "core"
    enabled: bool = True
    template: Template = field(default_factory=Template)
    #: Every group the user is in, the primary one included, ascending.
    groups: tuple[int, ...] = ()
    #: The group a group-scoped login token confines this session to, -1 for none:
    #: the session's ``gid`` and ``groups`` are then that group alone (set when a
    #: session is authenticated, never stored; see :func:`scoped`).
    egid: int = -1


def scoped(user: UserRecord, egid: int) -> UserRecord:
    """``user`` as a session on a token of group ``egid`` sees itself (oned's
    effective group): that group is its primary group and its only one."""
    if egid < 0:
        return user
    return replace(user, gid=egid, groups=(egid,), egid=egid)


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """A group, with its members and administrators (user ids, ascending)."""

    id: int
    name: str
    template: Template = field(default_factory=Template)
    users: tuple[int, ...] = ()
    admins: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterRecord:
    """A cluster (a cloud site, or a set of local hosts) with its hosts' ids."""

    id: int
    name: str
    template: Template = field(default_factory=Template)
    hosts: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class LoginToken:
    """A ``one.user.login`` token as stored: its digest, shown prefix and expiry (-1 never)."""

    digest: str
    user_id: int
    prefix: str
    expires: int
    egid: int


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A driver action recorded before it runs, so a restart can reconcile it.

    ``status`` is ``started`` until the result is stored (``done``/``failed``).
    """

    id: int
    vm_id: int
    host_id: int
    seq: int
    action: str
    token: str
    status: str
    created: float
    finished: float = 0.0
    result: str = ""
