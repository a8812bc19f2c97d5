"""The VM pool and its history records.

All functions take a SQLAlchemy ``Connection`` inside a transaction opened by
:class:`~cloudburst.store.database.Database`; none commits. State changes go
through :func:`update_vm`, a compare-and-swap on ``version``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Row,
    Select,
    Update,
    and_,
    bindparam,
    func,
    insert,
    select,
    update,
)

from cloudburst.errors import ConflictError, NotFoundError
from cloudburst.model.lifecycle import StateKey
from cloudburst.model.records import HistoryRecord, VmRecord, cpu_share
from cloudburst.model.states import CAPACITY_HOLDING_STATES, LcmState, VmState
from cloudburst.store.deferred import Deferred
from cloudburst.store.id_lists import one_of
from cloudburst.store.prepared import Prepared, execute_many, row_type, rows_at_once
from cloudburst.store.schema import groups, history, hosts, users, vms
from cloudburst.template import Template

# Dict lookups: listing 10,000 VMs would otherwise spend a visible share of
# its time in Enum.__call__.
_VM_STATES = {int(state): state for state in VmState}
_LCM_STATES = {int(state): state for state in LcmState}


def _vm_from_row(row: Row[Any] | Any, records: Sequence[HistoryRecord] = ()) -> VmRecord:
    return VmRecord(
        id=row.id,
        name=row.name,
        uid=row.uid,
        gid=row.gid,
        state=_VM_STATES[row.state],
        lcm_state=_LCM_STATES[row.lcm_state],
        prev_state=_VM_STATES[row.prev_state],
        prev_lcm_state=_LCM_STATES[row.prev_lcm_state],
        stime=row.stime,
        etime=row.etime,
        deploy_id=row.deploy_id,
        host_id=row.host_id,
        template=Template.from_stored_json(json.loads(row.template)),
        user_template=Template.from_stored_json(json.loads(row.user_template)),
        cpu=row.cpu,
        memory=row.memory,
        version=row.version,
        monitoring=json.loads(row.monitoring),
        last_poll=row.last_poll,
        error=row.error,
        sched_message=row.sched_message,
        resched=row.resched,
        history=tuple(records),
        perms=row.perms,
        placement=row.placement,
    )


def _history_from_row(row: Row[Any] | Any) -> HistoryRecord:
    return HistoryRecord(
        vm_id=row.vm_id, seq=row.seq, host_id=row.host_id, hostname=row.hostname,
        vm_mad=row.vm_mad, tm_mad=row.tm_mad, stime=row.stime, etime=row.etime,
        pstime=row.pstime, petime=row.petime, rstime=row.rstime, retime=row.retime,
        estime=row.estime, eetime=row.eetime, action=row.action, reason=row.reason,
        price=row.price,
        cluster_id=row.cluster_id,
    )


def _stored(name: str, value: Any) -> Any:
    """A record field converted to its column's stored form."""
    if name in ("template", "user_template"):
        return json.dumps(value.to_json())
    if name == "monitoring":
        return json.dumps(value)
    if name in ("state", "lcm_state", "prev_state", "prev_lcm_state"):
        return int(value)
    return value


def _column_values(record: VmRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "uid": record.uid,
        "gid": record.gid,
        "state": int(record.state),
        "lcm_state": int(record.lcm_state),
        "prev_state": int(record.prev_state),
        "prev_lcm_state": int(record.prev_lcm_state),
        "stime": record.stime,
        "etime": record.etime,
        "deploy_id": record.deploy_id,
        "host_id": record.host_id,
        "cpu": record.cpu,
        "cpu_share": cpu_share(record.cpu),
        "memory": record.memory,
        "template": json.dumps(record.template.to_json()),
        "user_template": json.dumps(record.user_template.to_json()),
        "monitoring": json.dumps(record.monitoring),
        "last_poll": record.last_poll,
        "error": record.error,
        "sched_message": record.sched_message,
        "resched": record.resched,
        "version": record.version,
        "placement": record.placement,
    }


