"""Rendered host pool entries, reused while the host they show is unchanged.

``one.hostpool.info`` shows every host with the VMs placed on it and the
capacity they hold. Reading and decoding every host row and rendering it on
each call costs most of the call; a host's entry changes only when its
:class:`~cloudburst.store.host_pool.HostStamp` does (its row's version, its
last monitoring time, its cluster's name, the VMs it holds). Each rendered
``HOST`` element is kept, escaped and encoded for the reply
(:mod:`cloudburst.api.encoded`), with the stamp it was made from; a listing
reads the stamps (two statements), then reads and renders only the hosts whose
stamp moved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from cloudburst.api import documents
from cloudburst.api.calls import INLINE_RENDER, shown_name
from cloudburst.api.encoded import EncodedText, escaped
from cloudburst.api.per_daemon import PerDaemon
from cloudburst.model.records import HostRecord
from cloudburst.store.host_pool import HostStamp

if TYPE_CHECKING:
    from cloudburst.service.facade import Services

_HEAD: Final = escaped("<HOST_POOL>")
_TAIL: Final = escaped("</HOST_POOL>")


class HostPoolCache:
    """Rendered ``HOST`` elements of one daemon, by host id."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[HostStamp, bytes]] = {}

    async def document(self, daemon: Services, every: Sequence[HostStamp],
                       listed: Sequence[HostStamp]) -> EncodedText:
        """The ``HOST_POOL`` document listing ``listed``' hosts in that order; ``every``
        is every host's stamp (entries of the hosts not in it are dropped)."""
        entries = self._entries
        stale = [stamp for stamp in listed
                 if (entry := entries.get(stamp.id)) is None or entry[0] != stamp]
        if stale:
            await self._render(daemon, stale)
        if len(entries) > len(every):
            present = {stamp.id for stamp in every}
            for host_id in [host_id for host_id in entries if host_id not in present]:
                del entries[host_id]
        return EncodedText([_HEAD, *(entry[1] for stamp in listed
                                     if (entry := entries.get(stamp.id)) is not None), _TAIL])

    async def _render(self, daemon: Services, stamps: Sequence[HostStamp]) -> None:
        """Render ``stamps``' hosts into the cache (those deleted meanwhile are skipped)."""
        by_id = {stamp.id: stamp for stamp in stamps}
        records = await daemon.hosts.records(list(by_id))

        def render() -> list[bytes]:
            return [escaped(documents.host_document(
                _shown(host, by_id[host.id]),
                cluster=shown_name(by_id[host.id].cluster, by_id[host.id].cluster_id)))
                for host in records]

        # Rendering many hosts is CPU work: then off the loop.
        rendered = render() if len(records) <= INLINE_RENDER else \
            await asyncio.get_running_loop().run_in_executor(None, render)
        for host, data in zip(records, rendered, strict=True):
            # Kept with the stamp it was listed with: a host changed since the stamps were
            # read shows a newer row here, and is rendered again at the next listing.
            self._entries[host.id] = (by_id[host.id], data)


def _shown(host: HostRecord, stamp: HostStamp) -> HostRecord:
    """``host`` with what its stamp carries (the stamp's values are what the entry is
    kept for)."""
    return replace(host, last_mon_time=stamp.last_mon_time, cluster_id=stamp.cluster_id,
                   cpu_usage=stamp.cpu_usage, mem_usage=stamp.mem_usage,
                   running_vms=stamp.running_vms, vm_ids=stamp.vm_ids)


#: The cache serving a daemon's API (created on first use).
host_cache_of: PerDaemon[HostPoolCache] = PerDaemon(HostPoolCache)
