"""The event bus: delivery by topic, bounded queues that drop the oldest and ask
for a resync, a publisher that never waits, closing."""

from __future__ import annotations

import asyncio

import pytest

from cloudburst.events import RESYNC, Change, EventBus, SubscriptionClosed


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_changes_reach_subscribers_of_their_topic_in_order() -> None:
    async def scenario() -> None:
        bus = EventBus()
        vms = bus.subscribe(("vm",))
        everything = bus.subscribe()
        bus.publish("vm", 1, {"id": 1})
        bus.publish("host", 7, {"id": 7})
        bus.publish("vm", 2, {"id": 2})
        first, second = await vms.get(), await vms.get()
        assert isinstance(first, Change) and isinstance(second, Change)
        assert (first.object_id, second.object_id) == (1, 2)
        assert first.seq < second.seq
        assert [c.topic for c in everything.drain()] == ["vm", "host", "vm"]
        assert vms.drain() == []

    run(scenario())


def test_a_full_queue_drops_the_oldest_and_asks_for_a_resync_first() -> None:
    async def scenario() -> None:
        bus = EventBus()
        slow = bus.subscribe(maxsize=3)
        for vm_id in range(5):
            bus.publish("vm", vm_id, {})
        assert slow.dropped == 2
        assert await slow.get() is RESYNC
        kept = [await slow.get() for _ in range(3)]
        assert [c.object_id for c in kept if isinstance(c, Change)] == [2, 3, 4]

    run(scenario())


def test_the_publisher_never_waits_for_a_consumer() -> None:
    async def scenario() -> None:
        bus = EventBus()
        bus.subscribe(maxsize=1)  # never read
        for vm_id in range(10_000):
            bus.publish("vm", vm_id, {})  # returns at once, no await needed

    run(scenario())


def test_a_waiting_consumer_is_woken_and_closing_ends_it() -> None:
    async def scenario() -> None:
        bus = EventBus()
        subscription = bus.subscribe()
        waiting = asyncio.ensure_future(subscription.get())
        await asyncio.sleep(0)
        bus.publish("host", 3, {"name": "h"})
        change = await asyncio.wait_for(waiting, 1)
        assert isinstance(change, Change) and change.data == {"name": "h"}

        waiting = asyncio.ensure_future(subscription.get())
        await asyncio.sleep(0)
        bus.close_all()
        with pytest.raises(SubscriptionClosed):
            await asyncio.wait_for(waiting, 1)
        assert bus.subscribers == 0
        bus.publish("vm", 1, {})  # nobody listens: nothing happens

    run(scenario())


def test_subscribe_refuses_an_empty_queue() -> None:
    with pytest.raises(ValueError):
        EventBus().subscribe(maxsize=0)


def test_published_changes_go_to_the_relay_delivered_ones_do_not() -> None:
    async def scenario() -> None:
        bus = EventBus()
        relayed: list[tuple[str, int]] = []
        bus.relay = lambda topic, object_id, data: relayed.append((topic, object_id))
        watching = bus.subscribe()
        bus.publish("vm", 1, {})
        bus.deliver("host", 2, {})  # another daemon's change: shown, not sent back
        assert relayed == [("vm", 1)]
        assert [(c.topic, c.object_id) for c in watching.drain()] == [("vm", 1), ("host", 2)]
        bus.resync()  # the relay may have missed changes: reload
        assert await watching.get() is RESYNC

    run(scenario())
