"""The daemon's in-process event bus: committed changes, published to whoever listens.

The parts of the daemon that write state publish a :class:`Change` *after*
the write committed (a rolled-back write publishes nothing):

* topic ``"vm"``: a VM was created or changed state (published by the
  life-cycle manager where it writes a transition, and by VM creation);
* topic ``"host"``: a host was added, removed, monitored, failed or had its
  status or template changed.

Consumers (the web dashboard's live stream; metrics and the audit trail may
reuse it) call :meth:`EventBus.subscribe` and read with
:meth:`Subscription.get`. The contract:

* **The publisher never blocks and never fails** because of a consumer:
  :meth:`EventBus.publish` appends to each subscriber's bounded queue and
  returns.
* **A slow consumer loses the oldest changes, and is told so.** When its
  queue is full the oldest change is dropped and the subscription is marked
  *overflowed*; its next :meth:`Subscription.get` returns :data:`RESYNC`
  before any further change, so it reloads what it shows from the services
  instead of trusting an incomplete stream.
* Everything runs on the daemon's event loop: ``publish``, ``subscribe``
  and ``get`` must be called from it (no locks are needed).
* Several daemons on one PostgreSQL store see each other's changes: a relay
  (:mod:`cloudburst.daemon.change_feed`) sends what this daemon publishes to
  the others and :meth:`EventBus.deliver`-s theirs here; when it may have
  missed some, :meth:`EventBus.resync` tells every subscriber to reload.
* ``data`` is a small, JSON-serialisable snapshot of the object as written
  (never secrets: no templates, no passwords); consumers must not mutate it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = ["RESYNC", "Change", "EventBus", "Resync", "Subscription", "SubscriptionClosed"]

#: Changes a subscriber may hold before the oldest is dropped.
DEFAULT_QUEUE_SIZE: Final = 4096


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change.

    Attributes:
        seq: increasing number of the change in this daemon's life.
        topic: ``"vm"`` or ``"host"`` (see the module docstring).
        object_id: the VM or host id.
        data: a snapshot of the object after the change.
        time: UNIX time of the publication.
    """

    seq: int
    topic: str
    object_id: int
    data: Mapping[str, object]
    time: float


class SubscriptionClosed(Exception):
    """The subscription was closed (by its owner, or as the daemon stops)."""


class Resync:
    """Marker returned by :meth:`Subscription.get` after changes were dropped."""

    def __repr__(self) -> str:
        return "RESYNC"


RESYNC: Final = Resync()


@dataclass(eq=False)
class Subscription:
    """A consumer's bounded queue of changes (see the module docstring)."""

    topics: frozenset[str]
    maxsize: int
    _bus: EventBus
    _queue: deque[Change] = field(default_factory=deque)
    _waiter: asyncio.Future[None] | None = None
    overflowed: bool = False
    #: Changes dropped over the subscription's life.
    dropped: int = 0
    closed: bool = False

    def _offer(self, change: Change) -> None:
        if len(self._queue) >= self.maxsize:
            self._queue.popleft()
            self.overflowed = True
            self.dropped += 1
        self._queue.append(change)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Change | Resync:
        """The next change, or :data:`RESYNC` once after changes were dropped.

        Raises:
            SubscriptionClosed: the subscription is closed (also when it is
                closed while waiting).
        """
        while True:
            if self.overflowed:
                self.overflowed = False
                return RESYNC
            if self._queue:
                return self._queue.popleft()
            if self.closed:
                raise SubscriptionClosed("the subscription is closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def drain(self) -> list[Change]:
        """Every queued change, without waiting (the overflow mark stays)."""
        changes = list(self._queue)
        self._queue.clear()
        return changes

    def close(self) -> None:
        """Stop receiving; a waiting :meth:`get` raises :class:`SubscriptionClosed`."""
        self.closed = True
        self._queue.clear()
        self.overflowed = False
        self._bus._remove(self)
        self._wake()


class EventBus:
    """Publish/subscribe of committed changes (see the module docstring)."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._seq = itertools.count(1)
        #: Also called with each change this daemon publishes (for other daemons).
        self.relay: Callable[[str, int, Mapping[str, object]], None] | None = None

    def subscribe(self, topics: Iterable[str] = ("vm", "host"), *,
                  maxsize: int = DEFAULT_QUEUE_SIZE) -> Subscription:
        """A new subscription to ``topics``; close it when done."""
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        subscription = Subscription(frozenset(topics), maxsize, self)
        self._subscriptions.append(subscription)
        return subscription

    def publish(self, topic: str, object_id: int, data: Mapping[str, object]) -> None:
        """Hand a committed change to every subscriber of ``topic`` and to the
        :attr:`relay`; never blocks."""
        if self.relay is not None:
            self.relay(topic, object_id, data)
        self.deliver(topic, object_id, data)

    def deliver(self, topic: str, object_id: int, data: Mapping[str, object]) -> None:
        """Hand a committed change to this daemon's subscribers only (a change another
        daemon published); never blocks."""
        if not self._subscriptions:
            return
        change = Change(next(self._seq), topic, object_id, data, time.time())
        for subscription in self._subscriptions:
            if topic in subscription.topics:
                subscription._offer(change)

    def resync(self) -> None:
        """Changes may have been missed: every subscriber gets :data:`RESYNC` next."""
        for subscription in self._subscriptions:
            subscription.overflowed = True
            subscription._wake()

    def close_all(self) -> None:
        """Close every subscription (the daemon is stopping)."""
        for subscription in list(self._subscriptions):
            subscription.close()

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscriptions)

    def _remove(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
