"""Rendered pool entries, reused while the VM they show is unchanged.

Clients poll ``one.vmpool.info``/``infoextended`` in loops (pyone users call
``infoextended(-2, -1, -1, -1)`` every second). Decoding and rendering 10,000
VMs each time costs most of a second; most of them have not changed since the
last call. Each rendered ``VM`` element is kept with the stamp it was made
from (the row's version, its scheduler message, the owner's and the group's
names), and a
pool listing reads only the stamps, then decodes and renders just the VMs
whose stamp moved.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cloudburst.api import documents
from cloudburst.api.calls import shown_name
from cloudburst.store.vm_pool import VmStamp

if TYPE_CHECKING:
    from cloudburst.service.facade import Services

#: Entries kept beyond what the last listing showed before the cache is trimmed.
SPARE_ENTRIES = 10_000

_Key = tuple[int, str, str, str]


class VmPoolCache:
    """Rendered ``VM`` elements of one daemon, for both pool forms."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, bool], tuple[_Key, str]] = {}

    async def document(self, daemon: Services, stamps: Sequence[VmStamp], *,
                       extended: bool) -> str:
        """The ``VM_POOL`` document listing ``stamps``' VMs, in that order."""
        fragments: dict[int, str] = {}
        stale: dict[int, _Key] = {}
        for stamp in stamps:
            key = (stamp.version, stamp.sched_message, shown_name(stamp.uname, stamp.uid),
                   shown_name(stamp.gname, stamp.gid))
            entry = self._entries.get((stamp.id, extended))
            if entry is not None and entry[0] == key:
                fragments[stamp.id] = entry[1]
            else:
                stale[stamp.id] = key
        if stale:
            records = await daemon.vms.records(list(stale))
            # Rendering thousands of VMs is CPU work: keep it off the loop.
            rendered = await asyncio.get_running_loop().run_in_executor(None, lambda: [
                documents.vm_pool_entry(vm, extended=extended, uname=stale[vm.id][2],
                                        gname=stale[vm.id][3])
                for vm in records])
            for vm, text in zip(records, rendered, strict=True):
                # The stamp's version: a VM changed since is re-rendered next time.
                self._entries[(vm.id, extended)] = (stale[vm.id], text)
                fragments[vm.id] = text
        self._trim(len(stamps), {stamp.id for stamp in stamps}, extended)
        return "".join(["<VM_POOL>", *(fragments[stamp.id] for stamp in stamps
                                       if stamp.id in fragments), "</VM_POOL>"])

    def _trim(self, listed: int, keep: set[int], extended: bool) -> None:
        if len(self._entries) > 2 * listed + SPARE_ENTRIES:
            self._entries = {key: value for key, value in self._entries.items()
                             if key[0] in keep and key[1] == extended}


_caches: weakref.WeakKeyDictionary[Services, VmPoolCache] = weakref.WeakKeyDictionary()


def cache_of(daemon: Services) -> VmPoolCache:
    """The cache serving ``daemon``'s API (created on first use)."""
    cache = _caches.get(daemon)
    if cache is None:
        cache = _caches[daemon] = VmPoolCache()
    return cache