def insert_vms(connection: Connection, records: Iterable[VmRecord], *,
               later: Deferred | None = None) -> None:
    """Insert new VMs (ids already reserved with ``next_ids``), at ``later``'s flush
    if given."""
    rows = [_column_values(record) for record in records]
    if later is not None:
        for row in rows:
            later.add(row["id"], _INSERT_VMS, row)
    elif rows:
        connection.execute(_INSERT_VMS, rows)


_INSERT_VMS = insert(vms)


def get_vm(connection: Connection, vm_id: int, *, with_history: bool = True) -> VmRecord:
    """The VM ``vm_id``.

    Raises:
        NotFoundError: no such VM.
    """
    return get_named_vm(connection, vm_id, with_history=with_history).vm


class NamedVm(NamedTuple):
    """A VM and its owner's and group's names (None: the user or group is gone), and
    the cluster of the host it is on (None: on no host), which its ACLs may name."""

    vm: VmRecord
    uname: str | None
    gname: str | None
    host_cluster: int | None


def get_named_vm(connection: Connection, vm_id: int, *, with_history: bool = True) -> NamedVm:
    """The VM ``vm_id`` with its owner's and group's names and its host's cluster, in
    one statement (with its history: a row per history record, the VM's columns
    repeated).

    Raises:
        NotFoundError: no such VM.
    """
    if not with_history:
        row = _SELECT_VM.first(connection, vm_id=vm_id)
        if row is None:
            raise NotFoundError(f"VM {vm_id} does not exist")
        return NamedVm(_vm_from_row(row), row.uname, row.gname, row.host_cluster)
    rows = _SELECT_VM_WITH_HISTORY.tuples(connection, vm_id=vm_id)
    if not rows:
        raise NotFoundError(f"VM {vm_id} does not exist")
    vm_row = _SELECT_VM.row._make(rows[0][:_VM_WIDTH])
    records = [_history_from_row(_HISTORY_ROW._make(row[_VM_WIDTH:])) for row in rows
               if row[_VM_WIDTH] is not None]
    return NamedVm(_vm_from_row(vm_row, records), vm_row.uname, vm_row.gname,
                   vm_row.host_cluster)


def read_vms(connection: Connection, vm_ids: Iterable[int]) -> list[VmRecord]:
    """The VMs of ``vm_ids`` that exist, with their history, ordered by id.

    For rendering many VMs (pool entries): each :data:`BY_IDS` of them are one prepared
    statement, a row per history record; SQLAlchemy's rows and a second statement for
    the history cost ~4x the read and decoding.
    """
    wanted = sorted(set(vm_ids))
    found: list[VmRecord] = []
    for start in range(0, len(wanted), BY_IDS):
        chunk = wanted[start:start + BY_IDS]
        chunk += [-1] * (BY_IDS - len(chunk))  # no VM has id -1
        rows = _SELECT_VMS_WITH_HISTORY.tuples(
            connection, **{f"id{index}": vm_id for index, vm_id in enumerate(chunk)})
        for _, group in itertools.groupby(rows, key=itemgetter(0)):
            held = list(group)
            records = [_history_from_row(_HISTORY_ROW._make(row[_VMS_WIDTH:]))
                       for row in held if row[_VMS_WIDTH] is not None]
            found.append(_vm_from_row(_VMS_ROW._make(held[0][:_VMS_WIDTH]), records))
    return found


def stamped_vms(connection: Connection, vm_ids: Iterable[int]
                ) -> list[tuple[VmStamp, VmRecord]]:
    """The VMs of ``vm_ids`` that exist and are not DONE, as :func:`read_vms` reads
    them, each with its stamp (what :func:`list_vm_stamps` gives for it)."""
    records = [vm for vm in read_vms(connection, vm_ids) if vm.state is not VmState.DONE]
    unames = _names_of(connection, users, {vm.uid for vm in records})
    gnames = _names_of(connection, groups, {vm.gid for vm in records})
    return [(VmStamp(vm.id, vm.version, vm.uid, vm.gid, vm.name, vm.sched_message, vm.perms,
                     unames.get(vm.uid), gnames.get(vm.gid)), vm) for vm in records]


def count_live(connection: Connection) -> int:
    """How many VMs are not DONE (an index count: no row is read)."""
    return int(connection.execute(_COUNT_LIVE).scalar_one())


