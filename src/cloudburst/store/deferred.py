"""The writes of a batch of VM changes, sent as one statement each.

A batch of state changes (:func:`cloudburst.daemon.lifecycle.base.step_batch`)
makes, for each VM, writes that nothing later in the same change reads back: its
row's compare-and-swap, its stay's record, a journal entry begun or closed, a
backoff ended. Executed one by one they cost a statement per VM each;
:class:`Deferred` keeps them and runs each statement once with every VM's
parameters (``executemany``) when flushed. A compare-and-swap is checked by the
count of rows its statement changed: when one found its row changed, the flush
fails and the caller runs the changes again one by one, each with its own writes.

Each VM's writes run in the order they were asked; writes of different VMs touch
different rows, so their order between VMs does not matter. The caller flushes
before a change of a VM that has deferred writes (that change may read them),
before a read of other VMs' rows (a quota's usage, a host's), and at the end of
the batch, inside the batch's transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Executable

from cloudburst.errors import ConflictError
from cloudburst.store.prepared import execute_many


class Deferred:
    """Deferred blind writes of some VMs (see the module docstring)."""

    __slots__ = ("_checked", "_writes")

    def __init__(self) -> None:
        #: Each VM's writes, in the order they were asked.
        self._writes: dict[int, list[tuple[Executable, dict[str, Any]]]] = {}
        #: Statements each of whose rows must change exactly one row.
        self._checked: set[Executable] = set()

    def add(self, vm_id: int, statement: Executable, params: dict[str, Any], *,
            checked: bool = False) -> None:
        """Run ``statement`` with ``params`` (about VM ``vm_id``) at the next flush;
        ``checked``: it must change one row (a compare-and-swap), else the flush fails."""
        self._writes.setdefault(vm_id, []).append((statement, params))
        if checked:
            self._checked.add(statement)

    def touches(self, vm_id: int) -> bool:
        """Whether a write about VM ``vm_id`` waits for the next flush."""
        return vm_id in self._writes

    def flush(self, connection: Connection) -> None:
        """Run the waiting writes: each VM's in the order asked (its n-th write goes in
        round n), each statement of a round once for all the VMs that asked it.

        Raises:
            ConflictError: a checked write found its row changed (which one is not
                known: run the changes again one by one to tell).
        """
        writes, self._writes = self._writes, {}
        rounds = max((len(asked) for asked in writes.values()), default=0)
        for turn in range(rounds):
            grouped: dict[Executable, list[dict[str, Any]]] = {}
            for asked in writes.values():
                if turn < len(asked):
                    statement, params = asked[turn]
                    grouped.setdefault(statement, []).append(params)
            for statement, rows in grouped.items():
                # One row per VM in a round, each about its own VM: disjoint.
                changed = execute_many(connection, statement, rows, disjoint=True)
                if statement in self._checked and changed != len(rows):
                    raise ConflictError(f"{len(rows) - changed} of {len(rows)} VMs "
                                        "were changed by another action; try again")

    def discard(self) -> None:
        """Forget the waiting writes (their transaction was rolled back)."""
        self._writes = {}
