"""The VM life cycle as data: one table of every legal move and the work it starts.

A VM's position is a :data:`StateKey` ``(STATE, LCM_STATE)``; ``LCM_STATE`` is
``LCM_INIT`` whenever ``STATE`` is not ``ACTIVE``. An :class:`Event` is a user
action (``TERMINATE``, ``POWEROFF``, ``RECOVER_RETRY``...), the result of the
work a state started (``SUCCESS``, ``FAILURE``, plus the deploy's
``NO_CAPACITY``/``RETRY``) or what monitoring observed (``MONITOR_GONE``...).

:data:`TRANSITIONS` maps ``(position, event)`` to a :class:`Move`: the next
position and the :class:`Work` entering it starts (a driver call such as
``deploy`` or ``save``, or a store-only step such as the epilog). Anything
absent is illegal and :func:`apply` refuses it naming the state. The daemon's
one apply-and-write helper (``daemon.lifecycle``) reads the work from here; the
API guards (:func:`allowed_actions`), the capability check (:attr:`Work.capability`),
recovery after a restart (:data:`IN_FLIGHT`) and the diagram in
``docs/architecture.md`` (:func:`mermaid`) are derived from the same table.

Numbers and history action codes are OpenNebula 6.x's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from cloudburst.errors import StateRefusedError
from cloudburst.model.states import LcmState, VmState, vm_state_label

StateKey = tuple[VmState, LcmState]


def key(state: VmState, lcm_state: LcmState = LcmState.LCM_INIT) -> StateKey:
    """Build a position; non-ACTIVE states always carry ``LCM_INIT``."""
    return (state, lcm_state if state is VmState.ACTIVE else LcmState.LCM_INIT)


def active(lcm_state: LcmState) -> StateKey:
    """Shorthand for ``(ACTIVE, lcm_state)``."""
    return (VmState.ACTIVE, lcm_state)


class Event(Enum):
    """Everything that can move a VM."""

    # -- user actions (one.vm.deploy / action / migrate / recover / ...) ------------------
    DEPLOY = "deploy"
    #: The deploy of a VM that stop (or undeploy) parked: its instance is restored
    #: (or powered on) instead of created.
    DEPLOY_RESTORE = "deploy-restore"
    DEPLOY_POWERON = "deploy-poweron"
    HOLD = "hold"
    RELEASE = "release"
    TERMINATE = "terminate"
    TERMINATE_HARD = "terminate-hard"
    REBOOT = "reboot"
    REBOOT_HARD = "reboot-hard"
    POWEROFF = "poweroff"
    POWEROFF_HARD = "poweroff-hard"
    SUSPEND = "suspend"
    STOP = "stop"
    UNDEPLOY = "undeploy"
    UNDEPLOY_HARD = "undeploy-hard"
    RESUME = "resume"
    RESCHED = "resched"
    UNRESCHED = "unresched"
    MIGRATE = "migrate"
    MIGRATE_LIVE = "live-migrate"
    RESIZE = "resize"
    SNAPSHOT_CREATE = "snapshot-create"
    SNAPSHOT_REVERT = "snapshot-revert"
    SNAPSHOT_DELETE = "snapshot-delete"
    DISK_ATTACH = "disk-attach"
    DISK_DETACH = "disk-detach"
    NIC_ATTACH = "nic-attach"
    NIC_DETACH = "nic-detach"
    #: ``one.vm.updateconf`` without a new CONTEXT: the template changes, the VM stays.
    UPDATECONF = "updateconf"
    #: ``one.vm.updateconf`` giving a CONTEXT: a running guest gets it now (reconfigure).
    UPDATECONF_CONTEXT = "updateconf-context"
    RECOVER_SUCCESS = "recover-success"
    RECOVER_FAILURE = "recover-failure"
    RECOVER_RETRY = "recover-retry"
    RECOVER_DELETE = "recover-delete"
    RECOVER_RECREATE = "recover-recreate"
    RECOVER_DELETE_DB = "recover-delete-db"
    # -- the result of the work the current state started ---------------------------------
    SUCCESS = "success"
    FAILURE = "failure"
    #: deploy only: no room at the site; back to the scheduler.
    NO_CAPACITY = "no-capacity"
    #: deploy only: an outage before anything was created; back to the scheduler.
    RETRY = "retry"
    # -- what monitoring observed -------------------------------------------------------------
    MONITOR_RUNNING = "monitor-running"
    MONITOR_GONE = "monitor-gone"
    MONITOR_ERROR = "monitor-error"
    MONITOR_PAUSED = "monitor-paused"
    #: The provider took the instance back (an EC2 spot interruption).
    MONITOR_RECLAIMED = "monitor-reclaimed"


class Work(Enum):
    """What entering a position starts. Driver work names the driver capability it needs."""

    #: Image transfers; cloud and dummy hosts have none, so it succeeds at once.
    PROLOG = ("prolog", None, True)
    #: Close the stay on the host (history times); store only.
    EPILOG = ("epilog", None, True)
    DEPLOY = ("deploy", None, False)
    SHUTDOWN = ("shutdown", None, False)
    CANCEL = ("cancel", None, False)
    #: Remove whatever a failed or interrupted VM may hold at the provider.
    CLEANUP = ("cleanup", None, False)
    REBOOT = ("reboot", None, False)
    RESET = ("reset", None, False)
    POWEROFF = ("poweroff", "poweroff", False)
    POWEROFF_HARD = ("poweroff-hard", "poweroff", False)
    POWERON = ("poweron", "poweroff", False)
    SAVE = ("save", "save", False)
    RESTORE = ("restore", "restore", False)
    MIGRATE = ("migrate", "migrate", False)
    MIGRATE_LIVE = ("migrate-live", "migrate_live", False)
    RESIZE = ("resize", "resize", False)
    SNAPSHOT_CREATE = ("snapshot-create", "snapshot_create", False)
    SNAPSHOT_REVERT = ("snapshot-revert", "snapshot_revert", False)
    SNAPSHOT_DELETE = ("snapshot-delete", "snapshot_delete", False)
    ATTACH_DISK = ("attach-disk", "attach_disk", False)
    DETACH_DISK = ("detach-disk", "detach_disk", False)
    ATTACH_NIC = ("attach-nic", "attach_nic", False)
    DETACH_NIC = ("detach-nic", "detach_nic", False)
    #: Give the running guest its changed configuration (kvm: a new context CD-ROM).
    #: Every driver answers it (one that cannot reach a running guest says it
    #: applies at the next deploy), so it needs no capability.
    RECONFIGURE = ("reconfigure", None, False)

    def __init__(self, label: str, capability: str | None, instant: bool) -> None:
        self.label = label
        #: The driver capability (``drivers.base.OPTIONAL_ACTIONS``) it needs, if optional.
        self.capability = capability
        #: Done inside the transaction that enters the position (no driver call).
        self.instant = instant


@dataclass(frozen=True, slots=True)
class Move:
    """Where an event leads and the work entering it starts (``None``: nothing)."""

    to: StateKey
    work: Work | None = None


PENDING = key(VmState.PENDING)
HOLD = key(VmState.HOLD)
DONE = key(VmState.DONE)
POWEROFF = key(VmState.POWEROFF)
SUSPENDED = key(VmState.SUSPENDED)
STOPPED = key(VmState.STOPPED)
UNDEPLOYED = key(VmState.UNDEPLOYED)
PROLOG = active(LcmState.PROLOG)
BOOT = active(LcmState.BOOT)
RUNNING = active(LcmState.RUNNING)
UNKNOWN = active(LcmState.UNKNOWN)
SHUTDOWN = active(LcmState.SHUTDOWN)
EPILOG = active(LcmState.EPILOG)
CLEANUP_DELETE = active(LcmState.CLEANUP_DELETE)
CLEANUP_RESUBMIT = active(LcmState.CLEANUP_RESUBMIT)
BOOT_FAILURE = active(LcmState.BOOT_FAILURE)
PROLOG_FAILURE = active(LcmState.PROLOG_FAILURE)
EPILOG_FAILURE = active(LcmState.EPILOG_FAILURE)
SHUTDOWN_POWEROFF = active(LcmState.SHUTDOWN_POWEROFF)
BOOT_POWEROFF = active(LcmState.BOOT_POWEROFF)
BOOT_UNKNOWN = active(LcmState.BOOT_UNKNOWN)
SAVE_SUSPEND = active(LcmState.SAVE_SUSPEND)
BOOT_SUSPENDED = active(LcmState.BOOT_SUSPENDED)
SAVE_STOP = active(LcmState.SAVE_STOP)
EPILOG_STOP = active(LcmState.EPILOG_STOP)
PROLOG_RESUME = active(LcmState.PROLOG_RESUME)
BOOT_STOPPED = active(LcmState.BOOT_STOPPED)
BOOT_STOPPED_FAILURE = active(LcmState.BOOT_STOPPED_FAILURE)
SHUTDOWN_UNDEPLOY = active(LcmState.SHUTDOWN_UNDEPLOY)
EPILOG_UNDEPLOY = active(LcmState.EPILOG_UNDEPLOY)
PROLOG_UNDEPLOY = active(LcmState.PROLOG_UNDEPLOY)
BOOT_UNDEPLOY = active(LcmState.BOOT_UNDEPLOY)
BOOT_UNDEPLOY_FAILURE = active(LcmState.BOOT_UNDEPLOY_FAILURE)
SAVE_MIGRATE = active(LcmState.SAVE_MIGRATE)
MIGRATE = active(LcmState.MIGRATE)
HOTPLUG = active(LcmState.HOTPLUG)
HOTPLUG_NIC = active(LcmState.HOTPLUG_NIC)
HOTPLUG_SNAPSHOT = active(LcmState.HOTPLUG_SNAPSHOT)

E = Event
W = Work

_TABLE: dict[tuple[StateKey, Event], Move] = {
    # Waiting for a host: the scheduler (or a user) deploys; users hold or drop.
    # A VM parked by stop/undeploy comes back through its own prolog and boot
    # (also when it was held after its resume: it keeps its instance).
    (PENDING, E.DEPLOY): Move(PROLOG, W.PROLOG),
    (PENDING, E.DEPLOY_RESTORE): Move(PROLOG_RESUME, W.PROLOG),
    (PENDING, E.DEPLOY_POWERON): Move(PROLOG_UNDEPLOY, W.PROLOG),
    (PENDING, E.HOLD): Move(HOLD),
    (HOLD, E.DEPLOY): Move(PROLOG, W.PROLOG),
    (HOLD, E.DEPLOY_RESTORE): Move(PROLOG_RESUME, W.PROLOG),
    (HOLD, E.DEPLOY_POWERON): Move(PROLOG_UNDEPLOY, W.PROLOG),
    (HOLD, E.RELEASE): Move(PENDING),
    # Prolog: no transfers; the boot is the driver's deploy.
    (PROLOG, E.SUCCESS): Move(BOOT, W.DEPLOY),
    (PROLOG, E.FAILURE): Move(PROLOG_FAILURE),
    (BOOT, E.SUCCESS): Move(RUNNING),
    (BOOT, E.FAILURE): Move(BOOT_FAILURE),
    (BOOT, E.NO_CAPACITY): Move(PENDING),
    (BOOT, E.RETRY): Move(PENDING),
    # Running: user actions and what monitoring sees.
    (RUNNING, E.TERMINATE): Move(SHUTDOWN, W.SHUTDOWN),
    (RUNNING, E.TERMINATE_HARD): Move(SHUTDOWN, W.CANCEL),
    (RUNNING, E.REBOOT): Move(RUNNING, W.REBOOT),
    (RUNNING, E.REBOOT_HARD): Move(RUNNING, W.RESET),
    (RUNNING, E.POWEROFF): Move(SHUTDOWN_POWEROFF, W.POWEROFF),
    (RUNNING, E.POWEROFF_HARD): Move(SHUTDOWN_POWEROFF, W.POWEROFF_HARD),
    (RUNNING, E.SUSPEND): Move(SAVE_SUSPEND, W.SAVE),
    (RUNNING, E.STOP): Move(SAVE_STOP, W.SAVE),
    (RUNNING, E.UNDEPLOY): Move(SHUTDOWN_UNDEPLOY, W.POWEROFF),
    (RUNNING, E.UNDEPLOY_HARD): Move(SHUTDOWN_UNDEPLOY, W.POWEROFF_HARD),
    (RUNNING, E.MIGRATE): Move(SAVE_MIGRATE, W.MIGRATE),
    (RUNNING, E.MIGRATE_LIVE): Move(MIGRATE, W.MIGRATE_LIVE),
    (RUNNING, E.RESCHED): Move(RUNNING),
    (RUNNING, E.UNRESCHED): Move(RUNNING),
    (RUNNING, E.SNAPSHOT_CREATE): Move(HOTPLUG_SNAPSHOT, W.SNAPSHOT_CREATE),
    (RUNNING, E.SNAPSHOT_REVERT): Move(HOTPLUG_SNAPSHOT, W.SNAPSHOT_REVERT),
    (RUNNING, E.SNAPSHOT_DELETE): Move(HOTPLUG_SNAPSHOT, W.SNAPSHOT_DELETE),
    (RUNNING, E.DISK_ATTACH): Move(HOTPLUG, W.ATTACH_DISK),
    (RUNNING, E.DISK_DETACH): Move(HOTPLUG, W.DETACH_DISK),
    (RUNNING, E.NIC_ATTACH): Move(HOTPLUG_NIC, W.ATTACH_NIC),
    (RUNNING, E.NIC_DETACH): Move(HOTPLUG_NIC, W.DETACH_NIC),
    (RUNNING, E.MONITOR_RUNNING): Move(RUNNING),
    (RUNNING, E.MONITOR_GONE): Move(POWEROFF),
    (RUNNING, E.MONITOR_ERROR): Move(UNKNOWN),
    (RUNNING, E.MONITOR_PAUSED): Move(SUSPENDED),
    # Unknown: the provider could not tell; it may come back, or be stopped.
    (UNKNOWN, E.MONITOR_RUNNING): Move(RUNNING),
    (UNKNOWN, E.MONITOR_GONE): Move(POWEROFF),
    # Reclaimed by the provider (spot interruption): the instance is gone for
    # good and not by anyone's choice, so the VM goes back to the scheduler
    # (the history record says why) instead of sitting in POWEROFF.
    (RUNNING, E.MONITOR_RECLAIMED): Move(PENDING),
    (UNKNOWN, E.MONITOR_RECLAIMED): Move(PENDING),
    (POWEROFF, E.MONITOR_RECLAIMED): Move(PENDING),
    (SHUTDOWN, E.MONITOR_RECLAIMED): Move(EPILOG, W.EPILOG),
    (UNKNOWN, E.MONITOR_ERROR): Move(UNKNOWN),
    (UNKNOWN, E.TERMINATE): Move(SHUTDOWN, W.CANCEL),
    (UNKNOWN, E.TERMINATE_HARD): Move(SHUTDOWN, W.CANCEL),
    (UNKNOWN, E.POWEROFF): Move(SHUTDOWN_POWEROFF, W.POWEROFF_HARD),
    (UNKNOWN, E.POWEROFF_HARD): Move(SHUTDOWN_POWEROFF, W.POWEROFF_HARD),
    (UNKNOWN, E.RESUME): Move(BOOT_UNKNOWN, W.POWERON),
    (BOOT_UNKNOWN, E.SUCCESS): Move(RUNNING),
    (BOOT_UNKNOWN, E.FAILURE): Move(UNKNOWN),
    # The ways out: a failed stop leaves the VM running.
    (SHUTDOWN, E.SUCCESS): Move(EPILOG, W.EPILOG),
    (SHUTDOWN, E.FAILURE): Move(RUNNING),
    (SHUTDOWN, E.MONITOR_GONE): Move(EPILOG, W.EPILOG),
    (EPILOG, E.SUCCESS): Move(DONE),
    (EPILOG, E.FAILURE): Move(EPILOG_FAILURE),
    # Power off keeps the instance and the host's capacity; resume boots it again.
    (SHUTDOWN_POWEROFF, E.SUCCESS): Move(POWEROFF),
    (SHUTDOWN_POWEROFF, E.FAILURE): Move(RUNNING),
    (SHUTDOWN_POWEROFF, E.MONITOR_GONE): Move(POWEROFF),
    (POWEROFF, E.RESUME): Move(BOOT_POWEROFF, W.POWERON),
    (POWEROFF, E.TERMINATE): Move(SHUTDOWN, W.CANCEL),
    (POWEROFF, E.TERMINATE_HARD): Move(SHUTDOWN, W.CANCEL),
    # Undeploying a powered-off VM: the driver releases what the host keeps
    # (kvm's definition); a failure leaves it powered off there.
    (POWEROFF, E.UNDEPLOY): Move(EPILOG_UNDEPLOY, W.POWEROFF_HARD),
    (POWEROFF, E.UNDEPLOY_HARD): Move(EPILOG_UNDEPLOY, W.POWEROFF_HARD),
    (EPILOG_UNDEPLOY, E.FAILURE): Move(POWEROFF),
    (POWEROFF, E.RESIZE): Move(POWEROFF, W.RESIZE),
    (POWEROFF, E.MONITOR_RUNNING): Move(RUNNING),
    (BOOT_POWEROFF, E.SUCCESS): Move(RUNNING),
    (BOOT_POWEROFF, E.FAILURE): Move(POWEROFF),
    # Suspend saves the guest in place (capacity released); resume restores it.
    (SAVE_SUSPEND, E.SUCCESS): Move(SUSPENDED),
    (SAVE_SUSPEND, E.FAILURE): Move(RUNNING),
    (SUSPENDED, E.RESUME): Move(BOOT_SUSPENDED, W.RESTORE),
    (SUSPENDED, E.TERMINATE): Move(SHUTDOWN, W.CANCEL),
    (SUSPENDED, E.TERMINATE_HARD): Move(SHUTDOWN, W.CANCEL),
    (SUSPENDED, E.MONITOR_RUNNING): Move(RUNNING),
    (BOOT_SUSPENDED, E.SUCCESS): Move(RUNNING),
    (BOOT_SUSPENDED, E.FAILURE): Move(SUSPENDED),
    # Stop saves the guest and leaves the host; resume goes through the scheduler,
    # back to a host of the same driver, which restores it.
    (SAVE_STOP, E.SUCCESS): Move(EPILOG_STOP, W.EPILOG),
    (SAVE_STOP, E.FAILURE): Move(RUNNING),
    (EPILOG_STOP, E.SUCCESS): Move(STOPPED),
    (STOPPED, E.RESUME): Move(PENDING),
    (STOPPED, E.TERMINATE): Move(CLEANUP_DELETE, W.CLEANUP),
    (STOPPED, E.TERMINATE_HARD): Move(CLEANUP_DELETE, W.CLEANUP),
    (PROLOG_RESUME, E.SUCCESS): Move(BOOT_STOPPED, W.RESTORE),
    (BOOT_STOPPED, E.SUCCESS): Move(RUNNING),
    (BOOT_STOPPED, E.FAILURE): Move(BOOT_STOPPED_FAILURE),
    # Undeploy powers off and leaves the host; resume as for stop, booting with poweron.
    (SHUTDOWN_UNDEPLOY, E.SUCCESS): Move(EPILOG_UNDEPLOY, W.EPILOG),
    (SHUTDOWN_UNDEPLOY, E.FAILURE): Move(RUNNING),
    (EPILOG_UNDEPLOY, E.SUCCESS): Move(UNDEPLOYED),
    (UNDEPLOYED, E.RESUME): Move(PENDING),
    (UNDEPLOYED, E.RESIZE): Move(UNDEPLOYED, W.RESIZE),
    (UNDEPLOYED, E.TERMINATE): Move(CLEANUP_DELETE, W.CLEANUP),
    (UNDEPLOYED, E.TERMINATE_HARD): Move(CLEANUP_DELETE, W.CLEANUP),
    (PROLOG_UNDEPLOY, E.SUCCESS): Move(BOOT_UNDEPLOY, W.POWERON),
    (BOOT_UNDEPLOY, E.SUCCESS): Move(RUNNING),
    (BOOT_UNDEPLOY, E.FAILURE): Move(BOOT_UNDEPLOY_FAILURE),
    # Migration: one driver call; a failure leaves the guest where it was.
    (SAVE_MIGRATE, E.SUCCESS): Move(RUNNING),
    (SAVE_MIGRATE, E.FAILURE): Move(RUNNING),
    (MIGRATE, E.SUCCESS): Move(RUNNING),
    (MIGRATE, E.FAILURE): Move(RUNNING),
    # Hot-plug and snapshots: back to RUNNING either way (a failure is shown as the error).
    (HOTPLUG, E.SUCCESS): Move(RUNNING),
    (HOTPLUG, E.FAILURE): Move(RUNNING),
    (HOTPLUG_NIC, E.SUCCESS): Move(RUNNING),
    (HOTPLUG_NIC, E.FAILURE): Move(RUNNING),
    (HOTPLUG_SNAPSHOT, E.SUCCESS): Move(RUNNING),
    (HOTPLUG_SNAPSHOT, E.FAILURE): Move(RUNNING),
    # updateconf on a running VM: a new CONTEXT is hot-plugged (the driver's
    # reconfigure), the other sections wait for the next boot; as in OpenNebula 6.10,
    # a failure leaves the new template stored and the VM running.
    (RUNNING, E.UPDATECONF): Move(RUNNING),
    (RUNNING, E.UPDATECONF_CONTEXT): Move(HOTPLUG, W.RECONFIGURE),
    # Cleanups: remove what the provider may hold, then end (or start over).
    (CLEANUP_DELETE, E.SUCCESS): Move(DONE),
    (CLEANUP_RESUBMIT, E.SUCCESS): Move(PENDING),
    # A cleanup that could not remove the instance keeps the VM visible as
    # failed, so the operator can retry rather than leak the instance.
    (CLEANUP_DELETE, E.FAILURE): Move(BOOT_FAILURE),
    (CLEANUP_RESUBMIT, E.FAILURE): Move(BOOT_FAILURE),
}

# Terminate: PENDING/HOLD end at once; states whose work may have left
# something at the provider clean it up first.
for _position in (PENDING, HOLD):
    _TABLE[(_position, E.TERMINATE)] = Move(DONE)
    _TABLE[(_position, E.TERMINATE_HARD)] = Move(DONE)
for _position in (PROLOG, BOOT, PROLOG_FAILURE, BOOT_FAILURE, EPILOG_FAILURE,
                  BOOT_STOPPED_FAILURE, BOOT_UNDEPLOY_FAILURE):
    _TABLE[(_position, E.TERMINATE)] = Move(CLEANUP_DELETE, W.CLEANUP)
    _TABLE[(_position, E.TERMINATE_HARD)] = Move(CLEANUP_DELETE, W.CLEANUP)

# Failure states: recover --retry runs the failed work again, --success takes
# the operator's word that it was done.
_FAILED_WORK: Mapping[StateKey, tuple[Move, StateKey]] = {
    PROLOG_FAILURE: (Move(PROLOG, W.PROLOG), BOOT),
    BOOT_FAILURE: (Move(BOOT, W.DEPLOY), RUNNING),
    EPILOG_FAILURE: (Move(EPILOG, W.EPILOG), DONE),
    BOOT_STOPPED_FAILURE: (Move(BOOT_STOPPED, W.RESTORE), RUNNING),
    BOOT_UNDEPLOY_FAILURE: (Move(BOOT_UNDEPLOY, W.POWERON), RUNNING),
}
for _position, (_retry, _success) in _FAILED_WORK.items():
    _TABLE[(_position, E.RECOVER_RETRY)] = _retry
    _TABLE[(_position, E.RECOVER_SUCCESS)] = Move(_success)

# States whose work is under way: recover --success/--failure decide its
# result for a driver that never answered.
_WORKING: frozenset[StateKey] = frozenset(
    source for (source, event) in _TABLE if event is E.SUCCESS and source != DONE)
for _position in _WORKING:
    _TABLE[(_position, E.RECOVER_SUCCESS)] = _TABLE[(_position, E.SUCCESS)]
    if (_position, E.FAILURE) in _TABLE:
        _TABLE[(_position, E.RECOVER_FAILURE)] = _TABLE[(_position, E.FAILURE)]

# recover --delete ends any VM, cleaning up at the provider when it may hold
# something; --recreate does the same and starts over as PENDING; --delete-db
# only forgets it.
_HOLDS_NOTHING = frozenset({PENDING, HOLD})
_ALIVE = frozenset({source for source, _ in _TABLE} | {target.to for target in _TABLE.values()})
for _position in _ALIVE - {DONE}:
    if _position in _HOLDS_NOTHING:
        _TABLE[(_position, E.RECOVER_DELETE)] = Move(DONE)
        _TABLE[(_position, E.RECOVER_RECREATE)] = Move(PENDING)
    else:
        _TABLE[(_position, E.RECOVER_DELETE)] = Move(CLEANUP_DELETE, W.CLEANUP)
        _TABLE[(_position, E.RECOVER_RECREATE)] = Move(CLEANUP_RESUBMIT, W.CLEANUP)
    _TABLE[(_position, E.RECOVER_DELETE_DB)] = Move(DONE)
# PENDING/HOLD: resize changes the template only.
for _position in (PENDING, HOLD):
    _TABLE[(_position, E.RESIZE)] = Move(_position)
# updateconf where no guest runs: the template changes; the next boot (deploy, or
# poweron from a new deployment) uses it. Other states refuse it, as oned does.
for _position in (PENDING, HOLD, POWEROFF, UNDEPLOYED):
    _TABLE[(_position, E.UPDATECONF)] = Move(_position)
    _TABLE[(_position, E.UPDATECONF_CONTEXT)] = Move(_position)

TRANSITIONS: Mapping[tuple[StateKey, Event], Move] = _TABLE

# one.vm.action names (6.x) and the event each raises; 4.x/5.x aliases accepted.
ACTION_EVENTS: Mapping[str, Event] = {
    "terminate": E.TERMINATE,
    "terminate-hard": E.TERMINATE_HARD,
    "shutdown": E.TERMINATE,
    "shutdown-hard": E.TERMINATE_HARD,
    "delete": E.TERMINATE_HARD,
    "reboot": E.REBOOT,
    "reboot-hard": E.REBOOT_HARD,
    "reset": E.REBOOT_HARD,
    "hold": E.HOLD,
    "release": E.RELEASE,
    "poweroff": E.POWEROFF,
    "poweroff-hard": E.POWEROFF_HARD,
    "suspend": E.SUSPEND,
    "stop": E.STOP,
    "undeploy": E.UNDEPLOY,
    "undeploy-hard": E.UNDEPLOY_HARD,
    "resume": E.RESUME,
    "resched": E.RESCHED,
    "unresched": E.UNRESCHED,
}

#: one.vm.recover operations (6.x numbering).
RECOVER_EVENTS: Mapping[int, Event] = {
    0: E.RECOVER_FAILURE,
    1: E.RECOVER_SUCCESS,
    2: E.RECOVER_RETRY,
    3: E.RECOVER_DELETE,
    4: E.RECOVER_RECREATE,
    5: E.RECOVER_DELETE_DB,
}

#: History ``ACTION`` codes (OpenNebula 6.x ``VMActions``) recorded for each event.
HISTORY_ACTIONS: Mapping[Event, int] = {
    E.MIGRATE: 1, E.MIGRATE_LIVE: 2, E.UNDEPLOY: 5, E.UNDEPLOY_HARD: 6, E.HOLD: 7,
    E.RELEASE: 8, E.STOP: 9, E.SUSPEND: 10, E.RESUME: 11, E.RECOVER_DELETE: 13,
    E.RECOVER_RECREATE: 14, E.REBOOT: 15, E.REBOOT_HARD: 16, E.RESCHED: 17,
    E.UNRESCHED: 18, E.POWEROFF: 19, E.POWEROFF_HARD: 20, E.DISK_ATTACH: 21,
    E.DISK_DETACH: 22, E.NIC_ATTACH: 23, E.NIC_DETACH: 24, E.TERMINATE: 27,
    E.TERMINATE_HARD: 28, E.DEPLOY: 30, E.DEPLOY_RESTORE: 30, E.DEPLOY_POWERON: 30,
    E.RESIZE: 35, E.SNAPSHOT_CREATE: 37,
    E.SNAPSHOT_DELETE: 38, E.SNAPSHOT_REVERT: 39, E.RECOVER_SUCCESS: 42,
    E.RECOVER_FAILURE: 42, E.RECOVER_RETRY: 43, E.RECOVER_DELETE_DB: 13,
}

#: Events a user (API) may raise; the others come from work results and monitoring.
USER_EVENTS: frozenset[Event] = frozenset(
    event for event in Event if event not in (
        E.SUCCESS, E.FAILURE, E.NO_CAPACITY, E.RETRY, E.MONITOR_RUNNING, E.MONITOR_GONE,
        E.MONITOR_ERROR, E.MONITOR_PAUSED, E.MONITOR_RECLAIMED))


def move(position: StateKey, event: Event) -> Move:
    """The move ``event`` makes from ``position``.

    Raises:
        StateRefusedError: not in :data:`TRANSITIONS`; the message names the
            event and the current state.
    """
    try:
        return TRANSITIONS[(position, event)]
    except KeyError:
        raise StateRefusedError(
            f'Action "{event.value}" is not available for state {vm_state_label(*position)}',
            action=event.value, state=_node(position)) from None


def apply(position: StateKey, event: Event) -> StateKey:
    """The position ``event`` leads to from ``position`` (see :func:`move`)."""
    return move(position, event).to


def is_legal(position: StateKey, event: Event) -> bool:
    """Whether ``event`` may happen in ``position``."""
    return (position, event) in TRANSITIONS


def allowed_actions(position: StateKey) -> list[str]:
    """``one.vm.action`` names that are legal in ``position`` (for help and errors)."""
    return sorted(
        name for name, event in ACTION_EVENTS.items() if (position, event) in TRANSITIONS
    )


#: Positions whose work is under way (they wait for its SUCCESS or FAILURE):
#: after a restart, recovery resumes or settles it.
IN_FLIGHT: frozenset[StateKey] = _WORKING

#: Failure positions; each has a way out (recover, terminate).
FAILURES: frozenset[StateKey] = frozenset(
    position for position in _ALIVE if position[1].name.endswith("_FAILURE"))


def mermaid() -> str:
    """The table as a Mermaid state diagram (user actions and work results)."""
    lines = ["stateDiagram-v2"]
    for (source, event), target in sorted(
            TRANSITIONS.items(), key=lambda item: (item[0][0], item[0][1].value)):
        if event.value.startswith(("recover", "monitor")):
            continue
        if source == target.to and target.work is None:
            continue
        work = f" / {target.work.label}" if target.work else ""
        lines.append(f"    {_node(source)} --> {_node(target.to)}: {event.value}{work}")
    return "\n".join(lines)


def _node(position: StateKey) -> str:
    """The state's short name: the LCM state of an ACTIVE VM, else the VM state."""
    return position[1].name if position[0] is VmState.ACTIVE else position[0].name
