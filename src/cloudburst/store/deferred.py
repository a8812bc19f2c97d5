"""Blind writes of a batch of VM changes, sent as one statement each.

A batch of state changes (:func:`cloudburst.daemon.lifecycle.base.step_batch`)
makes, for each VM, writes whose outcome nothing in the transaction reads back
(a journal entry, the close of one, a backoff cleared). Executed one by one they
cost one statement per VM each; :class:`Deferred` keeps them and runs each
statement once with every VM's parameters (``executemany``) when flushed.

Each VM's writes run in the order they were asked; writes of different VMs
touch different rows, so their order between VMs does not matter. The caller
flushes before a change of a VM that has deferred writes (that change may read
them), and at the end of the batch, inside the batch's transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Executable


class Deferred:
    """Deferred blind writes of some VMs (see the module docstring)."""

    __slots__ = ("_writes",)

    def __init__(self) -> None:
        #: Each VM's writes, in the order they were asked.
        self._writes: dict[int, list[tuple[Executable, dict[str, Any]]]] = {}

    def add(self, vm_id: int, statement: Executable, params: dict[str, Any]) -> None:
        """Run ``statement`` with ``params`` (about VM ``vm_id``) at the next flush."""
        self._writes.setdefault(vm_id, []).append((statement, params))

    def touches(self, vm_id: int) -> bool:
        """Whether a write about VM ``vm_id`` waits for the next flush."""
        return vm_id in self._writes

    def flush(self, connection: Connection) -> None:
        """Run the waiting writes: each VM's in the order asked (its n-th write goes in
        round n), each statement of a round once for all the VMs that asked it."""
        writes, self._writes = self._writes, {}
        rounds = max((len(asked) for asked in writes.values()), default=0)
        for turn in range(rounds):
            grouped: dict[Executable, list[dict[str, Any]]] = {}
            for asked in writes.values():
                if turn < len(asked):
                    statement, params = asked[turn]
                    grouped.setdefault(statement, []).append(params)
            for statement, rows in grouped.items():
                connection.execute(statement, rows)

    def discard(self) -> None:
        """Forget the waiting writes (their transaction was rolled back)."""
        self._writes = {}
