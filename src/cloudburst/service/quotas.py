"""Quotas: limits per user and group (with defaults), usage, and the allocation check.

Limits are set with OpenNebula's quota template, e.g.
``VM = [ VMS = 2, CPU = 1, MEMORY = 1024 ]``; a ``CLUSTER_ID`` inside a VM
vector makes it a per-cluster (per-site) limit, a cloudburst extension.
Checks run inside the allocation's write transaction, so two racing
allocations cannot both take the last unit (``store/quota_pool.check_vm``).
"""

from __future__ import annotations

from sqlalchemy import Connection

from cloudburst.auth import quotas
from cloudburst.auth.quotas import ALL_CLUSTERS, BUDGET_METRICS, VM_METRICS
from cloudburst.errors import ValidationError
from cloudburst.store import quota_pool
from cloudburst.store.database import Database
from cloudburst.store.quota_pool import LimitMap
from cloudburst.template import parse_any


def parse_quota_template(text: str) -> list[tuple[int, str, float]]:
    """``(cluster_id, metric, limit)`` of every VM vector in a quota template.

    Raises:
        ValidationError: an unknown metric or a value that is not a number >= -2.
    """
    template = parse_any(text)
    found: list[tuple[int, str, float]] = []
    for vector in template.vectors("VM"):
        values = dict(vector.items())
        cluster_text = values.pop("CLUSTER_ID", str(ALL_CLUSTERS))
        try:
            cluster_id = int(cluster_text)
        except ValueError:
            raise ValidationError(f"Wrong CLUSTER_ID {cluster_text!r} in VM quota") from None
        for metric, value in values.items():
            if metric == "SYSTEM_DISK_SIZE":
                continue
            if metric not in VM_METRICS:
                raise ValidationError(f"Unknown VM quota {metric}: use {', '.join(VM_METRICS)}")
            try:
                number = float(value)
            except ValueError:
                number = -3.0
            if number < quotas.UNLIMITED:
                raise ValidationError(f"Wrong value {value!r} for {metric} quota: use a number, "
                                      "-1 (default) or -2 (unlimited)")
            found.append((cluster_id, metric, number))
    return found


class QuotaService:
    """Reads and sets quotas of users and groups and their defaults."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def limits(self, kind: str, owner_id: int) -> LimitMap:
        """The limits set for one owner (-1: the defaults of ``kind``)."""
        limits = await self.db.read(lambda c: quota_pool.limits_of(c, kind, [owner_id]))
        return quota_pool.limit_map(limits, owner_id)

    async def all_limits(self, kind: str) -> dict[int, LimitMap]:
        """The limits of every owner of ``kind`` that has some."""
        def read(connection: Connection) -> dict[int, LimitMap]:
            limits = quota_pool.limits_of(connection, kind, None)
            owners = {limit.owner_id for limit in limits}
            return {owner: quota_pool.limit_map(limits, owner) for owner in owners}

        return await self.db.read(read)

    async def usage(self, kind: str, owner_id: int) -> dict[int, dict[str, float]]:
        return await self.db.read(lambda c: quota_pool.usage(c, kind, owner_id))

    async def set(self, kind: str, owner_id: int, text: str) -> None:
        """Apply a quota template to an owner (-1: the defaults); a ``cluster`` (a
        site's own budgets) takes budget metrics only, without ``CLUSTER_ID``.

        Raises:
            ValidationError: see :func:`parse_quota_template`; a cluster quota with
                another metric or a CLUSTER_ID.
        """
        limits = parse_quota_template(text)
        if kind == "cluster":
            for cluster_id, metric, _limit in limits:
                if cluster_id != ALL_CLUSTERS or metric not in BUDGET_METRICS:
                    raise ValidationError(f"A cluster's quota holds its budgets only "
                                          f"({', '.join(BUDGET_METRICS)}), without CLUSTER_ID")
        await self.db.write(lambda c: quota_pool.set_limits(c, kind, owner_id, limits))
