"""Every daemon's dashboard sees every daemon's changes, on a shared PostgreSQL store.

Each daemon's event bus (:mod:`cloudburst.events`) carries the changes that
daemon commits. On PostgreSQL several daemons serve the dashboard, and a VM
deployed by the leader or created through another follower must show live on
every one of them. :class:`ChangeFeed` relays them with PostgreSQL's
``NOTIFY``: what this daemon publishes is sent on :data:`CHANNEL` (in
batches, a notification at most :data:`PAYLOAD_BYTES` long, never blocking
the publisher), and what the others send is delivered to this daemon's
subscribers. Notifications are not stored: when the feed may have missed some
(it connected or reconnected, a change was too large to send) every
subscriber is told to reload (:meth:`~cloudburst.events.EventBus.resync`).

On SQLite there is one daemon and no feed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping

from sqlalchemy import Engine, text

from cloudburst.daemon.handoff import Listener
from cloudburst.events import EventBus

log = logging.getLogger(__name__)

CHANNEL = "cloudburst_changes"

#: Longest payload sent (PostgreSQL refuses 8,000 bytes and more).
PAYLOAD_BYTES = 7000

_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


class ChangeFeed:
    """Relays this daemon's changes to the other daemons and theirs to it."""

    def __init__(self, engine: Engine, bus: EventBus, origin: str) -> None:
        self._engine = engine
        self._bus = bus
        self._listener = Listener(engine, self._received, channel=CHANNEL)
        #: How this daemon's own notifications begin (see _payload): they come back to
        #: it too, and are dropped before being decoded.
        self._own = f'{{"o":{json.dumps(origin)},'
        self._outbox: list[tuple[str, int, Mapping[str, object]]] = []
        self._sending: asyncio.Task[None] | None = None
        self.sent = 0
        self.received = 0

    def start(self) -> None:
        self._bus.relay = self._relay
        self._listener.start()

    async def close(self) -> None:
        """Stop relaying (what was published so far is still sent); close the engine."""
        self._bus.relay = None
        self._listener.stop()
        if self._sending is not None:
            await asyncio.gather(self._sending, return_exceptions=True)
        self._engine.dispose()

    # -- out ----------------------------------------------------------------------------

    def _relay(self, topic: str, object_id: int, data: Mapping[str, object]) -> None:
        self._outbox.append((topic, object_id, data))
        if self._sending is None:
            self._sending = asyncio.get_running_loop().create_task(self._send(),
                                                                   name="change-feed")

    async def _send(self) -> None:
        try:
            while self._outbox:
                changes, self._outbox = self._outbox, []
                payloads = self._payloads(changes)
                try:
                    await asyncio.to_thread(self._notify, payloads)
                except Exception as exc:
                    log.warning("could not send %d changes to the other daemons: %s",
                                len(changes), str(exc).splitlines()[0] if str(exc) else exc)
                else:
                    self.sent += len(changes)
        finally:
            self._sending = None

    def _payloads(self, changes: list[tuple[str, int, Mapping[str, object]]]) -> list[str]:
        """The notifications for ``changes``, each at most :data:`PAYLOAD_BYTES` long."""
        payloads: list[str] = []
        batch: list[str] = []
        size = 0
        for topic, object_id, data in changes:
            item = json.dumps([topic, object_id, data], separators=(",", ":"),
                              default=str)
            if len(item) + 100 > PAYLOAD_BYTES:
                log.warning("a %s change of %d is too large to send; the other daemons "
                            "reload instead", topic, object_id)
                item = json.dumps(["resync", object_id, {}])
            if batch and size + len(item) + 100 > PAYLOAD_BYTES:
                payloads.append(self._payload(batch))
                batch, size = [], 0
            batch.append(item)
            size += len(item) + 1
        if batch:
            payloads.append(self._payload(batch))
        return payloads

    def _payload(self, items: list[str]) -> str:
        return f'{self._own}"c":[{",".join(items)}]}}'

    def _notify(self, payloads: list[str]) -> None:
        with self._engine.connect() as connection:
            for payload in payloads:
                connection.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload})
            connection.commit()

    # -- in -----------------------------------------------------------------------------

    def _received(self, payload: str) -> None:
        """A notification (on the loop); ``""`` when (re)connected."""
        if not payload:
            self._bus.resync()
            return
        if payload.startswith(self._own):
            return
        try:
            message = json.loads(payload)
            for topic, object_id, data in message["c"]:
                if topic == "resync":
                    self._bus.resync()
                else:
                    self._bus.deliver(str(topic), int(object_id), dict(data))
                    self.received += 1
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable change notification ignored (%s)", exc)