_COUNT_LIVE = select(func.count()).select_from(vms).where(vms.c.state != int(VmState.DONE))


def get_vms(connection: Connection, vm_ids: Iterable[int]) -> dict[int, VmRecord]:
    """The VMs of ``vm_ids`` that exist, without history, read in chunks of 500:
    a batch of state changes reads its VMs at once instead of one by one."""
    wanted = sorted(set(vm_ids))
    found: dict[int, VmRecord] = {}
    make = _VM_ROW._make
    for start in range(0, len(wanted), 500):
        rows = rows_at_once(connection, _SELECT_VMS, {"vm_ids": wanted[start:start + 500]})
        found.update((row[0], _vm_from_row(make(row))) for row in rows)
    return found


_SELECT_VMS = select(vms).where(one_of(vms.c.id, "vm_ids"))
_VM_ROW = row_type(_SELECT_VMS.selected_columns)


def vms_kept(connection: Connection, vm_ids: Iterable[int], kept: Mapping[int, VmRecord]
             ) -> dict[int, VmRecord]:
    """:func:`get_vms`, decoding only the VMs whose version differs from their record in
    ``kept`` (records as a write left them, without history): the batches of a VM's
    deploy, its driver's answer and its first poll follow each other within seconds,
    and decoding a VM's templates costs far more than reading its version.

    The columns written without a version bump (:func:`set_sched_messages`) are read
    with the versions, so a kept record is returned exactly as stored.
    """
    wanted = sorted(set(vm_ids))
    if not any(vm_id in kept for vm_id in wanted):
        return get_vms(connection, wanted)
    found: dict[int, VmRecord] = {}
    stale: list[int] = []
    for start in range(0, len(wanted), 500):
        for vm_id, version, sched_message, placement in rows_at_once(
                connection, _VM_VERSIONS, {"vm_ids": wanted[start:start + 500]}):
            record = kept.get(vm_id)
            if record is None or record.version != version:
                stale.append(vm_id)
                continue
            if record.sched_message != sched_message or record.placement != placement:
                record = replace(record, sched_message=sched_message, placement=placement)
            found[vm_id] = record
    if stale:
        found.update(get_vms(connection, stale))
    return found


_VM_VERSIONS = select(vms.c.id, vms.c.version, vms.c.sched_message, vms.c.placement).where(
    one_of(vms.c.id, "vm_ids"))


class VmStamp(NamedTuple):
    """What identifies a VM's current rendering: enough to tell whether a
    cached document of it is still right, and to filter pools by owner.

    A named tuple, not a dataclass: a pool listing makes one per VM, and a
    frozen dataclass costs four times the read of its row to build.
    """

    id: int
    version: int
    uid: int
    gid: int
    name: str
    sched_message: str
    perms: int
    #: The owner's and the group's names (None: the user or group is gone).
    uname: str | None
    gname: str | None


def _filtered(query: Select[Any], *, states: Iterable[VmState] | None, exclude_done: bool,
              uid: int | None, first_id: int | None, last_id: int | None,
              host_id: int | None, ids: Sequence[int] | None, offset: int,
              limit: int | None, descending: bool) -> Select[Any]:
    if states is not None:
        query = query.where(vms.c.state.in_([int(state) for state in states]))
    if exclude_done:
        query = query.where(vms.c.state != int(VmState.DONE))
    if uid is not None:
        query = query.where(vms.c.uid == uid)
    if first_id is not None:
        query = query.where(vms.c.id >= first_id)
    if last_id is not None:
        query = query.where(vms.c.id <= last_id)
    if host_id is not None:
        query = query.where(vms.c.host_id == host_id)
    if ids is not None:  # the list is the execution's parameter "ids"
        query = query.where(one_of(vms.c.id, "ids"))
    query = query.order_by(vms.c.id.desc() if descending else vms.c.id)
    if offset:
        query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return query


