"""Concurrent requests with the same key gathered into one API call.

EC2 counts calls, not instances, against its request buckets (``RunInstances``:
burst 5, 2 per second), and ``RunInstances`` and ``TerminateInstances`` take
many instances per call. A :class:`Coalescer` turns the daemon's one-VM-at-a-
time actions into such calls:

* a request joins the queue of its key; the first one starts the key's drain;
* the drain waits ``window`` seconds for company; then, while the daemon says
  more requests of that key are on their way (``more``: the work the core
  started and has not handed to the driver yet) and the batch is not full, it
  keeps the batch open, woken by each arrival; a pause of ``hold`` seconds
  without an arrival closes it anyway (a request that never comes must not
  hold the others). Once nothing is on its way, it still waits ``quiet``
  seconds for one more arrival (requests whose state change commits a moment
  later, e.g. a thousand terminations written in several group commits) and
  holds again if one comes: a lone request pays ``window + quiet``. Then it
  waits until the rate limiter would let a call go (``ready_in``), takes every
  request queued by then, up to ``max_size`` and while ``fits`` agrees, and runs
  them as one batch; requests arriving meanwhile (a call in flight, a limiter
  wait) form the next batch;
* a batch runs as a task of its own: a caller that gives up (the dispatcher's
  ``-w``) leaves the queue if its batch has not gone yet, and never cancels a
  batch that has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

#: Runs one batch: a result or an exception per item, in the items' order.
RunBatch = Callable[[K, list[T]], Awaitable[Sequence[R | BaseException]]]


#: Batches whose size and span are kept.
_KEPT: Final = 10_000
#: Seconds without an arrival after which a batch waiting for more goes anyway.
HOLD: Final = 0.5
#: Seconds a batch with nothing more on its way still waits for one more arrival.
QUIET: Final = 0.05
#: Seconds between looks at ``more`` while nothing arrives (work may be dropped
#: on its way without arriving).
_RECHECK: Final = 0.05


@dataclass(eq=False, slots=True)
class _Waiting(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Nobody may await the future any more (its caller timed out): mark the
    # exception as seen so asyncio does not log it as lost.
    if not future.cancelled():
        future.exception()


class Coalescer(Generic[K, T, R]):
    """Batches concurrent requests per key (see the module doc)."""

    def __init__(self, run: RunBatch[K, T, R], *, window: float, max_size: int,
                 ready_in: Callable[[], float],
                 fits: Callable[[list[T], T], bool] | None = None,
                 more: Callable[[K], int] | None = None, hold: float = HOLD,
                 quiet: float = QUIET) -> None:
        self._run = run
        self.window = window
        self.max_size = max(1, max_size)
        self._ready_in = ready_in
        self._fits = fits
        self._more = more
        self.hold = hold
        self.quiet = quiet
        self._queues: dict[K, list[_Waiting[T, R]]] = {}
        #: Set when a request joins a key's queue (wakes a drain holding its batch).
        self._arrived: dict[K, asyncio.Event] = {}
        self._drains: dict[K, asyncio.Task[None]] = {}
        self._batches: set[asyncio.Task[None]] = set()
        #: Sizes of the latest batches sent (tests and benchmarks read it; bounded:
        #: a daemon sends batches for months).
        self.sizes: deque[int] = deque(maxlen=_KEPT)
        #: ``(started, ended)`` of the latest batches run, ``time.monotonic()``
        #: (benchmarks read it).
        self.spans: deque[tuple[float, float]] = deque(maxlen=_KEPT)

    async def submit(self, key: K, item: T) -> R:
        """Queue ``item`` under ``key``; its result once its batch has run.

        Raises:
            whatever the batch raised for this item.
        """
        loop = asyncio.get_running_loop()
        waiting: _Waiting[T, R] = _Waiting(item, loop.create_future())
        waiting.future.add_done_callback(_retrieve)
        self._queues.setdefault(key, []).append(waiting)
        arrived = self._arrived.get(key)
        if arrived is not None:
            arrived.set()
        if key not in self._drains:
            self._drains[key] = loop.create_task(self._drain(key), name=f"coalesce-{key!r}")
        try:
            return await asyncio.shield(waiting.future)
        except asyncio.CancelledError:
            queue = self._queues.get(key)
            if queue is not None and waiting in queue:
                queue.remove(waiting)
            raise

    async def _drain(self, key: K) -> None:
        try:
            while self._queues.get(key):
                await asyncio.sleep(self.window)
                await self._hold(key)
                while (delay := self._ready_in()) > 0:
                    await asyncio.sleep(delay)
                batch = self._take(self._queues.get(key) or [])
                if batch:
                    task = asyncio.get_running_loop().create_task(self._run_batch(key, batch))
                    self._batches.add(task)
                    task.add_done_callback(self._batches.discard)
        finally:
            self._drains.pop(key, None)
            self._arrived.pop(key, None)
            if not self._queues.get(key):
                self._queues.pop(key, None)

    async def _hold(self, key: K) -> None:
        """Keep the key's next batch open while more of it is on its way (module doc)."""
        if self._more is None:
            return
        loop = asyncio.get_running_loop()
        arrived = self._arrived.setdefault(key, asyncio.Event())
        last = loop.time()
        while len(self._queues.get(key) or ()) < self.max_size:
            if self._more(key) == 0:
                # The last one may have left the backlog and be a step short of
                # the queue (its call scheduled, not yet run), or others may be a
                # commit behind: wait a moment for one more.
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), timeout=self.quiet)
                except TimeoutError:
                    if self._more(key) == 0:
                        return
                last = loop.time()
                continue
            arrived.clear()
            left = last + self.hold - loop.time()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(arrived.wait(), timeout=min(left, _RECHECK))
            except TimeoutError:
                continue
            last = loop.time()

    def _take(self, queue: list[_Waiting[T, R]]) -> list[_Waiting[T, R]]:
        """The next batch from the head of ``queue`` (removed from it)."""
        items: list[T] = []
        count = 0
        for waiting in queue:
            if count >= self.max_size or (
                    items and self._fits is not None and not self._fits(items, waiting.item)):
                break
            items.append(waiting.item)
            count += 1
        batch = queue[:count]
        del queue[:count]
        return batch

    async def _run_batch(self, key: K, batch: list[_Waiting[T, R]]) -> None:
        self.sizes.append(len(batch))
        started = time.monotonic()
        try:
            results = await self._run(key, [waiting.item for waiting in batch])
        except Exception as exc:
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            return
        except BaseException:
            for waiting in batch:
                waiting.future.cancel()
            raise
        self.spans.append((started, time.monotonic()))
        if len(results) != len(batch):  # pragma: no cover - a bug in the batch function
            log.error("a batch of %d returned %d results", len(batch), len(results))
        for waiting, result in zip(batch, results, strict=False):
            if waiting.future.done():
                continue
            if isinstance(result, BaseException):
                waiting.future.set_exception(result)
            else:
                waiting.future.set_result(result)
        for waiting in batch[len(results):]:
            if not waiting.future.done():
                waiting.future.set_exception(RuntimeError("the batch returned no result"))

    async def settled(self, timeout: float) -> bool:
        """Wait until nothing is queued or in flight (at most ``timeout`` seconds);
        whether that happened."""
        deadline = asyncio.get_running_loop().time() + timeout
        while busy := {*self._drains.values(), *self._batches}:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            await asyncio.wait(busy, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        return True

    async def close(self) -> None:
        """Stop draining; requests still queued fail, batches in flight are cancelled."""
        tasks = [*self._drains.values(), *self._batches]
        for task in tasks:
            task.cancel()
        for queue in self._queues.values():
            for waiting in queue:
                if not waiting.future.done():
                    waiting.future.cancel()
        self._queues.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
