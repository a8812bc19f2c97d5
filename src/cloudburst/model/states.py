"""State numbers and short names: the single source for every state name.

Numbers are OpenNebula 5.x+ (``include/VirtualMachine.h``, ``include/Host.h``)
so that clients such as pyone compare them with their own enums unchanged.
Short names are the four-letter words ``onevm list`` and ``onehost list`` show.
"""

from __future__ import annotations

from enum import IntEnum


class VmState(IntEnum):
    """Dispatch-manager state of a VM (``STATE``)."""

    INIT = 0
    PENDING = 1
    HOLD = 2
    ACTIVE = 3
    STOPPED = 4
    SUSPENDED = 5
    DONE = 6
    POWEROFF = 8
    UNDEPLOYED = 9
    CLONING = 10
    CLONING_FAILURE = 11


class LcmState(IntEnum):
    """Life-cycle state of a VM (``LCM_STATE``); meaningful while ``ACTIVE``."""

    LCM_INIT = 0
    PROLOG = 1
    BOOT = 2
    RUNNING = 3
    MIGRATE = 4
    SAVE_STOP = 5
    SAVE_SUSPEND = 6
    SAVE_MIGRATE = 7
    PROLOG_MIGRATE = 8
    PROLOG_RESUME = 9
    EPILOG_STOP = 10
    EPILOG = 11
    SHUTDOWN = 12
    CLEANUP_RESUBMIT = 15
    UNKNOWN = 16
    HOTPLUG = 17
    SHUTDOWN_POWEROFF = 18
    BOOT_UNKNOWN = 19
    BOOT_POWEROFF = 20
    BOOT_SUSPENDED = 21
    BOOT_STOPPED = 22
    CLEANUP_DELETE = 23
    HOTPLUG_SNAPSHOT = 24
    HOTPLUG_NIC = 25
    SHUTDOWN_UNDEPLOY = 29
    EPILOG_UNDEPLOY = 30
    PROLOG_UNDEPLOY = 31
    BOOT_UNDEPLOY = 32
    BOOT_MIGRATE = 35
    BOOT_FAILURE = 36
    BOOT_MIGRATE_FAILURE = 37
    PROLOG_MIGRATE_FAILURE = 38
    PROLOG_FAILURE = 39
    EPILOG_FAILURE = 40
    EPILOG_STOP_FAILURE = 41
    EPILOG_UNDEPLOY_FAILURE = 42
    BOOT_UNDEPLOY_FAILURE = 47
    BOOT_STOPPED_FAILURE = 48
    PROLOG_RESUME_FAILURE = 49
    PROLOG_UNDEPLOY_FAILURE = 50


class HostState(IntEnum):
    """State of a host (``STATE`` in ``HOST``)."""

    INIT = 0
    MONITORING_MONITORED = 1
    MONITORED = 2
    ERROR = 3
    DISABLED = 4
    MONITORING_ERROR = 5
    MONITORING_INIT = 6
    MONITORING_DISABLED = 7
    OFFLINE = 8


VM_STATE_SHORT: dict[VmState, str] = {
    VmState.INIT: "init",
    VmState.PENDING: "pend",
    VmState.HOLD: "hold",
    VmState.ACTIVE: "actv",
    VmState.STOPPED: "stop",
    VmState.SUSPENDED: "susp",
    VmState.DONE: "done",
    VmState.POWEROFF: "poff",
    VmState.UNDEPLOYED: "unde",
    VmState.CLONING: "clon",
    VmState.CLONING_FAILURE: "fail",
}

_LCM_SHORT_BY_PREFIX: tuple[tuple[str, str], ...] = (
    ("PROLOG_MIGRATE", "migr"),
    ("PROLOG", "prol"),
    ("BOOT", "boot"),
    ("SAVE", "save"),
    ("EPILOG", "epil"),
    ("SHUTDOWN", "shut"),
    ("CLEANUP", "clea"),
    ("HOTPLUG_SNAPSHOT", "snap"),
    ("HOTPLUG", "hotp"),
    ("MIGRATE", "migr"),
)


def _lcm_short(state: LcmState) -> str:
    if state.name.endswith("_FAILURE"):
        return "fail"
    special = {LcmState.LCM_INIT: "init", LcmState.RUNNING: "runn", LcmState.UNKNOWN: "unkn"}
    if state in special:
        return special[state]
    for prefix, short in _LCM_SHORT_BY_PREFIX:
        if state.name.startswith(prefix):
            return short
    return state.name[:4].lower()


LCM_STATE_SHORT: dict[LcmState, str] = {state: _lcm_short(state) for state in LcmState}

HOST_STATE_SHORT: dict[HostState, str] = {
    HostState.INIT: "init",
    HostState.MONITORING_MONITORED: "update",
    HostState.MONITORED: "on",
    HostState.ERROR: "err",
    HostState.DISABLED: "dsbl",
    HostState.MONITORING_ERROR: "retry",
    HostState.MONITORING_INIT: "init",
    HostState.MONITORING_DISABLED: "dsbl",
    HostState.OFFLINE: "off",
}


def vm_short_state(state: VmState, lcm_state: LcmState) -> str:
    """The ``STAT`` column of ``onevm list``: the LCM name while ACTIVE."""
    if state is VmState.ACTIVE:
        return LCM_STATE_SHORT[lcm_state]
    return VM_STATE_SHORT[state]


def vm_state_label(state: VmState, lcm_state: LcmState) -> str:
    """A readable name for error messages, e.g. ``ACTIVE/RUNNING`` or ``PENDING``."""
    if state is VmState.ACTIVE:
        return f"ACTIVE/{lcm_state.name}"
    return state.name


# Capacity on a host is held by a VM in these states (allocation accounting,
# spec/opennebula.md 3.2): everything ACTIVE plus POWEROFF, which keeps its host.
CAPACITY_HOLDING_STATES: frozenset[VmState] = frozenset({VmState.ACTIVE, VmState.POWEROFF})

# Hosts the scheduler may place VMs on.
SCHEDULABLE_HOST_STATES: frozenset[HostState] = frozenset(
    {HostState.MONITORED, HostState.MONITORING_MONITORED}
)

