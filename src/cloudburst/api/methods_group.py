"""The ``one.group*``, ``one.cluster*``, ``one.acl*`` methods and ``one.audit.info``.

Handlers follow :mod:`cloudburst.api.calls`; who may call them is decided
before they run (``service/access_table.py``).
"""

from __future__ import annotations

from typing import Final

from cloudburst.api import tenancy_documents as docs
from cloudburst.api.calls import Call, Handler, update_type
from cloudburst.auth import permissions
from cloudburst.service.access import caller_of

# -- groups -------------------------------------------------------------------------------


async def group_info(call: Call, id: int, decrypt: bool = False) -> object:
    """``one.group.info(id [, decrypt])``; -1 is the caller's group."""
    daemon = call.daemon
    group = await daemon.groups.info(call.user.gid if id == -1 else id)
    return docs.group_document(group, limits=await daemon.quotas.limits("group", group.id),
                               usage=await daemon.quotas.usage("group", group.id),
                               defaults=await daemon.quotas.limits("group", -1))


async def grouppool_info(call: Call) -> object:
    """``one.grouppool.info()``: the groups the caller may use (its own at least)."""
    daemon = call.daemon
    visible = await daemon.access.visible(caller_of(call.user), "GROUP")
    groups = [group for group in await daemon.groups.pool()
              if visible(group.id, -1, group.id, permissions.GROUP_MEMBERS)]
    limits = await daemon.quotas.all_limits("group")
    return docs.group_pool_document(
        [(group, limits.get(group.id, {}), await daemon.quotas.usage("group", group.id))
         for group in groups], defaults=await daemon.quotas.limits("group", -1))


async def group_allocate(call: Call, name: str) -> object:
    return await call.daemon.groups.allocate(name)


async def group_delete(call: Call, id: int) -> object:
    await call.daemon.groups.delete(id)
    return id


async def group_update(call: Call, id: int, template: str, type: int = 0) -> object:
    await call.daemon.groups.update(id, template, merge=update_type(type))
    return id


async def group_addadmin(call: Call, id: int, user_id: int) -> object:
    await call.daemon.groups.set_admin(id, user_id, admin=True)
    return id


async def group_deladmin(call: Call, id: int, user_id: int) -> object:
    await call.daemon.groups.set_admin(id, user_id, admin=False)
    return id


async def group_quota(call: Call, id: int, template: str) -> object:
    await call.daemon.groups.info(id)
    await call.daemon.quotas.set("group", id, template)
    return id


async def groupquota_info(call: Call) -> object:
    return docs.quota_defaults_document("DEFAULT_GROUP_QUOTAS",
                                        await call.daemon.quotas.limits("group", -1))


async def groupquota_update(call: Call, template: str) -> object:
    await call.daemon.quotas.set("group", -1, template)
    return docs.quota_defaults_document("DEFAULT_GROUP_QUOTAS",
                                        await call.daemon.quotas.limits("group", -1))


# -- clusters -----------------------------------------------------------------------------


async def cluster_info(call: Call, id: int, decrypt: bool = False) -> object:
    """``one.cluster.info(id)``; a site with budgets also shows them with their use
    (``VM_QUOTA``, as a user's)."""
    cluster = await call.daemon.groups.cluster(id)
    limits = await call.daemon.quotas.limits("cluster", id)
    usage = await call.daemon.quotas.usage("cluster", id) if limits else {}
    return docs.cluster_document(cluster, limits, usage)


async def cluster_quota(call: Call, id: int, template: str) -> object:
    """``one.cluster.quota(id, template)``: set a site's own budgets (cloudburst's own)."""
    await call.daemon.groups.cluster(id)
    await call.daemon.quotas.set("cluster", id, template)
    return id


async def clusterpool_info(call: Call) -> object:
    visible = await call.daemon.access.visible(caller_of(call.user), "CLUSTER")
    return docs.cluster_pool_document(
        cluster for cluster in await call.daemon.groups.clusters()
        if visible(cluster.id, 0, 0, None))


async def cluster_allocate(call: Call, name: str) -> object:
    return await call.daemon.groups.allocate_cluster(name)


async def cluster_delete(call: Call, id: int) -> object:
    await call.daemon.groups.delete_cluster(id)
    return id


async def cluster_update(call: Call, id: int, template: str, type: int = 0) -> object:
    await call.daemon.groups.update_cluster(id, template, merge=update_type(type))
    return id


async def cluster_rename(call: Call, id: int, name: str) -> object:
    await call.daemon.groups.rename_cluster(id, name)
    return id


async def cluster_addhost(call: Call, id: int, host_id: int) -> object:
    await call.daemon.groups.move_host(host_id, id)
    return id


async def cluster_delhost(call: Call, id: int, host_id: int) -> object:
    await call.daemon.groups.cluster(id)
    await call.daemon.groups.move_host(host_id, 0)
    return id


# -- ACL rules and the audit trail --------------------------------------------------------


async def acl_addrule(call: Call, user: str, resource: str, rights: str,
                      zone: str = "") -> object:
    """``one.acl.addrule(user, resource, rights [, zone])``, numbers as hex strings."""
    return await call.daemon.access.add_rule(user, resource, rights, zone or None)


async def acl_delrule(call: Call, id: int) -> object:
    await call.daemon.access.delete_rule(id)
    return id


async def acl_info(call: Call) -> object:
    return docs.acl_pool_document(await call.daemon.access.rules())


async def audit_info(call: Call, since: int = 0, uid: int = -1, limit: int = 1000) -> object:
    """``one.audit.info([since [, uid [, limit]]])``: the newest records, oldest first.

    ``since`` is UNIX seconds (0: from the start), ``uid`` -1 every user,
    ``limit`` at most 10,000 records (default 1,000).
    """
    return docs.audit_document(await call.daemon.audit.entries(
        since=float(since), uid=None if uid < 0 else uid, limit=min(max(limit, 1), 10_000)))


METHODS: Final[dict[str, Handler]] = {
    "one.group.info": group_info,
    "one.grouppool.info": grouppool_info,
    "one.group.allocate": group_allocate,
    "one.group.delete": group_delete,
    "one.group.update": group_update,
    "one.group.addadmin": group_addadmin,
    "one.group.deladmin": group_deladmin,
    "one.group.quota": group_quota,
    "one.groupquota.info": groupquota_info,
    "one.groupquota.update": groupquota_update,
    "one.cluster.info": cluster_info,
    "one.cluster.quota": cluster_quota,
    "one.clusterpool.info": clusterpool_info,
    "one.cluster.allocate": cluster_allocate,
    "one.cluster.delete": cluster_delete,
    "one.cluster.update": cluster_update,
    "one.cluster.rename": cluster_rename,
    "one.cluster.addhost": cluster_addhost,
    "one.cluster.delhost": cluster_delhost,
    "one.acl.addrule": acl_addrule,
    "one.acl.delrule": acl_delrule,
    "one.acl.info": acl_info,
    "one.audit.info": audit_info,
}
