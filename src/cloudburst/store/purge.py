"""Deleting what the store keeps of VMs long ``DONE`` (``cloudburst purge-done``).

A terminated VM stays in the store, as in OpenNebula: ``onevm show`` and the
pool listings with state ``-2`` still show it, accounting reads its stays. On a
busy cloud those rows (the VM, its stays, its journal entries, its log lines)
grow without end; an operator deletes the ones they no longer need, as
``onedb purge-done`` does for oned.

Safe while daemons run on the store: only VMs ``DONE`` for at least
:data:`SETTLE_SECONDS` (by default) are taken (their last log lines and journal closes have
landed), never one with an unfinished journal entry, and each batch of
:data:`BATCH` VMs is its own short transaction, so the daemon's writes wait for
a moment at most. Ids are never reused (``sequences``), so a purged VM's id
stays unused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from sqlalchemy import Connection, Engine, delete, exists, select
from sqlalchemy.exc import SQLAlchemyError

from cloudburst.errors import CloudburstError
from cloudburst.model.states import VmState
from cloudburst.store.audit_log import AuditEntry, record
from cloudburst.store.database import make_engine
from cloudburst.store.identity import sqlite_path, store_exists
from cloudburst.store.schema import history, journal, recalls, vm_backoffs, vm_logs, vms

__all__ = ["BATCH", "SETTLE_SECONDS", "PurgeError", "purge", "purge_done", "purgeable"]

#: A VM is taken once it has been DONE this long (what a daemon still writes of a
#: VM that just ended lands within seconds).
SETTLE_SECONDS = 60
#: VMs deleted per transaction.
BATCH = 500



class PurgeError(CloudburstError):
    """The purge could not run or stopped; ``purged`` are the VMs already deleted."""

    def __init__(self, message: str, purged: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.purged = list(purged)


def purge_done(url: str, start: float, end: float, *, operator: str,
               settle: float = SETTLE_SECONDS, dry_run: bool = False,
               on_batch: Callable[[list[int]], None] = lambda _: None) -> list[int]:
    """Purge (:func:`purge`) the VMs of store ``url`` that :func:`purgeable` finds, ``end``
    held to ``settle`` seconds ago at the latest; call ``on_batch`` with each batch
    once committed; record the purge in the audit trail as done by ``operator``.
    With ``dry_run`` only find them. Returns the ids (purged, or that would be).

    Raises:
        PurgeError: there is no store at ``url``, or the store failed (with what was
            purged before).
    """
    end = min(end, time.time() - settle)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise PurgeError(f"there is no store at {path}")
    engine = make_engine(url, writer=True)
    purged: list[int] = []
    try:
        if not store_exists(engine):
            raise PurgeError("the store holds no cloudburst data")
        with engine.connect() as connection:
            wanted = purgeable(connection, start, end)
        if dry_run:
            return wanted
        for batch in purge(engine, wanted):
            purged.extend(batch)
            on_batch(batch)
        if purged:
            with engine.begin() as connection:
                record(connection, AuditEntry(
                    0, time.time(), -1, operator, "purge-done", "VM", True,
                    f"{len(purged)} VMs: {id_ranges(purged)}"))
        return purged
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise PurgeError(f"the store failed: {reason}", purged) from None
    finally:
        engine.dispose()


def id_ranges(vm_ids: Sequence[int]) -> str:
    """``3-5, 9``: ascending ids as ranges."""
    spans: list[list[int]] = []
    for vm_id in vm_ids:
        if spans and vm_id == spans[-1][-1] + 1:
            spans[-1][-1:] = [vm_id] if len(spans[-1]) == 2 else [spans[-1][0], vm_id]
        else:
            spans.append([vm_id])
    return ", ".join("-".join(map(str, span)) for span in spans)


_OPEN_WORK = exists().where(journal.c.vm_id == vms.c.id, journal.c.status == "started")


def purgeable(connection: Connection, start: float, end: float) -> list[int]:
    """Ids of the VMs ``DONE`` with an end time in ``[start, end)``, with no unfinished
    journal entry, lowest first."""
    return list(connection.execute(
        select(vms.c.id)
        .where(vms.c.state == int(VmState.DONE), vms.c.etime >= start, vms.c.etime < end,
               ~_OPEN_WORK)
        .order_by(vms.c.id)).scalars())


def purge(engine: Engine, vm_ids: Sequence[int]) -> Iterator[list[int]]:
    """Delete the VMs ``vm_ids`` and every row kept for them, :data:`BATCH` at a time;
    yield each batch's ids once committed. A VM no longer ``DONE`` (or gone) when its
    batch runs is left as it is."""
    for first in range(0, len(vm_ids), BATCH):
        wanted = list(vm_ids[first:first + BATCH])
        with engine.begin() as connection:
            taken = list(connection.execute(
                select(vms.c.id).where(vms.c.id.in_(wanted),
                                       vms.c.state == int(VmState.DONE), ~_OPEN_WORK)
            ).scalars())
            if taken:
                for table in (history, journal, vm_logs, vm_backoffs, recalls):
                    connection.execute(delete(table).where(table.c.vm_id.in_(taken)))
                connection.execute(delete(vms).where(vms.c.id.in_(taken)))
        if taken:
            yield taken
