"""The driver contract: information drivers and virtual machine drivers.

Drivers are the only code that talks to hypervisors and clouds. The core calls
them through the dispatcher (``cloudburst.daemon.dispatcher``), which applies
the per-driver concurrency (``-t``), retries (``-r``) and time limit (``-w``)
from ``oned.conf``; a driver itself just does one action and either returns or
raises a :class:`~cloudburst.errors.DriverError` subclass.

All methods are coroutines. A driver built on a blocking SDK (boto3, libvirt)
runs its calls in a bounded thread pool it owns; a driver that runs processes
uses asyncio subprocesses and must kill them when its coroutine is cancelled
(that is how the dispatcher enforces ``-w``).

Contract, for every :class:`VmDriver`:

* ``deploy`` creates the VM and returns its deploy id (an opaque string the core
  stores and never interprets). It receives an idempotency ``token`` that stays
  the same when the same deploy is retried or replayed after a crash; a driver
  that can (EC2 ``ClientToken``, tags) must use it so that a retry finds the
  instance instead of creating a second one.
* ``find`` looks an earlier deploy up by its token; the daemon calls it on
  restart for deploys that never reported back. ``None`` means "not found or
  cannot tell", and the daemon then replays ``deploy`` with the same token.
  ``find`` only looks (cleanup uses it too); a deploy it found is finished by
  ``resume_deploy``, which applies whatever readiness rule ``deploy`` has.
* ``cancel`` (hard stop) succeeds when the instance is already gone;
  ``shutdown`` is the graceful form.
* ``poll`` observes many VMs in one call (bulk) and maps the provider's states
  to :class:`PollState`; VMs it cannot see are reported ``GONE``.
* Optional actions (:data:`OPTIONAL_ACTIONS`: ``poweroff``, ``save``,
  ``restore``, ``migrate``, snapshots, hot-plug, ``resize``) are methods that
  raise :class:`~cloudburst.errors.UnsupportedActionError` unless the driver
  overrides them, and a driver lists exactly the ones it overrides in
  ``capabilities``. The user actions map onto them: suspend/resume and stop
  use ``save``/``restore``, poweroff and undeploy use ``poweroff``/``poweron``,
  migrate uses ``migrate`` (or ``migrate_live``).

Messages in raised errors are single lines and never include credentials.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Protocol

from cloudburst.drivers.orphans import OrphanSightings
from cloudburst.errors import TransientDriverError, UnsupportedActionError
from cloudburst.template import Template

#: Actions every VM driver implements.
CORE_ACTIONS: frozenset[str] = frozenset(
    {"deploy", "shutdown", "cancel", "reboot", "reset", "poll"}
)

#: Optional actions, each named after the :class:`VmDriver` method(s) that do it
#: (OpenNebula's VMM vocabulary, plus ``poweroff`` and ``resize`` which its
#: drivers express through other scripts or hot-plug). A driver declares the
#: ones it implements in :attr:`VmDriver.capabilities`; the core refuses the
#: user actions that need a missing one before any state changes.
OPTIONAL_ACTIONS: Mapping[str, tuple[str, ...]] = {
    "poweroff": ("poweroff", "poweron"),
    "save": ("save",),
    "restore": ("restore",),
    "migrate": ("migrate",),
    "migrate_live": ("migrate",),
    "resize": ("resize",),
    "snapshot_create": ("snapshot_create",),
    "snapshot_revert": ("snapshot_revert",),
    "snapshot_delete": ("snapshot_delete",),
    "attach_disk": ("attach_disk",),
    "detach_disk": ("detach_disk",),
    "attach_nic": ("attach_nic",),
    "detach_nic": ("detach_nic",),
}

#: Every action name a VM driver may declare.
ALL_ACTIONS: frozenset[str] = CORE_ACTIONS | frozenset(OPTIONAL_ACTIONS)


@dataclass(frozen=True, slots=True)
class DriverOptions:
    """Dispatcher settings parsed from a driver's ``ARGUMENTS``.

    Attributes:
        threads: ``-t``: how many actions of this driver run at once.
        retries: ``-r``: extra attempts after a retryable failure.
        timeout: ``-w``: seconds before an action is stopped (``None``: no limit).
    """

    threads: int = 15
    retries: int = 0
    timeout: float | None = None


class Backlog(Protocol):
    """The driver work the core has started but not yet handed to the driver.

    A driver that batches (EC2: many deploys in one ``RunInstances``) asks it
    whether more of an action is on its way for a host, and keeps its batch
    open for them instead of guessing with a timer.
    """

    def waiting(self, host_id: int, actions: Collection[str]) -> int:
        """How many VMs of ``host_id`` have work labelled one of ``actions``
        (:class:`~cloudburst.model.lifecycle.Work` labels: ``deploy``,
        ``shutdown``, ``cancel``, ``cleanup``...) started and not yet at the driver."""


class CloudApiEvent(StrEnum):
    """What a cloud driver reports about one call to its provider's API."""

    #: An attempt was sent (retries count again).
    CALL = "call"
    #: The provider throttled it (rate limit).
    THROTTLE = "throttle"
    #: It is tried again after a retryable failure.
    RETRY = "retry"
    #: It failed for good (the error reaches the driver's caller).
    ERROR = "error"


