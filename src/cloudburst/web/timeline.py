"""The placement timeline: which VM went where, read off the daemon's event bus.

A VM change becomes a timeline entry when it is one of:

* ``local``: the VM entered ``BOOT`` on a local host;
* ``burst``: the VM entered ``BOOT`` on a cloud site;
* ``recalled``: an active VM went back to ``PENDING`` (e.g. a site without
  room, or a VM rescheduled), to be placed again;
* ``failed``: the VM entered a ``*_FAILURE`` state.

:class:`Timeline` subscribes to the bus for the life of the server, keeps
the last :data:`KEEP` entries (for a page that opens later) and knows which
hosts are cloud sites (from host changes, and from the host pool at start and
after a resync).

A resync (the subscription's queue overflowed) reloads the host pool at most
once every :data:`RELOAD_PAUSE` seconds: in a burst of thousands of VM changes a
second the queue overflows again and again, and reloading 10,000 hosts each
time took half of a core from the burst. Host changes delivered meanwhile keep
the map current; only host changes lost in an overflow wait for the reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from cloudburst.events import Change, EventBus, Resync, Subscription, SubscriptionClosed
from cloudburst.model.records import HostRecord
from cloudburst.model.states import LcmState, VmState

log = logging.getLogger(__name__)

__all__ = ["KEEP", "Timeline"]

#: Entries kept for pages that open later.
KEEP: Final = 500
#: Least seconds between two reloads of the host pool after resyncs.
RELOAD_PAUSE: Final = 30.0

Entry = dict[str, object]


class Timeline:
    """Placement entries from VM changes (see the module docstring)."""

    def __init__(self, events: EventBus, load_hosts: Callable[[], Awaitable[list[HostRecord]]],
                 *, reload_pause: float = RELOAD_PAUSE) -> None:
        self._events = events
        self._load_hosts = load_hosts
        self._reload_pause = reload_pause
        #: When the host pool was last loaded (time.monotonic()).
        self._loaded_at = -float("inf")
        #: host id -> (name, is a cloud site)
        self.hosts: dict[int, tuple[str, bool]] = {}
        self.entries: deque[Entry] = deque(maxlen=KEEP)
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe and load the hosts; entries are recorded from now on."""
        self._subscription = self._events.subscribe(("vm", "host"))
        await self.reload_hosts()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="web-timeline")

    async def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reload_hosts(self) -> None:
        """Learn every host's name and kind from the host pool."""
        self._loaded_at = time.monotonic()
        self.hosts = {host.id: (host.name, host.is_public_cloud)
                      for host in await self._load_hosts()}

    async def _run(self) -> None:
        assert self._subscription is not None
        #: When a reload is due after a resync (None: none is).
        reload_at: float | None = None
        while True:
            try:
                timeout = None if reload_at is None else max(0.0, reload_at - time.monotonic())
                async with asyncio.timeout(timeout):
                    change = await self._subscription.get()
            except SubscriptionClosed:
                return
            except TimeoutError:
                change = None
            try:
                if change is None:
                    reload_at = None
                    await self.reload_hosts()
                    continue
                if isinstance(change, Resync):
                    if reload_at is None:
                        reload_at = max(time.monotonic(), self._loaded_at + self._reload_pause)
                    continue
                entry = self.observe(change)
                if entry is not None:
                    self.entries.append(entry)
            except Exception:
                log.exception("timeline: cannot record a change")

    def observe(self, change: Change) -> Entry | None:
        """Update the host map from a host change; the entry a VM change makes, if any."""
        if change.topic == "host":
            if change.data.get("removed"):
                self.hosts.pop(change.object_id, None)
            else:
                self.hosts[change.object_id] = (str(change.data.get("name")),
                                                bool(change.data.get("public_cloud")))
            return None
        return self.entry_for(change)

    def entry_for(self, change: Change) -> Entry | None:
        """The timeline entry a VM change makes, if any (the host map is not changed)."""
        if change.topic != "vm":
            return None
        data = change.data
        kind = _kind(data)
        if kind is None:
            return None
        host_id = data.get("host_id")
        host_name, cloud = self.hosts.get(host_id, (None, False)) \
            if isinstance(host_id, int) else (None, False)
        if kind == "placed":
            kind = "burst" if cloud else "local"
        return {
            "seq": change.seq, "time": change.time, "kind": kind,
            "vm_id": change.object_id, "vm_name": data.get("name"),
            "uid": data.get("uid"), "gid": data.get("gid"), "perms": data.get("perms"),
            "host_id": host_id, "host": host_name, "error": data.get("error", ""),
        }


def _kind(data: Mapping[str, object]) -> str | None:
    """``placed``, ``recalled``, ``failed`` or ``None`` for a VM snapshot."""
    state, lcm = data.get("state"), data.get("lcm_state")
    prev_state, prev_lcm = data.get("prev_state"), data.get("prev_lcm_state")
    if state == VmState.ACTIVE and lcm == LcmState.BOOT and prev_lcm == LcmState.PROLOG:
        return "placed"
    if state == VmState.PENDING and prev_state == VmState.ACTIVE:
        return "recalled"
    if isinstance(lcm, int) and lcm in _FAILURES and lcm != prev_lcm:
        return "failed"
    return None


_FAILURES: Final = frozenset(int(state) for state in LcmState if state.name.endswith("_FAILURE"))