def list_vms(
    connection: Connection,
    *,
    states: Iterable[VmState] | None = None,
    exclude_done: bool = False,
    uid: int | None = None,
    first_id: int | None = None,
    last_id: int | None = None,
    offset: int = 0,
    limit: int | None = None,
    host_id: int | None = None,
    ids: Sequence[int] | None = None,
    with_history: bool = True,
    descending: bool = False,
) -> list[VmRecord]:
    """VMs matching every given filter, ordered by id."""
    query = _filtered(select(vms), states=states, exclude_done=exclude_done, uid=uid,
                      first_id=first_id, last_id=last_id, host_id=host_id, ids=ids,
                      offset=offset, limit=limit, descending=descending)
    rows = connection.execute(query, _ids_parameter(ids)).all()
    if not with_history:
        return [_vm_from_row(row) for row in rows]
    records = history_of(connection, [row.id for row in rows])
    return [_vm_from_row(row, records.get(row.id, ())) for row in rows]


def _ids_parameter(ids: Sequence[int] | None) -> dict[str, list[int]]:
    """The parameters of a statement :func:`_filtered` made with ``ids``."""
    return {} if ids is None else {"ids": list(ids)}


def list_rescheduled(connection: Connection) -> list[VmRecord]:
    """ACTIVE VMs flagged for rescheduling (``one.vm.action resched``), ordered by id."""
    rows = connection.execute(
        select(vms).where(vms.c.resched == 1, vms.c.state == int(VmState.ACTIVE))
        .order_by(vms.c.id)).all()
    return [_vm_from_row(row) for row in rows]


def list_vm_stamps(
    connection: Connection,
    *,
    states: Iterable[VmState] | None = None,
    exclude_done: bool = False,
    uid: int | None = None,
    first_id: int | None = None,
    last_id: int | None = None,
    offset: int = 0,
    limit: int | None = None,
    descending: bool = False,
    ids: Sequence[int] | None = None,
) -> list[VmStamp]:
    """The stamps of the VMs :func:`list_vms` would return for the same filters
    (``ids``: only those VMs).

    Reads a handful of small columns (and the owner's and group's names), so
    listing a large pool whose documents are cached costs a fraction of decoding
    every VM.
    """
    rows: Sequence[Any]
    if ids is not None:
        rows = connection.execute(_filtered(
            _STAMPS, states=states, exclude_done=exclude_done, uid=uid, first_id=first_id,
            last_id=last_id, host_id=None, ids=ids, offset=offset, limit=limit,
            descending=descending), _ids_parameter(ids)).all()
    else:
        prepared = _stamps_statement(
            None if states is None else tuple(sorted({int(state) for state in states})),
            exclude_done, uid is not None, first_id is not None, last_id is not None,
            bool(offset), limit is not None, descending)
        params = {name: value for name, value in (
            ("uid", uid), ("first_id", first_id), ("last_id", last_id), ("offset", offset),
            ("limit", limit)) if value is not None and (name != "offset" or value)}
        rows = prepared.tuples(connection, **params)
    # The owners' and groups' names are read apart, once each: joining them costs more
    # than the rest of a stamp's read on SQLite (two key searches per row).
    unames = _names_of(connection, users, {row[2] for row in rows})
    gnames = _names_of(connection, groups, {row[3] for row in rows})
    make = VmStamp._make
    return [make((*row, unames.get(row[2]), gnames.get(row[3]))) for row in rows]


def _names_of(connection: Connection, table: Any, wanted: set[int]) -> dict[int, str]:
    """The names of the users or groups ``wanted`` that exist."""
    found: dict[int, str] = {}
    listed = sorted(wanted)
    for start in range(0, len(listed), 500):
        found.update((row[0], row[1]) for row in connection.execute(
            select(table.c.id, table.c.name).where(one_of(table.c.id, "ids")),
            {"ids": listed[start:start + 500]}))
    return found


_STAMPS = select(vms.c.id, vms.c.version, vms.c.uid, vms.c.gid, vms.c.name,
                 vms.c.sched_message, vms.c.perms)


