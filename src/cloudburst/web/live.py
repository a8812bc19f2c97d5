"""``GET /api/v1/events``: the daemon's changes pushed to a page as server-sent events.

Each open stream is one subscription to the event bus. Changes are sent in
batches at most every :data:`BATCH_SECONDS` (so a burst of 10,000 VMs costs a
page a few messages a second, not 10,000), each batch keeping only the last
change of each object::

    event: changes
    data: {"vms": [<vm snapshot>...], "hosts": [<host snapshot>...],
           "timeline": [<entry>...]}

After the stream's queue overflowed (changes were dropped) the server sends
``event: resync``: the page reloads what it shows through the JSON API. A
comment line is sent every :data:`HEARTBEAT_SECONDS` to keep proxies from
closing an idle stream, and the stream ends when the session does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from cloudburst.events import Change, EventBus, Resync, SubscriptionClosed
from cloudburst.web.auth import Caller
from cloudburst.web.sessions import SessionStore
from cloudburst.web.timeline import Timeline

__all__ = ["BATCH_SECONDS", "HEARTBEAT_SECONDS", "stream"]

#: Changes are gathered this long before a batch is sent.
BATCH_SECONDS: Final = 0.25
#: A comment is sent after this long without changes.
HEARTBEAT_SECONDS: Final = 15.0
#: Changes a stream may hold before it is told to resync.
QUEUE_SIZE: Final = 20_000

#: Makes the caller's test of which changes it may see (see :func:`stream`).
VisibleFactory = Callable[[], Awaitable[Callable[[Change], bool]]]


def _message(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _batch(changes: list[Change], visible: Callable[[Change], bool],
           timeline: Timeline) -> dict[str, list[object]]:
    vms: dict[int, object] = {}
    hosts: dict[int, object] = {}
    entries: list[object] = []
    for change in changes:
        if not visible(change):
            continue
        if change.topic == "vm":
            vms[change.object_id] = change.data
            entry = timeline.entry_for(change)
            if entry is not None:
                entries.append(entry)
        elif change.topic == "host":
            hosts[change.object_id] = change.data
    return {"vms": list(vms.values()), "hosts": list(hosts.values()), "timeline": entries}


async def stream(request: web.Request, caller: Caller, events: EventBus, sessions: SessionStore,
                 timeline: Timeline, visible: VisibleFactory) -> web.StreamResponse:
    """Serve one event stream to ``caller`` until they leave, log out, or the daemon stops.

    ``visible()`` gives the test of which changes the caller may see (the
    access service's, as for every other read); it is asked again for each
    batch, so a changed ACL or a revoked right applies at once.
    """
    subscription = events.subscribe(("vm", "host"), maxsize=QUEUE_SIZE)
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n" + _message("hello", {"user": caller.user.name}))
        while caller.session is None or sessions.alive(caller.session.id):
            try:
                first = await asyncio.wait_for(subscription.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if isinstance(first, Resync):
                await response.write(_message("resync", {}))
                continue
            await asyncio.sleep(BATCH_SECONDS)
            changes = [first, *subscription.drain()]
            batch = _batch(changes, await visible(), timeline)
            if any(batch.values()):
                await response.write(_message("changes", batch))
        await response.write(_message("logout", {}))
    except (SubscriptionClosed, ConnectionResetError):
        pass
    finally:
        subscription.close()
    return response
