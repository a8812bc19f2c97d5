"""Groups (with their administrators) and clusters (with their hosts).

Making a user a group admin is, as in OpenNebula, a set of ACL rules: the
admin may use, manage and create the group's users and use and manage its
VMs, templates and other resources. :data:`ADMIN_RULES` are those rules.
"""

from __future__ import annotations

from sqlalchemy import Connection

from cloudburst.auth import acl
from cloudburst.errors import IllegalActionError
from cloudburst.model.records import ClusterRecord, GroupRecord
from cloudburst.store import acl_pool, group_pool, quota_pool, user_pool
from cloudburst.store.database import Database
from cloudburst.store.sequences import next_ids
from cloudburst.template import Template, parse_any

#: ``(resources, rights)`` of the rules a group admin gets, ``{gid}`` filled in.
ADMIN_RULES = (
    ("USER/@{gid}", "USE+MANAGE+ADMIN+CREATE"),
    ("VM+NET+IMAGE+TEMPLATE+DOCUMENT+SECGROUP+VROUTER+VMGROUP+BACKUPJOB/@{gid}", "USE+MANAGE"),
    ("VROUTER/*", "CREATE"),
    ("GROUP/#{gid}", "MANAGE"),
)
#: Rules oned gives a new group, ``{gid}`` filled in (OpenNebula's CLI then adds a
#: CREATE rule itself, as ``onegroup create`` does against oned).
NEW_GROUP_RULES = ("@{gid} HOST/* MANAGE #0", "@{gid} NET/* USE #0", "@{gid} DATASTORE/* USE #0")
_BUILT_IN = (0, 1)


def _admin_rules(uid: int, gid: int) -> list[tuple[int, int, int, int]]:
    return [acl.parse(f"#{uid} {resources.format(gid=gid)} {rights} *")
            for resources, rights in ADMIN_RULES]


class GroupService:
    """The group pool and the cluster pool."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- groups -------------------------------------------------------------------------

    async def pool(self) -> list[GroupRecord]:
        return await self.db.read(group_pool.list_groups)

    async def info(self, group_id: int) -> GroupRecord:
        return await self.db.read(lambda c: group_pool.get_group(c, group_id))

    async def names(self) -> dict[int, str]:
        """Every group's name by id."""
        return await self.db.read(group_pool.group_names)

    async def name(self, group_id: int) -> str | None:
        """The name of group ``group_id``; None when there is no such group."""
        return await self.db.lookup(lambda c: group_pool.group_name(c, group_id))

    async def allocate(self, name: str) -> int:
        def write(connection: Connection) -> int:
            group_id = next_ids(connection, "group")
            group_pool.insert_group(connection, group_id, name)
            for rule in NEW_GROUP_RULES:
                acl_pool.add_rule(connection, *acl.parse(rule.format(gid=group_id)))
            return group_id

        return await self.db.write(write)

    async def delete(self, group_id: int) -> None:
        """Raises: IllegalActionError: a built-in group, or one with users."""
        if group_id in _BUILT_IN:
            raise IllegalActionError(f"Cannot delete group. Group {group_id} is a system group.")

        def write(connection: Connection) -> None:
            group_pool.delete_group(connection, group_id)
            quota_pool.delete_limits(connection, "group", group_id)
            acl_pool.delete_rules_of(connection, user=acl.GROUP | group_id)

        await self.db.write(write)

    async def update(self, group_id: int, text: str, *, merge: bool) -> None:
        change = parse_any(text)

        def write(connection: Connection) -> None:
            current = group_pool.get_group(connection, group_id).template
            template = current.copy() if merge else Template()
            template.merge(change, replace=True)
            group_pool.update_group(connection, group_id, template=template)

        await self.db.write(write)

    async def set_admin(self, group_id: int, user_id: int, *, admin: bool) -> None:
        """Make (or unmake) a member the group's admin, with the admin ACL rules."""
        def write(connection: Connection) -> None:
            group = group_pool.get_group(connection, group_id)
            user = user_pool.get_user(connection, user_id)
            if group_id not in user.groups:
                raise IllegalActionError(f"User {user_id} is not in group {group_id}.")
            if admin == (user_id in group.admins):
                return
            group_pool.set_admin(connection, group_id, user_id, admin=admin)
            existing = {(r.user, r.resource, r.rights, r.zone): r.id
                        for r in acl_pool.list_rules(connection)}
            for numbers in _admin_rules(user_id, group_id):
                if admin and numbers not in existing:
                    acl_pool.add_rule(connection, *numbers)
                elif not admin and numbers in existing:
                    acl_pool.delete_rule(connection, existing[numbers])

        await self.db.write(write)

    # -- clusters -----------------------------------------------------------------------

    async def clusters(self) -> list[ClusterRecord]:
        return await self.db.read(group_pool.list_clusters)

    async def cluster(self, cluster_id: int) -> ClusterRecord:
        return await self.db.read(lambda c: group_pool.get_cluster(c, cluster_id))

    async def allocate_cluster(self, name: str) -> int:
        def write(connection: Connection) -> int:
            cluster_id = next_ids(connection, "cluster")
            group_pool.insert_cluster(connection, cluster_id, name)
            return cluster_id

        return await self.db.write(write)

    async def delete_cluster(self, cluster_id: int) -> None:
        if cluster_id == 0:
            raise IllegalActionError("Cannot delete cluster. Cluster 0 is the default cluster.")
        await self.db.write(lambda c: group_pool.delete_cluster(c, cluster_id))

    async def update_cluster(self, cluster_id: int, text: str, *, merge: bool) -> None:
        change = parse_any(text)

        def write(connection: Connection) -> None:
            current = group_pool.get_cluster(connection, cluster_id).template
            template = current.copy() if merge else Template()
            template.merge(change, replace=True)
            group_pool.update_cluster(connection, cluster_id, template=template)

        await self.db.write(write)

    async def rename_cluster(self, cluster_id: int, name: str) -> None:
        await self.db.write(lambda c: group_pool.update_cluster(c, cluster_id, name=name))

    async def move_host(self, host_id: int, cluster_id: int) -> None:
        """Put the host in the cluster (``delhost`` moves it back to cluster 0)."""
        await self.db.write(lambda c: group_pool.move_host(c, host_id, cluster_id))
