"""The ``one.host.*`` and ``one.hostpool.*`` methods.

Handlers follow :mod:`cloudburst.api.calls`; the dispatch table that names
them is in :mod:`cloudburst.api.xmlrpc`.
"""

from __future__ import annotations

from collections.abc import Callable

from cloudburst.api import documents
from cloudburst.api.calls import Call, render, update_type
from cloudburst.errors import ApiArgumentError
from cloudburst.service.access import caller_of

__all__ = [
    "host_allocate",
    "host_delete",
    "host_info",
    "host_rename",
    "host_status",
    "host_update",
    "hostpool_info",
]


async def host_allocate(call: Call) -> object:
    """6.x ``name, im, vmm, cluster`` and the older forms the seeds use.

    3.0 ``name, im, vmm, tm``; 3.2 ``name, im, vmm, tm, vnm``; 3.4-4.x
    ``name, im, vmm, vnm, cluster``. The cluster -1 is the default one (0).
    """
    params = call.params
    name, im_mad = params.string("hostname"), params.string("im_mad")
    vm_mad = params.string("vmm_mad")
    rest = params.rest()
    kinds = tuple(type(value) for value in rest)
    tm_mad = vn_mad = "dummy"
    cluster_id = -1
    if kinds == (int,):
        cluster_id = params.integer("cluster_id")
    elif kinds == (str,):
        tm_mad = params.string("tm_mad")
    elif kinds == (str, str):
        tm_mad, vn_mad = params.string("tm_mad"), params.string("vnm_mad")
    elif kinds == (str, int):
        vn_mad, cluster_id = params.string("vnm_mad"), params.integer("cluster_id")
    elif rest:
        raise ApiArgumentError(
            "Wrong parameters: use hostname, im_mad, vmm_mad, cluster_id (int); or the 3.x/4.x "
            "forms hostname, im_mad, vmm_mad, tm_mad [, vnm_mad] and hostname, im_mad, vmm_mad, "
            "vnm_mad, cluster_id")
    params.end()
    return await call.daemon.hosts.allocate(name, im_mad, vm_mad, tm_mad=tm_mad, vn_mad=vn_mad,
                                            cluster_id=cluster_id)


async def host_info(call: Call) -> object:
    """``one.host.info(id [, decrypt])``: the host document."""
    host_id = call.params.integer("id")
    call.params.boolean("decrypt", False)
    call.params.end()
    host = await call.daemon.hosts.info(host_id)
    return documents.host_document(host, cluster=(await _cluster_names(call))(host.cluster_id))


async def hostpool_info(call: Call) -> object:
    """``one.hostpool.info()``: the hosts the caller may use, highest id first as oned
    lists them (rendered on a worker thread)."""
    call.params.end()
    visible = await call.daemon.access.visible(caller_of(call.user), "HOST")
    hosts = sorted((host for host in await call.daemon.hosts.pool()
                    if visible(host.id, 0, 0, None)), key=lambda host: host.id, reverse=True)
    cluster = await _cluster_names(call)
    return await render(lambda: documents.host_pool_document(hosts, cluster=cluster))


async def _cluster_names(call: Call) -> Callable[[int], str]:
    """A lookup from cluster id to name (the number when the cluster is gone)."""
    names = {cluster.id: cluster.name for cluster in await call.daemon.groups.clusters()}
    return lambda cluster_id: names.get(cluster_id, str(cluster_id))


async def host_delete(call: Call) -> object:
    """``one.host.delete(id)``."""
    host_id = call.params.integer("id")
    call.params.end()
    return await call.daemon.hosts.delete(host_id)


async def host_status(call: Call) -> object:
    """``one.host.status(id, status)``: 0 enable, 1 disable, 2 offline."""
    host_id, status = call.params.integer("id"), call.params.integer("status")
    call.params.end()
    return await call.daemon.hosts.status(host_id, status)


async def host_update(call: Call) -> object:
    """``one.host.update(id, template [, type])``: type 0 replaces, 1 merges."""
    host_id, text = call.params.integer("id"), call.params.string("template")
    merge = update_type(call.params.integer("type", 0))
    call.params.end()
    return await call.daemon.hosts.update(host_id, text, merge=merge)


async def host_rename(call: Call) -> object:
    """``one.host.rename(id, name)``."""
    host_id, name = call.params.integer("id"), call.params.string("name")
    call.params.end()
    return await call.daemon.hosts.rename(host_id, name)
