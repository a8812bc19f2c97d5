"""Quota limits and the usage they are checked against.

Usage is **derived** from the VM pool (VMs not yet DONE), like host
allocation, so it cannot drift from the VMs that hold it. As in OpenNebula
6.10, the RUNNING_* metrics count the VMs in :data:`RUNNING_STATES` (a held VM
counts, a powered-off, suspended, stopped or undeployed one does not): a new
VM is checked against them (:func:`check_vm`) and so is a VM an action brings
back into them (:func:`check_running`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import Connection, bindparam, delete, func, insert, or_, select

from cloudburst.auth import quotas as auth_quotas
from cloudburst.auth.quotas import ALL_CLUSTERS, Limit
from cloudburst.errors import QuotaError
from cloudburst.model import cost
from cloudburst.model.records import VmRecord
from cloudburst.model.states import VmState
from cloudburst.store.deferred import Deferred
from cloudburst.store.schema import history, hosts, quotas, vms

#: VM states that count in the RUNNING_* metrics.
RUNNING_STATES: Final = frozenset({VmState.PENDING, VmState.HOLD, VmState.ACTIVE})
_RUNNING: Final = frozenset(int(state) for state in RUNNING_STATES)
_GONE = int(VmState.DONE)


def limits_of(connection: Connection, owner_kind: str, owner_ids: list[int] | None
              ) -> list[Limit]:
    """The limits of these owners (id -1 is the kind's default; None: every owner)."""
    if owner_ids is None:
        rows = connection.execute(_LIMITS_OF_KIND, {"kind": owner_kind})
    else:
        rows = connection.execute(_LIMITS_OF, {"kind": owner_kind, "owners": owner_ids})
    return [Limit(row.owner_kind, row.owner_id, row.cluster_id, row.metric, row.limit)
            for row in rows]


# Built once: every placement reads limits (a hot path in a burst).
_LIMITS_OF_KIND = select(quotas).where(quotas.c.owner_kind == bindparam("kind"))
_LIMITS_OF = _LIMITS_OF_KIND.where(quotas.c.owner_id.in_(bindparam("owners", expanding=True)))


def _limits(connection: Connection, owner_kind: str, owner_ids: list[int],
            memo: dict[Any, Any] | None) -> list[Limit]:
    """:func:`limits_of`, kept in ``memo`` when there is one."""
    if memo is None:
        return limits_of(connection, owner_kind, owner_ids)
    key = ("limits", owner_kind, tuple(owner_ids))
    if key not in memo:
        memo[key] = limits_of(connection, owner_kind, owner_ids)
    found: list[Limit] = memo[key]
    return found


def set_limits(connection: Connection, owner_kind: str, owner_id: int,
               limits: list[tuple[int, str, float]]) -> None:
    """Set ``(cluster_id, metric, limit)`` limits; other metrics keep theirs."""
    for cluster_id, metric, limit in limits:
        connection.execute(delete(quotas).where(
            quotas.c.owner_kind == owner_kind, quotas.c.owner_id == owner_id,
            quotas.c.cluster_id == cluster_id, quotas.c.metric == metric))
        connection.execute(insert(quotas).values(owner_kind=owner_kind, owner_id=owner_id,
                                                 cluster_id=cluster_id, metric=metric,
                                                 limit=limit))


def delete_limits(connection: Connection, owner_kind: str, owner_id: int) -> None:
    connection.execute(delete(quotas).where(quotas.c.owner_kind == owner_kind,
                                            quotas.c.owner_id == owner_id))


def usage(connection: Connection, owner_kind: str, owner_id: int
          ) -> dict[int, dict[str, float]]:
    """VM usage of a user (``uid``) or group (``gid``) per cluster id, and in total
    under :data:`ALL_CLUSTERS`. VMs not placed yet count in the total only.
    Money (``HOURLY_COST``, ``MONTHLY_COST``) comes from :func:`spent`; a
    ``cluster`` (a site's own budget) has money only, under :data:`ALL_CLUSTERS`."""
    if owner_kind == "cluster":
        return {ALL_CLUSTERS: spent(connection, "cluster", owner_id).get(owner_id, {})}
    totals = _vm_usage(connection, owner_kind, owner_id)
    for cluster, money in spent(connection, owner_kind, owner_id).items():
        totals.setdefault(cluster, {}).update(money)
    return totals


def spent(connection: Connection, owner_kind: str, owner_id: int,
          now: float | None = None) -> dict[int, dict[str, float]]:
    """``{cluster id: {"HOURLY_COST": ..., "MONTHLY_COST": ...}}`` of an owner's cloud
    stays (recorded prices), and the totals under :data:`ALL_CLUSTERS`; the owner
    is a ``user``, a ``group`` or a ``cluster`` (every VM's stays there)."""
    moment = time.time() if now is None else now
    since = cost.month_start(moment)
    column = {"user": vms.c.uid, "group": vms.c.gid, "cluster": hosts.c.cluster_id}[owner_kind]
    query = (select(history.c.price, history.c.stime, history.c.etime, hosts.c.cluster_id)
             .select_from(history.join(vms, vms.c.id == history.c.vm_id)
                          .outerjoin(hosts, hosts.c.id == history.c.host_id))
             .where(column == owner_id, history.c.price.is_not(None),
                    or_(history.c.etime == 0, history.c.etime >= int(since))))
    money: dict[int, dict[str, float]] = defaultdict(
        lambda: {"HOURLY_COST": 0.0, "MONTHLY_COST": 0.0})
    money[ALL_CLUSTERS]  # always present
    for price, start, end, cluster_id in connection.execute(query):
        keys = [ALL_CLUSTERS] if cluster_id is None else [ALL_CLUSTERS, cluster_id]
        month = cost.stay_cost(price, start, end, moment, since)
        for key in keys:
            if end == 0:
                money[key]["HOURLY_COST"] += price
            money[key]["MONTHLY_COST"] += month
    return dict(money)


def _vm_usage(connection: Connection, owner_kind: str, owner_id: int
              ) -> dict[int, dict[str, float]]:
    column = vms.c.uid if owner_kind == "user" else vms.c.gid
    query = (select(vms.c.state, vms.c.cpu, vms.c.memory, hosts.c.cluster_id)
             .select_from(vms.outerjoin(hosts, hosts.c.id == vms.c.host_id))
             .where(column == owner_id, vms.c.state != _GONE))
    totals: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    totals[ALL_CLUSTERS]  # always present
    for state, cpu, memory, cluster_id in connection.execute(query):
        keys = [ALL_CLUSTERS] if cluster_id is None else [ALL_CLUSTERS, cluster_id]
        for key in keys:
            used = totals[key]
            used["VMS"] += 1
            used["CPU"] += cpu
            used["MEMORY"] += memory
            if state in _RUNNING:
                used["RUNNING_VMS"] += 1
                used["RUNNING_CPU"] += cpu
                used["RUNNING_MEMORY"] += memory
    return {key: dict(value) for key, value in totals.items()}


def count_vms(connection: Connection, owner_kind: str, owner_id: int) -> int:
    """Live VMs a user or group owns."""
    column = vms.c.uid if owner_kind == "user" else vms.c.gid
    return int(connection.execute(select(func.count()).select_from(vms).where(
        column == owner_id, vms.c.state != _GONE)).scalar_one())


#: ``{cluster_id: {metric: limit}}``.
LimitMap = dict[int, dict[str, float]]

_EXEMPT = auth_quotas.EXEMPT


def limit_map(limits: list[Limit], owner_id: int) -> LimitMap:
    """The limits of one owner as ``{cluster_id: {metric: limit}}``."""
    found: LimitMap = defaultdict(dict)
    for limit in limits:
        if limit.owner_id == owner_id:
            found[limit.cluster_id][limit.metric] = limit.limit
    return dict(found)


def check_vm(connection: Connection, *, uid: int, gid: int, cpu: float, memory: float,
             cluster_id: int = ALL_CLUSTERS, price: float | None = None,
             memo: dict[Any, Any] | None = None, later: Deferred | None = None) -> None:
    """Refuse a new VM (``cluster_id`` -1: its totals) or a VM's placement in cluster
    ``cluster_id`` (that cluster's limits, and every budget) that would break a quota.

    A placement at ``price`` per hour must fit the hourly budgets, and an hour
    of it what is left of the monthly ones, both of the cluster and in total.
    ``memo`` keeps the limits read, for the other placements of one transaction
    (limits do not change there; usage is read each time, as it does), after
    ``later``'s writes are flushed (the usage counts them).

    Raises:
        QuotaError: oned's "limit of N reached for METRIC quota" message (a
            budget's says "budget of N").
    """
    request = {"VMS": 1.0, "CPU": cpu, "MEMORY": float(memory), **_running(cpu, memory)}
    money = {metric: price for metric in auth_quotas.BUDGET_METRICS} if price else {}
    _check(connection, uid, gid, request, cluster_id, money=money, action=False, memo=memo,
           later=later)
    if money and cluster_id != ALL_CLUSTERS:
        _check_site_budget(connection, cluster_id, money, memo, later)


def _check_site_budget(connection: Connection, cluster_id: int,
                       money: dict[str, float], memo: dict[Any, Any] | None,
                       later: Deferred | None) -> None:
    """A site's own budgets (``one.cluster.quota``) bind every owner, oneadmin too."""
    limits = limit_map(_limits(connection, "cluster", [cluster_id], memo), cluster_id)
    own = limits.get(ALL_CLUSTERS, {})
    if not any(limit >= 0 for limit in own.values()):
        return
    if later is not None:
        later.flush(connection)
    used = usage(connection, "cluster", cluster_id)[ALL_CLUSTERS]
    broken = auth_quotas.first_exceeded(own, used, money)
    if broken is not None:
        raise QuotaError(f"Cluster [{cluster_id}] : budget of {broken[1]:g} reached for "
                         f"{broken[0]} quota in VM.", budget=True)


def check_running(connection: Connection, vm: VmRecord, *, stays_on_host: bool,
                  later: Deferred | None = None) -> None:
    """Refuse an action that brings ``vm`` (not in :data:`RUNNING_STATES`) back into
    the RUNNING_* metrics beyond its owner's or group's limits: the totals, and the
    cluster of its host when it ``stays_on_host`` (a VM that goes back to PENDING
    is checked for its cluster when it is placed again).

    Raises:
        QuotaError: oned's action refusal ("user [2] limit of 1 reached for
            RUNNING_VMS quota in VM", an action error).
    """
    request = _running(vm.cpu, vm.memory)
    _check(connection, vm.uid, vm.gid, request, ALL_CLUSTERS, money={}, action=True,
           later=later)
    if stays_on_host and vm.host_id is not None:
        cluster = connection.execute(select(hosts.c.cluster_id).where(
            hosts.c.id == vm.host_id)).scalar()
        if cluster is not None:
            _check(connection, vm.uid, vm.gid, request, int(cluster), money={}, action=True,
                   later=later)


def _running(cpu: float, memory: float) -> dict[str, float]:
    return {"RUNNING_VMS": 1.0, "RUNNING_CPU": cpu, "RUNNING_MEMORY": float(memory)}


def _check(connection: Connection, uid: int, gid: int, request: Mapping[str, float],
           cluster_id: int, *, money: Mapping[str, float], action: bool,
           memo: dict[Any, Any] | None = None, later: Deferred | None = None) -> None:
    """Raise the first limit ``request`` (in ``cluster_id``) and ``money`` (also in
    total) would break, for the user and the group (usage read after ``later``'s
    writes are flushed)."""
    for kind, owner in (("user", uid), ("group", gid)):
        if owner == _EXEMPT:
            continue
        limits = _limits(connection, kind, [owner, -1], memo)
        own, defaults = limit_map(limits, owner), limit_map(limits, -1)
        checks = [(cluster_id, {**request, **money})]
        if money and cluster_id != ALL_CLUSTERS:
            checks.append((ALL_CLUSTERS, dict(money)))
        for scope, wanted in checks:
            effective = _effective(own.get(scope, {}), defaults.get(scope, {}))
            if not any(effective.get(metric, -1.0) >= 0 for metric in wanted):
                continue  # nothing limited: skip reading the usage
            if later is not None:
                later.flush(connection)
            used = usage(connection, kind, owner).get(scope, {})
            broken = auth_quotas.first_exceeded(effective, used, wanted)
            if broken is not None:
                raise auth_quotas.exceeded_error(kind, owner, uid, broken[0], broken[1], scope,
                                                 action=action)


def _effective(mine: dict[str, float], default: dict[str, float]) -> dict[str, float]:
    return {metric: auth_quotas.effective(mine.get(metric, auth_quotas.DEFAULT),
                                          default.get(metric))
            for metric in set(mine) | set(default)}
