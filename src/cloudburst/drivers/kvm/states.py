"""libvirt domain states, and what a poll reports for each.

The numbers are libvirt's ``virDomainState`` values (stable ABI), so this
module does not need libvirt itself.

========================  ======  =========================================
libvirt state             poll    why
========================  ======  =========================================
``RUNNING``, ``BLOCKED``  ``a``   the guest runs (blocked: waiting on I/O)
``SHUTDOWN``              ``a``   still running while it shuts down
``PAUSED``                ``p``   suspended by libvirt (save, migration, ...)
``PMSUSPENDED``           ``p``   the guest suspended itself (S3/S4)
``SHUTOFF``               ``d``   defined but not running: the guest is gone
``CRASHED``               ``e``   the guest crashed
``NOSTATE``               ``-``   libvirt cannot tell
========================  ======  =========================================

A domain that does not exist at all is ``d`` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType
from typing import Final

from cloudburst.drivers.base import PollState


class DomainState(IntEnum):
    """``virDomainState``."""

    NOSTATE = 0
    RUNNING = 1
    BLOCKED = 2
    PAUSED = 3
    SHUTDOWN = 4
    SHUTOFF = 5
    CRASHED = 6
    PMSUSPENDED = 7


POLL_STATES: Final[Mapping[DomainState, PollState]] = MappingProxyType({
    DomainState.NOSTATE: PollState.UNKNOWN,
    DomainState.RUNNING: PollState.ACTIVE,
    DomainState.BLOCKED: PollState.ACTIVE,
    DomainState.SHUTDOWN: PollState.ACTIVE,
    DomainState.PAUSED: PollState.PAUSED,
    DomainState.PMSUSPENDED: PollState.PAUSED,
    DomainState.SHUTOFF: PollState.GONE,
    DomainState.CRASHED: PollState.ERROR,
})


def poll_state(state: int) -> PollState:
    """The poll state of libvirt state number ``state`` (unknown numbers: ``-``)."""
    try:
        return POLL_STATES[DomainState(state)]
    except ValueError:
        return PollState.UNKNOWN

