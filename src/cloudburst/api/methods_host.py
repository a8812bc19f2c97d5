"""The ``one.host.*`` and ``one.hostpool.*`` methods.

Handlers follow :mod:`cloudburst.api.calls`; the dispatch table that names
them is in :mod:`cloudburst.api.xmlrpc`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cloudburst.api import documents
from cloudburst.api.calls import Call, update_type
from cloudburst.api.host_pool_cache import host_cache_of
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


async def host_allocate(call: Call, hostname: str, im_mad: str, vmm_mad: str,
                        *rest: object) -> object:
    """6.x ``name, im, vmm, cluster`` and the older forms the seeds use.

    3.0 ``name, im, vmm, tm``; 3.2 ``name, im, vmm, tm, vnm``; 3.4-4.x
    ``name, im, vmm, vnm, cluster``. The cluster -1 is the default one (0).
    """
    tm_mad = vn_mad = "dummy"
    cluster_id = -1
    match rest:
        case ():
            pass
        case (int() as cluster_id,) if not isinstance(cluster_id, bool):
            pass
        case (str() as tm_mad,):
            pass
        case (str() as tm_mad, str() as vn_mad):
            pass
        case (str() as vn_mad, int() as cluster_id) if not isinstance(cluster_id, bool):
            pass
        case _:
            raise ApiArgumentError(
                "Wrong parameters: use hostname, im_mad, vmm_mad, cluster_id (int); or the "
                "3.x/4.x forms hostname, im_mad, vmm_mad, tm_mad [, vnm_mad] and hostname, "
                "im_mad, vmm_mad, vnm_mad, cluster_id")
    return await call.daemon.hosts.allocate(hostname, im_mad, vmm_mad, tm_mad=tm_mad,
                                            vn_mad=vn_mad, cluster_id=cluster_id)


async def host_info(call: Call, id: int, decrypt: bool = False) -> object:
    """``one.host.info(id [, decrypt])``: the host document."""
    host = await call.daemon.hosts.info(id)
    return documents.host_document(host, cluster=(await _cluster_names(call))(host.cluster_id))


async def hostpool_info(call: Call) -> object:
    """``one.hostpool.info()``: the hosts the caller may use, highest id first as oned
    lists them (entries rendered once per change: :mod:`cloudburst.api.host_pool_cache`)."""
    visible, every = await asyncio.gather(
        call.daemon.access.pool_filter(caller_of(call.user), "HOST"),
        call.daemon.hosts.pool_stamps())
    listed = [stamp for stamp in reversed(every)
              if visible is None or visible(stamp.id, 0, 0, None)]
    return await host_cache_of(call.daemon).document(call.daemon, every, listed)


async def _cluster_names(call: Call) -> Callable[[int], str]:
    """A lookup from cluster id to name (the number when the cluster is gone)."""
    names = {cluster.id: cluster.name for cluster in await call.daemon.groups.clusters()}
    return lambda cluster_id: names.get(cluster_id, str(cluster_id))


async def host_delete(call: Call, id: int) -> object:
    """``one.host.delete(id)``."""
    return await call.daemon.hosts.delete(id)


async def host_status(call: Call, id: int, status: int) -> object:
    """``one.host.status(id, status)``: 0 enable, 1 disable, 2 offline."""
    return await call.daemon.hosts.status(id, status)


async def host_update(call: Call, id: int, template: str, type: int = 0) -> object:
    """``one.host.update(id, template [, type])``: type 0 replaces, 1 merges."""
    return await call.daemon.hosts.update(id, template, merge=update_type(type))


async def host_rename(call: Call, id: int, name: str) -> object:
    """``one.host.rename(id, name)``."""
    return await call.daemon.hosts.rename(id, name)