class CloudApiObserver(Protocol):
    """Told about every call a driver makes to a cloud provider's API, by site and
    action (the daemon counts them for ``/metrics``). Must be quick and never raise."""

    def cloud_api(self, site: str, action: str, event: CloudApiEvent) -> None: ...

    def cloud_api_seconds(self, site: str, action: str, seconds: float) -> None:
        """One attempt of ``action`` took ``seconds`` (answered or failed)."""


class _Unobserved:
    def cloud_api(self, site: str, action: str, event: CloudApiEvent) -> None:
        pass

    def cloud_api_seconds(self, site: str, action: str, seconds: float) -> None:
        pass


#: The observer of a context built without one (tests, tools): counts nothing.
UNOBSERVED: CloudApiObserver = _Unobserved()


@dataclass(frozen=True, slots=True)
class DriverContext:
    """What a driver is built from: its ``oned.conf`` section and the layout.

    Attributes:
        name: the section's ``NAME`` (what hosts reference, e.g. ``vmm_ec2``).
        executable: the section's ``EXECUTABLE`` (selects the implementation).
        arguments: ``ARGUMENTS`` split into words, with ``-t/-r/-w`` removed.
        options: the dispatcher settings taken from ``-t/-r/-w``.
        etc_dir: ``CLOUDBURST_HOME/etc``; relative paths in arguments resolve here.
        remotes_dir: ``CLOUDBURST_HOME/remotes`` (``im/<name>.d``, ``vmm/<name>/``).
        var_dir: ``CLOUDBURST_HOME/var`` for driver state files.
        default: the section's ``DEFAULT`` file, resolved under ``etc_dir``.
        type: the section's ``TYPE`` (``xml``, ``kvm``, ...).
        install_id: this installation's id; drivers tag cloud resources with it.
        backlog: the work on its way to this driver (``None``: a driver built
            without a daemon, e.g. in a test or a benchmark).
        cloud_api: where a cloud driver reports its API calls, throttles and retries.
    """

    name: str
    executable: str
    arguments: tuple[str, ...]
    options: DriverOptions
    etc_dir: Path
    remotes_dir: Path
    var_dir: Path
    default: Path | None = None
    type: str = "xml"
    install_id: str = ""
    backlog: Backlog | None = field(default=None, compare=False, repr=False)
    cloud_api: CloudApiObserver = field(default=UNOBSERVED, compare=False, repr=False)

    def resolve(self, path: str) -> Path:
        """Resolve a path from the arguments: absolute, or relative to ``etc_dir``."""
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self.etc_dir / candidate

    @property
    def logger(self) -> logging.Logger:
        return logging.getLogger(f"cloudburst.driver.{self.name}")


@dataclass(frozen=True, slots=True)
class HostRef:
    """The host a driver acts on."""

    id: int
    name: str
    #: The host's template attributes (operator-set and monitored), for drivers
    #: that read per-host settings such as ``LIBVIRT_URI``.
    attributes: Mapping[str, str] = field(default_factory=dict)


