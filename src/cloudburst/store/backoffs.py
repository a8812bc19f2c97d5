"""Per-VM backoffs of the leader's work, kept in the store so a new leader continues them.

Two kinds of work back off (the ``work`` column):

* ``deploy``: after a deploy found no room, created nothing before an outage, or
  was refused by a quota, the VM is kept off that host until ``until``; the
  scheduler reads :func:`skipped_hosts` on every pass. ``tries`` counts the
  deploys in a row that failed having created nothing (the retry delay grows
  with it); a deploy that succeeds clears the VM's rows.
* ``stop``: a stop (shutdown, cancel, cleanup) that hit an outage is tried again
  at ``until``; ``tries`` counts them in a row. A stop that succeeds clears it.

Times are UNIX times (``time.time()``): every daemon of a shared store reads them.
Rows of VMs that went away without succeeding are purged once long expired.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, func, insert, select

from cloudburst.store.deferred import Deferred
from cloudburst.store.schema import vm_backoffs

DEPLOY = "deploy"
STOP = "stop"

#: Seconds after its expiry that a row is forgotten (its ``tries`` with it).
PURGE_AFTER = 3600.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """VM ``vm_id``'s ``work`` on ``host_id`` waits until ``until``, after ``tries`` tries."""

    vm_id: int
    work: str
    host_id: int
    tries: int
    until: float


def record(connection: Connection, vm_id: int, work: str, host_id: int, *, tries: int,
           until: float) -> None:
    """Set the backoff of ``vm_id``'s ``work`` on ``host_id``."""
    connection.execute(delete(vm_backoffs).where(
        vm_backoffs.c.vm_id == vm_id, vm_backoffs.c.work == work,
        vm_backoffs.c.host_id == host_id))
    connection.execute(insert(vm_backoffs).values(vm_id=vm_id, work=work, host_id=host_id,
                                                  tries=tries, until=until))


def tries(connection: Connection, vm_id: int, work: str) -> int:
    """Failed tries in a row of ``vm_id``'s ``work`` (0 when it has no backoff)."""
    value = connection.execute(select(func.max(vm_backoffs.c.tries)).where(
        vm_backoffs.c.vm_id == vm_id, vm_backoffs.c.work == work)).scalar()
    return int(value or 0)


def due(connection: Connection, vm_id: int, work: str) -> float | None:
    """When ``vm_id``'s ``work`` may be tried again (UNIX time), None if not backing off."""
    value = connection.execute(select(func.max(vm_backoffs.c.until)).where(
        vm_backoffs.c.vm_id == vm_id, vm_backoffs.c.work == work)).scalar()
    return None if value is None else float(value)


#: The backoff a work's success ends, by the work's journal label.
CLEARED_BY: dict[str, str] = {"deploy": DEPLOY, "shutdown": STOP, "cancel": STOP,
                              "cleanup": STOP}


def clear(connection: Connection, vm_id: int, work: str, *, later: Deferred | None = None
          ) -> None:
    """``vm_id``'s ``work`` succeeded: forget its backoff (at ``later``'s flush, if given)."""
    params = {"_vm_id": vm_id, "_work": work}
    if later is not None:
        later.add(vm_id, _CLEAR, params)
    else:
        connection.execute(_CLEAR, params)


# Built once (a hot path: every successful deploy and stop).
_CLEAR = delete(vm_backoffs).where(vm_backoffs.c.vm_id == bindparam("_vm_id"),
                                   vm_backoffs.c.work == bindparam("_work"))


def active(connection: Connection, work: str, now: float) -> list[Backoff]:
    """Backoffs of ``work`` not yet expired at ``now``."""
    rows = connection.execute(select(vm_backoffs).where(
        vm_backoffs.c.work == work, vm_backoffs.c.until > now))
    return [Backoff(int(row.vm_id), str(row.work), int(row.host_id), int(row.tries),
                    float(row.until)) for row in rows]


def skipped_hosts(connection: Connection, now: float) -> dict[int, dict[int, float]]:
    """``{vm_id: {host_id: until}}``: hosts each VM is kept off at ``now`` after a deploy."""
    found: dict[int, dict[int, float]] = {}
    for backoff in active(connection, DEPLOY, now):
        found.setdefault(backoff.vm_id, {})[backoff.host_id] = backoff.until
    return found


def purge(connection: Connection, now: float) -> None:
    """Forget rows that expired more than :data:`PURGE_AFTER` seconds before ``now``."""
    connection.execute(delete(vm_backoffs).where(vm_backoffs.c.until < now - PURGE_AFTER))
