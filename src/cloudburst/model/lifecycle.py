"""The VM life cycle as data: one table of every legal move.

A VM's position is a :data:`StateKey` ``(STATE, LCM_STATE)``; ``LCM_STATE`` is
``LCM_INIT`` whenever ``STATE`` is not ``ACTIVE``. An :class:`Event` is either
a user action (``TERMINATE``, ``HOLD``, ...) or a result reported by a driver
(``DEPLOY_SUCCESS``, ``MONITOR_GONE``, ...). :data:`TRANSITIONS` maps
``(position, event)`` to the next position; anything absent is illegal and
:func:`apply` refuses it with an error that names the state.

API guards (which actions a state allows), the daemon's side effects and the
documentation are all derived from this one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from cloudburst.errors import IllegalActionError
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

    # -- user actions (one.vm.deploy / one.vm.action) --------------------------
    DEPLOY = "deploy"
    HOLD = "hold"
    RELEASE = "release"
    TERMINATE = "terminate"
    TERMINATE_HARD = "terminate-hard"
    REBOOT = "reboot"
    REBOOT_HARD = "reboot-hard"
    # -- results of driver work ------------------------------------------------
    PROLOG_SUCCESS = "prolog-success"
    PROLOG_FAILURE = "prolog-failure"
    DEPLOY_SUCCESS = "deploy-success"
    DEPLOY_FAILURE = "deploy-failure"
    DEPLOY_NO_CAPACITY = "deploy-no-capacity"
    DEPLOY_RETRY = "deploy-retry"
    SHUTDOWN_SUCCESS = "shutdown-success"
    SHUTDOWN_FAILURE = "shutdown-failure"
    EPILOG_SUCCESS = "epilog-success"
    CLEANUP_SUCCESS = "cleanup-success"
    CLEANUP_FAILURE = "cleanup-failure"
    # -- what monitoring observed ----------------------------------------------
    MONITOR_RUNNING = "monitor-running"
    MONITOR_GONE = "monitor-gone"
    MONITOR_ERROR = "monitor-error"
    MONITOR_PAUSED = "monitor-paused"
    #: The provider took the instance back (an EC2 spot interruption).
    MONITOR_RECLAIMED = "monitor-reclaimed"


PENDING = key(VmState.PENDING)
HOLD = key(VmState.HOLD)
DONE = key(VmState.DONE)
POWEROFF = key(VmState.POWEROFF)
SUSPENDED = key(VmState.SUSPENDED)
PROLOG = active(LcmState.PROLOG)
BOOT = active(LcmState.BOOT)
RUNNING = active(LcmState.RUNNING)
UNKNOWN = active(LcmState.UNKNOWN)
SHUTDOWN = active(LcmState.SHUTDOWN)
EPILOG = active(LcmState.EPILOG)
CLEANUP_DELETE = active(LcmState.CLEANUP_DELETE)
BOOT_FAILURE = active(LcmState.BOOT_FAILURE)
PROLOG_FAILURE = active(LcmState.PROLOG_FAILURE)
EPILOG_FAILURE = active(LcmState.EPILOG_FAILURE)

TRANSITIONS: Mapping[tuple[StateKey, Event], StateKey] = {
    # Waiting for a host: the scheduler (or a user) deploys; users hold or drop.
    (PENDING, Event.DEPLOY): PROLOG,
    (PENDING, Event.HOLD): HOLD,
    (PENDING, Event.TERMINATE): DONE,
    (PENDING, Event.TERMINATE_HARD): DONE,
    # On hold: only a user's explicit deploy or release moves it.
    (HOLD, Event.DEPLOY): PROLOG,
    (HOLD, Event.RELEASE): PENDING,
    (HOLD, Event.TERMINATE): DONE,
    (HOLD, Event.TERMINATE_HARD): DONE,
    # Prolog: images would be transferred here; cloud and dummy hosts have none.
    (PROLOG, Event.PROLOG_SUCCESS): BOOT,
    (PROLOG, Event.PROLOG_FAILURE): PROLOG_FAILURE,
    # Boot: the driver's deploy runs. No room at the site, or an outage before
    # anything was created, sends it back to the scheduler instead of failing it.
    (BOOT, Event.DEPLOY_SUCCESS): RUNNING,
    (BOOT, Event.DEPLOY_FAILURE): BOOT_FAILURE,
    (BOOT, Event.DEPLOY_NO_CAPACITY): PENDING,
    (BOOT, Event.DEPLOY_RETRY): PENDING,
    # Terminating while the deploy is in flight: clean up whatever it creates
    # (a deploy that reports back afterwards has its instance cancelled).
    (BOOT, Event.TERMINATE): CLEANUP_DELETE,
    (BOOT, Event.TERMINATE_HARD): CLEANUP_DELETE,
    (PROLOG, Event.TERMINATE): CLEANUP_DELETE,
    (PROLOG, Event.TERMINATE_HARD): CLEANUP_DELETE,
    # Running: user actions and what monitoring sees.
    (RUNNING, Event.TERMINATE): SHUTDOWN,
    (RUNNING, Event.TERMINATE_HARD): SHUTDOWN,
    (RUNNING, Event.REBOOT): RUNNING,
    (RUNNING, Event.REBOOT_HARD): RUNNING,
    (RUNNING, Event.MONITOR_RUNNING): RUNNING,
    (RUNNING, Event.MONITOR_GONE): POWEROFF,
    (RUNNING, Event.MONITOR_ERROR): UNKNOWN,
    (RUNNING, Event.MONITOR_PAUSED): SUSPENDED,
    # Unknown: the provider could not tell; it may come back or be terminated.
    (UNKNOWN, Event.MONITOR_RUNNING): RUNNING,
    (UNKNOWN, Event.MONITOR_GONE): POWEROFF,
    (UNKNOWN, Event.MONITOR_ERROR): UNKNOWN,
    (UNKNOWN, Event.TERMINATE): SHUTDOWN,
    (UNKNOWN, Event.TERMINATE_HARD): SHUTDOWN,
    # Shutdown: the driver stops the instance; a failed stop leaves it running.
    (SHUTDOWN, Event.SHUTDOWN_SUCCESS): EPILOG,
    (SHUTDOWN, Event.SHUTDOWN_FAILURE): RUNNING,
    (SHUTDOWN, Event.MONITOR_GONE): EPILOG,
    (SHUTDOWN, Event.MONITOR_RUNNING): SHUTDOWN,
    # Reclaimed by the provider (spot interruption): the instance is gone for
    # good and not by anyone's choice, so the VM goes back to the scheduler
    # (the history record says why) instead of sitting in POWEROFF.
    (RUNNING, Event.MONITOR_RECLAIMED): PENDING,
    (UNKNOWN, Event.MONITOR_RECLAIMED): PENDING,
    (POWEROFF, Event.MONITOR_RECLAIMED): PENDING,
    (SHUTDOWN, Event.MONITOR_RECLAIMED): EPILOG,
    # Epilog: capacity is released and the VM is finished.
    (EPILOG, Event.EPILOG_SUCCESS): DONE,
    # Off or paused outside our control: the instance may still exist at the
    # provider, so terminating goes through the driver (cancel succeeds on a
    # gone instance) rather than straight to DONE.
    (POWEROFF, Event.TERMINATE): SHUTDOWN,
    (POWEROFF, Event.TERMINATE_HARD): SHUTDOWN,
    (POWEROFF, Event.MONITOR_RUNNING): RUNNING,
    (SUSPENDED, Event.TERMINATE): SHUTDOWN,
    (SUSPENDED, Event.TERMINATE_HARD): SHUTDOWN,
    (SUSPENDED, Event.MONITOR_RUNNING): RUNNING,
    # Failures: terminating cleans up whatever the provider may hold, then ends.
    (BOOT_FAILURE, Event.TERMINATE): CLEANUP_DELETE,
    (BOOT_FAILURE, Event.TERMINATE_HARD): CLEANUP_DELETE,
    (PROLOG_FAILURE, Event.TERMINATE): CLEANUP_DELETE,
    (PROLOG_FAILURE, Event.TERMINATE_HARD): CLEANUP_DELETE,
    (EPILOG_FAILURE, Event.TERMINATE): CLEANUP_DELETE,
    (EPILOG_FAILURE, Event.TERMINATE_HARD): CLEANUP_DELETE,
    (CLEANUP_DELETE, Event.CLEANUP_SUCCESS): DONE,
    # A cleanup that could not remove the instance keeps the VM visible as
    # failed, so the operator can retry rather than leak the instance.
    (CLEANUP_DELETE, Event.CLEANUP_FAILURE): BOOT_FAILURE,
}

# User-facing action names (one.vm.action) and the event each one raises.
# 5.x aliases are accepted: shutdown -> terminate, shutdown-hard/delete -> terminate-hard.
ACTION_EVENTS: Mapping[str, Event] = {
    "terminate": Event.TERMINATE,
    "terminate-hard": Event.TERMINATE_HARD,
    "shutdown": Event.TERMINATE,
    "shutdown-hard": Event.TERMINATE_HARD,
    "delete": Event.TERMINATE_HARD,
    "reboot": Event.REBOOT,
    "reboot-hard": Event.REBOOT_HARD,
    "hold": Event.HOLD,
    "release": Event.RELEASE,
}

USER_EVENTS: frozenset[Event] = frozenset(
    {Event.DEPLOY, *ACTION_EVENTS.values()}
)


def apply(position: StateKey, event: Event) -> StateKey:
    """Return the position ``event`` leads to from ``position``.

    Raises:
        IllegalActionError: the move is not in :data:`TRANSITIONS`; the message
            names the event and the current state, as oned does.
    """
    try:
        return TRANSITIONS[(position, event)]
    except KeyError:
        label = vm_state_label(*position)
        raise IllegalActionError(
            f'Action "{event.value}" is not available for state {label}'
        ) from None


def is_legal(position: StateKey, event: Event) -> bool:
    """Whether ``event`` may happen in ``position``."""
    return (position, event) in TRANSITIONS


def allowed_actions(position: StateKey) -> list[str]:
    """User action names that are legal in ``position`` (for help and errors)."""
    return sorted(
        name for name, event in ACTION_EVENTS.items() if (position, event) in TRANSITIONS
    )


# States in which a driver operation is in flight for the VM: on restart the
# daemon must reconcile these with the journal instead of leaving them stuck.
IN_FLIGHT: frozenset[StateKey] = frozenset({PROLOG, BOOT, SHUTDOWN, EPILOG, CLEANUP_DELETE})
