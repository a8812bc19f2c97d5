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


async def group_info(call: Call) -> object:
    """``one.group.info(id [, decrypt])``; -1 is the caller's group."""
    group_id = call.params.integer("id")
    call.params.boolean("decrypt", False)
    call.params.end()
    daemon = call.daemon
    group = await daemon.groups.info(call.user.gid if group_id == -1 else group_id)
    return docs.group_document(group, limits=await daemon.quotas.limits("group", group.id),
                               usage=await daemon.quotas.usage("group", group.id),
                               defaults=await daemon.quotas.limits("group", -1))


async def grouppool_info(call: Call) -> object:
    """``one.grouppool.info()``: the groups the caller may use (its own at least)."""
    call.params.end()
    daemon = call.daemon
    visible = await daemon.access.visible(caller_of(call.user), "GROUP")
    groups = [group for group in await daemon.groups.pool()
              if visible(group.id, -1, group.id, permissions.GROUP_MEMBERS)]
    limits = await daemon.quotas.all_limits("group")
    return docs.group_pool_document(
        [(group, limits.get(group.id, {}), await daemon.quotas.usage("group", group.id))
         for group in groups], defaults=await daemon.quotas.limits("group", -1))


async def group_allocate(call: Call) -> object:
    name = call.params.string("name")
    call.params.end()
    return await call.daemon.groups.allocate(name)


async def group_delete(call: Call) -> object:
    group_id = call.params.integer("id")
    call.params.end()
    await call.daemon.groups.delete(group_id)
    return group_id


async def group_update(call: Call) -> object:
    group_id, text = call.params.integer("id"), call.params.string("template")
    merge = update_type(call.params.integer("type", 0))
    call.params.end()
    await call.daemon.groups.update(group_id, text, merge=merge)
    return group_id


async def group_addadmin(call: Call) -> object:
    group_id, user_id = call.params.integer("id"), call.params.integer("user_id")
    call.params.end()
    await call.daemon.groups.set_admin(group_id, user_id, admin=True)
    return group_id


async def group_deladmin(call: Call) -> object:
    group_id, user_id = call.params.integer("id"), call.params.integer("user_id")
    call.params.end()
    await call.daemon.groups.set_admin(group_id, user_id, admin=False)
    return group_id


async def group_quota(call: Call) -> object:
    group_id, text = call.params.integer("id"), call.params.string("template")
    call.params.end()
    await call.daemon.groups.info(group_id)
    await call.daemon.quotas.set("group", group_id, text)
    return group_id


async def groupquota_info(call: Call) -> object:
    call.params.end()
    return docs.quota_defaults_document("DEFAULT_GROUP_QUOTAS",
                                        await call.daemon.quotas.limits("group", -1))


async def groupquota_update(call: Call) -> object:
    text = call.params.string("template")
    call.params.end()
    await call.daemon.quotas.set("group", -1, text)
    return docs.quota_defaults_document("DEFAULT_GROUP_QUOTAS",
                                        await call.daemon.quotas.limits("group", -1))


# -- clusters -----------------------------------------------------------------------------


async def cluster_info(call: Call) -> object:
    """``one.cluster.info(id)``; a site with budgets also shows them with their use
    (``VM_QUOTA``, as a user's)."""
    cluster_id = call.params.integer("id")
    call.params.boolean("decrypt", False)
    call.params.end()
    cluster = await call.daemon.groups.cluster(cluster_id)
    limits = await call.daemon.quotas.limits("cluster", cluster_id)
    usage = await call.daemon.quotas.usage("cluster", cluster_id) if limits else {}
    return docs.cluster_document(cluster, limits, usage)


async def cluster_quota(call: Call) -> object:
    """``one.cluster.quota(id, template)``: set a site's own budgets (cloudburst's own)."""
    cluster_id, text = call.params.integer("id"), call.params.string("template")
    call.params.end()
    await call.daemon.groups.cluster(cluster_id)
    await call.daemon.quotas.set("cluster", cluster_id, text)
    return cluster_id


async def clusterpool_info(call: Call) -> object:
    call.params.end()
    visible = await call.daemon.access.visible(caller_of(call.user), "CLUSTER")
    return docs.cluster_pool_document(
        cluster for cluster in await call.daemon.groups.clusters()
        if visible(cluster.id, 0, 0, None))


async def cluster_allocate(call: Call) -> object:
    name = call.params.string("name")
    call.params.end()
    return await call.daemon.groups.allocate_cluster(name)


async def cluster_delete(call: Call) -> object:
    cluster_id = call.params.integer("id")
    call.params.end()
    await call.daemon.groups.delete_cluster(cluster_id)
    return cluster_id


async def cluster_update(call: Call) -> object:
    cluster_id, text = call.params.integer("id"), call.params.string("template")
    merge = update_type(call.params.integer("type", 0))
    call.params.end()
    await call.daemon.groups.update_cluster(cluster_id, text, merge=merge)
    return cluster_id


async def cluster_rename(call: Call) -> object:
    cluster_id, name = call.params.integer("id"), call.params.string("name")
    call.params.end()
    await call.daemon.groups.rename_cluster(cluster_id, name)
    return cluster_id


async def cluster_addhost(call: Call) -> object:
    cluster_id, host_id = call.params.integer("id"), call.params.integer("host_id")
    call.params.end()
    await call.daemon.groups.move_host(host_id, cluster_id)
    return cluster_id


async def cluster_delhost(call: Call) -> object:
    cluster_id, host_id = call.params.integer("id"), call.params.integer("host_id")
    call.params.end()
    await call.daemon.groups.cluster(cluster_id)
    await call.daemon.groups.move_host(host_id, 0)
    return cluster_id


# -- ACL rules and the audit trail --------------------------------------------------------


async def acl_addrule(call: Call) -> object:
    """``one.acl.addrule(user, resource, rights [, zone])``, numbers as hex strings."""
    params = call.params
    user, resource, rights = params.string("user"), params.string("resource"), params.string(
        "rights")
    zone = params.string("zone", "")
    params.end()
    return await call.daemon.access.add_rule(user, resource, rights, zone or None)


async def acl_delrule(call: Call) -> object:
    rule_id = call.params.integer("id")
    call.params.end()
    await call.daemon.access.delete_rule(rule_id)
    return rule_id


async def acl_info(call: Call) -> object:
    call.params.end()
    return docs.acl_pool_document(await call.daemon.access.rules())


async def audit_info(call: Call) -> object:
    """``one.audit.info([since [, uid [, limit]]])``: the newest records, oldest first.

    ``since`` is UNIX seconds (0: from the start), ``uid`` -1 every user,
    ``limit`` at most 10,000 records (default 1,000).
    """
    params = call.params
    since, uid = params.integer("since", 0), params.integer("uid", -1)
    limit = min(max(params.integer("limit", 1000), 1), 10_000)
    params.end()
    return docs.audit_document(await call.daemon.audit.entries(
        since=float(since), uid=None if uid < 0 else uid, limit=limit))


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
