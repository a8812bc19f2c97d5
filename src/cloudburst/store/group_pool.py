"""The group pool and the cluster pool: named sets of users and of hosts."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from cloudburst.errors import IllegalActionError, NotFoundError, PoolNameError
from cloudburst.model.records import ClusterRecord, GroupRecord
from cloudburst.store.prepared import Prepared
from cloudburst.store.schema import clusters, group_admins, groups, hosts, user_groups, users
from cloudburst.template import Template


def _members(connection: Connection, key: Any, column: Any) -> dict[int, tuple[int, ...]]:
    found: dict[int, list[int]] = defaultdict(list)
    for owner, member in connection.execute(select(key, column).order_by(column)):
        found[owner].append(member)
    return {owner: tuple(ids) for owner, ids in found.items()}


def list_groups(connection: Connection) -> list[GroupRecord]:
    """Every group with its users and admins, by id."""
    members = _members(connection, user_groups.c.group_id, user_groups.c.user_id)
    admins = _members(connection, group_admins.c.group_id, group_admins.c.user_id)
    return [GroupRecord(row.id, row.name, Template.from_stored_json(json.loads(row.template)),
                        members.get(row.id, ()), admins.get(row.id, ()))
            for row in connection.execute(select(groups).order_by(groups.c.id))]


_NAMES = select(groups.c.id, groups.c.name)
_NAME_OF = Prepared(select(groups.c.name).where(groups.c.id == bindparam("group_id")))


def group_names(connection: Connection) -> dict[int, str]:
    """Every group's name by id."""
    return {row.id: row.name for row in connection.execute(_NAMES)}


def group_name(connection: Connection, group_id: int) -> str | None:
    """The name of group ``group_id``; None when there is no such group."""
    row = _NAME_OF.first(connection, group_id=group_id)
    return None if row is None else str(row.name)


_GROUP_BY_ID = select(groups).where(groups.c.id == bindparam("group_id"))
_USERS_OF = select(user_groups.c.user_id).where(
    user_groups.c.group_id == bindparam("group_id")).order_by(user_groups.c.user_id)
_ADMINS_OF = select(group_admins.c.user_id).where(
    group_admins.c.group_id == bindparam("group_id")).order_by(group_admins.c.user_id)


def get_group(connection: Connection, group_id: int) -> GroupRecord:
    """The group ``group_id`` with its users and admins (read alone: every VM
    creation reads its owner's group).

    Raises:
        NotFoundError: no such group.
    """
    row = connection.execute(_GROUP_BY_ID, {"group_id": group_id}).first()
    if row is None:
        raise NotFoundError(f"GROUP {group_id} does not exist")
    key = {"group_id": group_id}
    return GroupRecord(row.id, row.name, Template.from_stored_json(json.loads(row.template)),
                       tuple(connection.execute(_USERS_OF, key).scalars()),
                       tuple(connection.execute(_ADMINS_OF, key).scalars()))


def _check_name(connection: Connection, table: Any, kind: str, name: str) -> None:
    if not name.strip():
        raise PoolNameError("Invalid NAME, it cannot be empty")
    row = connection.execute(select(table.c.id).where(table.c.name == name)).first()
    if row is not None:
        raise PoolNameError(f"NAME is already taken by {kind} {row.id}.")


def insert_group(connection: Connection, group_id: int, name: str) -> None:
    _check_name(connection, groups, "GROUP", name)
    connection.execute(insert(groups).values(id=group_id, name=name, template="[]"))


def update_group(connection: Connection, group_id: int, **values: object) -> None:
    if "name" in values:
        _check_name(connection, groups, "GROUP", str(values["name"]))
    template = values.get("template")
    if isinstance(template, Template):
        values["template"] = json.dumps(template.to_json())
    if connection.execute(update(groups).where(groups.c.id == group_id).values(**values)
                          ).rowcount != 1:
        raise NotFoundError(f"GROUP {group_id} does not exist")