class DeployNotes(Protocol):
    """Durable notes a driver keeps on deploys in flight, stored in the action journal.

    A driver that launches several VMs in one provider call (EC2 batches)
    writes, *before* the call, which call each deploy token went out in; after
    a crash or a lost answer it reads the note back to find the instance. A
    note lives on the token's started ``deploy`` journal entry and is replaced
    by the deploy's result when that entry finishes.
    """

    async def write(self, notes: Mapping[str, str]) -> None:
        """Store ``token -> note`` for deploys still in flight (one transaction).

        Returns once the notes are durable.
        """

    async def read(self, tokens: Sequence[str]) -> dict[str, str]:
        """The notes of ``tokens`` whose deploy is still in flight (missing: none)."""


@dataclass(frozen=True, slots=True)
class DeploySpec:
    """Everything ``deploy`` needs.

    Attributes:
        vm_id: the VM's id.
        host: the target host.
        deployment_file: path of the deployment file the daemon wrote (what
            script drivers get, as in OpenNebula).
        template: the deployment, parsed: the VM's whole template as the
            deployment file holds it (``CPU``, ``MEMORY``, ``VMID``, ``NAME``,
            ``CONTEXT``, its cloud sections, ...). In-process drivers read it
            and never parse XML again.
        token: idempotency token; the same for every retry and replay.
        memory_mb: the VM's ``MEMORY``.
        cpu: the VM's ``CPU`` (cores, may be fractional).
        section: on a cloud site, the VM's cloud section (``PUBLIC_CLOUD`` or
            ``EC2`` vector, as written) that applies there, chosen by the core
            (:func:`cloudburst.model.cloud_sections.section_for`); drivers use it
            and never choose again. ``None`` on local hosts.
        notes: the journal's notes on deploys in flight (``None``: the driver
            runs without a store, e.g. in a benchmark).
    """

    vm_id: int
    host: HostRef
    deployment_file: Path
    template: Template
    token: str
    memory_mb: int = 0
    cpu: float = 0.0
    section: Mapping[str, str] | None = None
    notes: DeployNotes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class VmRef:
    """A deployed VM: its id, its deploy id and its host."""

    vm_id: int
    deploy_id: str
    host: HostRef


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A disk or NIC to hot-attach or detach.

    Attributes:
        id: the ``DISK_ID`` or ``NIC_ID`` the core gave it.
        target: the guest device name (``vdb``, ``eth1``...) when one is set.
        attributes: the ``DISK``/``NIC`` section as written (``SOURCE``, ``SIZE``,
            ``BRIDGE``, ``MAC``...), upper-case names.
    """

    id: int
    target: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResizeSpec:
    """New capacity for ``resize``: ``CPU`` (share), ``VCPU`` and ``MEMORY`` (MB).

    ``template`` is the VM's whole template with the new values and
    ``section`` its cloud section on the VM's site (as in :class:`DeploySpec`),
    for drivers that derive a size from them (EC2 picks the instance type by
    the scheduler's rule); ``None`` when the caller has none.
    """

    cpu: float
    vcpu: int
    memory_mb: int
    template: Template | None = field(default=None, compare=False, repr=False)
    section: Mapping[str, str] | None = None


class PollState(Enum):
    """What a poll saw, in OpenNebula's one-letter vocabulary."""

    ACTIVE = "a"
    PAUSED = "p"
    GONE = "d"
    ERROR = "e"
    UNKNOWN = "-"
    #: Gone because the provider took it back (an EC2 spot interruption), not
    #: by anyone's choice: the VM is deployed again. ``info["REASON"]`` says why.
    RECLAIMED = "r"


@dataclass(frozen=True, slots=True)
class PollResult:
    """One VM's poll: its state and extra monitoring values (``IP``, ...).

    ``price``: what the provider bills for the VM's instance per hour now, when
    the driver knows it better than the site's price table did when the stay
    opened (an EC2 spot instance: the zone's spot price); the open stay's
    recorded price follows it (``history.price``, which budgets count).
    """

    state: PollState
    info: Mapping[str, str] = field(default_factory=dict)
    price: float | None = None


@dataclass(frozen=True, slots=True)
class ReportedVm:
    """A VM reported by host monitoring (``VM=[ID=..., DEPLOY_ID=..., POLL=...]``).

    ``vm_id`` is ``-1`` for a "wild" VM the host runs but cloudburst did not create.
    """

    vm_id: int
    deploy_id: str
    poll: PollResult | None = None


@dataclass(frozen=True, slots=True)
class HostInfo:
    """The result of monitoring a host.

    Attributes:
        attributes: single ``KEY=VALUE`` values, names upper-case
            (``TOTALCPU``, ``TOTALMEMORY``, ``HYPERVISOR``, ``PUBLIC_CLOUD``, ...).
        vms: VMs the host reported, when its driver reports them (``VM_POLL``).
        capacity: per-instance-type limits of a cloud site, keyed by the type's
            exact name (``{"u-6tb1.metal": 4}``; see :mod:`cloudburst.model.capacity`
            for the ``CAPACITY`` forms probes print); the scheduler never
            places more VMs of a type on the site than its limit. A site that
            reports limits should also report ``DEFAULT_INSTANCE_TYPE``: the
            type of VMs whose section names none.
    """

    attributes: Mapping[str, str]
    vms: Sequence[ReportedVm] = ()
    capacity: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What an orphan sweep found on a site.

    Attributes:
        orphans: instances carrying this installation's tags that no live VM
            owns, with the seconds since each was first seen orphaned.
        terminated: those terminated now because their grace period ran out.
    """

    orphans: Mapping[str, float] = field(default_factory=dict)
    terminated: Sequence[str] = ()


class InformationDriver(abc.ABC):
    """Monitors hosts: capacity, usage and identity (an ``IM_MAD``)."""

    def __init__(self, context: DriverContext) -> None:
        self.context = context

    @property
    def name(self) -> str:
        return self.context.name

    @abc.abstractmethod
    async def monitor(self, host: HostRef) -> HostInfo:
        """Probe ``host`` and return what it reports.

        Raises:
            DriverError: the probe failed; the message becomes the host's error.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook, default no-op
        """Release resources (connections, thread pools)."""


class VmDriver(abc.ABC):
    """Runs VM actions on hosts of one kind (a ``VM_MAD``)."""

    #: Optional actions (keys of :data:`OPTIONAL_ACTIONS`) this driver implements.
    capabilities: frozenset[str] = frozenset()
    #: Actions the driver queues and batches itself (EC2: many deploys in one
    #: ``RunInstances``). The dispatcher does not hold one of the ``-t`` slots
    #: while they wait for their batch; the driver bounds its own provider calls.
    self_paced: frozenset[str] = frozenset()
    #: Failures the dispatcher retries (up to ``-r`` times).
    retryable: tuple[type[Exception], ...] = (TransientDriverError,)
    #: Seconds after one of its VMs enters RUNNING at which a host of this driver
    #: is polled again (the daemon's fresh polls): what the provider learns a moment
    #: after the start (an instance's public IP, an address the first poll
    #: associated) shows within seconds, not at the next regular poll. A driver
    #: whose first poll already reports all it ever will needs only ``(0.0,)``.
    fresh_poll_delays: tuple[float, ...] = (0.0, 2.0, 5.0, 10.0)
    #: Whether the monitor may ask about the VMs of many hosts in one ``poll`` call
    #: (the contract allows it) instead of one call per host: for a driver whose
    #: calls cost little per host and that sweeps for no orphans. A failed call is
    #: made again host by host, so each host's failure is told apart.
    polls_across_hosts: bool = False

    def __init__(self, context: DriverContext) -> None:
        self.context = context

    @property
    def name(self) -> str:
        return self.context.name

    def supports(self, action: str) -> bool:
        """Whether the driver implements ``action``."""
        return action in CORE_ACTIONS or action in self.capabilities

    @abc.abstractmethod
    async def deploy(self, spec: DeploySpec) -> str:
        """Create and start the VM; return its deploy id (see module contract)."""

    @abc.abstractmethod
    async def shutdown(self, vm: VmRef) -> None:
        """Stop the VM gracefully and remove it from the provider."""

    @abc.abstractmethod
    async def cancel(self, vm: VmRef) -> None:
        """Stop the VM at once; succeed if it is already gone."""

    @abc.abstractmethod
    async def reboot(self, vm: VmRef) -> None:
        """Reboot the guest gracefully."""

    @abc.abstractmethod
    async def reset(self, vm: VmRef) -> None:
        """Power-cycle the guest."""

    @abc.abstractmethod
    async def poll(self, vms: Sequence[VmRef]) -> dict[int, PollResult]:
        """Observe ``vms`` (all on hosts of this driver); key the result by VM id."""

    async def find(self, spec: DeploySpec) -> str | None:
        """Find the instance an earlier ``deploy`` with ``spec.token`` created.

        Returns the deploy id, or ``None`` when none exists or the driver cannot tell.
        Never waits for the instance: the cleanup of a VM uses it too.
        """
        return None

    async def resume_deploy(self, spec: DeploySpec, deploy_id: str) -> str:
        """Finish the deploy ``find`` found after a restart, as ``deploy`` would have
        finished it, and return its deploy id.

        A ``deploy`` that returns only once its instance is ready (a partner VM
        running) makes a found instance meet the same rule here, with the same
        failure handling, so a found deploy is not counted done any sooner than
        a fresh one. By default the instance is done as found.

        Raises:
            DriverError: as ``deploy`` would (``CapacityError`` sends the VM back
                to the scheduler).
        """
        return deploy_id

    def check_template(self, template: Template) -> None:  # noqa: B027 - optional hook
        """Refuse, at creation, a VM this driver could never deploy.

        Called for every new VM; a driver only checks the sections it owns
        (e.g. the EC2 driver requires ``AMI`` and ``KEYPAIR`` in ``EC2``
        sections unless its defaults supply them).

        Raises:
            ValidationError: naming the attribute that is missing or wrong.
        """

    async def site_report(self, host: HostRef, info: HostInfo) -> HostInfo:
        """Complete ``host``'s monitoring report with what this driver knows of its site.

        Called after the host's information driver answered, before the report
        is stored. The EC2 driver corrects the sizes of the offered instance
        types (``INSTANCE_TYPES``, :mod:`cloudburst.model.offers`) from the
        site's catalogue here. A site that cannot be asked leaves the report
        as it is (this is no reason to put the host in error). Default:
        ``info`` unchanged.
        """
        return info

    async def sweep(self, host: HostRef, live_vm_ids: frozenset[int],
                    grace_period: float, sightings: OrphanSightings) -> SweepReport | None:
        """Find (and after ``grace_period`` seconds remove) orphaned instances.

        ``live_vm_ids`` are the VMs that may own an instance on ``host``
        (every VM of the host that is not DONE). ``sightings`` are the host's
        orphans as earlier sweeps saw them (the caller keeps them, in the
        store): the driver observes what it finds in them, terminates the due
        ones and forgets those (:mod:`cloudburst.drivers.orphans`). Drivers
        that cannot tell which instances are theirs return ``None``.
        """
        return None

    async def reconfigure(self, vm: VmRef, spec: DeploySpec) -> bool:
        """Give the running guest its changed configuration (``one.vm.updateconf``
        with a new ``CONTEXT``); ``spec`` is its deployment as the VM stands now.

        Returns ``True`` when the guest has it now (kvm swaps the context CD-ROM's
        media), ``False`` when this driver cannot reach a running guest's
        configuration and it applies at the next deploy (the default: the core
        has stored it and says so in the VM's log). Safe to repeat.
        """
        return False

    # -- optional actions ------------------------------------------------------------
    # Each raises UnsupportedActionError unless overridden; a driver lists the
    # ones it overrides in ``capabilities`` (tests/unit/test_driver_capabilities
    # checks that the two agree). The core checks ``supports`` before it
    # changes any state, so these defaults are a last line of defence.

    def unsupported(self, action: str) -> UnsupportedActionError:
        """The error for an action this driver does not implement (one line, names both)."""
        return UnsupportedActionError(
            f'Action "{action}" is not supported by driver {self.name}')

    async def poweroff(self, vm: VmRef, *, hard: bool, leaving: bool) -> None:
        """Stop the guest but keep the instance (disks, deploy id) for ``poweron``.

        ``hard`` pulls the plug instead of asking the guest. Succeeds when the
        guest is already off.

        ``leaving``: the VM leaves its host (``undeploy``) and ``poweron`` may
        run on another host of the driver; the driver then releases whatever the
        host keeps for the VM, and its system snapshots are dropped (the core
        drops their ``SNAPSHOT`` entries, as OpenNebula does on undeploy). The
        core also calls it, ``hard`` and ``leaving``, when a powered-off VM is
        undeployed. Otherwise (``poweroff``) the VM resumes where it is.
        """
        raise self.unsupported("poweroff")

    async def poweron(self, vm: VmRef, spec: DeploySpec) -> str:
        """Start again an instance ``poweroff`` left; returns its (maybe new) deploy id.

        ``spec`` is the deployment of the current stay, for drivers that boot
        by deploying again (OpenNebula's script drivers do).
        """
        raise self.unsupported("poweroff")

    async def save(self, vm: VmRef, checkpoint: Path, *, leaving: bool) -> None:
        """Suspend the guest to ``checkpoint`` (or the provider's equivalent); it stops running.

        ``leaving``: the VM leaves its host (``stop``) and ``restore`` may run on
        another host of the driver; otherwise (``suspend``) it resumes where it
        is, and a driver may keep the state on the host (kvm's managed save).
        """
        raise self.unsupported("save")

    async def restore(self, vm: VmRef, checkpoint: Path) -> str:
        """Resume a guest ``save`` suspended; returns its deploy id (may differ from before)."""
        raise self.unsupported("restore")

    async def migrate(self, vm: VmRef, destination: HostRef, *, live: bool) -> str:
        """Move the guest from ``vm.host`` to ``destination``; returns the new deploy id.

        ``live`` keeps the guest running through the move (capability
        ``migrate_live``); otherwise the guest is saved, moved and restored
        (capability ``migrate``). On failure the guest is left on ``vm.host``.
        """
        raise self.unsupported("migrate_live" if live else "migrate")

    async def resize(self, vm: VmRef, spec: ResizeSpec) -> None:
        """Give the guest new capacity (called while it is powered off or running)."""
        raise self.unsupported("resize")

    async def snapshot_create(self, vm: VmRef, snapshot_id: int, name: str) -> str:
        """Take a system snapshot; returns the provider's name for it."""
        raise self.unsupported("snapshot_create")

    async def snapshot_revert(self, vm: VmRef, provider_name: str) -> None:
        """Return the guest to a snapshot ``snapshot_create`` took."""
        raise self.unsupported("snapshot_revert")

    async def snapshot_delete(self, vm: VmRef, provider_name: str) -> None:
        """Delete a snapshot; succeeds when it is already gone."""
        raise self.unsupported("snapshot_delete")

    async def attach_disk(self, vm: VmRef, disk: DeviceSpec) -> None:
        """Hot-plug ``disk`` into the running guest."""
        raise self.unsupported("attach_disk")

    async def detach_disk(self, vm: VmRef, disk: DeviceSpec) -> None:
        """Unplug ``disk``; succeeds when it is not attached."""
        raise self.unsupported("detach_disk")

    async def attach_nic(self, vm: VmRef, nic: DeviceSpec) -> None:
        """Hot-plug ``nic`` into the running guest."""
        raise self.unsupported("attach_nic")

    async def detach_nic(self, vm: VmRef, nic: DeviceSpec) -> None:
        """Unplug ``nic``; succeeds when it is not attached."""
        raise self.unsupported("detach_nic")

    def took_over(self, quiet: float) -> None:  # noqa: B027 - optional hook, default no-op
        """This daemon starts leading after another one that may have called the
        provider until ``quiet`` seconds ago (a failover or a handover).

        A driver with client-side rate limits assumes the provider's buckets were
        empty then and refilled since: it must not burst past the provider's
        limits right after a failover.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook, default no-op
        """Release resources (connections, thread pools)."""


def implemented_actions(driver_class: type[VmDriver]) -> frozenset[str]:
    """The optional actions whose methods ``driver_class`` overrides (all of them).

    ``capabilities`` must equal this set (for drivers whose capabilities
    depend on files, this set is the most they can declare); the contract
    test holds every built-in driver to it.
    """
    return frozenset(
        action for action, methods in OPTIONAL_ACTIONS.items()
        if all(getattr(driver_class, method) is not getattr(VmDriver, method)
               for method in methods)
    )
