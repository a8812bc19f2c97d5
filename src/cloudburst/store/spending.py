"""Money spent: the recorded prices of stays (``history.price``) over time.

Like quota usage, spending is **derived** from the pool (each stay's price is
fixed when it opens, or set by the provider's bill once the driver knows it:
:func:`reprice_open_stay`), never kept as a counter. Stays without a price (local
hosts, unknown prices) cost nothing here: budgets count cloud spending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, or_, select, update

from cloudburst.model.cost import stay_cost
from cloudburst.store.schema import history, hosts, vms


@dataclass(frozen=True, slots=True)
class Spending:
    """``hourly``: what the open stays cost per hour; ``accrued``: spent since ``since``."""

    hourly: float = 0.0
    accrued: float = 0.0


def spending(connection: Connection, *, now: float, since: float = 0.0,
             host_id: int | None = None, uid: int | None = None, gid: int | None = None,
             cluster_id: int | None = None) -> Spending:
    """The spending of one host, owner (user or group) and/or cluster, from ``since``."""
    query = (select(history.c.price, history.c.stime, history.c.etime)
             .select_from(history.join(vms, vms.c.id == history.c.vm_id))
             .where(history.c.price.is_not(None)))
    if since > 0:
        query = query.where(or_(history.c.etime == 0, history.c.etime >= int(since)))
    if host_id is not None:
        query = query.where(history.c.host_id == host_id)
    if uid is not None:
        query = query.where(vms.c.uid == uid)
    if gid is not None:
        query = query.where(vms.c.gid == gid)
    if cluster_id is not None:
        query = query.join(hosts, hosts.c.id == history.c.host_id).where(
            hosts.c.cluster_id == cluster_id)
    hourly = accrued = 0.0
    for price, start, end in connection.execute(query):
        if end == 0:
            hourly += price
        accrued += stay_cost(price, start, end, now, since)
    return Spending(hourly, accrued)


def open_stay_prices(connection: Connection, host_ids: Sequence[int]) -> dict[int, float]:
    """``{vm id: price}`` of the priced stays still open on ``host_ids``."""
    query = (select(history.c.vm_id, history.c.price)
             .where(history.c.host_id.in_(list(host_ids)), history.c.etime == 0,
                    history.c.price.is_not(None)))
    return {int(vm_id): float(price) for vm_id, price in connection.execute(query)}


def reprice_open_stay(connection: Connection, vm_id: int, price: float) -> bool:
    """Record ``price`` as the price of VM ``vm_id``'s open stay; whether it changed.

    For a driver that knows the provider's bill better than the price the stay
    opened with (an EC2 spot instance's zone price, ``PollResult.price``).
    """
    result = connection.execute(
        update(history)
        .where(history.c.vm_id == vm_id, history.c.etime == 0,
               or_(history.c.price.is_(None), history.c.price != price))
        .values(price=price))
    return bool(result.rowcount)
