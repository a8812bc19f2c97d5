"""Who owns an object and what its permissions are: one reader for every kind.

Kinds are the ACL resource names (``VM``, ``TEMPLATE``, ``HOST``, ``USER``,
``GROUP``, ``CLUSTER``). VMs and templates have an owner, a group and
``UUU GGG OOO`` permissions; hosts belong to oneadmin and to a cluster; users
"own" themselves (``USER_SELF``) in their primary group; a group's members may use
it (``GROUP_MEMBERS``); clusters have only ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import BindParameter, Connection, bindparam, select, update

from cloudburst.auth import permissions
from cloudburst.errors import NotFoundError
from cloudburst.store.prepared import Prepared
from cloudburst.store.schema import clusters, groups, hosts, users, vm_templates, vms


@dataclass(frozen=True, slots=True)
class Ownership:
    uid: int
    gid: int
    perms: int | None
    clusters: frozenset[int]


T = TypeVar("T")

#: A read of one whole object (a VM with its history, say) that also gives the object's
#: :class:`Ownership` from the same row(s): an access check that reads through it needs
#: no read of its own (``AccessService.require``'s ``read``).
OwnedRead = Callable[[Connection], tuple[T, Ownership]]


def of_vm(uid: int, gid: int, perms: int | None, host_cluster: int | None) -> Ownership:
    """A VM's ownership: its owner, group and permissions, and the cluster of its host
    (``host_cluster``; None when it is on no host)."""
    return Ownership(uid, gid, perms,
                     frozenset() if host_cluster is None else frozenset({host_cluster}))


# Prepared: every API call runs one of these (SQLAlchemy's execution costs more than them).
_OID: BindParameter[int] = bindparam("oid")
_VM = Prepared(select(vms.c.uid, vms.c.gid, vms.c.perms, hosts.c.cluster_id)
               .select_from(vms.outerjoin(hosts, hosts.c.id == vms.c.host_id))
               .where(vms.c.id == _OID))
_TEMPLATE = Prepared(select(vm_templates.c.uid, vm_templates.c.gid, vm_templates.c.perms)
                     .where(vm_templates.c.id == _OID))
_HOST = Prepared(select(hosts.c.cluster_id).where(hosts.c.id == _OID))
_USER = Prepared(select(users.c.gid).where(users.c.id == _OID))
_EXISTS = {"GROUP": Prepared(select(groups.c.id).where(groups.c.id == _OID)),
           "CLUSTER": Prepared(select(clusters.c.id).where(clusters.c.id == _OID))}


def ownership(connection: Connection, kind: str, oid: int) -> Ownership:
    """The owner, group, permissions and clusters of object ``kind`` ``oid``.

    Raises:
        NotFoundError: no such object ("<KIND> <id> does not exist").
    """
    if kind == "VM":
        found = _VM.first(connection, oid=oid)
        if found is not None:
            return of_vm(found.uid, found.gid, found.perms, found.cluster_id)
    elif kind == "TEMPLATE":
        row = _TEMPLATE.first(connection, oid=oid)
        if row is not None:
            return Ownership(row.uid, row.gid, row.perms, frozenset())
    elif kind == "HOST":
        row = _HOST.first(connection, oid=oid)
        if row is not None:
            return Ownership(0, 0, None, frozenset({row.cluster_id}))
    elif kind == "USER":
        row = _USER.first(connection, oid=oid)
        if row is not None:
            return Ownership(oid, row.gid, permissions.USER_SELF, frozenset())
    elif kind in _EXISTS and _EXISTS[kind].first(connection, oid=oid) is not None:
        if kind == "GROUP":
            return Ownership(-1, oid, permissions.GROUP_MEMBERS, frozenset())
        return Ownership(0, 0, None, frozenset({oid}))
    raise NotFoundError(f"{kind} {oid} does not exist")


_OWNED = {"VM": vms, "TEMPLATE": vm_templates}


def change(connection: Connection, kind: str, oid: int, *, uid: int | None = None,
           gid: int | None = None, perms: int | None = None) -> None:
    """Change a VM's or template's owner, group or permissions (VMs: a new version).

    Raises:
        NotFoundError: no such object.
    """
    table = _OWNED[kind]
    values: dict[str, object] = {}
    if uid is not None:
        values["uid"] = uid
    if gid is not None:
        values["gid"] = gid
    if perms is not None:
        values["perms"] = perms
    if kind == "VM":
        values["version"] = vms.c.version + 1
    if not values:
        return
    if connection.execute(update(table).where(table.c.id == oid).values(**values)
                          ).rowcount != 1:
        raise NotFoundError(f"{kind} {oid} does not exist")