@lru_cache(maxsize=128)
def _stamps_statement(states: tuple[int, ...] | None, exclude_done: bool, by_uid: bool,
                      from_id: bool, to_id: bool, paged: bool, limited: bool,
                      descending: bool) -> Prepared:
    """:func:`list_vm_stamps`' statement for one combination of filters, prepared (a
    listing's stamps are thousands of rows: SQLAlchemy's rows cost ~2x the read)."""
    query = _STAMPS
    if states is not None:
        query = query.where(vms.c.state.in_(states))
    if exclude_done:
        query = query.where(vms.c.state != int(VmState.DONE))
    if by_uid:
        query = query.where(vms.c.uid == bindparam("uid"))
    if from_id:
        query = query.where(vms.c.id >= bindparam("first_id"))
    if to_id:
        query = query.where(vms.c.id <= bindparam("last_id"))
    query = query.order_by(vms.c.id.desc() if descending else vms.c.id)
    if limited:
        query = query.limit(bindparam("limit"))
    if paged:
        query = query.offset(bindparam("offset"))
    return Prepared(query)


def history_of(connection: Connection, vm_ids: Sequence[int]) -> dict[int, list[HistoryRecord]]:
    """History records of the given VMs, each list ordered by ``seq``."""
    found: dict[int, list[HistoryRecord]] = {}
    if not vm_ids:
        return found
    query = select(history).order_by(history.c.vm_id, history.c.seq)
    # Large id lists are cheaper as a range scan than as a huge IN (...).
    if len(vm_ids) > 500:
        query = query.where(and_(history.c.vm_id >= min(vm_ids), history.c.vm_id <= max(vm_ids)))
        wanted: set[int] | None = set(vm_ids)
    else:
        query = query.where(one_of(history.c.vm_id, "vm_ids"))
        wanted = None
    for row in connection.execute(query, {"vm_ids": list(vm_ids)} if wanted is None else {}):
        if wanted is None or row.vm_id in wanted:
            found.setdefault(row.vm_id, []).append(_history_from_row(row))
    return found


def current_seqs(connection: Connection, vm_ids: Sequence[int]) -> dict[int, int]:
    """The current stay (history ``SEQ``) of each of ``vm_ids`` that has one."""
    found: dict[int, int] = {}
    wanted = sorted(set(vm_ids))
    for start in range(0, len(wanted), 500):
        rows = rows_at_once(connection, _CURRENT_SEQS, {"vm_ids": wanted[start:start + 500]})
        found.update((int(row[0]), int(row[1])) for row in rows)
    return found


_CURRENT_SEQS = (select(history.c.vm_id, func.max(history.c.seq).label("seq"))
                 .where(one_of(history.c.vm_id, "vm_ids"))
                 .group_by(history.c.vm_id))


def update_vm(connection: Connection, record: VmRecord, *, later: Deferred | None = None,
              **changes: Any) -> VmRecord:
    """Write ``changes`` to ``record`` if nobody changed it since it was read.

    Returns the new record (``version`` bumped). A state change also records
    the previous state in ``prev_state``/``prev_lcm_state``. ``later``: written
    (and checked) at its flush, when the store counts the rows of each of many
    parameter sets.

    Raises:
        ConflictError: the stored version differs (another action won the race).
    """
    if "state" in changes or "lcm_state" in changes:
        changes.setdefault("prev_state", record.state)
        changes.setdefault("prev_lcm_state", record.lcm_state)
    updated = replace(record, **changes, version=record.version + 1)
    params = {name: _stored(name, getattr(updated, name)) for name in changes}
    columns = frozenset(params)
    if "cpu" in changes:
        params["cpu_share"] = cpu_share(updated.cpu)
        columns |= {"cpu_share"}
    params["version"] = updated.version
    params["_id"] = record.id
    params["_version"] = record.version
    if later is not None and connection.dialect.supports_sane_multi_rowcount:
        later.add(record.id, _update_statement(columns), params, checked=True)
        return updated
    result = connection.execute(_update_statement(columns), params)
    if result.rowcount != 1:
        raise ConflictError(f"VM {record.id} was changed by another action; try again")
    return updated


