"""Searching, sorting and paging the VM pool, and counting it, for tables and dashboards.

:func:`search_vms` reads only the columns a VM table shows (no templates to
decode), filters, sorts and pages in SQL, and counts the matches, so a page
of a 10,000-VM pool costs one indexed query. :func:`vm_counts` groups the
live pool by state and host for an overview.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement, Connection, false, func, or_, select

from cloudburst.model.states import CAPACITY_HOLDING_STATES, LcmState, VmState
from cloudburst.store.schema import vms
from cloudburst.template import Template

__all__ = ["SORT_KEYS", "VmCount", "VmRow", "VmSearch", "priced_vms", "search_owners", "search_vms",
           "vm_counts"]

#: Sort keys a search accepts, with the columns they order by (ties broken by id).
SORT_KEYS: Final[dict[str, tuple[Any, ...]]] = {
    "id": (vms.c.id,),
    "name": (vms.c.name,),
    "state": (vms.c.state, vms.c.lcm_state),
    "host": (vms.c.host_id,),
    "stime": (vms.c.stime,),
    "cpu": (vms.c.cpu,),
    "memory": (vms.c.memory,),
}

#: Ids per ``IN`` list (well under every backend's parameter limit).
_ID_CHUNK: Final = 900
_VM_STATES: Final = {int(state): state for state in VmState}
_LCM_STATES: Final = {int(state): state for state in LcmState}


@dataclass(frozen=True, slots=True)
class VmSearch:
    """What to look for.

    Attributes:
        text: matches a name or deploy id containing it (any case), or the id
            it spells.
        states: only these VM states (``None``: any but ``DONE``).
        host_ids: only VMs placed on these hosts (``None``: anywhere; an empty
            sequence matches nothing).
        uid: only this owner's VMs.
        ids: only these VMs (``None``: any).
        sort: a key of :data:`SORT_KEYS`.
        descending: reverse order.
        offset, limit: the page.
    """

    text: str = ""
    states: Sequence[VmState] | None = None
    host_ids: Sequence[int] | None = None
    uid: int | None = None
    ids: Sequence[int] | None = None
    sort: str = "id"
    descending: bool = False
    offset: int = 0
    limit: int = 50


@dataclass(frozen=True, slots=True)
class VmRow:
    """A VM as a table row shows it."""

    id: int
    name: str
    uid: int
    gid: int
    state: VmState
    lcm_state: LcmState
    host_id: int | None
    deploy_id: str
    stime: int
    cpu: float
    memory: int
    ip: str
    error: str


@dataclass(frozen=True, slots=True)
class VmCount:
    """How many live VMs share a state and a host, and what they hold."""

    state: VmState
    lcm_state: LcmState
    host_id: int | None
    count: int
    cpu_share: int
    memory: int


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


def _conditions(search: VmSearch) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if search.states is None:
        conditions.append(vms.c.state != int(VmState.DONE))
    else:
        conditions.append(vms.c.state.in_([int(state) for state in search.states]))
    if search.host_ids is not None:
        conditions.append(vms.c.host_id.in_(list(search.host_ids)) if search.host_ids
                          else false())
    if search.uid is not None:
        conditions.append(vms.c.uid == search.uid)
    if search.ids is not None:
        conditions.append(vms.c.id.in_(list(search.ids)) if search.ids else false())
    text = search.text.strip()
    if text:
        pattern = _like(text)
        matches: list[ColumnElement[bool]] = [
            func.lower(vms.c.name).like(pattern, escape="\\"),
            func.lower(vms.c.deploy_id).like(pattern, escape="\\"),
        ]
        if text.isdigit() and len(text) < 10:
            matches.append(vms.c.id == int(text))
        conditions.append(or_(*matches))
    return conditions


def _order(search: VmSearch) -> list[Any]:
    return [column.desc() if search.descending else column
            for column in (*SORT_KEYS[search.sort], vms.c.id)]


def search_owners(connection: Connection, search: VmSearch) -> list[tuple[int, int, int, int]]:
    """``(id, uid, gid, perms)`` of every VM ``search`` matches, in its order, unpaged.

    For callers that must filter by permissions before paging.

    Raises:
        KeyError: ``search.sort`` is not a key of :data:`SORT_KEYS`.
    """
    query = (select(vms.c.id, vms.c.uid, vms.c.gid, vms.c.perms)
             .where(*_conditions(search)).order_by(*_order(search)))
    return [(int(i), int(u), int(g), int(p)) for i, u, g, p in connection.execute(query)]


def search_vms(connection: Connection, search: VmSearch) -> tuple[int, list[VmRow]]:
    """``(how many match, the requested page of them)``.

    Raises:
        KeyError: ``search.sort`` is not a key of :data:`SORT_KEYS`.
    """
    columns = _order(search)
    conditions = _conditions(search)
    total = connection.execute(select(func.count()).select_from(vms).where(*conditions)
                               ).scalar_one()
    query = (select(vms.c.id, vms.c.name, vms.c.uid, vms.c.gid, vms.c.state, vms.c.lcm_state,
                    vms.c.host_id, vms.c.deploy_id, vms.c.stime, vms.c.cpu, vms.c.memory,
                    vms.c.monitoring, vms.c.error)
             .where(*conditions).order_by(*columns)
             .offset(max(search.offset, 0)).limit(max(search.limit, 0)))
    rows = [
        VmRow(id=row.id, name=row.name, uid=row.uid, gid=row.gid,
              state=_VM_STATES[row.state], lcm_state=_LCM_STATES[row.lcm_state],
              host_id=row.host_id, deploy_id=row.deploy_id, stime=row.stime, cpu=row.cpu,
              memory=row.memory, ip=str(json.loads(row.monitoring).get("IP", "")),
              error=row.error)
        for row in connection.execute(query)
    ]
    return int(total), rows


def vm_counts(connection: Connection, ids: Sequence[int] | None = None) -> list[VmCount]:
    """Live VMs (not ``DONE``) grouped by state, LCM state and host (only ``ids`` when given;
    groups of the same key from different id chunks are not merged)."""
    query = (select(vms.c.state, vms.c.lcm_state, vms.c.host_id, func.count(),
                    func.sum(vms.c.cpu_share), func.sum(vms.c.memory))
             .where(vms.c.state != int(VmState.DONE))
             .group_by(vms.c.state, vms.c.lcm_state, vms.c.host_id))
    chunks = [None] if ids is None else [ids[i:i + _ID_CHUNK]
                                         for i in range(0, len(ids), _ID_CHUNK)]
    found: list[VmCount] = []
    for chunk in chunks:
        chunked = query if chunk is None else query.where(vms.c.id.in_(list(chunk)))
        found.extend(VmCount(_VM_STATES[state], _LCM_STATES[lcm], host_id, int(count),
                             int(cpu or 0), int(memory or 0))
                     for state, lcm, host_id, count, cpu, memory in connection.execute(chunked))
    return found


def priced_vms(connection: Connection, host_ids: Sequence[int]
               ) -> list[tuple[int, float, int, Template]]:
    """``(id, cpu, memory, template)`` of VMs holding capacity on ``host_ids`` whose
    template mentions a ``*_COST`` attribute (the others have no known cost).

    The template is TEMPLATE and USER_TEMPLATE merged.
    """
    query = (select(vms.c.id, vms.c.cpu, vms.c.memory, vms.c.template, vms.c.user_template)
             .where(vms.c.state.in_([int(state) for state in CAPACITY_HOLDING_STATES]))
             .where(vms.c.host_id.in_(list(host_ids)))
             .where(or_(vms.c.template.contains("_COST"),
                        vms.c.user_template.contains("_COST"))))
    found = []
    for row in connection.execute(query):
        template = Template.from_stored_json(json.loads(row.template))
        template.merge(Template.from_stored_json(json.loads(row.user_template)), replace=False)
        found.append((int(row.id), float(row.cpu), int(row.memory), template))
    return found