def delete_group(connection: Connection, group_id: int) -> None:
    """Raises: IllegalActionError: the group still has users (oned's wording)."""
    get_group(connection, group_id)
    primary = connection.execute(select(func.count()).select_from(users).where(
        users.c.gid == group_id)).scalar_one()
    secondary = connection.execute(select(func.count()).select_from(user_groups).where(
        user_groups.c.group_id == group_id)).scalar_one()
    if primary or secondary:
        raise IllegalActionError(f"Cannot delete group. Group {group_id} is not empty.")
    connection.execute(delete(group_admins).where(group_admins.c.group_id == group_id))
    connection.execute(delete(groups).where(groups.c.id == group_id))


def set_admin(connection: Connection, group_id: int, user_id: int, *, admin: bool) -> None:
    connection.execute(delete(group_admins).where(group_admins.c.group_id == group_id,
                                                  group_admins.c.user_id == user_id))
    if admin:
        connection.execute(insert(group_admins).values(group_id=group_id, user_id=user_id))


# -- clusters -----------------------------------------------------------------------------


def list_clusters(connection: Connection) -> list[ClusterRecord]:
    """Every cluster with its hosts, by id."""
    members: dict[int, list[int]] = defaultdict(list)
    for host_id, cluster_id in connection.execute(
            select(hosts.c.id, hosts.c.cluster_id).order_by(hosts.c.id)):
        members[cluster_id].append(host_id)
    return [ClusterRecord(row.id, row.name, Template.from_stored_json(json.loads(row.template)),
                          tuple(members.get(row.id, ())))
            for row in connection.execute(select(clusters).order_by(clusters.c.id))]


_CLUSTER_BY_ID = select(clusters).where(clusters.c.id == bindparam("cluster_id"))
_HOSTS_OF = select(hosts.c.id).where(hosts.c.cluster_id == bindparam("cluster_id")).order_by(
    hosts.c.id)


def get_cluster(connection: Connection, cluster_id: int, *,
                with_hosts: bool = True) -> ClusterRecord:
    """The cluster ``cluster_id``, with its hosts' ids unless ``with_hosts`` is false
    (adding one of 10,000 hosts must not read the other 9,999).

    Raises:
        NotFoundError: no such cluster.
    """
    key = {"cluster_id": cluster_id}
    row = connection.execute(_CLUSTER_BY_ID, key).first()
    if row is None:
        raise NotFoundError(f"CLUSTER {cluster_id} does not exist")
    members = tuple(connection.execute(_HOSTS_OF, key).scalars()) if with_hosts else ()
    return ClusterRecord(row.id, row.name, Template.from_stored_json(json.loads(row.template)),
                         members)


def insert_cluster(connection: Connection, cluster_id: int, name: str) -> None:
    _check_name(connection, clusters, "CLUSTER", name)
    connection.execute(insert(clusters).values(id=cluster_id, name=name, template="[]"))


def update_cluster(connection: Connection, cluster_id: int, **values: object) -> None:
    if "name" in values:
        _check_name(connection, clusters, "CLUSTER", str(values["name"]))
    template = values.get("template")
    if isinstance(template, Template):
        values["template"] = json.dumps(template.to_json())
    if connection.execute(update(clusters).where(clusters.c.id == cluster_id).values(**values)
                          ).rowcount != 1:
        raise NotFoundError(f"CLUSTER {cluster_id} does not exist")


def delete_cluster(connection: Connection, cluster_id: int) -> None:
    """Raises: IllegalActionError: the cluster still has hosts (oned's wording)."""
    cluster = get_cluster(connection, cluster_id)
    if cluster.hosts:
        raise IllegalActionError(f"Cannot delete cluster. Cluster {cluster_id} is not empty, "
                                 f"it contains {len(cluster.hosts)} hosts.")
    connection.execute(delete(clusters).where(clusters.c.id == cluster_id))


def move_host(connection: Connection, host_id: int, cluster_id: int) -> None:
    """Put host ``host_id`` in cluster ``cluster_id`` (a host is in exactly one)."""
    get_cluster(connection, cluster_id, with_hosts=False)
    if connection.execute(update(hosts).where(hosts.c.id == host_id).values(
            cluster_id=cluster_id, version=hosts.c.version + 1)).rowcount != 1:
        raise NotFoundError(f"HOST {host_id} does not exist")