def mark_polled(connection: Connection, versions: Mapping[int, int], stamp: int) -> None:
    """Set ``LAST_POLL`` to ``stamp`` on the VMs of ``versions`` (id: version read),
    in one statement; a VM changed since its read is left as it is."""
    execute_many(connection, _update_statement(frozenset({"last_poll"})), [
        {"_id": vm_id, "_version": version, "last_poll": stamp, "version": version + 1}
        for vm_id, version in versions.items()], disjoint=True)  # a row per VM


# Hot-path statements are built once: SQLAlchemy then reuses their compiled
# form instead of rebuilding and re-keying an expression tree on every write.
# Prepared (see store.prepared): one.vm.info runs them, and every action reads its VM.
_NAMED_VM = (vms, users.c.name.label("uname"), groups.c.name.label("gname"),
             hosts.c.cluster_id.label("host_cluster"))
_NAMED_VM_FROM = (vms.outerjoin(users, users.c.id == vms.c.uid)
                  .outerjoin(groups, groups.c.id == vms.c.gid)
                  .outerjoin(hosts, hosts.c.id == vms.c.host_id))
_SELECT_VM = Prepared(select(*_NAMED_VM).select_from(_NAMED_VM_FROM)
                      .where(vms.c.id == bindparam("vm_id")))
_VM_WIDTH = len(_SELECT_VM.row._fields)
_SELECT_VM_WITH_HISTORY = Prepared(
    select(*_NAMED_VM, *history.c)
    .select_from(_NAMED_VM_FROM.outerjoin(history, history.c.vm_id == vms.c.id))
    .where(vms.c.id == bindparam("vm_id")).order_by(history.c.seq))
_HISTORY_ROW = row_type(history.c)
#: VMs :func:`read_vms` reads per statement.
BY_IDS = 100
_VMS_ROW = row_type(vms.c)
_VMS_WIDTH = len(vms.c)
_SELECT_VMS_WITH_HISTORY = Prepared(
    select(vms, *history.c)
    .select_from(vms.outerjoin(history, history.c.vm_id == vms.c.id))
    .where(vms.c.id.in_([bindparam(f"id{index}") for index in range(BY_IDS)]))
    .order_by(vms.c.id, history.c.seq))


@lru_cache(maxsize=256)
def _update_statement(columns: frozenset[str]) -> Update:
    return (
        update(vms)
        .where(vms.c.id == bindparam("_id"), vms.c.version == bindparam("_version"))
        .values({name: bindparam(name) for name in (*sorted(columns), "version")})
    )


@lru_cache(maxsize=64)
def _update_history_statement(columns: frozenset[str]) -> Update:
    return (
        update(history)
        .where(history.c.vm_id == bindparam("_vm_id"), history.c.seq == bindparam("_seq"))
        .values({name: bindparam(name) for name in sorted(columns)})
    )


def insert_history(connection: Connection, record: HistoryRecord, *,
                   later: Deferred | None = None) -> None:
    """Append a history record (at ``later``'s flush, if given)."""
    params = {
        "vm_id": record.vm_id, "seq": record.seq, "host_id": record.host_id,
        "hostname": record.hostname, "vm_mad": record.vm_mad, "tm_mad": record.tm_mad,
        "stime": record.stime, "etime": record.etime, "pstime": record.pstime,
        "petime": record.petime, "rstime": record.rstime, "retime": record.retime,
        "estime": record.estime, "eetime": record.eetime, "action": record.action,
        "reason": record.reason, "price": record.price, "cluster_id": record.cluster_id,
    }
    if later is not None:
        later.add(record.vm_id, _INSERT_HISTORY, params)
    else:
        connection.execute(_INSERT_HISTORY, params)


_INSERT_HISTORY = insert(history)


def update_history(connection: Connection, vm_id: int, seq: int, *,
                   later: Deferred | None = None, **changes: Any) -> None:
    """Update fields (times, action, reason) of one history record (at ``later``'s
    flush, if given)."""
    statement = _update_history_statement(frozenset(changes))
    params = {**changes, "_vm_id": vm_id, "_seq": seq}
    if later is not None:
        later.add(vm_id, statement, params)
    else:
        connection.execute(statement, params)


