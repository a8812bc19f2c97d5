"""The host pool.

Allocation counters (``cpu_usage``, ``mem_usage``, ``running_vms``, ``vm_ids``)
are not stored: they are derived from the VM pool whenever hosts are read, so
they can never drift from the VMs that hold the capacity.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Row,
    Update,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)

from cloudburst.errors import ConflictError, NotFoundError, PoolNameError
from cloudburst.model.cloud_sections import sites_by_type
from cloudburst.model.records import HostRecord
from cloudburst.model.states import CAPACITY_HOLDING_STATES, HostState
from cloudburst.store import vm_pool
from cloudburst.store.id_lists import one_of
from cloudburst.store.prepared import Prepared, rows_at_once
from cloudburst.store.schema import clusters, hosts, orphan_sightings, vms
from cloudburst.template import Template

_SHARE_FIELDS = ("max_cpu", "max_mem", "free_cpu", "free_mem", "used_cpu", "used_mem")


def _host_from_row(
    row: Row[Any], usage: tuple[int, int, int] = (0, 0, 0), vm_ids: Sequence[int] = ()
) -> HostRecord:
    return HostRecord(
        id=row.id, name=row.name, state=HostState(row.state),
        prev_state=HostState(row.prev_state), im_mad=row.im_mad, vm_mad=row.vm_mad,
        tm_mad=row.tm_mad, vn_mad=row.vn_mad, cluster_id=row.cluster_id,
        template=Template.from_stored_json(json.loads(row.template)),
        last_mon_time=row.last_mon_time, version=row.version, error=row.error,
        max_cpu=row.max_cpu, max_mem=row.max_mem, free_cpu=row.free_cpu,
        free_mem=row.free_mem, used_cpu=row.used_cpu, used_mem=row.used_mem,
        cpu_usage=usage[0], mem_usage=usage[1], running_vms=usage[2], vm_ids=tuple(vm_ids),
    )


def insert_host(connection: Connection, record: HostRecord) -> None:
    """Insert a new host.

    Raises:
        ValidationError: the name is taken (message as oned's).
    """
    taken = find_host_id(connection, record.name)
    if taken is not None:
        raise PoolNameError(f"NAME is already taken by HOST {taken}.")
    connection.execute(_INSERT_HOST, dict(
        id=record.id, name=record.name, state=int(record.state),
        prev_state=int(record.prev_state), im_mad=record.im_mad, vm_mad=record.vm_mad,
        tm_mad=record.tm_mad, vn_mad=record.vn_mad, cluster_id=record.cluster_id,
        template=json.dumps(record.template.to_json()), last_mon_time=record.last_mon_time,
        error=record.error, version=record.version,
        **{name: getattr(record, name) for name in _SHARE_FIELDS},
    ))


# Statements built once: at 10,000 hosts building them per call (and SQLAlchemy's
# cache key of literal values) cost more than running them.
_INSERT_HOST = insert(hosts)
_HOST_ID_BY_NAME = select(hosts.c.id).where(hosts.c.name == bindparam("name"))


def hosts_stamp(connection: Connection) -> tuple[int, int, int]:
    """``(count, highest id, sum of versions)`` of the host pool: changes whenever a
    host is added (ids are never reused), removed or written with a new version, and
    costs one aggregate instead of a row per host."""
    count, highest, versions = connection.execute(_HOSTS_STAMP).one()
    return int(count), int(highest if highest is not None else -1), int(versions or 0)


_HOSTS_STAMP = select(func.count(), func.max(hosts.c.id), func.sum(hosts.c.version))


def host_versions(connection: Connection) -> dict[int, int]:
    """``{host id: version}``: a cheap way to see which hosts changed."""
    return {int(host_id): int(version)
            for host_id, version in connection.execute(select(hosts.c.id, hosts.c.version))}


def hosts_kept(connection: Connection, host_ids: Collection[int],
               kept: dict[int, HostRecord]) -> dict[int, HostRecord]:
    """The hosts of ``host_ids`` that exist (without usage), decoding only those whose
    version differs from their record in ``kept`` (which is brought up to date): a
    burst of deploys names the same hosts again and again, and decoding a host's
    template costs far more than reading its version."""
    ids = sorted(host_ids)
    versions = {int(host_id): int(version) for host_id, version in rows_at_once(
        connection, _HOST_VERSIONS, {"host_ids": ids})}
    stale = [host_id for host_id, version in versions.items()
             if (record := kept.get(host_id)) is None or record.version != version]
    if stale:
        for host in list_hosts(connection, host_ids=stale, with_vms=False, with_usage=False):
            kept[host.id] = host
    return {host_id: kept[host_id] for host_id in versions if host_id in kept}


_HOST_VERSIONS = select(hosts.c.id, hosts.c.version).where(one_of(hosts.c.id, "host_ids"))


def list_hosts(
    connection: Connection, *, with_vms: bool = True, host_ids: Sequence[int] | None = None,
    with_usage: bool = True,
) -> list[HostRecord]:
    """Hosts ordered by id, with allocation counters derived from the VM pool
    (left at 0 without ``with_usage``)."""
    query = select(hosts).order_by(hosts.c.id)
    ids = None if host_ids is None else list(host_ids)
    if ids is not None:
        query = query.where(one_of(hosts.c.id, "host_ids"))
    rows = connection.execute(query, {} if ids is None else {"host_ids": ids}).all()
    usage = vm_pool.host_usage(connection, ids) if with_usage else {}
    placed = vm_pool.vm_ids_on_hosts(connection, ids) if with_vms else {}
    return [
        _host_from_row(row, usage.get(row.id, (0, 0, 0)), placed.get(row.id, ()))
        for row in rows
    ]


class HostStamp(NamedTuple):
    """Everything a host's pool entry shows that can change without its row's version:
    enough to tell whether a rendered entry is still right (see ``api/host_pool_cache``)."""

    id: int
    version: int
    last_mon_time: int
    cluster_id: int
    #: The cluster's name (None: the cluster is gone).
    cluster: str | None
    #: Capacity held by the VMs placed there (as :func:`list_hosts` derives it).
    cpu_usage: int
    mem_usage: int
    running_vms: int
    vm_ids: tuple[int, ...]


def host_stamps(connection: Connection) -> list[HostStamp]:
    """Every host's stamp, ordered by id: two statements (hosts with their cluster's
    name, the VMs holding capacity), whatever the number of hosts."""
    placed: dict[int, list[int]] = {}
    usage: dict[int, list[int]] = {}
    for host_id, vm_id, cpu, memory in _PLACED.tuples(connection):
        placed.setdefault(host_id, []).append(vm_id)
        held = usage.get(host_id)
        if held is None:
            usage[host_id] = [cpu, memory]
        else:
            held[0] += cpu
            held[1] += memory
    stamps = []
    for host_id, version, last_mon_time, cluster_id, cluster in _HOST_STAMPS.tuples(connection):
        cpu, memory = usage.get(host_id, (0, 0))
        vm_ids = placed.get(host_id, ())
        stamps.append(HostStamp(host_id, version, last_mon_time, cluster_id, cluster,
                                int(cpu), int(memory) * 1024, len(vm_ids), tuple(vm_ids)))
    return stamps


_HOST_STAMPS = Prepared(
    select(hosts.c.id, hosts.c.version, hosts.c.last_mon_time, hosts.c.cluster_id,
           clusters.c.name)
    .select_from(hosts.outerjoin(clusters, clusters.c.id == hosts.c.cluster_id))
    .order_by(hosts.c.id))
#: The VMs holding capacity on a host, as vm_pool.host_usage and vm_ids_on_hosts count them.
_PLACED = Prepared(
    select(vms.c.host_id, vms.c.id, vms.c.cpu_share, vms.c.memory)
    .where(vms.c.state.in_(sorted(int(state) for state in CAPACITY_HOLDING_STATES)))
    .where(vms.c.host_id.is_not(None))
    .order_by(vms.c.id))


def get_host(connection: Connection, host_id: int, *, with_usage: bool = True) -> HostRecord:
    """The host ``host_id``; without ``with_usage`` the allocation counters are 0.

    Raises:
        NotFoundError: no such host.
    """
    if not with_usage:
        row = connection.execute(_SELECT_HOST, {"host_id": host_id}).first()
        if row is None:
            raise NotFoundError(f"HOST {host_id} does not exist")
        return _host_from_row(row)
    found = list_hosts(connection, host_ids=[host_id])
    if not found:
        raise NotFoundError(f"HOST {host_id} does not exist")
    return found[0]


_SELECT_HOST = select(hosts).where(hosts.c.id == bindparam("host_id"))


def find_host_id(connection: Connection, name: str) -> int | None:
    """The id of the host called ``name``, if any."""
    value = connection.execute(_HOST_ID_BY_NAME, {"name": name}).scalar()
    return None if value is None else int(value)


def update_host(connection: Connection, record: HostRecord, **changes: Any) -> HostRecord:
    """Compare-and-swap ``changes`` onto ``record``; returns the new record.

    Raises:
        ConflictError: the host changed since ``record`` was read.
    """
    if "state" in changes:
        changes.setdefault("prev_state", record.state)
    updated = replace(record, **changes, version=record.version + 1)
    values: dict[str, Any] = {"version": updated.version}
    for name, value in changes.items():
        if name == "template":
            values[name] = json.dumps(updated.template.to_json())
        elif name in ("state", "prev_state"):
            values[name] = int(value)
        else:
            values[name] = value
    statement = _update_statement(frozenset(values))
    result = connection.execute(statement, {**values, "_id": record.id,
                                            "_version": record.version})
    if result.rowcount != 1:
        raise ConflictError(f"HOST {record.id} was changed by another action; try again")
    return updated


def mark_monitored(connection: Connection, stamps: Mapping[int, int]) -> None:
    """Set ``LAST_MON_TIME`` of the hosts of ``stamps`` (id: UNIX time), in one statement
    and without a new version: a report that changed nothing else is no change."""
    connection.execute(_MARK_MONITORED, [{"_id": host_id, "last_mon_time": stamp}
                                         for host_id, stamp in stamps.items()])


_MARK_MONITORED = update(hosts).where(hosts.c.id == bindparam("_id")).values(
    last_mon_time=bindparam("last_mon_time"))


@lru_cache(maxsize=64)
def _update_statement(columns: frozenset[str]) -> Update:
    return (update(hosts).where(hosts.c.id == bindparam("_id"),
                                hosts.c.version == bindparam("_version"))
            .values({name: bindparam(name) for name in sorted(columns)}))


def delete_host(connection: Connection, host_id: int) -> None:
    """Remove a host row and its orphan sightings (the caller checks that no VM holds it)."""
    connection.execute(delete(orphan_sightings).where(orphan_sightings.c.host_id == host_id))
    connection.execute(delete(hosts).where(hosts.c.id == host_id))


def cloud_sites_of_type(connection: Connection, hypervisor: str) -> int:
    """How many cloud sites (hosts of any state) have ``HYPERVISOR`` ``hypervisor``
    (compared without case): what :func:`cloudburst.model.cloud_sections.section_for`
    calls the sites of a type."""
    hosts = list_hosts(connection, with_vms=False, with_usage=False)
    return sites_by_type(hosts).get(hypervisor.strip().lower(), 0)
