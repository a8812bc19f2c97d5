"""Rendered pool entries, reused while the VM they show is unchanged.

Clients poll ``one.vmpool.info``/``infoextended`` in loops (pyone users call
``infoextended(-2, -1, -1, -1)`` every second). Decoding and rendering 10,000
VMs each time costs most of a second; most of them have not changed since the
last call. Each rendered ``VM`` element is kept, escaped and encoded for the
XML-RPC reply (:mod:`cloudburst.api.encoded`), with the stamp it was made
from (the row's version, its scheduler message, the owner's and the group's
names), and a pool listing reads only the stamps, then decodes and renders
just the VMs whose stamp moved: the reply is the cached bytes joined. A
listing whose stamps are all those of one of the last few documents made is
answered with that document (clients poll the same listing).

So that a listing seldom renders anything, :meth:`VmPoolCache.keep_warm`
renders the short entry (``one.vmpool.info``'s) of every VM that is not DONE
when the API starts, then of each VM a change is published for once it has
been quiet for :data:`QUIET` seconds (a VM deploying changes state several
times in a few seconds). It renders in chunks on a worker thread and rests
as long as each chunk took, so it never takes more than half of a core from
the daemon's work. The stamp check stays what makes a listing right: an
entry the warmer has not caught up with is rendered by the listing itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from cloudburst.api import documents
from cloudburst.api.calls import shown_name
from cloudburst.api.encoded import EncodedText, escaped
from cloudburst.api.per_daemon import PerDaemon
from cloudburst.errors import CloudburstError
from cloudburst.events import Resync, SubscriptionClosed
from cloudburst.model.records import VmRecord
from cloudburst.store.vm_pool import VmStamp

if TYPE_CHECKING:
    from cloudburst.service.facade import Services

log = logging.getLogger(__name__)

#: Entries kept beyond the VMs that are not DONE before the cache is trimmed.
SPARE_ENTRIES: Final = 10_000
#: Seconds a changed VM stays unchanged before the warmer renders it.
QUIET: Final = 2.0
#: VMs rendered by the warmer at a time.
WARM_CHUNK: Final = 500
#: Changes the warmer may have waiting (beyond, it looks at every VM again).
WARM_QUEUE: Final = 65_536
#: Documents kept whole for a listing made again (see VmPoolCache.document), and the
#: most VMs such a document lists (a copy of the entries: bounded memory).
RECENT_LISTINGS: Final = 4
RECENT_MAX_VMS: Final = 5_000

_HEAD: Final = escaped("<VM_POOL>")
_TAIL: Final = escaped("</VM_POOL>")


class VmPoolCache:
    """Rendered ``VM`` elements of one daemon, for both pool forms."""

    def __init__(self, *, spare: int = SPARE_ENTRIES) -> None:
        #: Entries kept per form beyond the VMs not DONE (see _trim).
        self._spare = spare
        #: Per form (extended or not), by VM id: the stamp an entry was made from, and
        #: the entry. A stamp is a tuple: the whole of it is compared, in one go.
        self._entries: dict[bool, dict[int, tuple[VmStamp, bytes]]] = {False: {}, True: {}}
        #: VMs not DONE at the warmer's last full pass (0: no pass yet).
        self._live = 0
        #: The last few documents made, with the stamps they list, by (form, how many
        #: VMs, the first one's id), oldest first: clients poll the same listing, and
        #: when its stamps are all equal the document is the same.
        self._recent: dict[tuple[bool, int, int], tuple[list[VmStamp], EncodedText]] = {}

    async def document(self, daemon: Services, stamps: Sequence[VmStamp], *,
                       extended: bool) -> EncodedText:
        """The ``VM_POOL`` document listing ``stamps``' VMs, in that order."""
        listed = list(stamps)
        key = (extended, len(listed), listed[0][0] if listed else -1)
        recent = self._recent.get(key)
        if recent is not None and recent[0] == listed:
            return recent[1]  # the same VMs, all unchanged: the same document
        entries = self._entries[extended]
        parts: list[bytes] = [_HEAD]
        append = parts.append
        stale: list[VmStamp] = []
        for stamp in stamps:
            entry = entries.get(stamp[0])
            if entry is not None and entry[0] == stamp:
                append(entry[1])
            else:
                stale.append(stamp)
        if stale:
            await self._render(daemon, stale, extended=extended)
            entries = self._entries[extended]
            # Rendered now (a VM deleted meanwhile is left out): rebuild in order.
            parts = [_HEAD, *(entry[1] for stamp in stamps
                              if (entry := entries.get(stamp[0])) is not None)]
        parts.append(_TAIL)
        await self._trim(daemon, stamps, extended)
        if len(listed) > RECENT_MAX_VMS:
            return EncodedText(parts)
        text = EncodedText([b"".join(parts)])
        self._recent.pop(key, None)
        self._recent[key] = (listed, text)
        while len(self._recent) > RECENT_LISTINGS:
            del self._recent[next(iter(self._recent))]
        return text

    def rendered(self, stamps: Sequence[VmStamp], *, extended: bool = False) -> int:
        """How many of ``stamps``' VMs have an entry rendered from that very stamp (a
        listing of them renders only the others)."""
        entries = self._entries[extended]
        return sum(1 for stamp in stamps
                   if (entry := entries.get(stamp.id)) is not None and entry[0] == stamp)

    async def _render(self, daemon: Services, stamps: Sequence[VmStamp], *,
                      extended: bool) -> None:
        """Render ``stamps``' VMs into the cache (those that no longer exist are skipped)."""
        by_id = {stamp.id: stamp for stamp in stamps}
        records = await daemon.vms.records(list(by_id))
        await self._keep([(by_id[vm.id], vm) for vm in records], extended=extended)

    async def _keep(self, stamped: Sequence[tuple[VmStamp, VmRecord]], *,
                    extended: bool) -> None:
        """Render each VM into the cache with the stamp it was read with (a VM changed
        since is rendered again next time)."""
        # Rendering thousands of VMs is CPU work: keep it off the loop.
        rendered = await asyncio.get_running_loop().run_in_executor(None, lambda: [
            escaped(documents.vm_pool_entry(
                vm, extended=extended, uname=shown_name(stamp.uname, vm.uid),
                gname=shown_name(stamp.gname, vm.gid)))
            for stamp, vm in stamped])
        entries = self._entries[extended]
        for (stamp, _), data in zip(stamped, rendered, strict=True):
            entries[stamp.id] = (stamp, data)

    async def _trim(self, daemon: Services, listed: Sequence[VmStamp], extended: bool) -> None:
        """Keep at most the entries of the VMs not DONE, and those ``listed``, plus
        :data:`SPARE_ENTRIES`: beyond, drop the others (DONE VMs listed before)."""
        entries = self._entries[extended]
        if len(entries) <= max(len(listed), self._live) + self._spare:
            return
        # The pool may have grown since the VMs not DONE were counted: count them again
        # (rare: once the entries outgrow the count by SPARE_ENTRIES), so that the ones
        # rendered ahead are not dropped.
        self._live = await daemon.vms.live_count()
        entries = self._entries[extended]
        if len(entries) > max(len(listed), self._live) + self._spare:
            live = {stamp.id for stamp in await daemon.vms.pool_stamps(state=-1)}
            entries = self._entries[extended]
            keep = live.union(stamp.id for stamp in listed)
            self._entries[extended] = {vm_id: entry for vm_id, entry in entries.items()
                                       if vm_id in keep}

    async def keep_warm(self, daemon: Services) -> None:
        """Keep the short entries of the VMs that are not DONE rendered (see the module
        docs); runs until cancelled or the daemon's event bus closes the subscription."""
        subscription = daemon.events.subscribe(("vm",), maxsize=WARM_QUEUE)
        try:
            await self._warm(daemon, None)
            #: When each VM last changed, oldest first (a VM that changes again moves to
            #: the end): the oldest is the first, and the quiet ones are a prefix. (A
            #: min() over it per change was quadratic: 15% of the daemon at 50,000 VMs.)
            changed: dict[int, float] = {}
            #: When changes were lost (the queue overflowed): then every VM is looked at.
            lost: float | None = None
            while True:
                since = [*([next(iter(changed.values()))] if changed else []),
                         *([lost] if lost is not None else [])]
                timeout = max(0.0, min(since) + QUIET - time.monotonic()) if since else None
                try:
                    async with asyncio.timeout(timeout):
                        change = await subscription.get()
                except TimeoutError:
                    pass
                else:
                    if isinstance(change, Resync):
                        lost, changed = time.monotonic(), {}
                    elif lost is None:
                        changed.pop(change.object_id, None)
                        changed[change.object_id] = time.monotonic()
                    continue
                settled = time.monotonic() - QUIET
                if lost is not None:
                    if lost <= settled:
                        lost = None
                        await self._warm(daemon, None)
                    continue
                quiet = []
                for vm_id, at in changed.items():
                    if at > settled:
                        break
                    quiet.append(vm_id)
                for vm_id in quiet:
                    del changed[vm_id]
                await self._warm(daemon, sorted(quiet))
        except SubscriptionClosed:
            return
        finally:
            subscription.close()

    async def _warm(self, daemon: Services, vm_ids: list[int] | None) -> None:
        """Render the short entries of ``vm_ids`` (None: every VM not DONE) whose stamp
        moved; forget the entries of those that are DONE or gone."""
        if vm_ids is None:
            try:
                stamps = await daemon.vms.pool_stamps(state=-1)
            except CloudburstError as exc:  # the store is busy or lost: the listings render
                log.warning("pool entries not rendered ahead: %s", exc.message)
                return
            self._live = len(stamps)
            vm_ids = self._stale(stamps)
        for start in range(0, len(vm_ids), WARM_CHUNK):
            chunk = vm_ids[start:start + WARM_CHUNK]
            started = time.monotonic()
            try:
                # Each VM read once, with its stamp: one hop, no stamps read before.
                found = await daemon.vms.stamped(chunk)
                live = {stamp.id for stamp, _ in found}
                for vm_id in chunk:
                    if vm_id not in live:
                        self._entries[False].pop(vm_id, None)
                        self._entries[True].pop(vm_id, None)
                stale = set(self._stale([stamp for stamp, _ in found]))
                await self._keep([(stamp, vm) for stamp, vm in found if stamp.id in stale],
                                 extended=False)
            except CloudburstError as exc:
                log.warning("pool entries not rendered ahead: %s", exc.message)
                return
            # Rest as long as the chunk took: at most half of a core goes to warming.
            await asyncio.sleep(time.monotonic() - started)

    def _stale(self, stamps: Sequence[VmStamp]) -> list[int]:
        """The VMs of ``stamps`` whose short entry is missing or was made from another."""
        short = self._entries[False]
        return [stamp.id for stamp in stamps
                if (entry := short.get(stamp.id)) is None or entry[0] != stamp]


#: The cache serving a daemon's API (created on first use).
cache_of: PerDaemon[VmPoolCache] = PerDaemon(VmPoolCache)