def host_usage(
    connection: Connection, host_ids: Sequence[int] | None = None
) -> dict[int, tuple[int, int, int]]:
    """Capacity held on each host: ``{host_id: (cpu, memory_kb, vm_count)}``.

    CPU is in percent of a core (``CPU=1`` is 100), memory in KB, counted over
    VMs in :data:`CAPACITY_HOLDING_STATES` (spec/opennebula.md 3.2).
    """
    query = (
        select(vms.c.host_id, func.sum(vms.c.cpu_share), func.sum(vms.c.memory), func.count())
        .where(vms.c.state.in_([int(state) for state in CAPACITY_HOLDING_STATES]))
        .where(vms.c.host_id.is_not(None))
        .group_by(vms.c.host_id)
    )
    if host_ids is not None:
        query = query.where(one_of(vms.c.host_id, "host_ids"))
    return {
        int(host_id): (int(cpu or 0), int(memory or 0) * 1024, int(count))
        for host_id, cpu, memory, count in connection.execute(query, _hosts_parameter(host_ids))
    }


#: Prepared: the scheduler reads it for every capacity-holding VM when it builds its
#: placer (at least every 30 s); SQLAlchemy's rows cost more than the read itself.
_HELD = Prepared(select(vms.c.id, vms.c.host_id, vms.c.cpu_share, vms.c.memory * 1024).where(
    vms.c.state.in_([int(state) for state in CAPACITY_HOLDING_STATES]),
    vms.c.host_id.is_not(None)))


def held_capacity(connection: Connection) -> dict[int, tuple[int, int, int]]:
    """What each VM holding capacity holds: ``{vm_id: (host_id, cpu, memory_kb)}``
    (units as :func:`host_usage`; served by the ``ix_vms_usage`` index)."""
    return {vm_id: (host_id, cpu, memory_kb)
            for vm_id, host_id, cpu, memory_kb in _HELD.tuples(connection)}


def usage_of(held: Mapping[int, tuple[int, int, int]]) -> dict[int, tuple[int, int, int]]:
    """:func:`host_usage` computed from :func:`held_capacity`."""
    usage: dict[int, list[int]] = {}
    for host_id, cpu, memory in held.values():
        counters = usage.get(host_id)
        if counters is None:
            usage[host_id] = [cpu, memory, 1]
        else:
            counters[0] += cpu
            counters[1] += memory
            counters[2] += 1
    return {host_id: (cpu, memory, count) for host_id, (cpu, memory, count) in usage.items()}


def _hosts_parameter(host_ids: Sequence[int] | None) -> dict[str, list[int]]:
    """The parameters of a read of the hosts ``host_ids`` (None: of every host)."""
    return {} if host_ids is None else {"host_ids": list(host_ids)}


def vm_ids_on_hosts(
    connection: Connection, host_ids: Sequence[int] | None = None
) -> dict[int, list[int]]:
    """Ids of the VMs holding capacity on each host, ascending."""
    query = (
        select(vms.c.host_id, vms.c.id)
        .where(vms.c.state.in_([int(state) for state in CAPACITY_HOLDING_STATES]))
        .where(vms.c.host_id.is_not(None))
        .order_by(vms.c.id)
    )
    if host_ids is not None:
        query = query.where(one_of(vms.c.host_id, "host_ids"))
    found: dict[int, list[int]] = {}
    for host_id, vm_id in connection.execute(query, _hosts_parameter(host_ids)):
        found.setdefault(int(host_id), []).append(int(vm_id))
    return found


def _in_flight(positions: Iterable[tuple[int, int]]) -> Select[Any]:
    wanted = set(positions)
    return select(vms.c.id, vms.c.version, vms.c.state, vms.c.lcm_state, vms.c.host_id).where(
        vms.c.state.in_(sorted({int(state) for state, _ in wanted})),
        vms.c.lcm_state.in_(sorted({int(lcm) for _, lcm in wanted})))


def in_flight_versions(connection: Connection, positions: Iterable[tuple[int, int]]
                       ) -> list[tuple[int, int]]:
    """(id, version) of every VM at one of ``positions`` ((STATE, LCM_STATE) pairs)
    (no template is read: cheap for thousands of VMs)."""
    wanted = set(positions)
    return [(int(row.id), int(row.version)) for row in connection.execute(_in_flight(wanted))
            if (row.state, row.lcm_state) in wanted]


