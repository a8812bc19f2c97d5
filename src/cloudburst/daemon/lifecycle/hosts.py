"""The one helper that changes a host's state, and the runner of the work it starts.

:func:`host_step` looks the move up in :data:`cloudburst.model.host_lifecycle.HOST_TRANSITIONS`
and writes it (compare-and-swap on the row's version) with the caller's other
changes, inside the caller's transaction. :func:`start_host_work` then starts
what entering the state asks for (monitor now, wake the scheduler, reschedule
the host's VMs, mark them UNKNOWN) once the transaction has committed. The operators' use cases
(``service.hosts``) and the monitor (``daemon.monitor``) both go through them;
nothing else writes a host's ``STATE``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection

from cloudburst.model.host_lifecycle import HostEvent, HostMove, HostWork, host_move
from cloudburst.model.records import HostRecord
from cloudburst.store import host_pool

__all__ = ["HostStepped", "HostWorkers", "host_step", "start_host_work"]


@dataclass(frozen=True, slots=True)
class HostStepped:
    """What :func:`host_step` did: the host as written (as it was, when deleted) and the move."""

    host: HostRecord
    move: HostMove


def host_step(connection: Connection, host: HostRecord, event: HostEvent,
              **changes: Any) -> HostStepped:
    """Apply ``event`` to ``host`` (as read in this transaction) and write it with ``changes``.

    ``CREATE`` inserts ``host`` (its state and previous state set by the
    table); ``DELETE`` removes its row; any other event updates it.

    Raises:
        StateRefusedError: the move is not in the table (one line naming both).
        ConflictError: another writer changed the host since it was read.
    """
    if event is HostEvent.CREATE:
        moved = host_move(None, event)
        assert moved.to is not None
        created = replace(host, state=moved.to, prev_state=moved.to)
        host_pool.insert_host(connection, created)
        return HostStepped(created, moved)
    moved = host_move(host.state, event)
    if moved.to is None:
        host_pool.delete_host(connection, host.id)
        return HostStepped(host, moved)
    values = dict(changes)
    values["state"] = moved.to
    return HostStepped(host_pool.update_host(connection, host, **values), moved)


@dataclass(frozen=True, slots=True)
class HostWorkers:
    """Who does each :class:`HostWork` (the monitor, the scheduler, the VM use cases)."""

    monitor: Callable[[int], None]
    schedule: Callable[[], None]
    #: Reschedule every VM on the host; absent where no flush can happen.
    reschedule: Callable[[int], Awaitable[None]] | None = None
    #: Set the host's RUNNING VMs UNKNOWN (its monitoring failed: the host as
    #: written, with its error); absent where no monitoring outcome is written.
    unobserved: Callable[[HostRecord], Awaitable[None]] | None = None


async def start_host_work(workers: HostWorkers, stepped: HostStepped) -> None:
    """Start the work the move asks for (after its write has committed)."""
    work = stepped.move.work
    if HostWork.RESCHEDULE in work:
        if workers.reschedule is None:
            raise RuntimeError("a flush needs a reschedule worker")
        await workers.reschedule(stepped.host.id)
    if HostWork.UNOBSERVED in work:
        if workers.unobserved is None:
            raise RuntimeError("a failed monitoring needs an unobserved worker")
        await workers.unobserved(stepped.host)
    if HostWork.MONITOR in work:
        workers.monitor(stepped.host.id)
    if HostWork.SCHEDULE in work:
        workers.schedule()
