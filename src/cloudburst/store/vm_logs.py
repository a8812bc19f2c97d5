"""Each VM's log in the store: every daemon that led while the VM lived adds to it,
and any daemon shows the whole of it (``onevm show``'s log, the dashboard, the
web API's VM document).

Lines are appended in batches by :class:`cloudburst.daemon.files.VmFiles`;
``time`` is UNIX time, ``level`` one letter (``I``, ``W``, ``E``, ``D``).
Messages never carry secrets (the writers see to it, as for any log).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Connection, insert, select

from cloudburst.store.prepared import execute_many
from cloudburst.store.schema import vm_logs


class LogLine(NamedTuple):
    """One line of a VM's log."""

    vm_id: int
    time: float
    level: str
    message: str

    def text(self) -> str:
        """The line as the log shows it: ``Thu Dec 03 09:20:00 2026 [I]: message``
        (the daemon's local time, as OpenNebula's VM logs)."""
        stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(self.time))
        return f"{stamp} [{self.level}]: {self.message}"


def append(connection: Connection, lines: Sequence[LogLine]) -> None:
    """Add ``lines`` (in their order) to their VMs' logs."""
    execute_many(connection, _INSERT, [line._asdict() for line in lines])


_INSERT = insert(vm_logs)


def tail(connection: Connection, vm_id: int, count: int) -> list[LogLine]:
    """The last ``count`` lines of VM ``vm_id``'s log, oldest first."""
    rows = connection.execute(
        select(vm_logs.c.vm_id, vm_logs.c.time, vm_logs.c.level, vm_logs.c.message)
        .where(vm_logs.c.vm_id == vm_id).order_by(vm_logs.c.id.desc()).limit(count))
    return [LogLine(*row) for row in reversed(rows.all())]