#: Host ids per statement in reads of many hosts.
HOST_CHUNK = 500


def in_flight_on_hosts(connection: Connection, positions: Iterable[tuple[int, int]],
                       host_ids: Sequence[int]) -> dict[int, dict[int, int]]:
    """Each of ``host_ids``' VMs at one of ``positions``, as {VM id: version}, by host
    (hosts with none left out), read in one go for a monitoring tick."""
    wanted = set(positions)
    query = _in_flight(wanted).where(one_of(vms.c.host_id, "host_ids"))
    found: dict[int, dict[int, int]] = {}
    for start in range(0, len(host_ids), HOST_CHUNK):
        chunk = list(host_ids[start:start + HOST_CHUNK])
        for row in connection.execute(query, {"host_ids": chunk}):
            if (row.state, row.lcm_state) in wanted:
                found.setdefault(int(row.host_id), {})[int(row.id)] = int(row.version)
    return found


class PolledVm(NamedTuple):
    """What polling a VM needs of its record: no template (a monitoring tick reads
    the VMs of hundreds of hosts, and decoding templates was most of that read)."""

    id: int
    state: VmState
    lcm_state: LcmState
    deploy_id: str
    version: int
    monitoring: dict[str, str]
    error: str
    last_poll: int

    @property
    def position(self) -> StateKey:
        return (self.state, self.lcm_state)


_ON_HOSTS = select(vms.c.id, vms.c.host_id, vms.c.state, vms.c.lcm_state, vms.c.deploy_id,
                   vms.c.version, vms.c.monitoring, vms.c.error, vms.c.last_poll).where(
    one_of(vms.c.host_id, "host_ids"),
    vms.c.state != int(VmState.DONE)).order_by(vms.c.id)


def on_hosts(connection: Connection, host_ids: Sequence[int]) -> dict[int, list[PolledVm]]:
    """The VMs (not DONE) on each of ``host_ids``, ordered by id, by host (hosts with
    none left out): what a monitoring tick polls, in one read."""
    found: dict[int, list[PolledVm]] = {}
    # Per row as little as it can be: the regular polls read every VM every 30 s.
    for start in range(0, len(host_ids), HOST_CHUNK):
        for vm_id, host_id, state, lcm_state, deploy_id, version, monitoring, error, \
                last_poll in connection.execute(
                    _ON_HOSTS, {"host_ids": list(host_ids[start:start + HOST_CHUNK])}):
            found.setdefault(host_id, []).append(PolledVm(
                vm_id, _VM_STATES[state], _LCM_STATES[lcm_state], deploy_id, version,
                {} if monitoring == "{}" else json.loads(monitoring), error, last_poll))
    return found


def set_sched_messages(connection: Connection, messages: dict[int, str],
                       placements: dict[int, str] | None = None) -> None:
    """Record why VMs are still waiting (``SCHED_MESSAGE``, and the placement
    reason's JSON for those in ``placements``).

    Not a state change, so no version bump: a user action racing with the
    scheduler's note must not fail because of it. One statement for all the VMs that
    get the same columns (a pass over a full pool notes every pending VM).
    """
    placements = placements or {}
    both = [{"_id": vm_id, "sched_message": message, "placement": placements[vm_id]}
            for vm_id, message in messages.items() if vm_id in placements]
    message_only = [{"_id": vm_id, "sched_message": message}
                    for vm_id, message in messages.items() if vm_id not in placements]
    placement_only = [{"_id": vm_id, "placement": placement}
                      for vm_id, placement in placements.items() if vm_id not in messages]
    for rows in (both, message_only, placement_only):
        if rows:
            execute_many(connection, _note_statement(frozenset(rows[0]) - {"_id"}), rows,
                         disjoint=True)


@lru_cache(maxsize=4)
def _note_statement(columns: frozenset[str]) -> Update:
    """The unversioned update of ``columns`` of the VM ``_id`` (:func:`set_sched_messages`)."""
    return (update(vms).where(vms.c.id == bindparam("_id"))
            .values({name: bindparam(name) for name in sorted(columns)}))