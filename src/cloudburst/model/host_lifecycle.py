"""The host life cycle as data: which state changes are legal and the work each starts.

The VM table (:mod:`cloudburst.model.lifecycle`) has a small sibling here. A
:class:`HostEvent` is an operator's action (``one.host.allocate``/``status``/
``delete``, ``onehost flush``) or the outcome of a monitoring. :data:`HOST_TRANSITIONS`
maps ``(state, event)`` to a :class:`HostMove`: the next state (``None`` when
the host is removed) and the :class:`HostWork` entering it starts. Anything
absent is illegal and :func:`host_move` refuses it in one line naming the
event and the state. The daemon's one apply-and-write helper
(``daemon.lifecycle.hosts.host_step``) reads the move from here, and which
hosts are monitored (:data:`MONITORED`) is derived from the table.

Learnt from an OpenNebula 6.10 peer (``onehost enable/disable/offline`` in every
state): an operator may disable, offline or enable a host whatever its state
(also an ``ERROR`` one, which keeps its error message until a monitoring
succeeds); enable always starts over from ``INIT``, also on a ``MONITORED``
host, and the next monitoring decides between ``MONITORED`` and ``ERROR``;
offline is refused nothing (its VMs stay where they are); a host entering ERROR
has its RUNNING VMs set UNKNOWN (monitoring is retried, VMs are observed again
once it succeeds). Numbers are 6.10's;
the ``MONITORING_*`` states are not entered by 6.x (monitoring runs in its own
daemon) and not by cloudburst either: a host read in one of them moves as the
state it names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from cloudburst.errors import StateRefusedError
from cloudburst.model.states import HostState


class HostEvent(Enum):
    """Everything that can move a host."""

    CREATE = "create"
    ENABLE = "enable"
    DISABLE = "disable"
    OFFLINE = "offline"
    #: Disable and move every VM off the host (``onehost flush``).
    FLUSH = "flush"
    DELETE = "delete"
    MONITOR_SUCCESS = "monitor-success"
    MONITOR_FAILURE = "monitor-failure"
    #: The monitoring did not answer within its time limit.
    MONITOR_TIMEOUT = "monitor-timeout"


class HostWork(Enum):
    """What entering a host state starts."""

    #: Monitor the host at once (new or re-enabled: it stays out of placement till then).
    MONITOR = "monitor"
    #: Placement may change: wake the scheduler.
    SCHEDULE = "schedule"
    #: Reschedule every VM on the host (flush).
    RESCHEDULE = "reschedule"
    #: Its monitoring failed: its RUNNING VMs become UNKNOWN, since a host that
    #: cannot be monitored is not polled either (OpenNebula 6.10 does the same to
    #: the VMs of a host entering ERROR).
    UNOBSERVED = "unobserved"


@dataclass(frozen=True, slots=True)
class HostMove:
    """Where an event leads (``None``: the host is removed) and the work it starts."""

    to: HostState | None
    work: frozenset[HostWork] = frozenset()


S = HostState
E = HostEvent
W = HostWork

#: The states cloudburst enters; the other 6.x numbers move as the one they name.
_STATES = (S.INIT, S.MONITORED, S.ERROR, S.DISABLED, S.OFFLINE)
_ALIASES: Mapping[HostState, HostState] = {
    S.MONITORING_INIT: S.INIT,
    S.MONITORING_MONITORED: S.MONITORED,
    S.MONITORING_ERROR: S.ERROR,
    S.MONITORING_DISABLED: S.DISABLED,
}

_TABLE: dict[tuple[HostState | None, HostEvent], HostMove] = {
    # A new host waits for its first monitoring.
    (None, E.CREATE): HostMove(S.INIT, frozenset({W.MONITOR})),
    # Monitoring: its outcome decides for a host that takes VMs. A disabled
    # host is still monitored (figures, VM polls) but stays disabled; an
    # offline one is not monitored, so a late outcome is refused.
    (S.INIT, E.MONITOR_SUCCESS): HostMove(S.MONITORED, frozenset({W.SCHEDULE})),
    (S.ERROR, E.MONITOR_SUCCESS): HostMove(S.MONITORED, frozenset({W.SCHEDULE})),
    (S.MONITORED, E.MONITOR_SUCCESS): HostMove(S.MONITORED),
    (S.DISABLED, E.MONITOR_SUCCESS): HostMove(S.DISABLED),
}
# A failed monitoring leaves every VM there unobserved (again: a VM may have
# started there since), whatever state the host keeps.
for _event in (E.MONITOR_FAILURE, E.MONITOR_TIMEOUT):
    _TABLE[(S.INIT, _event)] = HostMove(S.ERROR, frozenset({W.SCHEDULE, W.UNOBSERVED}))
    _TABLE[(S.MONITORED, _event)] = HostMove(S.ERROR, frozenset({W.SCHEDULE, W.UNOBSERVED}))
    _TABLE[(S.ERROR, _event)] = HostMove(S.ERROR, frozenset({W.UNOBSERVED}))
    _TABLE[(S.DISABLED, _event)] = HostMove(S.DISABLED, frozenset({W.UNOBSERVED}))
# Operators: every state may be enabled (start over), disabled, taken offline,
# flushed or deleted (the service refuses deleting a host that holds VMs).
for _state in _STATES:
    _TABLE[(_state, E.ENABLE)] = HostMove(S.INIT, frozenset({W.MONITOR}))
    _TABLE[(_state, E.DISABLE)] = HostMove(S.DISABLED, frozenset({W.SCHEDULE}))
    _TABLE[(_state, E.OFFLINE)] = HostMove(S.OFFLINE, frozenset({W.SCHEDULE}))
    _TABLE[(_state, E.FLUSH)] = HostMove(S.DISABLED, frozenset({W.SCHEDULE, W.RESCHEDULE}))
    _TABLE[(_state, E.DELETE)] = HostMove(None, frozenset({W.SCHEDULE}))

HOST_TRANSITIONS: Mapping[tuple[HostState | None, HostEvent], HostMove] = _TABLE

#: ``one.host.status`` values and the event each raises.
STATUS_EVENTS: Mapping[int, HostEvent] = {0: E.ENABLE, 1: E.DISABLE, 2: E.OFFLINE}

#: States whose hosts are monitored: those a monitoring outcome may move.
MONITORED: frozenset[HostState] = frozenset(
    {state for (state, event) in _TABLE if event is E.MONITOR_SUCCESS and state is not None}
    | {alias for alias, state in _ALIASES.items()
       if (state, E.MONITOR_SUCCESS) in _TABLE})


def host_move(state: HostState | None, event: HostEvent) -> HostMove:
    """The move ``event`` makes from ``state`` (``None``: the host does not exist yet).

    Raises:
        StateRefusedError: not in :data:`HOST_TRANSITIONS`; the message names the
            event and the state.
    """
    source = _ALIASES.get(state, state) if state is not None else None
    try:
        return HOST_TRANSITIONS[(source, event)]
    except KeyError:
        name = state.name if state is not None else "(none)"
        raise StateRefusedError(
            f'Action "{event.value}" is not available for host state {name}',
            action=event.value, state=name) from None


def is_legal(state: HostState | None, event: HostEvent) -> bool:
    """Whether ``event`` may happen to a host in ``state``."""
    source = _ALIASES.get(state, state) if state is not None else None
    return (source, event) in HOST_TRANSITIONS
