"""The life-cycle manager: the only code that changes a VM's state.

Every change is ``model.lifecycle.apply`` plus a compare-and-swap write, so an
illegal or lost race is refused cleanly. Entering a state that needs driver
work (``PROLOG``, ``BOOT``, ``SHUTDOWN``, ``EPILOG``, ``CLEANUP_DELETE``)
starts that work as a background task; for ``BOOT`` and ``SHUTDOWN`` the
action is first journalled with its idempotency token in the same
transaction, so a crash between "decided" and "done" is recoverable
(:mod:`cloudburst.daemon.recovery`).

A driver that fails, hangs or crashes marks that VM with the error; nothing
propagates beyond the VM.
"""

from __future__ import annotations

from cloudburst.daemon.lifecycle.base import (
    ACTION_CODES,
    CAPACITY_BACKOFF,
    Placement,
    token_for,
)
from cloudburst.daemon.lifecycle.deploying import Deploying
from cloudburst.daemon.lifecycle.observing import Observing, poll_refs

__all__ = [
    "ACTION_CODES",
    "CAPACITY_BACKOFF",
    "LifecycleManager",
    "Placement",
    "poll_refs",
    "token_for",
]


class LifecycleManager(Deploying, Observing):
    """Applies events to VMs and runs the driver work each state needs.

    Composed of :class:`~cloudburst.daemon.lifecycle.deploying.Deploying`
    (the way in), :class:`~cloudburst.daemon.lifecycle.stopping.Stopping`
    (user actions and the way out) and
    :class:`~cloudburst.daemon.lifecycle.observing.Observing` (poll results),
    all over :class:`~cloudburst.daemon.lifecycle.base.ManagerBase`.
    """
