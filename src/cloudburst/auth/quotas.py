"""Quotas over named metrics, per user and per group, optionally per cluster.

A limit is a number, or ``DEFAULT`` (-1: take the default of the kind) or
``UNLIMITED`` (-2). The engine knows no metric by name: a caller passes what
an action would add (e.g. ``{"VMS": 1, "CPU": 0.5, "MEMORY": 128}``) and the
current usage, and gets the first limit it would break.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cloudburst.errors import QuotaActionError, QuotaError

DEFAULT: Final = -1.0
UNLIMITED: Final = -2.0

#: Money budgets (a cloudburst extension): what a user's or group's cloud stays cost
#: per hour now, and have cost since the start of the month (UTC), in the sites'
#: price unit. A placement that would take either beyond its limit within the
#: next hour is refused (``model/cost.py``, ``store/quota_pool.check_budget``).
BUDGET_METRICS: Final = ("HOURLY_COST", "MONTHLY_COST")

#: The VM metrics, in ``oneuser show``'s order; RUNNING_* count PENDING, HOLD and
#: ACTIVE VMs.
VM_METRICS: Final = ("VMS", "MEMORY", "CPU", "RUNNING_VMS", "RUNNING_MEMORY", "RUNNING_CPU",
                     *BUDGET_METRICS)

#: Cluster id of limits that count every cluster.
ALL_CLUSTERS: Final = -1

#: The owner id quotas never apply to, as a user and as a group (oned: oneadmin).
EXEMPT: Final = 0


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit of one owner (``user``/``group`` and id; -1 is the kind's default)."""

    owner_kind: str
    owner_id: int
    cluster_id: int
    metric: str
    limit: float


def effective(limit: float, default: float | None) -> float:
    """The limit that applies: ``DEFAULT`` resolves to the kind's default."""
    if limit == DEFAULT:
        return UNLIMITED if default is None else default
    return limit


def first_exceeded(limits: Mapping[str, float], usage: Mapping[str, float],
                   request: Mapping[str, float]) -> tuple[str, float] | None:
    """The first ``(metric, limit)`` that ``usage + request`` would go beyond, if any.

    ``limits`` are already :func:`effective`; metrics without a limit are free.
    """
    for metric, amount in request.items():
        limit = limits.get(metric, UNLIMITED)
        if limit < 0 or amount <= 0:
            continue
        if usage.get(metric, 0.0) + amount > limit + 1e-9:
            return metric, limit
    return None


def shown_clusters(limits: Mapping[int, Mapping[str, float]],
                   usage: Mapping[int, Mapping[str, float]]) -> list[int]:
    """The clusters an owner's quota lists (``oneuser show``, ``one.user.info``, the
    dashboard): those with a limit, and all clusters once anything is used."""
    return sorted(set(limits) | ({ALL_CLUSTERS} if usage.get(ALL_CLUSTERS) else set()))


def exceeded_error(owner_kind: str, owner_id: int, uid: int, metric: str, limit: float,
                   cluster_id: int = ALL_CLUSTERS, *, action: bool = False) -> QuotaError:
    """oned's quota refusal, e.g. ``User [2] : user [2] limit of 2 reached for VMS quota
    in VM.``; a per-cluster limit names its cluster. Refusing an ``action`` on an
    existing VM, oned words it without the caller and answers an action error:
    ``user [2] limit of 1 reached for RUNNING_VMS quota in VM``."""
    shown = f"{limit:g}"
    where = "VM" if cluster_id == ALL_CLUSTERS else f"VM of CLUSTER [{cluster_id}]"
    if metric in BUDGET_METRICS:
        return QuotaError(f"User [{uid}] : {owner_kind} [{owner_id}] budget of {shown} "
                          f"reached for {metric} quota in {where}.", budget=True)
    reason = f"{owner_kind} [{owner_id}] limit of {shown} reached for {metric} quota in {where}"
    if action:
        return QuotaActionError(reason)
    return QuotaError(f"User [{uid}] : {reason}.")
