"""Typed settings with every default in one place.

``oned.conf`` (parsed by :mod:`cloudburst.config.oned`) fills a :class:`Settings`;
anything the file leaves out keeps the default written here. The environment
overrides a few values so tests can run several daemons side by side:
``CLOUDBURST_HOME`` (the layout root), ``CLOUDBURST_PORT`` (the API port) and
``CLOUDBURST_DB_URL`` (the store).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

DEFAULT_HOME = "~/.cloudburst"
DEFAULT_LISTEN_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 2633


@dataclass(frozen=True, slots=True)
class DriverSection:
    """One ``IM_MAD`` / ``VM_MAD`` / ``TM_MAD`` section of ``oned.conf``.

    Attributes:
        kind: ``IM_MAD``, ``VM_MAD`` or ``TM_MAD``.
        name: ``NAME``, what hosts reference.
        executable: ``EXECUTABLE``, which selects the implementation.
        arguments: ``ARGUMENTS`` as written.
        default: ``DEFAULT`` (a defaults file, relative to ``etc/``), if any.
        type: ``TYPE`` for VM drivers (``xml``, ``kvm``, ...).
        line: where the section starts, for error messages.
    """

    kind: str
    name: str
    executable: str
    arguments: str = ""
    default: str | None = None
    type: str = "xml"
    line: int = 0


@dataclass(frozen=True, slots=True)
class RecallSettings:
    """Bringing ``RECALL = "YES"`` cloud VMs home (``RECALL = [ ... ]`` in oned.conf)."""

    #: ``PER_MINUTE``: recalls started in any minute at most (0: never recall).
    per_minute: int = 2
    #: ``MIN_CLOUD_TIME``: seconds a VM stays in the cloud before it may be recalled,
    #: so capacity coming and going does not move VMs back and forth.
    min_cloud_time: float = 600.0
    #: ``WINDOW = "HH:MM-HH:MM"`` (UTC; may wrap midnight): recalls start only then.
    #: ``None``: any time. Minutes of the day, start and end.
    window: tuple[int, int] | None = None
    #: Seconds between looks for VMs to recall (a look lists the cloud VMs).
    check_interval: float = 5.0

    def in_window(self, moment: float) -> bool:
        """Whether recalls may start at UNIX time ``moment``."""
        if self.window is None:
            return True
        minute = int(moment // 60) % (24 * 60)
        start, end = self.window
        return start <= minute < end if start <= end else minute >= start or minute < end


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """Placement settings (OpenNebula's ``sched.conf`` names)."""

    #: Seconds between periodic placement passes (events trigger passes sooner).
    interval: float = 5.0
    #: Pending VMs considered per pass (0 = all).
    max_vm: int = 5000
    #: VMs dispatched per pass (0 = no limit).
    max_dispatch: int = 0
    #: VMs placed on one host per pass (0 = no limit).
    max_host: int = 0
    #: Default ranking when a VM has no RANK: local hosts first, then cloud
    #: hosts; among equals, the least loaded (striping).
    default_rank: str = "- RUNNING_VMS"
    #: The burst policy's order: local hosts, then cloud sites by the hourly price of
    #: the instance a VM would get there, then RANK. False (or a VM's own RANK)
    #: puts RANK before price.
    cost_order: bool = True
    recall: RecallSettings = RecallSettings()


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """What one client may hold of the API server (``oned.conf`` names in the comments)."""

    #: ``REQUEST_HEADER_TIMEOUT``: seconds a connection may stay without a complete
    #: request head, from its opening or from the end of its previous reply.
    header_timeout: float = 15.0
    #: ``REQUEST_BODY_TIMEOUT``: seconds allowed to receive a request body.
    body_timeout: float = 30.0
    #: ``MAX_CONNECTIONS``: open API connections at most (also bounded by the file limit
    #: minus ``file_reserve``).
    max_connections: int = 1024
    #: ``MAX_CONNECTIONS_PER_CLIENT``: open API connections from one client address.
    max_connections_per_client: int = 256
    #: ``FILE_RESERVE``: file descriptors kept out of the API's reach for the store,
    #: the logs and the drivers.
    file_reserve: int = 128


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """The leader lease of daemons sharing a PostgreSQL store (``LEADER_LEASE``).

    A leader that has not renewed for ``duration`` seconds loses the lease; a
    follower tries to take it every ``retry`` seconds, so a dead leader is
    replaced within about ``duration + retry`` seconds.
    """

    #: Seconds a renewal keeps the lease.
    duration: float = 3.0
    #: Seconds between the leader's renewals (well under ``duration``).
    renew: float = 0.75
    #: Seconds between a follower's attempts to take an expired lease.
    retry: float = 0.5
    #: Seconds a leader's process may run no thread at all (stopped, wedged) before
    #: its renewals stop, so that a follower takes over ``duration`` later; PostgreSQL
    #: also ends a write transaction left idle this long, whose fence would hold the
    #: lease row's lock. Far above a garbage collection's pause (about 1 s at 20,000
    #: VMs on a loaded machine, growing with the heap), low enough that a frozen
    #: leader is replaced.
    stall: float = 15.0


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """Password guessing limits (``oned.conf`` names in the comments)."""

    #: ``LOGIN_MAX_FAILURES``: failed logins from one client address, or to one user
    #: name, within ``lockout`` seconds that lock it.
    max_failures: int = 5
    #: ``LOGIN_LOCKOUT``: seconds of the first lockout (doubled at each repeat, 1 h at most).
    lockout: float = 60.0
    #: ``FAILED_LOGIN_DELAY``: seconds before a refused login is answered.
    failure_delay: float = 1.0
    #: ``LOGIN_QUEUE``: password checks waiting at most; more are refused at once.
    queue: int = 32


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the daemon needs to start."""

    home: Path
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    port: int = DEFAULT_PORT
    #: SQLAlchemy URL; empty means SQLite at ``home/one.db``.
    db_url: str = ""
    #: Seconds between two monitorings of a host.
    monitoring_interval: float = 60.0
    #: Seconds between two polls of a host's VMs.
    vm_polling_interval: float = 30.0
    #: Seconds a driver action may run when its ``-w`` is not set.
    default_action_timeout: float = 300.0
    #: Seconds an operator-visible grace before orphaned cloud resources go.
    orphan_grace_period: float = 600.0
    #: Seconds before work that hit a provider outage is tried again: a deploy
    #: that created nothing (back to PENDING, host skipped meanwhile) or a
    #: terminate whose instance is not confirmed gone. Doubles each time, up to
    #: 32 times this.
    driver_retry_delay: float = 5.0
    #: Seconds a site that refused a deploy for capacity or quota is skipped
    #: for VMs of the refused instance type (``CAPACITY_COOLOFF``).
    capacity_cooloff: float = 120.0
    #: Largest XML-RPC request body accepted, in bytes.
    max_request_bytes: int = 16 * 1024 * 1024
    log_level: str = "INFO"
    #: ``STORE_TIMEOUT``: seconds a write waits for a lock another process holds on the
    #: store before it is refused ("Store busy"); a user action is accepted or refused
    #: within about twice this.
    store_timeout: float = 5.0
    api: ApiLimits = field(default_factory=ApiLimits)
    logins: LoginLimits = field(default_factory=LoginLimits)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    lease: LeaseSettings = field(default_factory=LeaseSettings)
    drivers: tuple[DriverSection, ...] = ()
    #: ``oned --new-store``: start a new, empty store although this home used another
    #: one (it keeps the installation id; see :mod:`cloudburst.store.identity`).
    new_store: bool = False

    @property
    def etc_dir(self) -> Path:
        return self.home / "etc"

    @property
    def remotes_dir(self) -> Path:
        return self.home / "remotes"

    @property
    def var_dir(self) -> Path:
        return self.home / "var"

    @property
    def vms_dir(self) -> Path:
        return self.home / "vms"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def oned_conf(self) -> Path:
        return self.etc_dir / "oned.conf"

    @property
    def auth_file(self) -> Path:
        return self.home / "one_auth"

    @property
    def database_url(self) -> str:
        # Quoted: SQLAlchemy URL-decodes the path, and a home may hold '%', '?' or '#'.
        return self.db_url or f"sqlite:///{quote(str(self.home / 'one.db'), safe='/')}"

    def driver(self, kind: str, name: str) -> DriverSection | None:
        """The section of ``kind`` named ``name`` (case-sensitive, as oned)."""
        for section in self.drivers:
            if section.kind == kind and section.name == name:
                return section
        return None


def home_from_environment() -> Path:
    """``CLOUDBURST_HOME`` or ``~/.cloudburst``, expanded and absolute."""
    return Path(os.environ.get("CLOUDBURST_HOME") or DEFAULT_HOME).expanduser().resolve()
