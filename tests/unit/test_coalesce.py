"""The EC2 driver's coalescer and the daemon's work backlog that keeps its batches open.

The batch function is a plain recorder (no cloud): what is checked is how
requests are grouped, not what a batch does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from cloudburst.daemon.backlog import WorkBacklog
from cloudburst.drivers.ec2.coalesce import Coalescer

T = TypeVar("T")

HOST = 7


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=60))


class Recorder:
    """Runs batches by returning each item doubled; remembers the batches."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, key: int, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await self.release.wait()
        return [item * 2 for item in items]


def coalescer(recorder: Recorder, backlog: WorkBacklog, *, hold: float,
              max_size: int = 250, quiet: float = 0.0) -> Coalescer[int, int, int]:
    return Coalescer(recorder, window=0.001, max_size=max_size, ready_in=lambda: 0.0,
                     more=lambda host: backlog.waiting(host, ("deploy",)), hold=hold,
                     quiet=quiet)


async def arrive(batches: Coalescer[int, int, int], backlog: WorkBacklog, vm_id: int,
                 delay: float) -> int:
    """What the life-cycle manager does: the work reaches the driver after a while."""
    await asyncio.sleep(delay)
    backlog.discard(HOST, vm_id)
    return await batches.submit(HOST, vm_id)


def test_backlog_counts_work_per_host_and_label() -> None:
    backlog = WorkBacklog()
    backlog.add(1, "deploy", 10)
    backlog.add(1, "deploy", 11)
    backlog.add(1, "cancel", 12)
    backlog.add(2, "deploy", 13)
    assert backlog.waiting(1, ("deploy",)) == 2
    assert backlog.waiting(1, ("shutdown", "cancel")) == 1
    assert backlog.waiting(3, ("deploy",)) == 0
    backlog.add(1, "shutdown", 10)  # a VM has one work on its way: the newest
    assert backlog.waiting(1, ("deploy",)) == 1
    backlog.discard(1, 10)
    backlog.discard(1, 10)  # twice is harmless
    backlog.discard(1, 11)
    backlog.discard(1, 12)
    backlog.discard(2, 13)
    assert backlog.waiting(1, ("deploy", "shutdown", "cancel")) == 0
    assert backlog.waiting(2, ("deploy",)) == 0


def test_a_batch_stays_open_while_more_are_on_their_way() -> None:
    """Twelve requests arriving far apart compared with the window form one batch,
    which leaves as soon as the last one is in (not after the hold)."""
    recorder, backlog = Recorder(), WorkBacklog()

    async def scenario() -> list[int]:
        batches = coalescer(recorder, backlog, hold=30.0)
        for vm_id in range(12):
            backlog.add(HOST, "deploy", vm_id)
        results = await asyncio.wait_for(asyncio.gather(
            *(arrive(batches, backlog, vm_id, 0.03 * vm_id) for vm_id in range(12))),
            timeout=20)  # the hold is 30 s: only the backlog emptying can end the batch
        await batches.close()
        return list(results)

    assert run(scenario()) == [vm_id * 2 for vm_id in range(12)]
    assert recorder.batches == [list(range(12))]


def test_work_for_another_host_does_not_hold_the_batch() -> None:
    recorder, backlog = Recorder(), WorkBacklog()

    async def scenario() -> None:
        batches = coalescer(recorder, backlog, hold=30.0)
        backlog.add(HOST + 1, "deploy", 50)
        backlog.add(HOST, "cancel", 51)
        for vm_id in range(3):  # one after the other: each batch leaves at once
            assert await asyncio.wait_for(batches.submit(HOST, vm_id), timeout=20) == vm_id * 2
        await batches.close()

    run(scenario())
    assert recorder.batches == [[0], [1], [2]]


def test_work_that_never_arrives_holds_the_batch_only_briefly() -> None:
    """A work dropped on its way (its VM failed before the driver) stays in the
    backlog; the batch goes once nothing arrived for the hold."""
    recorder, backlog = Recorder(), WorkBacklog()

    async def scenario() -> list[int]:
        batches = coalescer(recorder, backlog, hold=0.2)
        backlog.add(HOST, "deploy", 99)  # never arrives
        for vm_id in range(3):
            backlog.add(HOST, "deploy", vm_id)
        results = await asyncio.gather(*(arrive(batches, backlog, vm_id, 0.01 * vm_id)
                                         for vm_id in range(3)))
        await batches.close()
        return list(results)

    assert run(scenario()) == [0, 2, 4]
    assert recorder.batches == [[0, 1, 2]]


def test_a_full_batch_leaves_without_waiting_for_the_rest() -> None:
    recorder, backlog = Recorder(), WorkBacklog()

    async def scenario() -> None:
        batches = coalescer(recorder, backlog, hold=30.0, max_size=4)
        for vm_id in range(10):
            backlog.add(HOST, "deploy", vm_id)
        await asyncio.wait_for(asyncio.gather(
            *(arrive(batches, backlog, vm_id, 0.02 * vm_id) for vm_id in range(10))),
            timeout=20)
        await batches.close()

    run(scenario())
    assert recorder.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_settled_waits_for_batches_in_flight() -> None:
    recorder, backlog = Recorder(), WorkBacklog()

    async def scenario() -> None:
        batches = coalescer(recorder, backlog, hold=30.0)
        assert await batches.settled(0.0)  # nothing queued or in flight
        recorder.release.clear()
        request = asyncio.ensure_future(batches.submit(HOST, 1))
        while not recorder.batches:  # the batch is in flight, held by the recorder
            await asyncio.sleep(0.01)
        assert not await batches.settled(0.05)
        waiter = asyncio.ensure_future(batches.settled(30.0))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        recorder.release.set()
        assert await waiter
        assert request.done() and request.result() == 2
        await batches.close()

    run(scenario())


def test_a_batch_with_nothing_on_its_way_waits_quietly_for_one_more() -> None:
    """Requests whose state changes commit a moment apart (nothing in the backlog
    between them) still share a call: the batch waits ``quiet`` for one more."""
    async def scenario() -> list[list[int]]:
        recorder, backlog = Recorder(), WorkBacklog()
        batches = coalescer(recorder, backlog, hold=30.0, quiet=2.0)
        first = asyncio.ensure_future(batches.submit(HOST, 1))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(batches.submit(HOST, 2))
        assert await asyncio.gather(first, second) == [2, 4]
        return recorder.batches

    assert run(scenario()) == [[1, 2]]


def test_work_announced_during_the_quiet_wait_keeps_the_batch_open() -> None:
    """A deploy still being written (announced in the backlog) when the quiet wait
    ends keeps the batch open until it arrives."""
    async def scenario() -> list[list[int]]:
        recorder, backlog = Recorder(), WorkBacklog()
        batches = coalescer(recorder, backlog, hold=30.0, quiet=1.0)
        first = asyncio.ensure_future(batches.submit(HOST, 1))
        await asyncio.sleep(0.01)
        backlog.add(HOST, "deploy", 2)  # its state change is being written
        second = asyncio.ensure_future(arrive(batches, backlog, 2, delay=1.5))
        assert await asyncio.gather(first, second) == [2, 4]
        return recorder.batches

    assert run(scenario()) == [[1, 2]]
